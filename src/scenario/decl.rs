//! The scenario file as written: one struct per TOML table, deserialised with positions
//! (`Spanned`) wherever a later check has to point at a value. Nothing here is checked beyond
//! TOML types and unknown keys; the sibling modules give the declarations their meaning.

use std::collections::BTreeMap;

use placement::{GeneratedTopology, InstanceType, NetworkModel, SpreadLevel};
use serde::Deserialize;
use toml::Spanned;

use super::{ScenarioError, Source};

/// Parses `src` as a scenario: a TOML error is reported at its line and column.
pub(super) fn parse(src: &Source<'_>) -> Result<Scenario, ScenarioError> {
    toml::from_str(src.text).map_err(|e| match e.span() {
        Some(span) => src.at(span, e.message()),
        None => src.whole(e.message()),
    })
}

/// A scenario.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    #[serde(default)]
    pub name: Option<String>,
    /// Seed for capacity taken by other tenants (and anything else random).
    #[serde(default)]
    pub seed: u64,
    /// Mean share of every host already taken by other tenants (0 to 1).
    #[serde(default)]
    pub fragmentation: f64,
    /// Seconds of traffic (`run`).
    #[serde(default)]
    pub duration_s: Option<Spanned<f64>>,
    /// The region(s), AZs, racks and hosts.
    pub topology: GeneratedTopology,
    /// Instance types beyond the built-in catalogue.
    #[serde(default)]
    pub instance_types: Vec<InstanceType>,
    /// Latency and flow-cap settings.
    #[serde(default)]
    pub network: NetworkModel,
    /// How `run` builds its hosts.
    #[serde(default)]
    pub run: RunSettings,
    /// Placement groups.
    #[serde(default)]
    pub groups: Vec<GroupDecl>,
    /// Subnets (default: one per AZ, `10.<n>.0.0/16`, named after the AZ).
    #[serde(default)]
    pub subnets: Vec<SubnetDecl>,
    /// VMs.
    #[serde(default)]
    pub vms: Vec<VmDecl>,
    /// Secondary ENIs.
    #[serde(default)]
    pub enis: Vec<EniDecl>,
    /// Flows between VMs.
    #[serde(default)]
    pub flows: Vec<FlowDecl>,
    /// Failures injected during `run`.
    #[serde(default)]
    pub failures: Vec<FailureDecl>,
    /// Virtual-time costs overriding the defaults (`hypervisor_sim::sim::costs`), by name.
    #[serde(default)]
    pub costs: BTreeMap<Spanned<String>, Spanned<i64>>,
    /// Security groups beyond the VPC's `default`.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupDecl>,
    /// Network ACLs beyond the VPC's `acl-default`.
    #[serde(default)]
    pub nacls: Vec<NaclDecl>,
    /// EC2's quotas on security groups and NACLs.
    pub quotas: Option<Spanned<QuotasDecl>>,
    /// VPC flow logs (written by `run --out`).
    #[serde(default)]
    pub flow_logs: Vec<FlowLogDecl>,
    /// Security group and network ACL changes during `run`.
    #[serde(default)]
    pub rule_changes: Vec<Spanned<RuleChangeDecl>>,
    /// The variants `vnic-lab sweep` plans (ignored by `plan` and `run`).
    pub sweep: Option<SweepDecl>,
}

/// `[sweep]`: the keys `vnic-lab sweep` varies, each over its values; the sweep plans every
/// combination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepDecl {
    /// The keys varied, outermost first.
    pub vary: Vec<VaryDecl>,
}

/// One varied key: `key = "vms[hpc].count"`, `values = [8, 16, 32]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaryDecl {
    /// A path into the scenario: tables by name, arrays of tables by index (`flows[0]`) or by
    /// their `name` (`vms[hpc]`), then the key set.
    pub key: Spanned<String>,
    /// The values it takes, in order.
    pub values: Spanned<Vec<toml::Value>>,
}

/// A change to one security group's or one network ACL's rules at a time of the run (EC2's
/// `AuthorizeSecurityGroupIngress`, `RevokeSecurityGroupEgress`, `ReplaceNetworkAclEntry`,
/// `DeleteNetworkAclEntry`, ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleChangeDecl {
    /// When, s into the run.
    pub at_s: Spanned<f64>,
    /// The security group changed.
    pub group: Option<Spanned<String>>,
    /// The network ACL changed.
    pub nacl: Option<Spanned<String>>,
    /// Group rules added in.
    #[serde(default)]
    pub authorize_inbound: Vec<SgRuleDecl>,
    /// Group rules added out.
    #[serde(default)]
    pub authorize_outbound: Vec<SgRuleDecl>,
    /// Group rules removed in (tracked connections they allowed live on).
    #[serde(default)]
    pub revoke_inbound: Vec<SgRuleDecl>,
    /// Group rules removed out.
    #[serde(default)]
    pub revoke_outbound: Vec<SgRuleDecl>,
    /// NACL rules created in, or replacing the rule of the same number.
    #[serde(default)]
    pub put_inbound: Vec<NaclRuleDecl>,
    /// NACL rules created out, or replacing the rule of the same number.
    #[serde(default)]
    pub put_outbound: Vec<NaclRuleDecl>,
    /// NACL rule numbers deleted in.
    #[serde(default)]
    pub delete_inbound: Vec<Spanned<i64>>,
    /// NACL rule numbers deleted out.
    #[serde(default)]
    pub delete_outbound: Vec<Spanned<i64>>,
}

/// A flow log on the ENIs of a VM, of a subnet, or of the whole VPC.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowLogDecl {
    /// `vm:NAME` (its ENIs), `subnet:NAME` (every ENI in it) or `vpc`.
    pub of: Spanned<String>,
    /// Aggregation interval, s (EC2: 60 or 600; 1 to 600 here; default 60).
    pub interval_s: Option<Spanned<u64>>,
}

/// EC2's quotas (each absent: EC2's default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasDecl {
    /// Security groups per ENI (5, up to 16).
    pub security_groups_per_eni: Option<usize>,
    /// Rules per direction of a security group (60).
    pub rules_per_security_group: Option<usize>,
    /// Rules per direction of a NACL (20, up to 40).
    pub rules_per_nacl: Option<usize>,
}

/// A security group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupDecl {
    /// Its id (`sg-web`).
    pub name: Spanned<String>,
    /// Inbound rules (default none).
    #[serde(default)]
    pub inbound: Vec<SgRuleDecl>,
    /// Outbound rules (default: EC2's one rule allowing everything out).
    pub outbound: Option<Vec<SgRuleDecl>>,
}

/// A security group rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgRuleDecl {
    /// `tcp`, `udp`, `icmp`, `-1` (all) or a protocol number.
    pub protocol: Spanned<String>,
    /// `443`, `8000-8100` or `all` (TCP and UDP; default all).
    pub ports: Option<Spanned<String>>,
    /// ICMP type (default every type).
    pub icmp_type: Option<u8>,
    /// ICMP code (default every code).
    pub icmp_code: Option<u8>,
    /// Inbound: a CIDR or a security group.
    pub from: Option<Spanned<String>>,
    /// Outbound: a CIDR or a security group.
    pub to: Option<Spanned<String>>,
}

/// A network ACL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaclDecl {
    /// Its id (`acl-db`).
    pub name: Spanned<String>,
    /// Inbound rules (none: everything in is denied).
    #[serde(default)]
    pub inbound: Vec<NaclRuleDecl>,
    /// Outbound rules (none: everything out is denied).
    #[serde(default)]
    pub outbound: Vec<NaclRuleDecl>,
}

/// A network ACL rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaclRuleDecl {
    /// Its number, 1 to 32766 (lowest first).
    pub rule: Spanned<i64>,
    /// `tcp`, `udp`, `icmp`, `-1` (all) or a protocol number.
    pub protocol: Spanned<String>,
    /// `443`, `1024-65535` or `all` (default all).
    pub ports: Option<Spanned<String>>,
    /// ICMP type (default every type).
    pub icmp_type: Option<u8>,
    /// ICMP code (default every code).
    pub icmp_code: Option<u8>,
    /// The remote prefix.
    pub cidr: Spanned<String>,
    /// `allow` or `deny`.
    pub action: Spanned<String>,
}

/// How `run` builds hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// PFs per host.
    pub pfs_per_host: u16,
    /// VFs each PF enables.
    pub vfs_per_pf: u16,
    /// Fabric link rate between two hosts, Gbps.
    pub link_gbps: f64,
    /// Width of one throughput sample, ms.
    pub sample_ms: u64,
    /// Share of SRD (EFA) packets the fabric loses, 0 to 0.5; SRD retransmits them.
    pub efa_loss: f64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self { pfs_per_host: 1, vfs_per_pf: 16, link_gbps: 100.0, sample_ms: 100, efa_loss: 0.0 }
    }
}

/// A placement group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDecl {
    /// Its name.
    pub name: Spanned<String>,
    /// `cluster`, `spread` or `partition`.
    pub strategy: Spanned<String>,
    /// Partitions per AZ (partition groups).
    pub partitions: Option<u8>,
    /// `rack` (default) or `host` (spread groups).
    pub level: Option<SpreadLevel>,
}

/// A subnet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetDecl {
    /// Its name.
    pub name: Spanned<String>,
    /// Its AZ.
    pub az: Spanned<String>,
    /// Its prefix, `a.b.c.d/n` (n from 16 to 28, as in a VPC).
    pub cidr: Spanned<String>,
    /// Its network ACL (default the VPC's `acl-default`, which allows everything).
    pub nacl: Option<Spanned<String>>,
}

/// One or more VMs of a type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDecl {
    /// The name (with `-0`, `-1`, ... appended when `count` is given).
    pub name: Spanned<String>,
    /// Instance type.
    #[serde(rename = "type")]
    pub instance_type: Spanned<String>,
    /// How many, launched in one request.
    pub count: Option<u32>,
    /// Placement group.
    pub group: Option<Spanned<String>>,
    /// AZ.
    pub az: Option<Spanned<String>>,
    /// Partition number (partition groups).
    pub partition: Option<u8>,
    /// The primary ENI's subnet (its AZ is the VM's).
    pub subnet: Option<Spanned<String>>,
    /// The primary ENI's I/O path: `sriov` (default), `emulated` or `efa`.
    pub path: Option<Spanned<String>>,
    /// MTU of its interfaces (default 9001, as inside a VPC).
    pub mtu: Option<Spanned<u16>>,
    /// Queue pairs per ENI (default 1).
    pub queues: Option<Spanned<u16>>,
    /// How its driver learns of received frames: `interrupt` (moderated, ENA's default) or
    /// `poll`.
    pub rx: Option<Spanned<String>>,
    /// Seconds full burst credits last ("up to" instance types; default 300).
    pub burst_s: Option<Spanned<f64>>,
    /// The primary ENI's source/destination check (default on).
    pub src_dst_check: Option<bool>,
    /// The primary ENI's security groups (default the VPC's `default`).
    pub security_groups: Option<Vec<Spanned<String>>>,
    /// Where its clients' source ports come from: `linux` (32768-60999, default), `windows`
    /// (49152-65535) or `nat-gateway` (1024-65535).
    pub ephemeral_ports: Option<Spanned<String>>,
    /// TCP ports a process listens on (default: every port a TCP flow to it names); a SYN to
    /// any other is answered with RST, "connection refused".
    pub listens: Option<Vec<Spanned<u16>>>,
    /// SYN retries of its TCP clients, Linux's `net.ipv4.tcp_syn_retries` (default 6: a
    /// connection nobody answers times out after 127 s; 1 gives up after 3 s).
    pub tcp_syn_retries: Option<Spanned<u32>>,
}

/// A secondary ENI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EniDecl {
    /// Its name.
    pub name: Spanned<String>,
    /// Its subnet (default: the subnet of the VM it attaches to).
    pub subnet: Option<Spanned<String>>,
    /// The VM it attaches to at launch.
    pub vm: Spanned<String>,
    /// Its I/O path (default `sriov`).
    pub path: Option<Spanned<String>>,
    /// Secondary private addresses.
    #[serde(default)]
    pub ips: Vec<Spanned<String>>,
    /// Source/destination check (default on).
    pub src_dst_check: Option<bool>,
    /// Its security groups (default the VPC's `default`).
    pub security_groups: Option<Vec<Spanned<String>>>,
}

/// Flows from every VM `from` matches to every VM `to` matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDecl {
    /// A VM name, or a prefix ending in `*`.
    pub from: Spanned<String>,
    /// A VM name, or a prefix ending in `*`.
    pub to: Spanned<String>,
    /// Offered rate per flow, Gbps (`plan`: the demand; absent: elastic; `run` offers the
    /// flow's cap when absent).
    pub gbps: Option<Spanned<f64>>,
    /// ENA Express (SRD).
    #[serde(default)]
    pub srd: bool,
    /// `udp` (default: datagrams) or `tcp` (a connection: handshake, data, close).
    pub protocol: Option<Spanned<String>>,
    /// Frame length in bytes, 60 (TCP: 70) up to the MTU plus 14 (default 1514, or 9015 with
    /// jumbo frames).
    pub frame: Option<Spanned<usize>>,
    /// UDP or TCP destination port (default 9000).
    pub dst_port: Option<u16>,
    /// The path to use: the sender's and receiver's first ENI on it (default: primary ENIs).
    pub path: Option<Spanned<String>>,
    /// When it starts, seconds into the run.
    pub start_s: Option<Spanned<f64>>,
    /// When it stops.
    pub stop_s: Option<Spanned<f64>>,
    /// Parallel flows per pair of VMs (distinct UDP source ports), each at `gbps`.
    pub parallel: Option<Spanned<u16>>,
    /// `periodic` (default) or `poisson` frame arrivals (virtual-time runs; seeded per flow).
    pub arrivals: Option<Spanned<String>>,
    /// `stream` (default) or `ping-pong` (each frame or message answered by the receiver,
    /// round trips reported; virtual-time runs).
    pub pattern: Option<Spanned<String>>,
}

/// A failure during `run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureDecl {
    /// When, seconds into the run.
    pub at_s: Spanned<f64>,
    /// Every VM in the rack of this VM crashes.
    pub rack_of: Spanned<String>,
}
