//! Scenarios: one TOML schema for `vnic-lab plan` (placement and max-min rates, no packets) and
//! `vnic-lab run` (a live simulation of the same fleet, packets through the simulated NICs).
//!
//! Loading a scenario parses it (unknown keys and wrong types are errors at their line and
//! column), checks every value and reference (a flow to an unknown VM, a subnet in no AZ, an
//! ENI on a VM that does not exist, a frame larger than the VM's MTU, ...) and places the fleet
//! with `placement`'s rules, so that an impossible placement is an error naming the VM. The
//! schema is documented in the README, with a worked example in `scenarios/default.toml`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use hypervisor_sim::sim::CostModel;
use hypervisor_sim::sim::traffic::{Arrivals, EFA_HEADER_BYTES, Pattern};
use placement::{
    Fleet, FlowDemand, GeneratedTopology, InstanceId, InstanceType, LaunchRequest, NetworkModel,
    PlacementStrategy, SpreadLevel,
};
use serde::Deserialize;
use toml::Spanned;

/// Most hosts `run --live` simulates (each is at least one engine thread).
pub const MAX_LIVE_HOSTS: usize = 16;
/// Most VMs `run --live` simulates (each is a thread).
pub const MAX_LIVE_VMS: usize = 64;
/// Most hosts a virtual-time `run` simulates.
pub const MAX_VIRTUAL_HOSTS: usize = 1_000;
/// Most VMs a virtual-time `run` simulates.
pub const MAX_VIRTUAL_VMS: usize = 10_000;
/// Longest `run`, seconds.
pub const MAX_DURATION_S: f64 = 600.0;

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
    /// `udp` (the only protocol the traffic generator speaks).
    pub protocol: Option<Spanned<String>>,
    /// Frame length in bytes, 60 up to the MTU plus 14 (default 1514, or 9015 with jumbo
    /// frames).
    pub frame: Option<Spanned<usize>>,
    /// UDP destination port (default 9000).
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

/// A scenario error, located in its file where it can be.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// Line and column, 1-based.
    pub at: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// An I/O path as a scenario names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PathName {
    /// Emulated NIC.
    Emulated,
    /// SR-IOV VF.
    Sriov,
    /// EFA: an SR-IOV VF plus OS-bypass SRD queue pairs (virtual-time runs).
    Efa,
}

impl PathName {
    /// As the hypervisor knows it.
    pub fn io_path(self) -> hypervisor_sim::guest::IoPath {
        match self {
            PathName::Emulated => hypervisor_sim::guest::IoPath::Emulated,
            PathName::Sriov => hypervisor_sim::guest::IoPath::SrIov,
            PathName::Efa => hypervisor_sim::guest::IoPath::Efa,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            PathName::Emulated => "emulated",
            PathName::Sriov => "sriov",
            PathName::Efa => "efa",
        }
    }
}

/// A subnet, resolved.
#[derive(Debug, Clone)]
pub struct SubnetPlan {
    /// Name.
    pub name: String,
    /// AZ.
    pub az: String,
    /// Network.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// One VM, resolved and placed.
#[derive(Debug, Clone)]
pub struct VmPlan {
    /// Name.
    pub name: String,
    /// Its placement.
    pub id: InstanceId,
    /// Instance type.
    pub instance_type: InstanceType,
    /// Primary ENI subnet.
    pub subnet: String,
    /// Primary ENI path.
    pub path: PathName,
    /// MTU.
    pub mtu: u16,
    /// Queue pairs per ENI.
    pub queues: u16,
    /// Moderated RX interrupts (else polling).
    pub rx_interrupts: bool,
    /// Burst credit duration, s.
    pub burst_s: f64,
    /// Primary ENI source/destination check.
    pub src_dst_check: bool,
    /// Cluster group name, if in one.
    pub cluster_group: Option<String>,
}

/// A secondary ENI, resolved.
#[derive(Debug, Clone)]
pub struct EniPlan {
    /// Name.
    pub name: String,
    /// Subnet.
    pub subnet: String,
    /// Index into [`Placed::vms`].
    pub vm: usize,
    /// Path.
    pub path: PathName,
    /// Secondary addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Source/destination check.
    pub src_dst_check: bool,
}

/// One flow, resolved.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    /// Sender (index into [`Placed::vms`]).
    pub from: usize,
    /// Receiver.
    pub to: usize,
    /// Offered / demanded rate, Gbps (`None`: elastic).
    pub gbps: Option<f64>,
    /// ENA Express.
    pub srd: bool,
    /// Frame length.
    pub frame: usize,
    /// UDP destination port.
    pub dst_port: u16,
    /// Path (`None`: primary ENIs).
    pub path: Option<PathName>,
    /// Start and stop, s.
    pub start_s: f64,
    /// Stop, s (`None`: the end of the run).
    pub stop_s: Option<f64>,
    /// Which `[[flows]]` entry it came from (0-based), for the report.
    pub decl: usize,
    /// How its frames fall due.
    pub arrivals: Arrivals,
    /// An EFA flow (SRD messages of `frame` bytes) rather than UDP frames.
    pub efa: bool,
    /// One way, or every frame or message answered (round trips in the report).
    pub pattern: Pattern,
}

/// A failure, resolved.
#[derive(Debug, Clone)]
pub struct FailurePlan {
    /// When, s.
    pub at_s: f64,
    /// The VMs that crash.
    pub vms: Vec<usize>,
    /// The rack, for the report.
    pub rack: u32,
}

/// A scenario, checked and placed.
#[derive(Debug)]
pub struct Placed {
    /// Its name.
    pub name: String,
    /// The fleet, with every VM placed.
    pub fleet: Fleet,
    /// The network model.
    pub network: NetworkModel,
    /// Run settings.
    pub run: RunSettings,
    /// The scenario's seed.
    pub seed: u64,
    /// Virtual-time costs.
    pub costs: CostModel,
    /// Seconds of traffic.
    pub duration_s: f64,
    /// Subnets.
    pub subnets: Vec<SubnetPlan>,
    /// VMs in declaration order.
    pub vms: Vec<VmPlan>,
    /// Secondary ENIs.
    pub enis: Vec<EniPlan>,
    /// Flows.
    pub flows: Vec<FlowPlan>,
    /// Failures.
    pub failures: Vec<FailurePlan>,
}

impl Placed {
    /// The flows as the planner takes them.
    pub fn demands(&self) -> Vec<FlowDemand> {
        self.flows
            .iter()
            .map(|f| FlowDemand {
                src: self.vms[f.from].id,
                dst: self.vms[f.to].id,
                demand_gbps: f.gbps.unwrap_or(f64::INFINITY),
                srd: f.srd,
            })
            .collect()
    }

    /// A VM by name.
    pub fn vm_index(&self, name: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.name == name)
    }
}

/// Line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The largest scenario file read, bytes: a scenario is a short text (the largest shipped is a
/// few KiB), and reading stops here rather than filling memory (`/dev/zero` is not a scenario).
pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;

/// Reads, checks and places the scenario at `path`.
pub fn load_file(path: &std::path::Path) -> Result<Placed, ScenarioError> {
    use std::io::Read;
    let file = path.display().to_string();
    let fail = |message: String| ScenarioError { file: file.clone(), at: None, message };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCENARIO_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(fail(format!(
            "is larger than {} MiB: a scenario is a short TOML file",
            MAX_SCENARIO_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "is not UTF-8 text (byte {}): a scenario is a TOML file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    load(&file, &text)
}

fn parse_path(s: &Spanned<String>, err: &Err<'_>) -> Result<PathName, ScenarioError> {
    match s.get_ref().as_str() {
        "sriov" => Ok(PathName::Sriov),
        "emulated" => Ok(PathName::Emulated),
        "efa" => Ok(PathName::Efa),
        other => Err(err.at(
            s.span(),
            format!("unknown path `{other}`: expected `sriov`, `emulated` or `efa`"),
        )),
    }
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((ip, prefix))
}

struct Err<'a> {
    file: &'a str,
    text: &'a str,
}

impl Err<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            at: Some(line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    /// An error at the `index`-th table headed `header` (`[network]`, `[[instance_types]]`), for
    /// tables deserialised without positions; the whole file if it has no such header.
    fn at_table(&self, header: &str, index: usize, message: impl Into<String>) -> ScenarioError {
        let mut offset = 0;
        let found = self.text.lines().filter_map(|line| {
            let at = offset;
            offset += line.len() + 1;
            (line.trim() == header).then_some(at)
        });
        match found.into_iter().nth(index) {
            Some(at) => self.at(at..at, message),
            None => self.whole(message),
        }
    }

    fn whole(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError { file: self.file.to_string(), at: None, message: message.into() }
    }

    /// An optional integer setting within `range` (`default` when absent), or an error at it.
    fn ranged<T>(
        &self,
        value: &Option<Spanned<T>>,
        name: &str,
        range: std::ops::RangeInclusive<T>,
        default: T,
    ) -> Result<T, ScenarioError>
    where
        T: Copy + PartialOrd + std::fmt::Display,
    {
        match value {
            Some(v) if !range.contains(v.get_ref()) => Err(self.at(
                v.span(),
                format!("{name} {} is not {} to {}", v.get_ref(), range.start(), range.end()),
            )),
            Some(v) => Ok(*v.get_ref()),
            None => Ok(default),
        }
    }
}

/// Checks and places a scenario given as text (`file` names it in errors).
pub fn load(file: &str, text: &str) -> Result<Placed, ScenarioError> {
    let err = Err { file, text };
    let scenario: Scenario = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => err.at(span, e.message()),
        None => err.whole(e.message()),
    })?;
    let s = &scenario;
    if !(0.0..=1.0).contains(&s.fragmentation) {
        return Err(err.whole(format!("fragmentation {} is not between 0 and 1", s.fragmentation)));
    }
    let duration_s = match &s.duration_s {
        Some(d)
            if !(d.get_ref().is_finite()
                && *d.get_ref() > 0.0
                && *d.get_ref() <= MAX_DURATION_S) =>
        {
            return Err(err.at(
                d.span(),
                format!("duration_s {} is not in (0, {MAX_DURATION_S}]", d.get_ref()),
            ));
        }
        Some(d) => *d.get_ref(),
        None => 3.0,
    };
    let r = &s.run;
    if r.pfs_per_host == 0 || r.pfs_per_host > 8 {
        return Err(err.whole(format!("run.pfs_per_host {} is not 1 to 8", r.pfs_per_host)));
    }
    if r.vfs_per_pf == 0 || r.vfs_per_pf > 256 {
        return Err(err.whole(format!("run.vfs_per_pf {} is not 1 to 256", r.vfs_per_pf)));
    }
    if !(r.link_gbps.is_finite() && r.link_gbps > 0.0) {
        return Err(err.whole(format!("run.link_gbps {} is not a rate", r.link_gbps)));
    }
    if !(10..=10_000).contains(&r.sample_ms) {
        return Err(err.whole(format!("run.sample_ms {} is not 10 to 10000", r.sample_ms)));
    }
    if !(0.0..=0.5).contains(&r.efa_loss) {
        return Err(err.whole(format!("run.efa_loss {} is not 0 to 0.5", r.efa_loss)));
    }
    s.network.check().map_err(|e| err.at_table("[network]", 0, e))?;
    let topology = s.topology.build().map_err(|e| err.whole(format!("topology: {e}")))?;
    let mut types = InstanceType::catalog();
    for (i, t) in s.instance_types.iter().enumerate() {
        t.check().map_err(|e| err.at_table("[[instance_types]]", i, e))?;
        if types.iter().any(|c| c.name == t.name) {
            return Err(err.at_table(
                "[[instance_types]]",
                i,
                format!("instance type {} is defined twice", t.name),
            ));
        }
        types.push(t.clone());
    }
    let az_names: Vec<String> = topology.azs.iter().map(|a| a.name.clone()).collect();

    // Subnets: declared, or one per AZ.
    let mut subnets: Vec<SubnetPlan> = Vec::new();
    for d in &s.subnets {
        if !az_names.contains(d.az.get_ref()) {
            return Err(err.at(
                d.az.span(),
                format!("subnet {}: no AZ named `{}`", d.name.get_ref(), d.az.get_ref()),
            ));
        }
        let Some((network, prefix)) = parse_cidr(d.cidr.get_ref()) else {
            return Err(err.at(d.cidr.span(), format!("`{}` is not a.b.c.d/n", d.cidr.get_ref())));
        };
        if !(16..=28).contains(&prefix) {
            return Err(err
                .at(d.cidr.span(), format!("a VPC subnet's prefix is /16 to /28, not /{prefix}")));
        }
        if subnets.iter().any(|x| x.name == *d.name.get_ref()) {
            return Err(
                err.at(d.name.span(), format!("subnet `{}` is defined twice", d.name.get_ref()))
            );
        }
        subnets.push(SubnetPlan {
            name: d.name.get_ref().clone(),
            az: d.az.get_ref().clone(),
            network,
            prefix,
        });
    }
    if s.subnets.is_empty() {
        for (i, az) in az_names.iter().enumerate() {
            subnets.push(SubnetPlan {
                name: az.clone(),
                az: az.clone(),
                network: Ipv4Addr::new(10, (i % 256) as u8, 0, 0),
                prefix: 16,
            });
        }
    }

    let mut fleet = Fleet::new(topology, types.clone());
    if s.fragmentation > 0.0 {
        fleet.fragment(s.seed, s.fragmentation);
    }
    let mut cluster_groups: Vec<String> = Vec::new();
    for g in &s.groups {
        let strategy = match (g.strategy.get_ref().as_str(), g.partitions) {
            ("cluster", None) => PlacementStrategy::Cluster,
            ("spread", None) => PlacementStrategy::Spread { level: g.level.unwrap_or_default() },
            ("partition", Some(partitions)) => PlacementStrategy::Partition { partitions },
            ("partition", None) => {
                return Err(err.at(g.strategy.span(), "a partition group needs `partitions`"));
            }
            ("cluster" | "spread", Some(_)) => {
                return Err(err.at(g.strategy.span(), "only partition groups take `partitions`"));
            }
            (other, _) => {
                return Err(err.at(
                    g.strategy.span(),
                    format!("unknown strategy `{other}`: expected cluster, spread or partition"),
                ));
            }
        };
        if strategy == PlacementStrategy::Cluster {
            cluster_groups.push(g.name.get_ref().clone());
        }
        fleet
            .create_group(g.name.get_ref(), None, strategy)
            .map_err(|e| err.at(g.name.span(), e.to_string()))?;
    }

    let mut vms: Vec<VmPlan> = Vec::new();
    for d in &s.vms {
        let name_at = d.name.span();
        let Some(ty) = types.iter().find(|t| t.name == *d.instance_type.get_ref()) else {
            return Err(err.at(
                d.instance_type.span(),
                format!("unknown instance type `{}`", d.instance_type.get_ref()),
            ));
        };
        let subnet = match &d.subnet {
            Some(sn) => {
                let Some(found) = subnets.iter().find(|x| x.name == *sn.get_ref()) else {
                    return Err(err.at(sn.span(), format!("no subnet named `{}`", sn.get_ref())));
                };
                if let Some(az) = &d.az
                    && *az.get_ref() != found.az
                {
                    return Err(err.at(
                        az.span(),
                        format!(
                            "az `{}` but subnet `{}` is in {}",
                            az.get_ref(),
                            found.name,
                            found.az
                        ),
                    ));
                }
                Some(found.clone())
            }
            None => None,
        };
        if let Some(az) = &d.az
            && !az_names.contains(az.get_ref())
        {
            return Err(err.at(az.span(), format!("no AZ named `{}`", az.get_ref())));
        }
        let path = match &d.path {
            Some(p) => parse_path(p, &err)?,
            None => PathName::Sriov,
        };
        let mtu = err.ranged(&d.mtu, "mtu", 576..=9001, 9001)?;
        let queues = err.ranged(&d.queues, "queues", 1..=32, 1)?;
        let rx_interrupts = match &d.rx {
            None => true,
            Some(r) => match r.get_ref().as_str() {
                "interrupt" => true,
                "poll" => false,
                other => {
                    return Err(
                        err.at(r.span(), format!("rx `{other}`: expected `interrupt` or `poll`"))
                    );
                }
            },
        };
        let burst_s = match &d.burst_s {
            Some(b) if !(b.get_ref().is_finite() && *b.get_ref() >= 0.0) => {
                return Err(err.at(b.span(), format!("burst_s {} is not a duration", b.get_ref())));
            }
            Some(b) => *b.get_ref(),
            None => 300.0,
        };
        if d.count == Some(0) {
            return Err(err.at(name_at.clone(), "count 0: a VM entry launches at least one"));
        }
        let request = LaunchRequest {
            instance_type: ty.name.clone(),
            count: d.count.unwrap_or(1),
            group: d.group.as_ref().map(|g| g.get_ref().clone()),
            region: None,
            az: subnet
                .as_ref()
                .map(|x| x.az.clone())
                .or_else(|| d.az.as_ref().map(|a| a.get_ref().clone())),
            partition: d.partition,
        };
        let ids = fleet.launch(&request).map_err(|e| {
            let at = match (&d.group, e.to_string().contains("does not exist")) {
                (Some(g), true) => g.span(),
                _ => name_at.clone(),
            };
            err.at(at, format!("vm {}: {e}", d.name.get_ref()))
        })?;
        for (k, id) in ids.into_iter().enumerate() {
            let name = match d.count {
                Some(_) => format!("{}-{k}", d.name.get_ref()),
                None => d.name.get_ref().clone(),
            };
            if vms.iter().any(|v| v.name == name) {
                return Err(err.at(name_at.clone(), format!("VM name `{name}` is used twice")));
            }
            let inst = fleet.instance(id).map_err(|e| err.at(name_at.clone(), e.to_string()))?;
            let t = fleet.topology();
            let az = t.azs[t.az_of(inst.host).index()].name.clone();
            let subnet = match &subnet {
                Some(x) => x.name.clone(),
                None => match subnets.iter().find(|x| x.az == az) {
                    Some(x) => x.name.clone(),
                    None => {
                        return Err(err.at(
                            name_at.clone(),
                            format!("vm {name} landed in {az}, which has no subnet"),
                        ));
                    }
                },
            };
            let cluster_group = d
                .group
                .as_ref()
                .map(|g| g.get_ref().clone())
                .filter(|g| cluster_groups.contains(g));
            vms.push(VmPlan {
                name,
                id,
                instance_type: ty.clone(),
                subnet,
                path,
                mtu,
                queues,
                rx_interrupts,
                burst_s,
                src_dst_check: d.src_dst_check.unwrap_or(true),
                cluster_group,
            });
        }
    }

    let mut enis = Vec::new();
    for d in &s.enis {
        let Some(vm) = vms.iter().position(|v| v.name == *d.vm.get_ref()) else {
            return Err(err.at(d.vm.span(), format!("no VM named `{}`", d.vm.get_ref())));
        };
        let subnet = match &d.subnet {
            Some(sn) => match subnets.iter().find(|x| x.name == *sn.get_ref()) {
                Some(found) => {
                    let vm_az =
                        &subnets.iter().find(|x| x.name == vms[vm].subnet).map(|x| x.az.clone());
                    if vm_az.as_deref() != Some(found.az.as_str()) {
                        return Err(err.at(
                            sn.span(),
                            format!(
                                "eni {}: subnet {} is in {}, VM {} in {}: an ENI attaches only \
                                 within its AZ",
                                d.name.get_ref(),
                                found.name,
                                found.az,
                                vms[vm].name,
                                vm_az.as_deref().unwrap_or("?")
                            ),
                        ));
                    }
                    found.name.clone()
                }
                None => {
                    return Err(err.at(sn.span(), format!("no subnet named `{}`", sn.get_ref())));
                }
            },
            None => vms[vm].subnet.clone(),
        };
        let path = match &d.path {
            Some(p) => parse_path(p, &err)?,
            None => PathName::Sriov,
        };
        let mut ips = Vec::new();
        for ip in &d.ips {
            match ip.get_ref().parse::<Ipv4Addr>() {
                Ok(a) => ips.push(a),
                Err(_) => {
                    return Err(
                        err.at(ip.span(), format!("`{}` is not an IPv4 address", ip.get_ref()))
                    );
                }
            }
        }
        if enis.iter().any(|e: &EniPlan| e.name == *d.name.get_ref()) {
            return Err(
                err.at(d.name.span(), format!("ENI `{}` is defined twice", d.name.get_ref()))
            );
        }
        enis.push(EniPlan {
            name: d.name.get_ref().clone(),
            subnet,
            vm,
            path,
            ips,
            src_dst_check: d.src_dst_check.unwrap_or(true),
        });
    }

    let matching = |pattern: &Spanned<String>| -> Result<Vec<usize>, ScenarioError> {
        let p = pattern.get_ref();
        let found: Vec<usize> = match p.strip_suffix('*') {
            Some(prefix) => (0..vms.len()).filter(|&i| vms[i].name.starts_with(prefix)).collect(),
            None => vms.iter().position(|v| v.name == *p).into_iter().collect(),
        };
        if found.is_empty() {
            return Err(err.at(pattern.span(), format!("no VM named `{p}`")));
        }
        Ok(found)
    };
    let mut flows = Vec::new();
    for (decl, f) in s.flows.iter().enumerate() {
        if let Some(g) = &f.gbps
            && !(g.get_ref().is_finite() && *g.get_ref() > 0.0 && *g.get_ref() <= 400.0)
        {
            return Err(err.at(g.span(), format!("gbps {} is not a rate in (0, 400]", g.get_ref())));
        }
        if let Some(p) = &f.protocol
            && p.get_ref() != "udp"
        {
            return Err(err.at(
                p.span(),
                format!("protocol `{}`: the traffic generator speaks `udp` only", p.get_ref()),
            ));
        }
        let path = f.path.as_ref().map(|p| parse_path(p, &err)).transpose()?;
        let arrivals = match &f.arrivals {
            None => Arrivals::Periodic,
            Some(a) if a.get_ref() == "periodic" => Arrivals::Periodic,
            Some(a) if a.get_ref() == "poisson" => Arrivals::Poisson,
            Some(a) => {
                return Err(err.at(
                    a.span(),
                    format!("arrivals `{}` is not `periodic` or `poisson`", a.get_ref()),
                ));
            }
        };
        let pattern = match &f.pattern {
            None => Pattern::Stream,
            Some(p) if p.get_ref() == "stream" => Pattern::Stream,
            Some(p) if p.get_ref() == "ping-pong" => Pattern::PingPong,
            Some(p) => {
                return Err(err.at(
                    p.span(),
                    format!("pattern `{}` is not `stream` or `ping-pong`", p.get_ref()),
                ));
            }
        };
        let parallel = err.ranged(&f.parallel, "parallel", 1..=1024, 1)?;
        let start_s = f.start_s.as_ref().map_or(0.0, |s| *s.get_ref());
        if let Some(st) = &f.start_s
            && !(st.get_ref().is_finite() && *st.get_ref() >= 0.0 && *st.get_ref() < duration_s)
        {
            return Err(err.at(
                st.span(),
                format!("start_s {} is not within the run's {duration_s} s", st.get_ref()),
            ));
        }
        if let Some(sp) = &f.stop_s
            && !(sp.get_ref().is_finite() && *sp.get_ref() > start_s)
        {
            return Err(err
                .at(sp.span(), format!("stop_s {} is not after start_s {start_s}", sp.get_ref())));
        }
        if let Some(sp) = &f.stop_s
            && *sp.get_ref() > duration_s
        {
            return Err(err.at(
                sp.span(),
                format!(
                    "stop_s {} is after the run ends ({duration_s} s): lower it or raise \
                     duration_s",
                    sp.get_ref()
                ),
            ));
        }
        let before = flows.len();
        for from in matching(&f.from)? {
            for to in matching(&f.to)? {
                if from == to {
                    // `web-*` to `web-*` means every pair of two different VMs.
                    continue;
                }
                let efa = path.unwrap_or(vms[from].path) == PathName::Efa;
                if efa {
                    check_efa_pair(&err, f, &vms[from], &vms[to], &enis, from, to)?;
                }
                let mtu = vms[from].mtu.min(vms[to].mtu);
                let largest = usize::from(mtu) + 14;
                let frame = match &f.frame {
                    Some(fr) if efa && !(EFA_HEADER_BYTES..=EFA_MTU).contains(fr.get_ref()) => {
                        return Err(err.at(
                            fr.span(),
                            format!(
                                "frame {} B: EFA messages are {EFA_HEADER_BYTES} to {EFA_MTU} B",
                                fr.get_ref()
                            ),
                        ));
                    }
                    Some(fr) if efa => *fr.get_ref(),
                    None if efa => EFA_MTU,
                    Some(fr) if !(60..=largest).contains(fr.get_ref()) => {
                        return Err(err.at(
                            fr.span(),
                            format!(
                                "frame {} B: {} -> {} carries 60 to {largest} B (MTU {mtu} + 14)",
                                fr.get_ref(),
                                vms[from].name,
                                vms[to].name
                            ),
                        ));
                    }
                    Some(fr) => *fr.get_ref(),
                    None => largest.min(9015),
                };
                if let (Some(p), Some(span)) = (path, f.path.as_ref().map(|p| p.span())) {
                    for v in [from, to] {
                        let has = vms[v].path == p || enis.iter().any(|e| e.vm == v && e.path == p);
                        if !has {
                            return Err(err.at(
                                span.clone(),
                                format!("vm {} has no ENI on the {} path", vms[v].name, p.as_str()),
                            ));
                        }
                    }
                }
                for _ in 0..parallel {
                    flows.push(FlowPlan {
                        from,
                        to,
                        gbps: f.gbps.as_ref().map(|g| *g.get_ref()),
                        srd: f.srd,
                        frame,
                        dst_port: f.dst_port.unwrap_or(9000),
                        path,
                        start_s,
                        stop_s: f.stop_s.as_ref().map(|s| *s.get_ref()),
                        decl,
                        arrivals,
                        efa,
                        pattern,
                    });
                }
            }
        }
        if flows.len() == before {
            return Err(err.at(
                f.from.span(),
                format!(
                    "flow from `{}` to `{}` has no pair of two different VMs: a VM does not \
                     send to itself",
                    f.from.get_ref(),
                    f.to.get_ref()
                ),
            ));
        }
    }
    check_subnet_room(&err, s, &subnets, &vms, &enis)?;

    let mut failures = Vec::new();
    for d in &s.failures {
        if !(d.at_s.get_ref().is_finite()
            && *d.at_s.get_ref() >= 0.0
            && *d.at_s.get_ref() < duration_s)
        {
            return Err(err.at(
                d.at_s.span(),
                format!("at_s {} is not within the run's {duration_s} s", d.at_s.get_ref()),
            ));
        }
        let Some(victim) = vms.iter().position(|v| v.name == *d.rack_of.get_ref()) else {
            return Err(err.at(d.rack_of.span(), format!("no VM named `{}`", d.rack_of.get_ref())));
        };
        let t = fleet.topology();
        let rack_of = |i: usize| fleet.instance(vms[i].id).map(|inst| t.rack_of(inst.host));
        let rack = rack_of(victim).map_err(|e| err.at(d.rack_of.span(), e.to_string()))?;
        let lost: Vec<usize> =
            (0..vms.len()).filter(|&i| rack_of(i).is_ok_and(|r| r == rack)).collect();
        failures.push(FailurePlan { at_s: *d.at_s.get_ref(), vms: lost, rack: rack.0 });
    }

    let name = s.name.clone().unwrap_or_else(|| {
        std::path::Path::new(file)
            .file_stem()
            .map_or("scenario".into(), |n| n.to_string_lossy().into())
    });
    Ok(Placed {
        name,
        fleet,
        network: s.network.clone(),
        run: s.run.clone(),
        seed: s.seed,
        costs: cost_model(s, &err)?,
        duration_s,
        subnets,
        vms,
        enis,
        flows,
        failures,
    })
}

/// The largest EFA message (one SRD packet).
const EFA_MTU: usize = hypervisor_sim::vnic::efa::EFA_MTU;

/// EC2's EFA rules for a flow between two VMs: both ends have an EFA interface, in one subnet.
/// Every subnet has an address for each ENI and secondary address placed in it, counted as
/// the cloud gives them (AWS reserves five of every subnet): one checker for `plan` and `run`.
fn check_subnet_room(
    err: &Err<'_>,
    s: &Scenario,
    subnets: &[SubnetPlan],
    vms: &[VmPlan],
    enis: &[EniPlan],
) -> Result<(), ScenarioError> {
    for subnet in subnets {
        let primaries = vms.iter().filter(|v| v.subnet == subnet.name).count() as u64;
        let secondary: u64 =
            enis.iter().filter(|e| e.subnet == subnet.name).map(|e| 1 + e.ips.len() as u64).sum();
        let needed = primaries + secondary;
        let usable = hypervisor_sim::eni::Subnet::usable_addresses(subnet.prefix);
        if needed > usable {
            let message = format!(
                "subnet {} ({}/{}) has {usable} usable addresses (AWS reserves {}) for {needed} \
                 ({primaries} VMs' primary ENIs, {secondary} for secondary ENIs and their \
                 addresses): use a shorter prefix",
                subnet.name,
                subnet.network,
                subnet.prefix,
                hypervisor_sim::eni::AWS_RESERVED_ADDRESSES,
            );
            let declared = s.subnets.iter().find(|d| *d.name.get_ref() == subnet.name);
            return Err(match declared {
                Some(d) => err.at(d.cidr.span(), message),
                None => err.whole(message),
            });
        }
    }
    Ok(())
}

fn check_efa_pair(
    err: &Err<'_>,
    f: &FlowDecl,
    a: &VmPlan,
    b: &VmPlan,
    enis: &[EniPlan],
    ia: usize,
    ib: usize,
) -> Result<(), ScenarioError> {
    for (v, i) in [(a, ia), (b, ib)] {
        let has =
            v.path == PathName::Efa || enis.iter().any(|e| e.vm == i && e.path == PathName::Efa);
        if !has {
            return Err(err.at(
                f.to.span(),
                format!("vm {} has no EFA interface (path = \"efa\") for an EFA flow", v.name),
            ));
        }
    }
    if a.subnet != b.subnet {
        return Err(err.at(
            f.to.span(),
            format!(
                "EFA traffic stays in one subnet: {} is in `{}`, {} in `{}`",
                a.name, a.subnet, b.name, b.subnet
            ),
        ));
    }
    Ok(())
}

/// Most any one cost may be, ns or ps per byte: one second.
const MAX_COST: i64 = 1_000_000_000;

/// The default costs with the scenario's `[costs]` applied, each name and value checked.
fn cost_model(s: &Scenario, err: &Err<'_>) -> Result<CostModel, ScenarioError> {
    let mut costs = CostModel::default();
    for (name, value) in &s.costs {
        let v = *value.get_ref();
        if !(0..=MAX_COST).contains(&v) {
            return Err(err.at(
                value.span(),
                format!("costs.{} = {v} is not 0 to {MAX_COST}", name.get_ref()),
            ));
        }
        if !costs.set(name.get_ref(), v as u64) {
            let known: Vec<&str> = costs.fields().iter().map(|(n, _)| *n).collect();
            return Err(err.at(
                name.span(),
                format!("costs.{} is not a cost (the costs: {})", name.get_ref(), known.join(", ")),
            ));
        }
    }
    Ok(costs)
}

/// Why a placed scenario cannot be run live.
pub fn check_runnable(placed: &Placed, live: bool) -> Result<(), String> {
    let hosts: std::collections::BTreeSet<u32> = placed
        .vms
        .iter()
        .filter_map(|v| placed.fleet.instance(v.id).ok().map(|i| i.host.0))
        .collect();
    let (max_hosts, max_vms, mode) = if live {
        (MAX_LIVE_HOSTS, MAX_LIVE_VMS, "`run --live` (a thread per VM and engine)")
    } else {
        (MAX_VIRTUAL_HOSTS, MAX_VIRTUAL_VMS, "`run`")
    };
    if hosts.len() > max_hosts {
        return Err(format!(
            "the VMs landed on {} hosts; {mode} simulates at most {max_hosts} (use `plan` for \
             fleets)",
            hosts.len()
        ));
    }
    if placed.vms.len() > max_vms {
        return Err(format!(
            "{} VMs; {mode} simulates at most {max_vms} (use `plan` for fleets)",
            placed.vms.len()
        ));
    }
    if placed.flows.is_empty() {
        return Err("no flows: nothing to run".into());
    }
    let mut per_host: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, v) in placed.vms.iter().enumerate() {
        let Ok(inst) = placed.fleet.instance(v.id) else { continue };
        let enis = 1 + placed.enis.iter().filter(|e| e.vm == i).count();
        *per_host.entry(inst.host.0).or_default() += enis;
    }
    let vfs = usize::from(placed.run.vfs_per_pf) * usize::from(placed.run.pfs_per_host);
    if let Some((host, n)) = per_host.iter().find(|&(_, &n)| n + 1 > vfs) {
        return Err(format!(
            "host {host} carries {n} ENIs but has {vfs} VFs (one more is kept for the emulated \
             NIC's backend): raise run.vfs_per_pf"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../scenarios/default.toml");

    fn error(text: &str) -> String {
        match load("s.toml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn replaced(from: &str, to: &str) -> String {
        assert!(DEFAULT.contains(from), "the default scenario has no `{from}`");
        DEFAULT.replacen(from, to, 1)
    }

    #[test]
    fn the_default_scenario_loads_and_places() {
        let p = load("default.toml", DEFAULT).unwrap();
        assert_eq!(p.vms.len(), 6);
        assert_eq!(p.flows.len(), 5);
        let hosts: std::collections::BTreeSet<u32> =
            p.vms.iter().map(|v| p.fleet.instance(v.id).unwrap().host.0).collect();
        assert_eq!(hosts.len(), 2, "two hosts");
        assert_eq!(p.vms.iter().filter(|v| v.path == PathName::Emulated).count(), 1);
        check_runnable(&p, true).unwrap();
    }

    /// Each malformed scenario gets one message naming the file and, where it can, the line
    /// and column of the culprit.
    #[test]
    fn thirty_and_more_malformed_scenarios_each_get_a_clear_error() {
        let hpc_line = DEFAULT.lines().position(|l| l == "name = \"hpc\"").unwrap() + 1;
        let cases: Vec<(String, &str)> = vec![
            // Syntax, unknown keys, wrong types.
            ("name = \"x\"\n[topology\n".into(), "s.toml:2:"),
            (replaced("seed = 1", "seed = \"one\""), "invalid type"),
            (replaced("seed = 1", "sede = 1"), "unknown field `sede`"),
            (replaced("duration_s = 3.0", "duration_s = \"long\""), "invalid type"),
            (replaced("duration_s = 3.0", "duration_s = -1.0"), "duration_s -1 is not in"),
            (replaced("duration_s = 3.0", "duration_s = 1000.0"), "is not in (0, 600]"),
            (replaced("racks_per_az = 2", "racks_per_az = \"two\""), "invalid type"),
            (replaced("[run]\n", "[run]\nturbo = true\n"), "unknown field `turbo`"),
            (replaced("vfs_per_pf = 8", "vfs_per_pf = 0"), "run.vfs_per_pf 0"),
            (replaced("vfs_per_pf = 8", "vfs_per_pf = 300"), "run.vfs_per_pf 300"),
            (replaced("link_gbps = 100.0", "link_gbps = 0.0"), "run.link_gbps 0"),
            (replaced("sample_ms = 100", "sample_ms = 1"), "run.sample_ms 1"),
            (
                replaced("strategy = \"cluster\"", "strategy = \"clump\""),
                "unknown strategy `clump`",
            ),
            (replaced("strategy = \"cluster\"", "strategy = \"partition\""), "needs `partitions`"),
            (
                replaced("strategy = \"spread\"", "strategy = \"spread\"\npartitions = 2"),
                "only partition groups",
            ),
            (
                replaced("type = \"m5.large\"", "type = \"m9.huge\""),
                "unknown instance type `m9.huge`",
            ),
            (replaced("type = \"m5.large\"", "type = 5"), "invalid type"),
            (
                replaced("count = 2\ngroup = \"hpc\"", "count = 2\ngroup = \"nope\""),
                "does not exist",
            ),
            (replaced("count = 2\ngroup = \"hpc\"", "count = 0\ngroup = \"hpc\""), "count 0"),
            (
                replaced("count = 2\ngroup = \"hpc\"", "count = 9\ngroup = \"hpc\""),
                "InsufficientInstanceCapacity",
            ),
            (
                replaced("path = \"emulated\"", "path = \"smoke-signals\""),
                "unknown path `smoke-signals`",
            ),
            (replaced("path = \"emulated\"", "path = \"efa\""), "vm web-0 has no EFA interface"),
            (
                replaced(
                    "count = 2\ngroup = \"hpc\"",
                    "count = 2\ngroup = \"hpc\"\npath = \"efa\"",
                ),
                "frame 9015 B: EFA messages are 32 to 8192 B",
            ),
            (
                replaced("frame = 1514", "frame = 1514\narrivals = \"bursty\""),
                "arrivals `bursty` is not `periodic` or `poisson`",
            ),
            (
                replaced("frame = 1514", "frame = 1514\npattern = \"echo\""),
                "pattern `echo` is not `stream` or `ping-pong`",
            ),
            (replaced("[run]\n", "[run]\nefa_loss = 0.9\n"), "run.efa_loss 0.9 is not 0 to 0.5"),
            (format!("{DEFAULT}\n[costs]\nnope_ns = 3\n"), "costs.nope_ns is not a cost"),
            (
                format!("{DEFAULT}\n[costs]\ndoorbell_ns = -1\n"),
                "costs.doorbell_ns = -1 is not 0 to",
            ),
            (format!("{DEFAULT}\n[costs]\ndoorbell_ns = 1.5\n"), "invalid type"),
            (replaced("burst_s = 0.1", "burst_s = -3.0"), "burst_s -3 is not a duration"),
            (replaced("type = \"m5.large\"", "type = \"m5.large\"\nmtu = 70000"), "invalid value"),
            (
                replaced("type = \"m5.large\"", "type = \"m5.large\"\nmtu = 100"),
                "mtu 100 is not 576 to 9001",
            ),
            (
                replaced("type = \"m5.large\"", "type = \"m5.large\"\nqueues = 64"),
                "queues 64 is not 1 to 32",
            ),
            (
                replaced("type = \"m5.large\"", "type = \"m5.large\"\nrx = \"telepathy\""),
                "rx `telepathy`",
            ),
            (
                replaced("type = \"m5.large\"", "type = \"m5.large\"\naz = \"mars-1a\""),
                "no AZ named `mars-1a`",
            ),
            (
                replaced("type = \"m5.large\"", "type = \"m5.large\"\nsubnet = \"nowhere\""),
                "no subnet named `nowhere`",
            ),
            (replaced("from = \"hpc-0\"", "from = \"hpc-7\""), "no VM named `hpc-7`"),
            (replaced("to = \"web-0\"", "to = \"wob-*\""), "no VM named `wob-*`"),
            (replaced("gbps = 1.5", "gbps = -1.5"), "gbps -1.5 is not a rate"),
            (replaced("gbps = 1.5", "gbps = 1000.0"), "gbps 1000 is not a rate"),
            (replaced("frame = 9015", "frame = 20"), "frame 20 B"),
            (replaced("frame = 1514", "frame = 9015\nprotocol = \"tcp\""), "speaks `udp` only"),
            (replaced("start_s = 1.5", "start_s = 5.0"), "start_s 5 is not within"),
            (replaced("start_s = 1.5", "start_s = 1.5\nstop_s = 1.0"), "stop_s 1 is not after"),
            (
                replaced("frame = 1514", "frame = 1514\npath = \"emulated\""),
                "has no ENI on the emulated path",
            ),
            (format!("{DEFAULT}\n[[enis]]\nname = \"x\"\nvm = \"ghost\"\n"), "no VM named `ghost`"),
            (
                format!("{DEFAULT}\n[[enis]]\nname = \"x\"\nvm = \"db\"\nips = [\"10.0.0.300\"]\n"),
                "is not an IPv4 address",
            ),
            (
                format!("{DEFAULT}\n[[failures]]\nat_s = 1.0\nrack_of = \"ghost\"\n"),
                "no VM named `ghost`",
            ),
            (
                format!("{DEFAULT}\n[[failures]]\nat_s = 9.0\nrack_of = \"db\"\n"),
                "at_s 9 is not within",
            ),
            (
                format!(
                    "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-1a\"\ncidr = \"10.0.0.0\"\n"
                ),
                "is not a.b.c.d/n",
            ),
            (
                format!(
                    "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-1a\"\ncidr = \"10.0.0.0/8\"\n"
                ),
                "/16 to /28",
            ),
            (
                format!(
                    "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-9z\"\ncidr = \"10.0.0.0/24\"\n"
                ),
                "no AZ named `us-east-9z`",
            ),
            (
                replaced("seed = 1", "seed = 1\nfragmentation = 2.0"),
                "fragmentation 2 is not between",
            ),
            (replaced("frame = 1514", "frame = 1514\nsrd = \"yes\""), "invalid type"),
            (replaced("frame = 1514", "frame = 1514\nparallel = 0"), "parallel 0 is not 1 to 1024"),
            // The network model, instance types, flows and subnets (issue 19).
            (
                format!("{DEFAULT}\n[network]\nflow_cap_gbps = -5.0\n"),
                "network.flow_cap_gbps = -5 is not a rate",
            ),
            (format!("{DEFAULT}\n[network]\nflow_cap_gbps = nan\n"), "network.flow_cap_gbps = NaN"),
            (
                format!("{DEFAULT}\n[network]\ncluster_flow_cap_gbps = inf\n"),
                "network.cluster_flow_cap_gbps = inf is not a rate",
            ),
            (
                format!("{DEFAULT}\n[network]\nlatency_us = [-1.0, 25.0, 60.0, 500.0, 30000.0]\n"),
                "network.latency_us[0] (same host) = -1 is not 0 to",
            ),
            (
                format!("{DEFAULT}\n[network]\nlatency_us = [10.0, 25.0, 60.0, 500.0, 1e12]\n"),
                "network.latency_us[4] (other region) = 1000000000000 is not 0 to",
            ),
            (
                format!("{DEFAULT}\n[network]\nlatency_us = [10.0, 25.0, 6.0, 500.0, 30000.0]\n"),
                "a farther class cannot be nearer",
            ),
            (
                format!("{DEFAULT}\n[network]\nregion_egress_large_share = 2.0\n"),
                "network.region_egress_large_share = 2 is not 0 to 1",
            ),
            (
                format!(
                    "{DEFAULT}\n[[instance_types]]\nname = \"z1\"\nvcpus = 0\nmemory_gib = 4\n\
                     baseline_gbps = 1.0\nburst_gbps = 1.0\n"
                ),
                "instance type z1: vcpus 0",
            ),
            (
                format!(
                    "{DEFAULT}\n[[instance_types]]\nname = \"z1\"\nvcpus = 2\nmemory_gib = 4\n\
                     baseline_gbps = 2.0\nburst_gbps = 1.0\n"
                ),
                "burst_gbps 1 is below its baseline_gbps 2",
            ),
            (
                format!(
                    "{DEFAULT}\n[[instance_types]]\nname = \"m5.large\"\nvcpus = 2\n\
                     memory_gib = 8\nbaseline_gbps = 1.0\nburst_gbps = 1.0\n"
                ),
                "instance type m5.large is defined twice",
            ),
            (replaced("to = \"hpc-1\"", "to = \"hpc-0\""), "a VM does not send to itself"),
            (
                replaced("start_s = 1.5", "start_s = 1.5\nstop_s = 99.0"),
                "stop_s 99 is after the run ends (3 s)",
            ),
            (
                format!(
                    "{DEFAULT}\n[[subnets]]\nname = \"tiny\"\naz = \"us-east-1a\"\n\
                     cidr = \"10.9.0.0/28\"\n\n[[vms]]\nname = \"t\"\ntype = \"m5.large\"\n\
                     count = 20\n"
                ),
                "subnet tiny (10.9.0.0/28) has 11 usable addresses (AWS reserves 5) for 26 (26 VMs'",
            ),
        ];
        assert!(cases.len() >= 30, "{} cases", cases.len());
        for (text, want) in &cases {
            let e = error(text);
            assert!(e.contains(want), "wanted {want:?} in {e:?}");
            assert!(e.starts_with("s.toml"), "names the file: {e}");
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
        // Located errors point at their line: the cluster group's name, and a dangling flow.
        let e = error(&replaced("count = 2\ngroup = \"hpc\"", "count = 2\ngroup = \"nope\""));
        let line = DEFAULT.lines().position(|l| l == "group = \"hpc\"").unwrap() + 1;
        assert!(e.starts_with(&format!("s.toml:{line}:")), "{e}");
        let e = error(&replaced("strategy = \"cluster\"", "strategy = \"clump\""));
        assert!(e.starts_with(&format!("s.toml:{}:12", hpc_line + 1)), "{e}");
        let e = error(&replaced("from = \"hpc-0\"", "from = \"hpc-7\""));
        let line = DEFAULT.lines().position(|l| l == "from = \"hpc-0\"").unwrap() + 1;
        assert_eq!(e, format!("s.toml:{line}:8: no VM named `hpc-7`"));
        // Tables read without positions are named by their header's line.
        let e = error(&format!("{DEFAULT}\n[network]\nflow_cap_gbps = 0.0\n"));
        let line = DEFAULT.lines().count() + 2;
        assert!(e.starts_with(&format!("s.toml:{line}:1: network.flow_cap_gbps")), "{e}");
        let tiny = format!(
            "{DEFAULT}\n[[subnets]]\nname = \"tiny\"\naz = \"us-east-1a\"\ncidr = \"10.9.0.0/28\"\n\n\
             [[vms]]\nname = \"t\"\ntype = \"m5.large\"\ncount = 20\n"
        );
        let e = error(&tiny);
        let line = DEFAULT.lines().count() + 5;
        assert!(e.starts_with(&format!("s.toml:{line}:8: subnet tiny")), "{e}");
        // Five fewer VMs fit exactly: 11 addresses for 6 + 5.
        assert!(load("s.toml", &tiny.replace("count = 20", "count = 5")).is_ok());
        // A fragmented fleet keeps the mean it was given, 1.0 included (every host full).
        let full = replaced("seed = 1", "seed = 1\nfragmentation = 1.0");
        assert!(error(&full).contains("InsufficientInstanceCapacity"), "no room left at all");
    }

    #[test]
    fn runs_that_cannot_be_simulated_are_refused_before_they_start() {
        let p = load("s.toml", &replaced("vfs_per_pf = 8", "vfs_per_pf = 2")).unwrap();
        assert!(check_runnable(&p, true).unwrap_err().contains("raise run.vfs_per_pf"));
        let no_flows = DEFAULT.split("[[flows]]").next().unwrap();
        let p = load("s.toml", no_flows).unwrap();
        assert!(check_runnable(&p, true).unwrap_err().contains("no flows"));
    }
}
