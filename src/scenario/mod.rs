//! Scenarios: one TOML schema for `vnic-lab plan` (placement and max-min rates, no packets) and
//! `vnic-lab run` (a simulation of the same fleet, packets through the simulated NICs).
//!
//! Loading a scenario parses it (unknown keys and wrong types are errors at their line and
//! column), checks every value and reference (a flow to an unknown VM, a subnet in no AZ, an
//! ENI on a VM that does not exist, a frame larger than the VM's MTU, ...) and places the fleet
//! with `placement`'s rules, so that an impossible placement is an error naming the VM. As
//! smoltcp splits a wire format into its parsing and its meaning, the file as written
//! (`decl`) is kept apart from what it means ([`Placed`]), built part by part: `settings`
//! (ranges), `subnets`, `place` (groups, VMs, ENIs), `flows` and `failures`. The schema is
//! documented in the README, with a worked example in `scenarios/default.toml`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hypervisor_sim::sim::CostModel;
use hypervisor_sim::sim::traffic::{Arrivals, Pattern};
use placement::{Fleet, FlowDemand, InstanceId, InstanceType, NetworkModel};

mod decl;
mod failures;
mod flows;
mod place;
pub mod security;
mod settings;
mod source;
mod subnets;
#[cfg(test)]
mod tests;

pub use decl::RunSettings;
pub use security::Security;
use source::Source;
use vnic::policy::EphemeralPorts;

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
pub struct Subnet {
    /// Name.
    pub name: String,
    /// AZ.
    pub az: String,
    /// Network.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Its network ACL.
    pub nacl: String,
}

/// One VM, resolved and placed.
#[derive(Debug, Clone)]
pub struct Vm {
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
    /// Primary ENI address (the first free of its subnet, in launch order, as EC2 gives them).
    pub ip: Ipv4Addr,
    /// Primary ENI security groups.
    pub security_groups: Vec<String>,
    /// Where its clients' source ports come from.
    pub ephemeral: EphemeralPorts,
    /// TCP ports a process listens on (`None`: every port its TCP flows name).
    pub listens: Option<Vec<u16>>,
    /// SYN retries of its TCP clients.
    pub tcp_syn_retries: u32,
}

impl Vm {
    /// Whether a process listens on TCP port `port`.
    pub fn listens_on(&self, port: u16) -> bool {
        self.listens.as_ref().is_none_or(|l| l.contains(&port))
    }
}

/// A secondary ENI, resolved.
#[derive(Debug, Clone)]
pub struct Eni {
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
    /// Primary address.
    pub ip: Ipv4Addr,
    /// Security groups.
    pub security_groups: Vec<String>,
}

/// One flow, resolved.
#[derive(Debug, Clone)]
pub struct Flow {
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
    /// IP protocol: UDP, or TCP (`plan` only, for now).
    pub protocol: u8,
    /// Source port: the sender's `n`-th ephemeral port for the scenario's `n`-th flow, so
    /// NACL rules for replies see the port a client of its OS would use.
    pub src_port: u16,
}

/// A failure, resolved.
#[derive(Debug, Clone)]
pub struct RackFailure {
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
    pub subnets: Vec<Subnet>,
    /// VMs in declaration order.
    pub vms: Vec<Vm>,
    /// Secondary ENIs.
    pub enis: Vec<Eni>,
    /// Flows.
    pub flows: Vec<Flow>,
    /// Failures.
    pub failures: Vec<RackFailure>,
    /// Security groups and NACLs.
    pub security: Security,
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

/// The largest scenario file read, bytes: a scenario is a short text (the largest shipped is a
/// few KiB), and reading stops here rather than filling memory (`/dev/zero` is not a scenario).
pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;

/// How large a scenario may grow before anything is allocated for it: a pattern that expands
/// further than its author meant is refused with the number, not met by the OOM killer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Flows all `[[flows]]` entries expand to (`--max-flows`).
    pub max_flows: u64,
    /// Instances all `[[vms]]` entries launch (`--max-instances`).
    pub max_instances: u64,
}

/// Flows a scenario may expand to unless told otherwise: 10 million (about 1.5 GB of plan).
pub const DEFAULT_MAX_FLOWS: u64 = 10_000_000;
/// Instances a scenario may launch unless told otherwise: a million.
pub const DEFAULT_MAX_INSTANCES: u64 = 1_000_000;

impl Default for Limits {
    fn default() -> Self {
        Self { max_flows: DEFAULT_MAX_FLOWS, max_instances: DEFAULT_MAX_INSTANCES }
    }
}

/// `n` with thousands separators: 123,454,321.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reads, checks and places the scenario at `path` within `limits`.
pub fn load_file_with(path: &std::path::Path, limits: &Limits) -> Result<Placed, ScenarioError> {
    let text = read_text(path)?;
    load_with(&path.display().to_string(), &text, limits)
}

/// The text of the scenario file at `path`: at most [`MAX_SCENARIO_BYTES`] of UTF-8.
pub fn read_text(path: &std::path::Path) -> Result<String, ScenarioError> {
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
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "is not UTF-8 text (byte {}): a scenario is a TOML file",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Checks and places a scenario given as text (`file` names it in errors).
pub fn load(file: &str, text: &str) -> Result<Placed, ScenarioError> {
    load_with(file, text, &Limits::default())
}

/// Checks and places a scenario given as text within `limits`.
pub fn load_with(file: &str, text: &str, limits: &Limits) -> Result<Placed, ScenarioError> {
    let src = Source { file, text };
    let s = decl::parse(&src)?;
    place::check_instance_count(&s, &src, limits.max_instances)?;
    flows::check_expansion(&s, &src, &place::declared_names(&s), limits.max_flows)?;
    let settings = settings::check(&s, &src)?;
    let az_names: Vec<String> = settings.topology.azs.iter().map(|a| a.name.clone()).collect();
    let security = security::resolve(&s, &src, settings.duration_s)?;
    let subnets = subnets::resolve(&s, &src, &az_names, &security)?;
    let (mut fleet, cluster_groups) = place::fleet(&s, &src, settings.topology, &settings.types)?;
    let mut vms =
        place::vms(&s, &src, &mut fleet, &subnets, &az_names, &cluster_groups, &security)?;
    let mut enis = place::enis(&s, &src, &vms, &subnets, &security)?;
    let flows = flows::resolve(&s, &src, settings.duration_s, &vms, &enis)?;
    subnets::check_room(&src, &s, &subnets, &vms, &enis)?;
    subnets::assign_addresses(&src, &subnets, &mut vms, &mut enis)?;
    let failures = failures::resolve(&s, &src, settings.duration_s, &fleet, &vms)?;
    let mut security = security;
    let vm_names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
    let subnet_names: Vec<String> = subnets.iter().map(|s| s.name.clone()).collect();
    security.flow_logs = security::flow_logs(&s, &src, &vm_names, &subnet_names)?;
    let name = scenario_name(s.name.clone(), file);
    Ok(Placed {
        name,
        fleet,
        network: s.network,
        run: s.run,
        seed: s.seed,
        costs: settings.costs,
        duration_s: settings.duration_s,
        subnets,
        vms,
        enis,
        flows,
        failures,
        security,
    })
}

/// One key of a scenario's `[sweep]`, as written.
#[derive(Debug, Clone)]
pub struct SweepKey {
    /// The key (`vms[hpc].count`).
    pub key: String,
    /// Its values, in order.
    pub values: Vec<toml::Value>,
    /// Where the key is written: line and column, 1-based.
    pub at: (usize, usize),
}

/// A scenario's name (its `name`, else its file's stem) and the keys its `[sweep]` varies
/// (none without one). The whole file must parse: a sweep of a broken file is an error here,
/// at its line and column, not once per variant.
pub fn sweep_keys(file: &str, text: &str) -> Result<(String, Vec<SweepKey>), ScenarioError> {
    let src = Source { file, text };
    let s = decl::parse(&src)?;
    let keys = s
        .sweep
        .map(|sweep| {
            sweep
                .vary
                .into_iter()
                .map(|v| {
                    let at = src.at(v.key.span(), "").at.unwrap_or((1, 1));
                    SweepKey { key: v.key.into_inner(), values: v.values.into_inner(), at }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((scenario_name(s.name, file), keys))
}

/// A scenario's name in reports: its `name`, else its file's stem.
fn scenario_name(name: Option<String>, file: &str) -> String {
    name.unwrap_or_else(|| {
        std::path::Path::new(file)
            .file_stem()
            .map_or("scenario".into(), |n| n.to_string_lossy().into())
    })
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
