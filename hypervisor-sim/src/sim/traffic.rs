//! Paced UDP flows and TCP connections (the `tcp` module) between VMs, simulated in virtual time over a
//! [`Cloud`] built with [`Cloud::new_virtual`], with the scenario's security group and NACL
//! changes applied to the devices as events.
//!
//! One frame of an SR-IOV flow, and the events that carry it (costs from [`CostModel`]):
//!
//! 1. **Due** at `t` (periodic, or Poisson from the flow's own random stream). The sender's vCPU
//!    takes every frame of the flow due by then (at most 32), pays the kernel's send path per
//!    frame and one doorbell for the burst, and is busy until it has.
//! 2. **Post**: the frames, stamped with their due times, go into the real TX ring through the
//!    guest's real driver; the doorbell reaches the PF.
//! 3. **Doorbell** at the engine: the descriptor fetch and the payload fetch (two PCIe round
//!    trips, the bytes at PCIe's rate) and the pipeline per frame, after whatever the engine is
//!    still busy with.
//! 4. **Engine step**: the real engine polls — validates, gathers, shapes on the virtual clock,
//!    switches, copies into the receiver's posted buffer, or hands the frame to the fabric, which
//!    stamps it with the link's serialisation and the class's latency. Held frames, moderated
//!    interrupts and frames arriving from the fabric ask for later steps of their engine.
//! 5. **Interrupt**: when the device raises the receiver's line (at once for a busy-polling
//!    guest; after ENA's moderation otherwise), the RX completion lands (a posted write) and the
//!    interrupt is delivered.
//! 6. **Receive**: the receiver's vCPU runs the receive path per frame; the frame's one-way
//!    latency is from its due time to the end of its own receive work.
//!
//! On the emulated path the doorbell is a VM exit instead, and the hypervisor's worker (one host
//! CPU) wakes, copies the frames through its software switch into its backend VF (whose doorbell
//! then reaches the PF as above) and, on the way in, from the backend to the guest, injecting a
//! virtual interrupt.
//!
//! Every received frame's latency is split into components (sender vCPU wait, guest send path,
//! doorbell or VM exit, hypervisor, device, wire, interrupt, receiver vCPU wait, guest receive
//! path); what is left is queueing the model does not attribute frame by frame (shaper holds,
//! moderation delays, link queues), reported as `queueing`.

mod efa;
pub(crate) mod tcp;

pub use efa::{EfaFlowSpec, EfaOutcome, HEADER_BYTES as EFA_HEADER_BYTES, Pattern};
pub use tcp::{
    Client as TcpClient, Connect, INITIAL_RTO_NS, LINUX_SYN_RETRIES, MAX_SYN_RETRIES,
    SEGMENTS_PER_ACK, Server as TcpServer, TcpOutcome, TcpSpec, flow_connection, give_up_after_ns,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vnic::device::InterruptLine;

use super::costs::CostModel;
use super::{Scheduler, SplitMix64};
use crate::cloud::{Cloud, CloudError, NicHome};
use crate::eni::VmState;
use crate::eni::{EniId, VmId};
use crate::guest::GuestCtx;
use crate::traffic::{
    FlowFrame, LatencyLog, STAMP_AT, dest_port, read_stamp, reflect, source_port, stamp,
};

/// Where a frame says it is a ping-pong reply: the byte after its stamp (every frame of
/// [`crate::traffic::MIN_FRAME`] bytes or more has it).
const REPLY_MARK_AT: usize = STAMP_AT + 16;

fn is_reply(frame: &[u8]) -> bool {
    frame.get(REPLY_MARK_AT) == Some(&1)
}

fn mark_reply(frame: &mut [u8]) {
    if let Some(b) = frame.get_mut(REPLY_MARK_AT) {
        *b = 1;
    }
}

/// The frame's (source, destination) ports.
fn dest_ports(frame: &[u8]) -> Option<(u16, u16)> {
    Some((source_port(frame)?, dest_port(frame)?))
}

/// When and how a frame of a poll was received, for the flow's counters and latency parts.
#[derive(Clone, Copy)]
struct Received {
    /// The end of its receive work.
    t: u64,
    /// When the poll began.
    start: u64,
    wait: u64,
    notify: u64,
    hypervisor: u64,
    sample_ns: u64,
}

impl Received {
    /// A data frame of `flow` arrived: its latency (from its stamp), sequence, bytes and parts.
    fn data(
        &self,
        flow: &mut Flow,
        latency: &mut [LatencyLog],
        frame: &[u8],
        moderation: &mut u64,
    ) {
        let out = &mut flow.out;
        if let Some((seq, due)) = read_stamp(frame) {
            let one_way = self.t.saturating_sub(due).max(1);
            if let Some(log) = latency.get_mut(flow.spec.path) {
                log.record(self.t, one_way);
            }
            out.latency_sum_ns += one_way;
            if flow.rx_seq.gap(seq) {
                out.gaps += 1;
            }
        }
        out.recv_frames += 1;
        out.recv_bytes += frame.len() as u64;
        if let Some(s) = out.samples.get_mut((self.t / self.sample_ns) as usize) {
            *s += frame.len() as u64;
        }
        let parts = &mut out.rx_parts.sum_ns;
        parts[RECEIVER_WAIT] += self.wait;
        parts[INTERRUPT] += self.notify;
        parts[MODERATION] += std::mem::take(moderation);
        parts[HYPERVISOR] += self.hypervisor;
        parts[GUEST_RX] += self.t - self.start;
    }
}

pub use crate::paced::{Arrivals, BURST, MAX_BACKLOG_NS};
use crate::paced::{Pacer, SeqCheck};

/// One flow to simulate.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// Sender.
    pub from: VmId,
    /// Receiver.
    pub to: VmId,
    /// The sender's ENI.
    pub src_eni: EniId,
    /// The receiver's ENI.
    pub dst_eni: EniId,
    /// The frame (its UDP source port identifies the flow at the receiver).
    pub frame: FlowFrame,
    /// Mean time between frames, ns.
    pub interval_ns: u64,
    /// First frame due, ns.
    pub start_ns: u64,
    /// No frame due at or after this, ns.
    pub stop_ns: u64,
    /// Periodic or Poisson.
    pub arrivals: Arrivals,
    /// One way, or each frame reflected back by the receiver (round trips recorded).
    pub pattern: Pattern,
    /// The report's path index for this flow (latency histograms and breakdowns are per path).
    pub path: usize,
    /// A TCP connection (the frame is then a TCP data segment): how its ends behave.
    pub tcp: Option<TcpSpec>,
}

/// A simulated run.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    /// The flows.
    pub flows: Vec<FlowSpec>,
    /// Failures: at a time, these VMs stop (their devices are reset and returned).
    pub failures: Vec<(u64, Vec<VmId>)>,
    /// Senders stop at this time, ns.
    pub end_ns: u64,
    /// Time after `end_ns` for frames in flight to arrive, ns.
    pub drain_ns: u64,
    /// Throughput sample width, ns.
    pub sample_ns: u64,
    /// Report paths (flows name theirs by index).
    pub paths: usize,
    /// The run's seed (each flow's stream is derived from it and the flow's index).
    pub seed: u64,
    /// Costs.
    pub costs: CostModel,
    /// EFA flows (SRD messages between EFA devices).
    pub efa_flows: Vec<EfaFlowSpec>,
    /// Share of SRD packets the fabric loses (0 to 1), answered by SRD's retransmission.
    pub efa_loss: f64,
    /// Security group and NACL changes: at a time, new rules for these ENIs' devices.
    pub rule_changes: Vec<(u64, Vec<RuleUpdate>)>,
}

/// New rules for one ENI's device filter ([`Cloud::update_eni_rules`]).
#[derive(Debug, Clone)]
pub struct RuleUpdate {
    /// The ENI.
    pub eni: EniId,
    /// Its groups, compiled with the change.
    pub groups: vnic::policy::sg::CompiledGroups,
    /// Its subnet's NACL with the change.
    pub nacl: Arc<vnic::policy::nacl::Nacl>,
}

/// Who watches a run without changing it: captures and progress.
pub trait Observer {
    /// Whether frames of VM `vm` are wanted (then [`Observer::frame`] gets them).
    fn captures(&self, _vm: VmId) -> bool {
        false
    }
    /// A frame VM `vm` sent or received at virtual time `t_ns`.
    fn frame(&mut self, _vm: VmId, _t_ns: u64, _frame: &[u8]) {}
    /// Virtual time reached, now and then.
    fn progress(&mut self, _now_ns: u64) {}
}

/// An observer that watches nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Parts of a frame's one-way latency, in report order.
pub const COMPONENTS: [&str; 11] = [
    "sender_vcpu_wait",
    "guest_tx_stack",
    "doorbell_or_vm_exit",
    "hypervisor",
    "device",
    "wire",
    "interrupt",
    "moderation",
    "receiver_vcpu_wait",
    "guest_rx_stack",
    "queueing",
];

const SENDER_WAIT: usize = 0;
const GUEST_TX: usize = 1;
const DOORBELL: usize = 2;
const HYPERVISOR: usize = 3;
const DEVICE: usize = 4;
const WIRE: usize = 5;
const INTERRUPT: usize = 6;
const MODERATION: usize = 7;
const RECEIVER_WAIT: usize = 8;
const GUEST_RX: usize = 9;
const QUEUEING: usize = 10;

/// Sums of latency parts, frame-nanoseconds: the send side's over frames sent, the receive
/// side's over frames received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    /// Per component (see [`COMPONENTS`]), frame-ns.
    pub sum_ns: [u64; COMPONENTS.len()],
}

/// What one flow did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowOutcome {
    /// Frames the sender's driver took.
    pub sent_frames: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames the sender dropped (its ring full, or more than 5 ms behind schedule).
    pub sender_drops: u64,
    /// Frames received.
    pub recv_frames: u64,
    /// Their bytes.
    pub recv_bytes: u64,
    /// Sequence gaps seen by the receiver.
    pub gaps: u64,
    /// Bytes received per sample window (by receive time).
    pub samples: Vec<u64>,
    /// Send-side latency parts (over `sent_frames`).
    pub tx_parts: Parts,
    /// Receive-side latency parts (over `recv_frames`).
    pub rx_parts: Parts,
    /// Sum of one-way latencies of received frames, ns.
    pub latency_sum_ns: u64,
    /// A TCP flow's connection.
    pub tcp: Option<TcpOutcome>,
}

/// A path's mean one-way latency split by component.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// Frames received on the path.
    pub frames: u64,
    /// Mean one-way latency, ns.
    pub mean_ns: f64,
    /// Mean per component, ns, in [`COMPONENTS`] order; the last (`queueing`) is what the
    /// others leave of the mean.
    pub mean_parts_ns: [f64; COMPONENTS.len()],
}

/// CPU a VM's work took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCpu {
    /// The VM.
    pub vm: VmId,
    /// Its vCPUs.
    pub vcpus: u32,
    /// vCPU-ns of modelled work (kernel send and receive paths; a busy-polling guest also
    /// spins, which is not counted).
    pub busy_ns: u64,
}

/// What a simulated run measured.
#[derive(Debug)]
pub struct SimOutcome {
    /// Per flow, in spec order.
    pub flows: Vec<FlowOutcome>,
    /// Per EFA flow, in spec order.
    pub efa_flows: Vec<EfaOutcome>,
    /// Round trips of ping-pong EFA flows, per path.
    pub rtt: Vec<Histogram<u64>>,
    /// One-way latency per path (the sum of `latency_log`'s intervals).
    pub latency: Vec<Histogram<u64>>,
    /// One-way latency per path and sample window, by receive time.
    pub latency_log: Vec<LatencyLog>,
    /// Per path.
    pub breakdown: Vec<Breakdown>,
    /// Per VM.
    pub vm_cpu: Vec<VmCpu>,
    /// Per host: host-CPU ns its hypervisor worker spent on the emulated path.
    pub hypervisor_cpu_ns: Vec<u64>,
    /// Per host and PF: engine-ns of device work.
    pub engine_busy_ns: Vec<((usize, usize), u64)>,
    /// Failures applied: (time, VMs stopped).
    pub failures: Vec<(u64, Vec<VmId>)>,
    /// Events simulated.
    pub events: u64,
    /// Virtual time simulated, ns.
    pub simulated_ns: u64,
    /// Wall time the simulation took (not part of any result).
    pub wall: Duration,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The cloud is live (built with `Cloud::new`), not virtual.
    #[error("the cloud was not built for virtual time (Cloud::new_virtual)")]
    NotVirtual,
    /// The EFA devices could not be set up.
    #[error("EFA: {0}")]
    Efa(String),
    /// A flow names something the cloud does not have.
    #[error("flow {flow}: {what}")]
    Flow {
        /// Its index.
        flow: usize,
        /// What is missing.
        what: String,
    },
    /// The cloud refused something.
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

#[derive(Debug)]
enum Event {
    FlowDue(usize),
    FlowPost(usize),
    Doorbell { engine: usize, flows: Vec<(usize, u64)>, bytes: u64 },
    EngineStep(usize),
    GuestRx { vm: usize, nic: usize },
    ReplyPost { vm: usize, nic: usize },
    HypervisorWake(usize),
    EmulatedTimer(usize),
    Failure(usize),
    RuleChange(usize),
    EfaDue(usize),
    EfaPost(usize),
    EfaStep(usize),
    EfaApp(usize),
    TcpOpen(usize),
    TcpRetry { flow: usize, syns: u32 },
    TcpClose(usize),
}

struct Flow {
    spec: FlowSpec,
    vm: usize,
    nic: usize,
    vcpu: usize,
    emulated: bool,
    engine: usize,
    host: usize,
    wire_ns: u64,
    /// When its frames fall due (the same schedule a live sender keeps).
    pacer: Pacer,
    /// The sequence number of the burst being posted.
    first_seq: u64,
    /// Due times of the burst being posted.
    burst: Vec<u64>,
    /// Copies of the frame, one per burst slot used so far.
    batch: Vec<Vec<u8>>,
    posting: bool,
    rx_seq: SeqCheck,
    out: FlowOutcome,
    /// A TCP flow's connection: its client's end and its server's.
    conn: Option<(tcp::Client, tcp::Server)>,
}

struct SimNic {
    line: Option<Arc<InterruptLine>>,
    interrupts: bool,
    rx_scheduled: bool,
    visible_at: u64,
    notify_ns: u64,
    hypervisor_ns: u64,
    /// The engine its doorbells reach (its VF's PF, or the emulated model's backend PF), its
    /// host, and whether it traps.
    engine: Option<usize>,
    host: usize,
    emulated: bool,
    /// Reflected frames waiting to be sent (ping-pong replies), and whether a post is due.
    replies: Vec<Vec<u8>>,
    /// Reply buffers already sent, for reuse.
    spare: Vec<Vec<u8>>,
    reply_posting: bool,
    /// Its ENI, and the device's moderation wait read so far and not yet attributed.
    eni: EniId,
    moderation_seen: u64,
    moderation_pending: u64,
}

struct SimVm {
    id: VmId,
    ctx: GuestCtx,
    vcpu_free: Vec<u64>,
    busy_ns: u64,
    alive: bool,
    nics: Vec<SimNic>,
    /// Flows received, by UDP source port.
    flows_in: BTreeMap<u16, usize>,
    /// Ping-pong flows it started, by their UDP source port (a reply's destination port).
    replies_in: BTreeMap<u16, usize>,
    /// TCP connections it is an end of, by the (source, destination) ports of what it receives.
    tcp_in: BTreeMap<(u16, u16), (usize, tcp::Side)>,
}

struct EngineState {
    host: usize,
    pf: usize,
    free_at: u64,
    busy_ns: u64,
    timer_at: Option<u64>,
    /// SR-IOV NICs served: (vm, nic).
    nics: Vec<(usize, usize)>,
    /// The host whose emulated model's backend VF this PF serves.
    backend_of: Option<usize>,
}

#[derive(Default)]
struct HypervisorState {
    free_at: u64,
    busy_ns: u64,
    scheduled: bool,
    timer_at: Option<u64>,
    /// Guests' NICs on the model's ports: (vm, nic).
    nics: Vec<(usize, usize)>,
    /// Flows that trapped since the last service: (flow, frames, when).
    trapped: Vec<(usize, u64, u64)>,
    /// When the backend's interrupt was raised (for the receive side's hypervisor part).
    rx_raised_at: Option<u64>,
}

/// The simulation (see the module docs).
struct Sim<'a> {
    cloud: &'a mut Cloud,
    costs: CostModel,
    sched: Scheduler<Event>,
    flows: Vec<Flow>,
    vms: Vec<SimVm>,
    engines: Vec<EngineState>,
    hypervisors: Vec<HypervisorState>,
    latency: Vec<LatencyLog>,
    sample_ns: u64,
    failures: Vec<(u64, Vec<VmId>)>,
    applied: Vec<(u64, Vec<VmId>)>,
    rule_changes: Vec<(u64, Vec<RuleUpdate>)>,
    efa: efa::EfaWorld,
    seed: u64,
}

/// Simulates `spec` on `cloud` (built with [`Cloud::new_virtual`], its VMs launched) until
/// `end_ns + drain_ns`; every running VM is driven, whether or not it has flows.
pub fn simulate(
    cloud: &mut Cloud,
    spec: &TrafficSpec,
    observer: &mut dyn Observer,
) -> Result<SimOutcome, SimError> {
    let wall = Instant::now();
    let clock = cloud.virtual_clock().cloned().ok_or(SimError::NotVirtual)?;
    let mut sim = Sim::build(cloud, spec, Scheduler::new(clock))?;
    sim.efa =
        efa::EfaWorld::build(&mut sim, &spec.efa_flows, spec.efa_loss).map_err(SimError::Efa)?;
    for f in 0..sim.efa.flows.len() {
        let spec = &sim.efa.flows[f].spec;
        if spec.start_ns < spec.stop_ns {
            let at = spec.start_ns;
            sim.sched.at(at, Event::EfaDue(f));
        }
    }
    let horizon = spec.end_ns + spec.drain_ns;
    for f in 0..sim.flows.len() {
        // A TCP flow opens its connection first; its data starts once it is established.
        let Some(at) = sim.flows[f].pacer.next_due() else { continue };
        let event = if sim.flows[f].conn.is_some() { Event::TcpOpen(f) } else { Event::FlowDue(f) };
        sim.sched.at(at, event);
    }
    for (i, (at, _)) in spec.failures.iter().enumerate() {
        sim.sched.at(*at, Event::Failure(i));
    }
    for (i, (at, _)) in spec.rule_changes.iter().enumerate() {
        sim.sched.at(*at, Event::RuleChange(i));
    }
    while let Some((now, event)) = sim.sched.next_until(horizon) {
        sim.handle(now, event, observer);
        if sim.sched.events().is_multiple_of(1 << 16) {
            observer.progress(now);
        }
    }
    sim.sched.advance_to(horizon);
    observer.progress(horizon);
    Ok(sim.finish(horizon, wall.elapsed()))
}

impl<'a> Sim<'a> {
    fn build(
        cloud: &'a mut Cloud,
        spec: &TrafficSpec,
        sched: Scheduler<Event>,
    ) -> Result<Self, SimError> {
        let mut engines = Vec::new();
        let mut engine_of = BTreeMap::new();
        for (h, p, _) in cloud.engines() {
            engine_of.insert((h, p), engines.len());
            engines.push(EngineState {
                host: h,
                pf: p,
                free_at: 0,
                busy_ns: 0,
                timer_at: None,
                nics: Vec::new(),
                backend_of: None,
            });
        }
        let mut hypervisors: Vec<HypervisorState> =
            (0..cloud.host_count()).map(|_| HypervisorState::default()).collect();
        let mut vms = Vec::new();
        let mut vm_index = BTreeMap::new();
        let mut homes = BTreeMap::new();
        for id in cloud.vm_ids() {
            if cloud.enis().vm_state(id).ok() != Some(VmState::Running) {
                continue;
            }
            let vcpus = cloud.vm_spec(id).map_or(1, |s| s.instance_type.vcpus.max(1));
            let ctx = cloud.attach_guest(id)?;
            let mut nics = Vec::new();
            for (n, nic) in ctx.nics.iter().enumerate() {
                let home = cloud.nic_home(nic.eni);
                homes.insert(nic.eni, (vms.len(), n, home));
                let (mut engine, mut nic_host, mut emulated) = (None, 0, false);
                match home {
                    Some(NicHome::Vf { host, pf }) => {
                        if let Some(&e) = engine_of.get(&(host, pf)) {
                            engines[e].nics.push((vms.len(), n));
                            engine = Some(e);
                        }
                        nic_host = host;
                    }
                    Some(NicHome::Emulated { host, backend_pf }) => {
                        hypervisors[host].nics.push((vms.len(), n));
                        if let Some(&e) = engine_of.get(&(host, backend_pf)) {
                            engines[e].backend_of = Some(host);
                            engine = Some(e);
                        }
                        (nic_host, emulated) = (host, true);
                    }
                    None => {}
                }
                let interrupts = cloud
                    .vm_spec(id)
                    .is_some_and(|s| s.rx_notification != vnic::device::Notification::BusyPoll);
                nics.push(SimNic {
                    line: nic.rx_line().cloned(),
                    interrupts,
                    rx_scheduled: false,
                    visible_at: 0,
                    notify_ns: 0,
                    hypervisor_ns: 0,
                    engine,
                    host: nic_host,
                    emulated,
                    replies: Vec::new(),
                    spare: Vec::new(),
                    reply_posting: false,
                    eni: nic.eni,
                    moderation_seen: 0,
                    moderation_pending: 0,
                });
            }
            vm_index.insert(id, vms.len());
            vms.push(SimVm {
                id,
                ctx,
                vcpu_free: vec![0; vcpus as usize],
                busy_ns: 0,
                alive: true,
                nics,
                flows_in: BTreeMap::new(),
                replies_in: BTreeMap::new(),
                tcp_in: BTreeMap::new(),
            });
        }
        let windows = ((spec.end_ns + spec.drain_ns) / spec.sample_ns.max(1) + 2) as usize;
        let spec_seed = spec.seed;
        let mut flows = Vec::new();
        for (i, f) in spec.flows.iter().enumerate() {
            let missing = |what: &str| SimError::Flow { flow: i, what: what.into() };
            let &(vm, nic, home) =
                homes.get(&f.src_eni).ok_or_else(|| missing("its ENI is on no running VM"))?;
            let home = home.ok_or_else(|| missing("its ENI has no device"))?;
            let &dst = vm_index.get(&f.to).ok_or_else(|| missing("the receiver is not running"))?;
            let (host, pf, emulated) = match home {
                NicHome::Vf { host, pf } => (host, pf, false),
                NicHome::Emulated { host, backend_pf } => (host, backend_pf, true),
            };
            let &engine = engine_of.get(&(host, pf)).ok_or_else(|| missing("its PF is gone"))?;
            let port = source_port(f.frame.bytes()).ok_or_else(|| missing("not an IPv4 frame"))?;
            let conn = match f.tcp {
                Some(spec) => {
                    let conn = tcp::flow_connection(spec, f.frame.bytes(), spec_seed, i)
                        .ok_or_else(|| missing("a TCP flow whose frame is not a TCP segment"))?;
                    vms[vm].tcp_in.insert(conn.0.ports_in(), (i, tcp::Side::Client));
                    vms[dst].tcp_in.insert(conn.1.ports_in(), (i, tcp::Side::Server));
                    Some(conn)
                }
                None => {
                    vms[dst].flows_in.insert(port, i);
                    if f.pattern == Pattern::PingPong {
                        vms[vm].replies_in.insert(port, i);
                    }
                    None
                }
            };
            let vcpus = vms[vm].vcpu_free.len();
            let sends_before = flows.iter().filter(|g: &&Flow| g.vm == vm).count();
            let wire_ns = wire_ns(cloud, &homes, &engine_of, engine, f);
            flows.push(Flow {
                spec: f.clone(),
                vm,
                nic,
                // Receive work runs on vCPU 0; senders take the others first.
                vcpu: (1 + sends_before) % vcpus,
                emulated,
                engine,
                host,
                wire_ns,
                pacer: Pacer::new(
                    f.interval_ns,
                    f.start_ns,
                    f.stop_ns,
                    f.arrivals,
                    SplitMix64::new(spec.seed, i as u64),
                ),
                first_seq: 0,
                burst: Vec::with_capacity(BURST),
                batch: Vec::new(),
                posting: false,
                rx_seq: SeqCheck::default(),
                out: FlowOutcome { samples: vec![0; windows], ..Default::default() },
                conn,
            });
        }
        Ok(Self {
            cloud,
            costs: spec.costs,
            sched,
            flows,
            vms,
            engines,
            hypervisors,
            latency: (0..spec.paths.max(1))
                .map(|_| LatencyLog::new(spec.sample_ns, spec.end_ns + spec.drain_ns))
                .collect(),
            sample_ns: spec.sample_ns.max(1),
            failures: spec.failures.clone(),
            applied: Vec::new(),
            rule_changes: spec.rule_changes.clone(),
            efa: efa::EfaWorld::default(),
            seed: spec.seed,
        })
    }

    fn handle(&mut self, now: u64, event: Event, observer: &mut dyn Observer) {
        match event {
            Event::FlowDue(f) => self.flow_due(now, f),
            Event::FlowPost(f) => self.flow_post(now, f, observer),
            Event::Doorbell { engine, flows, bytes } => {
                let frames = flows.iter().map(|&(_, k)| k).sum();
                self.doorbell(now, engine, frames, bytes, &flows)
            }
            Event::EngineStep(e) => {
                if self.engines[e].timer_at == Some(now) {
                    self.engines[e].timer_at = None;
                }
                self.engine_step(now, e);
            }
            Event::GuestRx { vm, nic } => self.guest_rx(now, vm, nic, observer),
            Event::ReplyPost { vm, nic } => self.reply_post(now, vm, nic, observer),
            Event::HypervisorWake(h) => self.hypervisor_wake(now, h),
            Event::EmulatedTimer(h) => {
                if self.hypervisors[h].timer_at == Some(now) {
                    self.hypervisors[h].timer_at = None;
                }
                if let Some(em) = self.cloud.emulated(h) {
                    em.tick();
                }
                self.emulated_lines(h, now, 0);
                self.emulated_timer(now, h);
            }
            Event::Failure(i) => self.failure(now, i),
            Event::RuleChange(i) => {
                // The device takes new rules between two polls; an ENI gone (its VM stopped)
                // has nothing to filter.
                let updates = self.rule_changes.get(i).map(|c| c.1.clone()).unwrap_or_default();
                for u in updates {
                    let _ = self.cloud.update_eni_rules(u.eni, u.groups, u.nacl);
                }
            }
            Event::EfaDue(f) => self.efa_due(now, f),
            Event::EfaPost(f) => self.efa_post(now, f),
            Event::EfaStep(n) => self.efa_step(now, n),
            Event::EfaApp(n) => self.efa_app(now, n),
            Event::TcpOpen(f) => self.tcp_syn(now, f),
            Event::TcpRetry { flow, syns } => {
                if self.flows[flow].conn.as_mut().is_some_and(|c| c.0.syn_timer(now, syns)) {
                    self.tcp_syn(now, flow);
                }
            }
            Event::TcpClose(f) => self.tcp_close(now, f),
        }
    }

    /// The client sends a SYN (its first, or a retransmission) and arms its timer.
    fn tcp_syn(&mut self, now: u64, f: usize) {
        let flow = &mut self.flows[f];
        let Some((client, _)) = flow.conn.as_mut() else { return };
        let (vm, nic, cpu) = (flow.vm, flow.nic, flow.vcpu);
        let mut buf = self.vms[vm].nics[nic].spare.pop().unwrap_or_default();
        let retry_at = client.syn(now, &mut buf);
        let syns = client.out.syns;
        self.send_control(now, vm, nic, cpu, buf);
        self.sched.at(retry_at, Event::TcpRetry { flow: f, syns });
    }

    /// The client's data is done: it sends its FIN once its last burst is posted.
    fn tcp_close(&mut self, now: u64, f: usize) {
        let flow = &mut self.flows[f];
        let (vm, nic, cpu) = (flow.vm, flow.nic, flow.vcpu);
        if flow.posting || flow.pacer.next_due().is_some() {
            let later = self.vms[vm].vcpu_free[cpu].max(now + 1);
            self.sched.at(later, Event::TcpClose(f));
            return;
        }
        let segments = flow.pacer.seq();
        let Some((client, _)) = flow.conn.as_mut() else { return };
        let mut buf = self.vms[vm].nics[nic].spare.pop().unwrap_or_default();
        if client.fin(&mut buf, segments) {
            self.send_control(now, vm, nic, cpu, buf);
        } else {
            self.vms[vm].nics[nic].spare.push(buf);
        }
    }

    /// A connection's handshake completed at the client at `t`: its data starts.
    fn tcp_established(&mut self, t: u64, f: usize) {
        let flow = &mut self.flows[f];
        flow.pacer.start_at(t);
        if let Some(due) = flow.pacer.next_due() {
            self.sched.at(due, Event::FlowDue(f));
        }
        let stop = flow.spec.stop_ns.max(t);
        self.sched.at(stop, Event::TcpClose(f));
    }

    /// A segment of the guest's own (a SYN, an ACK, a FIN) joins its NIC's control queue; the
    /// vCPU `cpu` pays the send path and the doorbell, unless a post is already on its way.
    fn send_control(&mut self, now: u64, vm: usize, nic: usize, cpu: usize, frame: Vec<u8>) {
        let c = self.costs;
        let v = &mut self.vms[vm];
        if !v.alive {
            return;
        }
        let n = &mut v.nics[nic];
        let len = frame.len();
        n.replies.push(frame);
        if n.reply_posting {
            return;
        }
        let bell = if n.emulated { c.vm_exit_ns } else { c.doorbell_ns };
        let cpu = cpu % v.vcpu_free.len().max(1);
        let start = now.max(v.vcpu_free[cpu]);
        let work = c.guest_tx_ns(len) + bell;
        v.vcpu_free[cpu] = start + work;
        v.busy_ns += work;
        n.reply_posting = true;
        self.sched.at(start + work, Event::ReplyPost { vm, nic });
    }

    /// A sender's vCPU takes the frames due and pays the send path for them.
    fn flow_due(&mut self, now: u64, f: usize) {
        let flow = &mut self.flows[f];
        let vm = &mut self.vms[flow.vm];
        let Some(next) = flow.pacer.next_due().filter(|_| vm.alive && !flow.posting) else {
            return;
        };
        let free = vm.vcpu_free[flow.vcpu];
        if free > now {
            self.sched.at(free, Event::FlowDue(f));
            return;
        }
        let taken = flow.pacer.take_due(now, &mut flow.burst);
        flow.out.sender_drops += taken.dropped;
        flow.first_seq = taken.first_seq;
        let k = flow.burst.len() as u64;
        if k == 0 {
            if let Some(due) = flow.pacer.next_due() {
                self.sched.at(due.max(next), Event::FlowDue(f));
            }
            return;
        }
        let len = flow.spec.frame.bytes().len();
        let c = &self.costs;
        let stack = k * c.guest_tx_ns(len);
        let bell = if flow.emulated { c.vm_exit_ns } else { c.doorbell_ns };
        let post = now + stack + bell;
        let parts = &mut flow.out.tx_parts.sum_ns;
        parts[SENDER_WAIT] += flow.burst.iter().map(|d| now - d).sum::<u64>();
        parts[GUEST_TX] += k * stack;
        parts[DOORBELL] += k * bell;
        parts[WIRE] += k * flow.wire_ns;
        vm.vcpu_free[flow.vcpu] = post;
        vm.busy_ns += stack + bell;
        flow.posting = true;
        self.sched.at(post, Event::FlowPost(f));
    }

    /// The burst goes into the real TX ring; the doorbell (or the trap) follows.
    fn flow_post(&mut self, now: u64, f: usize, observer: &mut dyn Observer) {
        let flow = &mut self.flows[f];
        flow.posting = false;
        let vm = &mut self.vms[flow.vm];
        if !vm.alive {
            return;
        }
        let k = flow.burst.len();
        // The flow keeps copies of its frame, one per burst slot it has used: a post stamps
        // them (16 bytes each) and the driver makes the one copy a real stack makes, into its
        // TX buffers.
        while flow.batch.len() < k {
            flow.batch.push(flow.spec.frame.bytes().to_vec());
        }
        for (j, buf) in flow.batch.iter_mut().take(k).enumerate() {
            let seq = flow.first_seq + j as u64;
            stamp(buf, seq, flow.burst[j]);
            if let Some((client, _)) = &flow.conn {
                client.number(buf, seq);
            }
        }
        let mut refs: [&[u8]; BURST] = [&[]; BURST];
        for (r, buf) in refs.iter_mut().zip(&flow.batch) {
            *r = buf;
        }
        let refs = &refs[..k];
        let nic = &mut vm.ctx.nics[flow.nic];
        let n = nic.send(f, refs);
        if observer.captures(vm.id) {
            for frame in &refs[..n] {
                observer.frame(vm.id, now, frame);
            }
        }
        let len = flow.spec.frame.bytes().len() as u64;
        flow.out.sent_frames += n as u64;
        flow.out.sent_bytes += n as u64 * len;
        flow.out.sender_drops += (k - n) as u64;
        if n > 0 && flow.emulated {
            // The trap: the scheduler wakes the hypervisor itself, after the wake-up cost.
            if let Some(line) = nic.trap_line() {
                line.take();
            }
            let hv = &mut self.hypervisors[flow.host];
            hv.trapped.push((f, n as u64, now));
            if !hv.scheduled {
                hv.scheduled = true;
                self.sched
                    .at(now + self.costs.hypervisor_wake_ns, Event::HypervisorWake(flow.host));
            }
        }
        if let Some(due) = flow.pacer.next_due() {
            self.sched.at(due.max(now), Event::FlowDue(f));
        }
        if n > 0 && !flow.emulated {
            // The doorbell reaches the engine now: no event of its own.
            let engine = flow.engine;
            self.doorbell(now, engine, n as u64, n as u64 * len, &[(f, n as u64)]);
        }
    }

    /// The engine fetches a burst of `frames` (`bytes` in all): its descriptors, its payload,
    /// the pipeline; the wait is attributed to the flows named in `flows`.
    fn doorbell(&mut self, now: u64, e: usize, frames: u64, bytes: u64, flows: &[(usize, u64)]) {
        let engine = &mut self.engines[e];
        let start = now.max(engine.free_at);
        let busy = self.costs.device_occupancy_ns(frames, bytes);
        engine.free_at = start + busy;
        engine.busy_ns += busy;
        let done = start + self.costs.device_tx_ns(frames, bytes);
        for &(f, k) in flows {
            self.flows[f].out.tx_parts.sum_ns[DEVICE] += k * (done - now);
        }
        self.sched.at(done, Event::EngineStep(e));
    }

    /// The real engine polls; then whoever it signalled is scheduled.
    fn engine_step(&mut self, now: u64, e: usize) {
        let (h, p) = (self.engines[e].host, self.engines[e].pf);
        let carried = || self.cloud.fabric().stats().frames.load(Ordering::Relaxed);
        let before = carried();
        if let Some(engine) = self.cloud.engine(h, p) {
            engine.step();
        }
        let sent_to_fabric = carried() != before;
        let c = self.costs;
        for k in 0..self.engines[e].nics.len() {
            let (vm, nic) = self.engines[e].nics[k];
            let n = &self.vms[vm].nics[nic];
            if n.line.as_ref().is_some_and(|l| l.take()) {
                let notify = c.dma_write_ns + if n.interrupts { c.interrupt_ns } else { 0 };
                self.schedule_rx(vm, nic, now + notify, notify, 0);
            }
        }
        if let Some(host) = self.engines[e].backend_of
            && self.cloud.emulated(host).is_some_and(|em| em.doorbell().take())
        {
            let hv = &mut self.hypervisors[host];
            hv.rx_raised_at.get_or_insert(now);
            if !hv.scheduled {
                hv.scheduled = true;
                self.sched
                    .at(now + c.dma_write_ns + c.hypervisor_wake_ns, Event::HypervisorWake(host));
            }
        }
        if sent_to_fabric {
            // Frames went out on the fabric: their destinations' engines were kicked.
            for d in 0..self.engines.len() {
                let (dh, dp) = (self.engines[d].host, self.engines[d].pf);
                if d != e && self.cloud.engine(dh, dp).is_some_and(|x| x.take_kick()) {
                    self.engine_timer(now, d);
                }
            }
        }
        self.engine_timer(now, e);
    }

    /// Asks engine `e` when its timed work falls due and schedules a step then.
    fn engine_timer(&mut self, now: u64, e: usize) {
        let (h, p) = (self.engines[e].host, self.engines[e].pf);
        let Some(at) = self.cloud.engine(h, p).and_then(|x| x.next_timer_ns()) else { return };
        let at = at.max(now);
        let engine = &mut self.engines[e];
        if engine.timer_at.is_none_or(|t| at < t || t < now) {
            engine.timer_at = Some(at);
            self.sched.at(at, Event::EngineStep(e));
        }
    }

    fn emulated_timer(&mut self, now: u64, h: usize) {
        let Some(at) = self.cloud.emulated(h).and_then(|em| em.next_timer_ns()) else { return };
        let at = at.max(now);
        let hv = &mut self.hypervisors[h];
        if hv.timer_at.is_none_or(|t| at < t || t < now) {
            hv.timer_at = Some(at);
            self.sched.at(at, Event::EmulatedTimer(h));
        }
    }

    /// The RX data and completion land and the guest is told, `notify` after `now`.
    fn schedule_rx(&mut self, vm: usize, nic: usize, at: u64, notify: u64, hypervisor: u64) {
        if self.vms[vm].nics[nic].interrupts {
            // What the device's moderation held these completions back, to attribute.
            let eni = self.vms[vm].nics[nic].eni;
            if let Some(total) = self.cloud.rx_moderation_waited_ns(eni) {
                let n = &mut self.vms[vm].nics[nic];
                n.moderation_pending += total.saturating_sub(n.moderation_seen);
                n.moderation_seen = total;
            }
        }
        let n = &mut self.vms[vm].nics[nic];
        if n.rx_scheduled {
            return;
        }
        n.rx_scheduled = true;
        n.visible_at = at;
        n.notify_ns = notify;
        n.hypervisor_ns = hypervisor;
        self.sched.at(at, Event::GuestRx { vm, nic });
    }

    /// The receiver runs the receive path for every frame waiting, queue `q` on vCPU
    /// `q mod vCPUs` (as RSS spreads queues, and their interrupts, over a guest's CPUs); each
    /// queue's frames start when its vCPU is free.
    fn guest_rx(&mut self, now: u64, vm: usize, nic: usize, observer: &mut dyn Observer) {
        let c = self.costs;
        let sample_ns = self.sample_ns;
        let SimVm { id, ctx, vcpu_free, busy_ns, alive, nics, flows_in, replies_in, tcp_in } =
            &mut self.vms[vm];
        let n = &mut nics[nic];
        n.rx_scheduled = false;
        if !*alive {
            return;
        }
        let (visible, notify, hypervisor) = (n.visible_at, n.notify_ns, n.hypervisor_ns);
        // The moderation wait read from the device goes to the frames of this poll, as a sum.
        let mut moderation = std::mem::take(&mut n.moderation_pending);
        let capture = observer.captures(*id);
        let (flows, latency, rtt) = (&mut self.flows, &mut self.latency, &mut self.efa.rtt);
        let (replies, spare) = (&mut n.replies, &mut n.spare);
        let guest = &mut ctx.nics[nic];
        let mut last_cpu_t = None;
        let mut again: Option<u64> = None;
        let mut established = Vec::new();
        for q in 0..guest.queue_count() {
            let cpu = q % vcpu_free.len();
            if vcpu_free[cpu] > now {
                // Its vCPU is busy: the queue waits (and fills; the device drops what finds no
                // buffer), as a softirq that cannot run.
                again = Some(again.map_or(vcpu_free[cpu], |a| a.min(vcpu_free[cpu])));
                continue;
            }
            let start = now;
            let wait = start - visible.min(start);
            let mut t = start;
            // One NAPI poll: up to 64 completions, then the vCPU is busy with them; the rest
            // waits for the next poll.
            {
                let got = guest.recv_queue(q, |frame| {
                    t += c.guest_rx_ns(frame.len());
                    if capture {
                        observer.frame(*id, t, frame);
                    }
                    let received = Received { t, start, wait, notify, hypervisor, sample_ns };
                    if let Some(seg) = tcp::Segment::of(frame) {
                        let Some(&(f, side)) = dest_ports(frame).and_then(|p| tcp_in.get(&p))
                        else {
                            return;
                        };
                        let flow = &mut flows[f];
                        let Some((client, server)) = flow.conn.as_mut() else { return };
                        let mut answer = spare.pop().unwrap_or_default();
                        let send = match side {
                            tcp::Side::Server => {
                                let answers = server.rx(seg, &mut answer);
                                if seg.payload > 0 && server.listening() {
                                    received.data(flow, latency, frame, &mut moderation);
                                }
                                answers
                            }
                            tcp::Side::Client => match client.rx(t, seg, &mut answer) {
                                tcp::ClientStep::Quiet => false,
                                tcp::ClientStep::Send => true,
                                tcp::ClientStep::Established => {
                                    established.push((f, t));
                                    true
                                }
                            },
                        };
                        if send {
                            replies.push(answer);
                        } else {
                            spare.push(answer);
                        }
                        return;
                    }
                    if is_reply(frame) {
                        // A ping-pong reply back at the initiator: the round trip is done.
                        let f = dest_port(frame).and_then(|p| replies_in.get(&p));
                        if let (Some(&f), Some((_, due))) = (f, read_stamp(frame))
                            && let Some(h) = rtt.get_mut(flows[f].spec.path)
                        {
                            let _ = h.record(t.saturating_sub(due).max(1));
                        }
                        return;
                    }
                    let Some(&f) = source_port(frame).and_then(|p| flows_in.get(&p)) else {
                        return;
                    };
                    let flow = &mut flows[f];
                    received.data(flow, latency, frame, &mut moderation);
                    if flow.spec.pattern == Pattern::PingPong {
                        let mut reply = spare.pop().unwrap_or_default();
                        reply.clear();
                        reply.extend_from_slice(frame);
                        reflect(&mut reply);
                        mark_reply(&mut reply);
                        replies.push(reply);
                    }
                });
                if got > 0 {
                    again = Some(again.map_or(t, |a| a.min(t)));
                }
            }
            vcpu_free[cpu] = t;
            *busy_ns += t - start;
            if !replies.is_empty() {
                last_cpu_t = Some((cpu, t));
            }
        }
        if let Some(at) = again {
            nics[nic].rx_scheduled = true;
            self.sched.at(at, Event::GuestRx { vm, nic });
        }
        // The replies leave from the vCPU that received the last of them, after its receive
        // work: the send path per frame and one doorbell (or trap).
        let n = &mut nics[nic];
        if let Some((cpu, t)) = last_cpu_t.filter(|_| !n.reply_posting) {
            let c = self.costs;
            let stack: u64 = n.replies.iter().map(|r| c.guest_tx_ns(r.len())).sum();
            let bell = if n.emulated { c.vm_exit_ns } else { c.doorbell_ns };
            let post = t + stack + bell;
            vcpu_free[cpu] = post;
            *busy_ns += stack + bell;
            n.reply_posting = true;
            self.sched.at(post, Event::ReplyPost { vm, nic });
        }
        for (f, t) in established {
            self.tcp_established(t, f);
        }
    }

    /// Ping-pong replies go into the receiver's TX ring; the doorbell (or trap) follows.
    fn reply_post(&mut self, now: u64, vm: usize, nic: usize, observer: &mut dyn Observer) {
        let v = &mut self.vms[vm];
        let n = &mut v.nics[nic];
        n.reply_posting = false;
        if !v.alive {
            n.replies.clear();
            return;
        }
        let mut replies = std::mem::take(&mut n.replies);
        let (engine, host, emulated) = (n.engine, n.host, n.emulated);
        let mut sent = 0;
        let mut bytes = 0u64;
        for chunk in replies.chunks(BURST) {
            let mut refs: [&[u8]; BURST] = [&[]; BURST];
            for (r, reply) in refs.iter_mut().zip(chunk) {
                *r = reply;
            }
            let refs = &refs[..chunk.len()];
            let k = v.ctx.nics[nic].send(0, refs);
            if observer.captures(v.id) {
                for frame in &refs[..k] {
                    observer.frame(v.id, now, frame);
                }
            }
            sent += k;
            bytes += refs[..k].iter().map(|r| r.len() as u64).sum::<u64>();
        }
        // The buffers come back for the next replies (no allocation per reply).
        v.nics[nic].spare.append(&mut replies);
        if sent == 0 {
            return;
        }
        if emulated {
            if let Some(line) = v.ctx.nics[nic].trap_line() {
                line.take();
            }
            let hv = &mut self.hypervisors[host];
            if !hv.scheduled {
                hv.scheduled = true;
                self.sched.at(now + self.costs.hypervisor_wake_ns, Event::HypervisorWake(host));
            }
        } else if let Some(e) = engine {
            self.doorbell(now, e, sent as u64, bytes, &[]);
        }
    }

    /// The hypervisor's worker wakes and serves its software device until quiet.
    fn hypervisor_wake(&mut self, now: u64, h: usize) {
        let hv = &mut self.hypervisors[h];
        if hv.free_at > now {
            self.sched.at(hv.free_at, Event::HypervisorWake(h));
            return;
        }
        hv.scheduled = false;
        let Some(service) = self.cloud.emulated(h).and_then(|em| em.trap()) else { return };
        let c = self.costs;
        let frames = (service.to_backend + service.from_backend) as u64;
        let copied = (service.to_backend_bytes + service.from_backend_bytes) as u64;
        let cost = c.hypervisor_ns(frames, copied);
        let done = now + cost;
        let hv = &mut self.hypervisors[h];
        hv.free_at = done;
        hv.busy_ns += cost;
        let trapped = std::mem::take(&mut hv.trapped);
        let rx_raised = hv.rx_raised_at.take();
        if service.to_backend > 0 {
            let bell = done + c.doorbell_ns;
            let mut flows = Vec::with_capacity(trapped.len());
            for &(f, k, at) in &trapped {
                self.flows[f].out.tx_parts.sum_ns[HYPERVISOR] += k * (bell - at);
                flows.push((f, k));
            }
            if let Some(engine) = self.engines.iter().position(|e| e.backend_of == Some(h)) {
                // The backend's PF fetches what went into its TX ring, nothing more.
                let bytes = service.to_backend_bytes as u64;
                self.sched.at(bell, Event::Doorbell { engine, flows, bytes });
            }
        }
        self.emulated_lines(h, done, done - rx_raised.unwrap_or(now).min(done));
        self.emulated_timer(now, h);
    }

    /// Guests' NICs on host `h`'s model whose lines the model raised: a virtual interrupt each,
    /// once the model's work is done at `ready` (`hypervisor` of it on the receive side).
    fn emulated_lines(&mut self, h: usize, ready: u64, hypervisor: u64) {
        let c = self.costs;
        for k in 0..self.hypervisors[h].nics.len() {
            let (vm, nic) = self.hypervisors[h].nics[k];
            let n = &self.vms[vm].nics[nic];
            if n.line.as_ref().is_some_and(|l| l.take()) {
                let notify = if n.interrupts { c.interrupt_ns } else { 0 };
                self.schedule_rx(vm, nic, ready + notify, notify, hypervisor);
            }
        }
    }

    fn failure(&mut self, now: u64, i: usize) {
        let Some((_, vms)) = self.failures.get(i).cloned() else { return };
        let mut stopped = Vec::new();
        for id in vms {
            if self.cloud.stop(id).is_ok() {
                stopped.push(id);
                if let Some(vm) = self.vms.iter_mut().find(|v| v.id == id) {
                    vm.alive = false;
                }
            }
        }
        self.applied.push((now, stopped));
    }

    fn finish(mut self, horizon: u64, wall: Duration) -> SimOutcome {
        let paths = self.latency.len();
        let mut breakdown = Vec::with_capacity(paths);
        for path in 0..paths {
            let udp = self.flows.iter().filter(|f| f.spec.path == path).map(|f| &f.out);
            let efa = self.efa.flows.iter().filter(|f| f.spec.path == path).map(|f| &f.out.flow);
            let flows: Vec<&FlowOutcome> = udp.chain(efa).collect();
            let sent: u64 = flows.iter().map(|f| f.sent_frames).sum();
            let recv: u64 = flows.iter().map(|f| f.recv_frames).sum();
            let mut mean = [0.0; COMPONENTS.len()];
            for (k, m) in mean.iter_mut().enumerate().take(QUEUEING) {
                let tx: u64 = flows.iter().map(|f| f.tx_parts.sum_ns[k]).sum();
                let rx: u64 = flows.iter().map(|f| f.rx_parts.sum_ns[k]).sum();
                *m = tx as f64 / sent.max(1) as f64 + rx as f64 / recv.max(1) as f64;
            }
            let total: u64 = flows.iter().map(|f| f.latency_sum_ns).sum();
            let mean_ns = total as f64 / recv.max(1) as f64;
            // The device counts a completion as waiting for its interrupt until the interrupt
            // fires, but a NAPI poll already running takes it sooner: moderation is at most
            // what the measured latency leaves once the other parts are taken.
            let others: f64 = mean[..QUEUEING]
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != MODERATION)
                .map(|(_, m)| m)
                .sum();
            let left = (mean_ns - others).max(0.0);
            mean[MODERATION] = mean[MODERATION].min(left);
            mean[QUEUEING] = left - mean[MODERATION];
            breakdown.push(Breakdown { frames: recv, mean_ns, mean_parts_ns: mean });
        }
        SimOutcome {
            efa_flows: self.efa.flows.iter().map(|f| f.out.clone()).collect(),
            rtt: std::mem::take(&mut self.efa.rtt),
            flows: self
                .flows
                .into_iter()
                .map(|f| FlowOutcome { tcp: f.conn.map(|c| c.0.out), ..f.out })
                .collect(),
            latency: self.latency.iter().map(LatencyLog::total).collect(),
            latency_log: self.latency,
            breakdown,
            vm_cpu: self
                .vms
                .iter()
                .map(|v| VmCpu { vm: v.id, vcpus: v.vcpu_free.len() as u32, busy_ns: v.busy_ns })
                .collect(),
            hypervisor_cpu_ns: self.hypervisors.iter().map(|h| h.busy_ns).collect(),
            engine_busy_ns: self.engines.iter().map(|e| ((e.host, e.pf), e.busy_ns)).collect(),
            failures: self.applied,
            events: self.sched.events(),
            simulated_ns: horizon,
            wall,
        }
    }
}

/// The fixed wire time of a flow's frames: nothing within one PF; else the fabric link's
/// serialisation and one-way latency.
fn wire_ns(
    cloud: &Cloud,
    homes: &BTreeMap<EniId, (usize, usize, Option<NicHome>)>,
    engine_of: &BTreeMap<(usize, usize), usize>,
    src_engine: usize,
    f: &FlowSpec,
) -> u64 {
    let dst_engine = homes.get(&f.dst_eni).and_then(|h| h.2).and_then(|home| match home {
        NicHome::Vf { host, pf } => engine_of.get(&(host, pf)).copied(),
        NicHome::Emulated { host, backend_pf } => engine_of.get(&(host, backend_pf)).copied(),
    });
    let endpoint = |e: usize| cloud.engines().nth(e).map(|(_, _, engine)| engine.endpoint());
    let (Some(src), Some(dst)) = (endpoint(src_engine), dst_engine.and_then(endpoint)) else {
        return 0;
    };
    if src == dst {
        return 0;
    }
    let Some(link) = cloud.fabric().link(src, dst) else { return 0 };
    let bits = f.frame.bytes().len() as u64 * 8 * 1_000_000_000;
    link.latency_ns + bits.div_ceil(link.bits_per_second.max(1))
}
