//! `vnic-lab run`: a scenario simulated — its fleet placed by `placement`, the hosts it landed on
//! built by `hypervisor-sim` (a PF each, the fabric between them, emulated NIC models where VMs
//! ask for them), every flow stamped UDP frames at its offered rate — then a report.
//!
//! Two modes, one device. By default the run is a deterministic discrete-event simulation in
//! virtual time ([`simulated`], over `hypervisor_sim::sim`): the real rings, engine, shaper and
//! switch move every byte, and the cost model says how long each step takes, so the report is a
//! property of the scenario and its seed, byte for byte, on any machine. `--live` runs the same
//! cloud on threads and the wall clock ([`live`]): that measures this software on this machine.
//!
//! A run is a sequence of named stages: [`check`] the scenario can run, [`build_cloud`],
//! [`launch`] the VMs and their ENIs, [`wire_flows`] (ENIs, frames, caps), [`open_captures`],
//! drive the traffic (virtual or live), then [`collect`] the report from what the flows measured
//! and every ENI's counters.

mod live;
mod simulated;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::{EniId, EniSpec, Subnet, VmId};
use hypervisor_sim::sim::VirtualClock;
use hypervisor_sim::sim::traffic::{
    Arrivals, Connect, RuleUpdate, TcpOutcome, TcpSpec, give_up_after_ns,
};
use hypervisor_sim::traffic::LatencyLog;
use hypervisor_sim::traffic::{Endpoint, FlowFrame};
use hypervisor_sim::vnic::device::Notification;
use placement::NetworkClass;
use serde::Serialize;
use vnic::policy::PROTO_TCP;

use crate::scenario::{self, PathName, Placed};

/// Time after the last send for frames in flight to arrive.
const DRAIN: Duration = Duration::from_millis(200);

/// Options of a run.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Capture what a VM's primary ENI sends and receives: (VM name, pcap file).
    pub pcap: Vec<(String, PathBuf)>,
    /// Threads and the wall clock instead of virtual time.
    pub live: bool,
}

/// What stops a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario cannot be simulated.
    #[error("{file}: {message}")]
    Scenario {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// Building or driving the simulated cloud failed.
    #[error("{what}: {source}")]
    Cloud {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: hypervisor_sim::cloud::CloudError,
    },
    /// The simulation refused to run.
    #[error("{file}: {source}")]
    Sim {
        /// The file.
        file: String,
        /// The error.
        #[source]
        source: hypervisor_sim::sim::traffic::SimError,
    },
    /// A capture file.
    #[error("--pcap {vm}={file}: {message}")]
    Pcap {
        /// The VM.
        vm: String,
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
}

/// A flow in the report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FlowReport {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// I/O path.
    pub path: PathName,
    /// `udp`, `tcp`, or `srd` (EFA messages).
    pub protocol: &'static str,
    /// UDP or TCP destination port.
    pub dst_port: u16,
    /// Frame length, bytes.
    pub frame_bytes: usize,
    /// Network class between the two.
    pub class: NetworkClass,
    /// Offered rate, Gbps.
    pub offered_gbps: f64,
    /// The single-flow cap the device applies, Gbps.
    pub cap_gbps: f64,
    /// What the receiver got, Gbps (frame bytes over the flow's active time).
    pub achieved_gbps: f64,
    /// Millions of frames per second received.
    pub achieved_mpps: f64,
    /// Frames the sender's driver took.
    pub sent_frames: u64,
    /// Frames received.
    pub received_frames: u64,
    /// Frames sent and never received (held by a limit and dropped, or lost to a failure).
    pub lost_frames: u64,
    /// Frames the sender dropped because its TX ring stayed full (5 ms behind schedule).
    pub sender_drops: u64,
    /// Sequence gaps seen by the receiver (EFA: messages that arrived after a later one, SRD
    /// being unordered).
    pub gaps: u64,
    /// Messages delivered more than once (EFA; SRD promises none).
    pub duplicates: u64,
    /// Received Gbps per sample window.
    pub throughput_gbps: Vec<f64>,
    /// The `[[flows]]` entry (0-based) it comes from.
    pub entry: usize,
    /// Why a security group or network ACL stops it, if one does (`plan`'s answer: the rule, or
    /// the missing rule).
    pub blocked: Option<String>,
    /// A TCP flow's connection, as its client saw it.
    pub connection: Option<ConnectionReport>,
}

/// What became of a TCP flow's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectOutcome {
    /// Its start lay past the run, or its sender stopped first.
    NotTried,
    /// SYNs unanswered when the run ended; the client was still retrying.
    Connecting,
    /// The handshake completed.
    Connected,
    /// The server answered RST: nothing listens on the port.
    Refused,
    /// No SYN was answered and the client gave up.
    TimedOut,
}

/// A TCP flow's connection, as its client saw it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ConnectionReport {
    /// What became of it.
    pub outcome: ConnectOutcome,
    /// SYNs the client sent.
    pub syns: u32,
    /// From the first SYN to the SYN-ACK (connected), the RST (refused) or giving up (timed
    /// out), ms.
    pub answer_ms: Option<f64>,
    /// ACKs the client received for its data (one per two segments).
    pub acks: u64,
    /// Whether the FIN exchange completed before the run ended.
    pub closed: bool,
    /// The same, as a sentence.
    pub says: String,
}

impl ConnectionReport {
    fn new(tcp: &TcpOutcome, syn_retries: u32, server: &str, port: u16) -> Self {
        let answer_ms = tcp.answer_ns.map(|ns| ns as f64 / 1e6);
        let ms = answer_ms.unwrap_or(0.0);
        let syns = |n: u32| if n == 1 { "1 SYN".to_string() } else { format!("{n} SYNs") };
        let (outcome, says) = match tcp.connect {
            Connect::NotTried => (ConnectOutcome::NotTried, "never tried".to_string()),
            Connect::Connecting => (
                ConnectOutcome::Connecting,
                format!(
                    "timing out: {} unanswered when the run ended (with tcp_syn_retries = \
                     {syn_retries} the client gives up {} s after its first SYN)",
                    syns(tcp.syns),
                    give_up_after_ns(syn_retries) / 1_000_000_000
                ),
            ),
            Connect::Connected => (
                ConnectOutcome::Connected,
                format!(
                    "connected in {:.3} ms{}",
                    ms,
                    if tcp.closed { ", closed" } else { ", still open at the end" }
                ),
            ),
            Connect::Refused => (
                ConnectOutcome::Refused,
                format!(
                    "connection refused: {server} answered RST after {ms:.3} ms (nothing listens \
                     on tcp/{port})"
                ),
            ),
            Connect::TimedOut => (
                ConnectOutcome::TimedOut,
                format!(
                    "connection timed out: {} unanswered, gave up after {:.1} s",
                    syns(tcp.syns),
                    ms / 1e3
                ),
            ),
        };
        Self { outcome, syns: tcp.syns, answer_ms, acks: tcp.acks, closed: tcp.closed, says }
    }
}

/// An ENI in the report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EniReport {
    /// `eni-N`, or its scenario name.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// Primary address.
    pub ip: String,
    /// I/O path.
    pub path: PathName,
    /// ENA's allowance counters.
    pub bw_in_allowance_exceeded: u64,
    /// See ENA.
    pub bw_out_allowance_exceeded: u64,
    /// See ENA.
    pub pps_allowance_exceeded: u64,
    /// See ENA.
    pub conntrack_allowance_exceeded: u64,
    /// See ENA.
    pub linklocal_allowance_exceeded: u64,
    /// Packets held or dropped over a single-flow cap.
    pub flow_cap_exceeded: u64,
    /// Packets the shaper dropped.
    pub shaper_drops: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames dropped on receive (no buffer posted).
    pub rx_drops: u64,
    /// Frames dropped by the source/destination check.
    pub src_dst_check_drops: u64,
    /// Frames its security groups refused, sent and received.
    pub security_group_drops: u64,
    /// Frames its subnet's NACL refused, sent and received.
    pub nacl_drops: u64,
    /// Polls in which the ENI's VF had TX descriptors waiting when its share of the device
    /// engine ran out.
    pub engine_share_exhausted: u64,
}

/// A VM in the report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VmReport {
    /// Where it runs (name, type, AZ, rack, host, group, partition).
    #[serde(flatten)]
    pub placement: crate::plan::VmPlacement,
    /// Its ENIs, primary first.
    pub enis: Vec<EniReport>,
}

/// Latency of one path.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PathLatency {
    /// The path.
    pub path: PathName,
    /// Frames measured.
    pub frames: u64,
    /// Median one-way latency, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// The histogram, for `.hgrm` files and plots.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    /// The same values per sample window, for `.hlog` files (one-way latency only).
    #[serde(skip)]
    pub log: Option<LatencyLog>,
}

/// A failure in the report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FailureReport {
    /// When, s.
    pub at_s: f64,
    /// The rack that failed.
    pub rack: u32,
    /// The VMs lost.
    pub vms: Vec<String>,
}

/// The run's report (the `--json` fields are these names).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seconds of traffic.
    pub duration_s: f64,
    /// Throughput sample width, s.
    pub sample_s: f64,
    /// Hosts simulated.
    pub hosts: usize,
    /// VMs.
    pub vms: Vec<VmReport>,
    /// Flows.
    pub flows: Vec<FlowReport>,
    /// One-way latency per path.
    pub latency: Vec<PathLatency>,
    /// Request-to-reply round trips per path (ping-pong flows).
    pub rtt: Vec<PathLatency>,
    /// Failures injected.
    pub failures: Vec<FailureReport>,
    /// Security group and NACL changes applied to the devices (`[[rule_changes]]`).
    pub rule_changes: Vec<RuleChangeReport>,
    /// Frames the fabric carried between hosts.
    pub fabric_frames: u64,
    /// Frames the fabric dropped (a full link queue).
    pub fabric_drops: u64,
    /// Doorbell traps of the emulated NIC models.
    pub emulated_traps: u64,
    /// How it was simulated: mode, seed, events, the cost model.
    pub simulation: Simulation,
    /// Where each path's latency went (virtual mode).
    pub breakdown: Vec<PathBreakdown>,
    /// vCPU time per VM (virtual mode).
    pub cpu: Vec<VmCpuReport>,
    /// Hypervisor CPU per host with an emulated NIC model (virtual mode).
    pub hypervisor_cpu: Vec<HostCpuReport>,
    /// The `--pcap` captures: what each wrote, and what it could not keep up with.
    pub captures: Vec<CaptureReport>,
    /// Flow logs (`[[flow_logs]]`).
    pub flow_logs: Vec<FlowLogReport>,
}

/// A rule change the devices took during the run.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RuleChangeReport {
    /// When, s into the run.
    pub at_s: f64,
    /// What changed.
    pub says: String,
}

/// An ENI's flow log in the report; `run --out` writes its records to `file`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FlowLogReport {
    /// The ENI (as the report names it).
    pub eni: String,
    /// Its id in the records (`eni-` and 17 hex digits).
    pub interface_id: String,
    /// The file `--out DIR` writes them to.
    pub file: String,
    /// Records (lines).
    pub records: usize,
    /// The records, AWS's default format.
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// One `--pcap` capture in the report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CaptureReport {
    /// The VM whose primary ENI was captured.
    pub vm: String,
    /// The pcap file.
    pub file: String,
    /// Frames written.
    pub frames: u64,
    /// Frames the writer could not keep up with (live runs: the capture never slows the VM,
    /// it drops instead; virtual runs write every frame).
    pub not_captured: u64,
}

/// A path's mean one-way latency, split by where the time went (virtual mode).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PathBreakdown {
    /// The path.
    pub path: PathName,
    /// Frames received.
    pub frames: u64,
    /// Mean one-way latency, µs.
    pub mean_us: f64,
    /// Mean per component, µs, in the order of `hypervisor_sim::sim::traffic::COMPONENTS`;
    /// `queueing` is what the others leave (shaper holds, moderation, link queues).
    pub components_us: Vec<(String, f64)>,
}

/// CPU a VM's modelled work took (virtual mode).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VmCpuReport {
    /// The VM.
    pub vm: String,
    /// Its vCPUs.
    pub vcpus: u32,
    /// vCPU-seconds of kernel send and receive work.
    pub busy_vcpu_s: f64,
    /// Of all its vCPUs over the run (a busy-polling guest also spins, not counted).
    pub utilisation: f64,
}

/// Host CPU of one host's hypervisor worker on the emulated path (virtual mode).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HostCpuReport {
    /// The host.
    pub host: String,
    /// CPU-seconds.
    pub busy_s: f64,
    /// Of one host CPU over the run.
    pub utilisation: f64,
}

/// How the run was simulated.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Simulation {
    /// `virtual` (deterministic, the cost model's time) or `live` (threads, this machine).
    pub mode: &'static str,
    /// The scenario's seed.
    pub seed: u64,
    /// Events simulated (virtual mode).
    pub events: u64,
    /// Seconds simulated, drain included.
    pub simulated_s: f64,
    /// The cost model (virtual mode), by name.
    pub costs: Vec<(String, u64)>,
    /// Wall-clock seconds the run took: the one figure that depends on the machine, so it is
    /// shown in the text report and left out of JSON.
    #[serde(skip)]
    pub wall_s: f64,
}

/// The report's paths, in report order (histograms and breakdowns are indexed by these).
pub(crate) const PATHS: [PathName; 3] = [PathName::Sriov, PathName::Emulated, PathName::Efa];

fn path_index(p: PathName) -> usize {
    PATHS.iter().position(|&x| x == p).unwrap_or(0)
}

fn cloud_err(
    what: impl Into<String>,
) -> impl FnOnce(hypervisor_sim::cloud::CloudError) -> RunError {
    let what = what.into();
    move |source| RunError::Cloud { what, source }
}

fn scenario_err(file: &str) -> impl Fn(String) -> RunError + '_ {
    move |message| RunError::Scenario { file: file.into(), message }
}

/// A flow ready to drive: its ENIs, its frame, its schedule, its cap.
pub(crate) struct WiredFlow {
    /// Why the VPC's security groups or NACLs stop it (it then sends nothing).
    pub blocked: Option<String>,
    /// Sender (index into `Placed::vms`).
    pub from: usize,
    /// Receiver.
    pub to: usize,
    pub src_eni: EniId,
    pub dst_eni: EniId,
    pub path: PathName,
    pub frame: FlowFrame,
    /// UDP source port (the flow's identity at the receiver).
    pub port: u16,
    pub interval_ns: u64,
    pub start_ns: u64,
    pub stop_ns: u64,
    pub arrivals: Arrivals,
    /// An EFA flow (SRD messages of the frame's length).
    pub efa: bool,
    /// One way or ping-pong.
    pub pattern: hypervisor_sim::sim::traffic::Pattern,
    /// A TCP connection: whether the receiver listens, the client's SYN retries.
    pub tcp: Option<TcpSpec>,
    pub offered_gbps: f64,
    pub cap_gbps: f64,
}

/// What a flow measured, whichever the mode.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlowMeasure {
    pub sent_frames: u64,
    pub sender_drops: u64,
    pub recv_frames: u64,
    pub recv_bytes: u64,
    pub gaps: u64,
    /// Messages delivered more than once (EFA).
    pub duplicates: u64,
    /// Bytes received per sample window.
    pub samples: Vec<u64>,
    /// A TCP flow's connection.
    pub tcp: Option<TcpOutcome>,
}

/// What the traffic measured.
pub(crate) struct Measured {
    pub flows: Vec<FlowMeasure>,
    /// Per path of [`PATHS`], per sample window.
    pub latency: Vec<LatencyLog>,
    /// Round trips of ping-pong flows, per path of [`PATHS`].
    pub rtt: Vec<Histogram<u64>>,
    pub failures: Vec<FailureReport>,
    pub breakdown: Vec<PathBreakdown>,
    pub cpu: Vec<VmCpuReport>,
    pub hypervisor_cpu: Vec<HostCpuReport>,
    pub simulation: Simulation,
    pub captures: Vec<CaptureReport>,
}

/// The VMs as launched.
pub(crate) struct Launched {
    pub vm_ids: Vec<VmId>,
    /// Every ENI's report name and path.
    pub eni_names: BTreeMap<EniId, (String, PathName)>,
    /// Every ENI in the order `reach::vpc` adds them: each VM's primary, then its secondaries.
    pub eni_order: Vec<EniId>,
}

/// Everything the traffic stage is handed: the scenario, the VMs launched, the flows wired.
pub(crate) struct Wired<'a> {
    pub file: &'a str,
    pub placed: &'a Placed,
    pub launched: &'a Launched,
    pub flows: &'a [WiredFlow],
    pub host_names: &'a [String],
    /// The scenario's rule changes as every device takes them: (time, new rules per ENI).
    pub rule_changes: &'a [(u64, Vec<RuleUpdate>)],
}

/// The hosts built: the cloud, and which simulated host each placement host became.
struct Built {
    cloud: Cloud,
    host_of: BTreeMap<u32, usize>,
    host_names: Vec<String>,
}

/// Simulates a placed scenario: in virtual time, or live with `options.live`.
pub fn run(file: &str, placed: &Placed, options: &RunOptions) -> Result<RunReport, RunError> {
    check(file, placed, options.live)?;
    let clock = (!options.live).then(VirtualClock::new);
    let Built { mut cloud, host_of, host_names } = build_cloud(file, placed, clock)?;
    let launched = launch(file, &mut cloud, placed, &host_of)?;
    let reach = crate::plan::flow_reach(placed).map_err(scenario_err(file))?;
    let rule_changes = filter_in_devices(file, &mut cloud, placed, &launched)?;
    let flows = wire_flows(file, &cloud, placed, &launched, &reach)?;
    let captures = open_captures(placed, options)?;
    let wired = Wired {
        file,
        placed,
        launched: &launched,
        flows: &flows,
        host_names: &host_names,
        rule_changes: &rule_changes,
    };
    let measured = if options.live {
        live::drive(&wired, &mut cloud, captures, options.progress)
    } else {
        simulated::drive(&wired, &mut cloud, captures, options.progress)?
    };
    let mut report = collect(file, placed, &cloud, &launched, &flows, &host_names, measured)?;
    report.flow_logs = take_flow_logs(&mut cloud, placed, &launched)?;
    cloud.shut_down();
    Ok(report)
}

/// What the scenario asks that cannot be simulated.
fn check(file: &str, placed: &Placed, live: bool) -> Result<(), RunError> {
    scenario::check_runnable(placed, live).map_err(scenario_err(file))?;
    if let Some(f) = placed.flows.iter().find(|f| live && f.efa) {
        return Err(scenario_err(file)(format!(
            "flow {} -> {} is EFA traffic, which runs in virtual time only (drop --live)",
            placed.vms[f.from].name, placed.vms[f.to].name
        )));
    }
    let ping_pong = hypervisor_sim::sim::traffic::Pattern::PingPong;
    if let Some(f) = placed.flows.iter().find(|f| live && f.pattern == ping_pong) {
        return Err(scenario_err(file)(format!(
            "flow {} -> {} is ping-pong, which runs in virtual time only (drop --live)",
            placed.vms[f.from].name, placed.vms[f.to].name
        )));
    }
    if let Some(f) = placed.flows.iter().find(|f| f.srd) {
        return Err(scenario_err(file)(format!(
            "flow {} -> {} asks for ENA Express (srd): the SRD path is not simulated yet \
             (`plan` models its 25 Gbps cap)",
            placed.vms[f.from].name, placed.vms[f.to].name
        )));
    }
    Ok(())
}

/// One simulated host per placement host used, and the fabric between them.
fn build_cloud(
    file: &str,
    placed: &Placed,
    clock: Option<VirtualClock>,
) -> Result<Built, RunError> {
    let fleet = &placed.fleet;
    let t = fleet.topology();
    let mut host_of: BTreeMap<u32, usize> = BTreeMap::new();
    let mut hosts = Vec::new();
    for v in &placed.vms {
        let inst = fleet.instance(v.id).map_err(|e| scenario_err(file)(e.to_string()))?;
        if host_of.contains_key(&inst.host.0) {
            continue;
        }
        host_of.insert(inst.host.0, hosts.len());
        let az = t.az_of(inst.host);
        hosts.push(HostSpec {
            name: format!("host{}", inst.host.0),
            cpus: 1 << 16,
            pfs: placed.run.pfs_per_host,
            vfs_per_pf: placed.run.vfs_per_pf,
            region: t.regions[t.region_of(az).index()].name.clone(),
            az: t.azs[az.index()].name.clone(),
            rack: t.rack_of(inst.host).0,
        });
    }
    let subnets = placed
        .subnets
        .iter()
        .map(|s| Subnet {
            name: s.name.clone(),
            az: s.az.clone(),
            network: s.network,
            prefix: s.prefix,
        })
        .collect();
    let host_names = hosts.iter().map(|h| h.name.clone()).collect();
    let spec = CloudSpec {
        hosts,
        subnets,
        network: placed.network.clone(),
        link_gbps: placed.run.link_gbps,
    };
    let cloud = match clock {
        Some(clock) => Cloud::new_virtual(spec, clock),
        None => Cloud::new(spec),
    }
    .map_err(cloud_err("building the hosts"))?;
    Ok(Built { cloud, host_of, host_names })
}

/// Launches every VM: its secondary ENIs first (attached cold), then the VM.
fn launch(
    file: &str,
    cloud: &mut Cloud,
    placed: &Placed,
    host_of: &BTreeMap<u32, usize>,
) -> Result<Launched, RunError> {
    let mut vm_ids: Vec<VmId> = Vec::new();
    let mut eni_names: BTreeMap<EniId, (String, PathName)> = BTreeMap::new();
    let mut eni_order = Vec::new();
    for (i, v) in placed.vms.iter().enumerate() {
        let mut secondary = Vec::new();
        for e in placed.enis.iter().filter(|e| e.vm == i) {
            let spec = EniSpec {
                subnet: e.subnet.clone(),
                primary_ip: Some(e.ip),
                secondary_ips: e.ips.clone(),
                ..Default::default()
            };
            let id = cloud
                .create_eni(&spec, e.path.io_path())
                .map_err(cloud_err(format!("eni {}", e.name)))?;
            if !e.src_dst_check {
                cloud.set_src_dst_check(id, false).map_err(cloud_err(format!("eni {}", e.name)))?;
            }
            eni_names.insert(id, (e.name.clone(), e.path));
            secondary.push(id);
        }
        let inst = placed.fleet.instance(v.id).map_err(|e| scenario_err(file)(e.to_string()))?;
        let host = host_of.get(&inst.host.0).copied().unwrap_or(0);
        let mut spec = VmSpec::new(&v.name, host, v.instance_type.clone(), &v.subnet);
        // The address the scenario gave it, which `plan` and the security groups saw too.
        spec.primary.primary_ip = Some(v.ip);
        spec.path = v.path.io_path();
        let spec_secondary = secondary.clone();
        spec.secondary = secondary;
        spec.cluster_group = v.cluster_group.clone();
        spec.queues = v.queues;
        spec.mtu = v.mtu;
        spec.burst_duration = Duration::from_secs_f64(v.burst_s);
        spec.rx_notification =
            if v.rx_interrupts { Notification::ENA_RX } else { Notification::BusyPoll };
        let id = cloud.launch(spec).map_err(cloud_err(format!("vm {}", v.name)))?;
        let primary = cloud.enis().enis_of(id)[0].id;
        eni_names.insert(primary, (format!("{}/eni0", v.name), v.path));
        eni_order.push(primary);
        eni_order.extend(spec_secondary.iter().copied());
        if !v.src_dst_check {
            cloud.set_src_dst_check(primary, false).map_err(cloud_err(format!("vm {}", v.name)))?;
        }
        vm_ids.push(id);
    }
    Ok(Launched { vm_ids, eni_names, eni_order })
}

/// Puts every ENI's device behind its security groups and its subnet's NACL, compiled from
/// the scenario (nothing to do when it declares none: the defaults allow every flow between
/// its VMs, and the devices stay unfiltered).
/// Programs every ENI's device with its security groups, its subnet's NACL and its flow log,
/// and returns the scenario's rule changes as the devices will take them: after each change, the
/// new rules of every ENI (a group's change reaches every ENI whose rules name the group).
fn filter_in_devices(
    file: &str,
    cloud: &mut Cloud,
    placed: &Placed,
    launched: &Launched,
) -> Result<Vec<(u64, Vec<RuleUpdate>)>, RunError> {
    if !placed.security.is_declared() {
        return Ok(Vec::new());
    }
    let mut vpc = crate::reach::vpc(placed).map_err(scenario_err(file))?;
    let vpc_cidr = vpc.cidr;
    let enis = enis_in_vpc_order(placed);
    for (k, &id) in launched.eni_order.iter().enumerate() {
        let (groups, subnet, nacl) =
            vpc.device_parts(k).map_err(|e| scenario_err(file)(e.to_string()))?;
        let flow_log = enis.get(k).and_then(|&(vm, eni_subnet)| {
            let interval = placed.security.flow_log_interval(&placed.vms[vm].name, eni_subnet)?;
            Some(vnic::policy::flowlog::FlowLog::new(
                crate::scenario::security::ACCOUNT_ID,
                &interface_id(id),
                interval,
                crate::scenario::security::FLOW_LOG_EPOCH_UNIX_S,
                vpc_cidr,
                subnet,
            ))
        });
        let filter = vnic::policy::conntrack::EniFilter::new(
            groups,
            hypervisor_sim::cloud::DEFAULT_CONNTRACK_MAX,
            vnic::policy::conntrack::Timeouts::default(),
        );
        let policy =
            vnic::device::VfPolicy { filter, subnet, nacl: std::sync::Arc::new(nacl), flow_log };
        cloud.set_eni_policy(id, Some(policy)).map_err(cloud_err("security groups"))?;
    }
    let mut changes = Vec::new();
    for c in &placed.security.changes {
        let fail = |e: vnic::policy::PolicyError| scenario_err(file)(format!("{}: {e}", c.says));
        c.change.apply(&mut vpc).map_err(fail)?;
        let mut updates = Vec::with_capacity(launched.eni_order.len());
        for (k, &eni) in launched.eni_order.iter().enumerate() {
            let (groups, _, nacl) = vpc.device_parts(k).map_err(fail)?;
            updates.push(RuleUpdate { eni, groups, nacl: std::sync::Arc::new(nacl) });
        }
        changes.push(((c.at_s * 1e9) as u64, updates));
    }
    Ok(changes)
}

/// Every ENI's VM and subnet, in the order `reach::vpc` adds them (each VM's primary, then its
/// secondaries): the order of [`Launched::eni_order`].
fn enis_in_vpc_order(placed: &Placed) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (i, v) in placed.vms.iter().enumerate() {
        out.push((i, v.subnet.as_str()));
        out.extend(placed.enis.iter().filter(|e| e.vm == i).map(|e| (i, e.subnet.as_str())));
    }
    out
}

/// An ENI's id as EC2 writes it: `eni-` and 17 hex digits.
fn interface_id(id: EniId) -> String {
    format!("eni-{:017x}", id.0)
}

/// Ends every ENI's flow log at the end of the run and takes its records.
fn take_flow_logs(
    cloud: &mut Cloud,
    placed: &Placed,
    launched: &Launched,
) -> Result<Vec<FlowLogReport>, RunError> {
    if placed.security.flow_logs.is_empty() {
        return Ok(Vec::new());
    }
    let end_ns = (placed.duration_s * 1e9) as u64 + DRAIN.as_nanos() as u64;
    let mut out = Vec::new();
    for &id in &launched.eni_order {
        let Some(lines) = cloud.take_flow_log(id, end_ns).map_err(cloud_err("flow logs"))? else {
            continue;
        };
        let name =
            launched.eni_names.get(&id).map_or_else(|| format!("eni-{}", id.0), |(n, _)| n.clone());
        out.push(FlowLogReport {
            file: format!("flow-log-{}.log", name.replace('/', "_")),
            eni: name,
            interface_id: interface_id(id),
            records: lines.len(),
            lines,
        });
    }
    Ok(out)
}

/// Which ENI each end of every flow uses, its frame, its schedule and its cap; a flow the
/// security groups or NACLs stop (`reach`) is wired but never started.
fn wire_flows(
    file: &str,
    cloud: &Cloud,
    placed: &Placed,
    launched: &Launched,
    reach: &[crate::reach::FlowReach],
) -> Result<Vec<WiredFlow>, RunError> {
    let duration_ns = (placed.duration_s * 1e9) as u64;
    let eni_on = |vm: usize, path: Option<PathName>| -> Option<(EniId, PathName)> {
        let enis = cloud.enis().enis_of(launched.vm_ids[vm]);
        match path {
            None => enis.first().map(|e| (e.id, placed.vms[vm].path)),
            Some(p) => enis
                .iter()
                .find(|e| launched.eni_names.get(&e.id).is_some_and(|(_, q)| *q == p))
                .map(|e| (e.id, p)),
        }
    };
    let mut flows = Vec::new();
    for (i, f) in placed.flows.iter().enumerate() {
        let (Some((src_eni, path)), Some((dst_eni, _))) =
            (eni_on(f.from, f.path), eni_on(f.to, f.path))
        else {
            return Err(scenario_err(file)(format!("flow {i}: an end has no ENI on its path")));
        };
        let end = |id: EniId, port: u16| {
            cloud.enis().eni(id).map(|e| Endpoint { mac: e.mac, ip: e.primary_ip, port })
        };
        let port = f.src_port;
        let (Ok(src), Ok(dst)) = (end(src_eni, port), end(dst_eni, f.dst_port)) else {
            return Err(scenario_err(file)(format!("flow {i}: no ENI")));
        };
        let cap = if f.efa {
            placed.network.srd_flow_cap_gbps
        } else {
            flow_cap_gbps(placed, f.from, f.to)
        };
        let offered = f.gbps.unwrap_or(cap);
        let pps = offered * 1e9 / (8.0 * f.frame as f64);
        let changes = !placed.security.changes.is_empty();
        let blocked = reach.get(i).and_then(|r| r.blocked.clone()).map(|b| match changes {
            true => format!("{b} (by the rules at 0 s, before the [[rule_changes]])"),
            false => b,
        });
        let start_ns = (f.start_s * 1e9) as u64;
        let stop_ns = f.stop_s.map_or(duration_ns, |s| ((s * 1e9) as u64).min(duration_ns));
        let tcp = (f.protocol == PROTO_TCP).then(|| TcpSpec {
            listening: placed.vms[f.to].listens_on(f.dst_port),
            syn_retries: placed.vms[f.from].tcp_syn_retries,
        });
        let frame = match tcp {
            Some(_) => FlowFrame::tcp(src, dst, f.frame),
            None => FlowFrame::new(src, dst, f.frame),
        };
        flows.push(WiredFlow {
            stop_ns,
            blocked,
            tcp,
            from: f.from,
            to: f.to,
            src_eni,
            dst_eni,
            path,
            frame,
            port,
            interval_ns: (1e9 / pps.max(1.0)) as u64,
            start_ns,
            arrivals: f.arrivals,
            efa: f.efa,
            pattern: f.pattern,
            offered_gbps: offered,
            cap_gbps: cap,
        });
    }
    Ok(flows)
}

/// A pcap capture of what one VM sends and receives, timestamps in nanoseconds.
pub(crate) struct Capture {
    writer: pcap_file::pcap::PcapWriter<BufWriter<File>>,
    epoch: Duration,
    report: CaptureReport,
}

/// Frames a live capture's writer thread may have waiting before the VM's frames are dropped
/// from the capture (not from the run): 16,384, about 150 MB of jumbo frames.
const CAPTURE_QUEUE: usize = 16_384;

impl Capture {
    /// A capture of `vm` into `path`; `virtual_time` counts timestamps from the Unix epoch (so
    /// that the same run writes the same bytes), else from now.
    pub(crate) fn create(
        vm: &str,
        path: &std::path::Path,
        virtual_time: bool,
    ) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| e.to_string())?;
        let header = pcap_file::pcap::PcapHeader {
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..Default::default()
        };
        let writer = pcap_file::pcap::PcapWriter::with_header(BufWriter::new(file), header)
            .map_err(|e| e.to_string())?;
        let epoch = if virtual_time {
            Duration::ZERO
        } else {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
        };
        let report = CaptureReport {
            vm: vm.to_string(),
            file: path.display().to_string(),
            frames: 0,
            not_captured: 0,
        };
        Ok(Self { writer, epoch, report })
    }

    /// Records `frame` at `t_ns` after the capture's epoch.
    pub(crate) fn write(&mut self, t_ns: u64, frame: &[u8]) {
        let at = self.epoch + Duration::from_nanos(t_ns);
        let packet = pcap_file::pcap::PcapPacket::new(at, frame.len() as u32, frame);
        if self.writer.write_packet(&packet).is_ok() {
            self.report.frames += 1;
        } else {
            self.report.not_captured += 1;
        }
    }

    /// Flushes the file; returns what it holds.
    pub(crate) fn finish(self) -> CaptureReport {
        let mut report = self.report;
        if std::io::Write::flush(&mut self.writer.into_writer()).is_err() {
            report.not_captured += report.frames;
            report.frames = 0;
        }
        report
    }

    /// Moves the writing to a thread of its own (live runs): the VM's thread only copies each
    /// frame into a bounded queue, and what does not fit is counted, never waited for.
    pub(crate) fn spawn_writer(mut self) -> (CaptureFeed, std::thread::JoinHandle<CaptureReport>) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(CAPTURE_QUEUE);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let feed = CaptureFeed { tx, dropped: dropped.clone() };
        let writer = std::thread::spawn(move || {
            for (t, frame) in rx {
                self.write(t, &frame);
            }
            let mut report = self.finish();
            report.not_captured += dropped.load(std::sync::atomic::Ordering::Relaxed);
            report
        });
        (feed, writer)
    }
}

/// The VM thread's end of a live capture.
pub(crate) struct CaptureFeed {
    tx: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CaptureFeed {
    /// Hands `frame` to the writer, or counts it if the writer is behind.
    pub(crate) fn offer(&self, t_ns: u64, frame: &[u8]) {
        if self.tx.try_send((t_ns, frame.to_vec())).is_err() {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The `--pcap` files, by VM index.
fn open_captures(
    placed: &Placed,
    options: &RunOptions,
) -> Result<BTreeMap<usize, Capture>, RunError> {
    let mut captures = BTreeMap::new();
    for (vm, path) in &options.pcap {
        let pcap_err = |message: String| RunError::Pcap {
            vm: vm.clone(),
            file: path.display().to_string(),
            message,
        };
        let i = placed
            .vm_index(vm)
            .ok_or_else(|| pcap_err("no VM of that name in the scenario".into()))?;
        captures.insert(i, Capture::create(vm, path, !options.live).map_err(pcap_err)?);
    }
    Ok(captures)
}

/// The report from what the traffic measured and the devices counted.
fn collect(
    file: &str,
    placed: &Placed,
    cloud: &Cloud,
    launched: &Launched,
    wired: &[WiredFlow],
    host_names: &[String],
    measured: Measured,
) -> Result<RunReport, RunError> {
    let fleet = &placed.fleet;
    let t = fleet.topology();
    let sample_s = placed.run.sample_ms as f64 / 1e3;
    let flows = placed
        .flows
        .iter()
        .zip(wired)
        .zip(&measured.flows)
        .map(|((f, w), m)| {
            let active = (w.stop_ns.saturating_sub(w.start_ns)) as f64 / 1e9;
            let class = fleet
                .network_class(placed.vms[f.from].id, placed.vms[f.to].id)
                .unwrap_or(NetworkClass::SameAz);
            let windows_used = ((w.stop_ns as f64 / 1e9) / sample_s).ceil() as usize;
            FlowReport {
                from: placed.vms[f.from].name.clone(),
                to: placed.vms[f.to].name.clone(),
                path: w.path,
                protocol: match (w.efa, w.tcp.is_some()) {
                    (true, _) => "srd",
                    (false, true) => "tcp",
                    (false, false) => "udp",
                },
                dst_port: f.dst_port,
                frame_bytes: f.frame,
                class,
                offered_gbps: w.offered_gbps,
                cap_gbps: w.cap_gbps,
                achieved_gbps: m.recv_bytes as f64 * 8.0 / active.max(1e-9) / 1e9,
                achieved_mpps: m.recv_frames as f64 / active.max(1e-9) / 1e6,
                sent_frames: m.sent_frames,
                received_frames: m.recv_frames,
                lost_frames: m.sent_frames.saturating_sub(m.recv_frames),
                sender_drops: m.sender_drops,
                gaps: m.gaps,
                duplicates: m.duplicates,
                throughput_gbps: m
                    .samples
                    .iter()
                    .take(windows_used.min(m.samples.len()))
                    .map(|&b| b as f64 * 8.0 / sample_s / 1e9)
                    .collect(),
                entry: f.decl,
                blocked: w.blocked.clone(),
                connection: m.tcp.as_ref().map(|t| {
                    let syn_retries = w.tcp.map_or(0, |s| s.syn_retries);
                    ConnectionReport::new(t, syn_retries, &placed.vms[f.to].name, f.dst_port)
                }),
            }
        })
        .collect();
    let mut vms = Vec::new();
    for (i, v) in placed.vms.iter().enumerate() {
        let inst = fleet.instance(v.id).map_err(|e| scenario_err(file)(e.to_string()))?;
        let mut enis = Vec::new();
        let ids: Vec<(EniId, String, String)> = cloud
            .enis()
            .enis_of(launched.vm_ids[i])
            .iter()
            .map(|e| (e.id, e.mac.to_string(), e.primary_ip.to_string()))
            .collect();
        for (id, mac, ip) in ids {
            let c = cloud.eni_counters(id).map_err(cloud_err(format!("counters of {}", v.name)))?;
            let (name, path) =
                launched.eni_names.get(&id).cloned().unwrap_or((format!("eni-{}", id.0), v.path));
            enis.push(EniReport {
                name,
                mac,
                ip,
                path,
                bw_in_allowance_exceeded: c.allowance.bw_in_allowance_exceeded,
                bw_out_allowance_exceeded: c.allowance.bw_out_allowance_exceeded,
                pps_allowance_exceeded: c.allowance.pps_allowance_exceeded,
                conntrack_allowance_exceeded: c.allowance.conntrack_allowance_exceeded
                    + c.port.conntrack_allowance_exceeded,
                linklocal_allowance_exceeded: c.allowance.linklocal_allowance_exceeded,
                flow_cap_exceeded: c.allowance.flow_cap_exceeded,
                shaper_drops: c.allowance.shaper_drops,
                tx_packets: c.queues.tx_packets,
                tx_bytes: c.queues.tx_bytes,
                rx_packets: c.queues.rx_packets,
                rx_bytes: c.queues.rx_bytes,
                rx_drops: c.queues.rx_drops,
                src_dst_check_drops: c.port.tx_src_dst_check + c.port.rx_src_dst_check,
                security_group_drops: c.port.tx_security_group_drops
                    + c.port.rx_security_group_drops,
                nacl_drops: c.port.tx_nacl_drops + c.port.rx_nacl_drops,
                engine_share_exhausted: c.port.engine_share_exhausted,
            });
        }
        let placement = crate::plan::VmPlacement {
            name: v.name.clone(),
            instance_type: v.instance_type.name.clone(),
            az: t.azs[t.az_of(inst.host).index()].name.clone(),
            rack: t.rack_of(inst.host).0,
            host: inst.host.0,
            group: inst.group.map(|g| fleet.group(g).name.clone()),
            partition: inst.partition,
        };
        vms.push(VmReport { placement, enis });
    }
    let latency = path_latencies(measured.latency.into_iter().map(|log| (log.total(), Some(log))));
    let rtt = path_latencies(measured.rtt.into_iter().map(|h| (h, None)));
    let fabric = cloud.fabric().stats();
    let traps = (0..host_names.len()).filter_map(|h| cloud.emulated_traps(h)).sum();
    use std::sync::atomic::Ordering;
    Ok(RunReport {
        scenario: placed.name.clone(),
        duration_s: placed.duration_s,
        sample_s,
        hosts: host_names.len(),
        vms,
        flows,
        latency,
        rtt,
        failures: measured.failures,
        rule_changes: placed
            .security
            .changes
            .iter()
            .map(|c| RuleChangeReport { at_s: c.at_s, says: c.says.clone() })
            .collect(),
        fabric_frames: fabric.frames.load(Ordering::Relaxed),
        fabric_drops: fabric.fabric_drops.load(Ordering::Relaxed),
        emulated_traps: traps,
        simulation: measured.simulation,
        breakdown: measured.breakdown,
        cpu: measured.cpu,
        hypervisor_cpu: measured.hypervisor_cpu,
        captures: measured.captures,
        flow_logs: Vec::new(),
    })
}

/// Percentiles of each path's histogram (paths with none left out).
fn path_latencies(
    histograms: impl Iterator<Item = (Histogram<u64>, Option<LatencyLog>)>,
) -> Vec<PathLatency> {
    PATHS
        .iter()
        .zip(histograms)
        .filter(|(_, (h, _))| !h.is_empty())
        .map(|(&path, (h, log))| PathLatency {
            path,
            frames: h.len(),
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p90_us: h.value_at_quantile(0.90) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: h.value_at_quantile(0.999) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            histogram: h,
            log,
        })
        .collect()
}

/// The single-flow cap the device applies between two VMs, Gbps (as the hypervisor's policy).
fn flow_cap_gbps(placed: &Placed, from: usize, to: usize) -> f64 {
    let (a, b) = (&placed.vms[from], &placed.vms[to]);
    let model = &placed.network;
    let class = placed.fleet.network_class(a.id, b.id).unwrap_or(NetworkClass::SameAz);
    let same_cluster = a.cluster_group.is_some() && a.cluster_group == b.cluster_group;
    hypervisor_sim::cloud::flow_cap_gbps(
        model,
        &a.instance_type,
        class == NetworkClass::OtherRegion,
        same_cluster,
    )
}

/// A progress bar over `total_s` seconds (simulated or wall), in tenths.
fn progress_bar(total_s: f64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new((total_s * 10.0) as u64);
    let template = format!("{{spinner}} {what} {{bar:40}} {{elapsed}} ");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
