//! EFA flows in virtual time: SRD messages between VMs' EFA devices, the application posting
//! work requests to its queue pair and busy-polling its completion queue, no guest kernel and no
//! interrupt on the path.
//!
//! One message of a stream:
//!
//! 1. due at `t`; the application's vCPU, once free, writes a 32-byte header (flow, sequence,
//!    stamp, the request's due time, kind) into a send buffer of its registered region, posts a
//!    64-byte send WQE per message (`efa_post_ns`) and rings the queue pair's doorbell once per
//!    burst (`doorbell_ns`);
//! 2. the real [`EfaDevice`] fetches the WQE and the payload (two PCIe round trips, the bytes at
//!    PCIe's rate, the pipeline per message) and sends the SRD packet over the fabric, with the
//!    hosts' one-way latency of the pair's network class and serialisation at the link rate,
//!    losing the share the scenario injects; it keeps the packet until the receiving device
//!    acknowledges it and retransmits after 200 µs (receiver not ready: 50 µs);
//! 3. the receiving device delivers it (at most once) into a posted receive buffer and writes a
//!    completion (`dma_write_ns`);
//! 4. the receiving application, polling its completion queue, takes it (`efa_poll_ns`), reads
//!    the header, records the one-way latency, reposts the buffer and, for a ping-pong flow,
//!    answers with a message of the same size, whose arrival gives the round trip.
//!
//! Every device's timers (retransmission, receiver-not-ready, the 25 Gbps SRD flow cap) and every
//! packet's arrival are events; the packet loss draws come from the fabric's seeded stream, so a
//! lossy run is reproducible too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hdrhistogram::Histogram;
use vnic::device::{DmaWindow, Iova};
use vnic::efa::{
    Cqe, EfaDevice, EfaEndpoint, MemoryRegion, QpKind, QpLayout, SecurityGroup, SrdFabric, access,
    opcode, recv_wqe, send_wqe, status,
};
use vnic::ring::SharedRegion;

use super::{BURST, Event, FlowOutcome, Sim};
use crate::eni::VmId;
use crate::paced::{Arrivals, Pacer};
use crate::sim::SplitMix64;

/// Where an EFA node's buffers start in its region (the queue pair's rings come first).
const BUFFERS_AT: usize = 1 << 20;
/// Send buffers per node (one per message in flight).
const SEND_SLOTS: u32 = 512;
/// Receive buffers per node, all posted.
const RECV_SLOTS: u32 = 1024;
/// Bytes per buffer (the SRD MTU).
const SLOT_BYTES: usize = vnic::efa::EFA_MTU;
/// A work request id's bit marking a send (the rest is the buffer slot).
const SEND_BIT: u32 = 1 << 31;
/// Queue pair depth.
const QP_DEPTH: u32 = 2048;
/// The header every simulated message starts with.
pub const HEADER_BYTES: usize = 32;
/// Guest-physical base of an EFA node's region.
const REGION_IOVA: u64 = 0x2_0000_0000;

/// How an EFA flow's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One way, at the flow's rate.
    Stream,
    /// Each request answered by a reply of the same size (round trips recorded).
    PingPong,
}

/// One EFA flow to simulate.
#[derive(Debug, Clone)]
pub struct EfaFlowSpec {
    /// Sender (the initiator of a ping-pong).
    pub from: VmId,
    /// Receiver.
    pub to: VmId,
    /// Message bytes, [`HEADER_BYTES`] to 8192.
    pub bytes: usize,
    /// Time between requests, ns.
    pub interval_ns: u64,
    /// First message due, ns.
    pub start_ns: u64,
    /// No message due at or after this, ns.
    pub stop_ns: u64,
    /// Stream or ping-pong.
    pub pattern: Pattern,
    /// The report's path index.
    pub path: usize,
}

/// What an EFA flow measured beyond a UDP flow's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EfaOutcome {
    /// Messages and bytes, as a UDP flow counts frames (replies not included).
    pub flow: FlowOutcome,
    /// Requests delivered more than once (SRD promises none).
    pub duplicates: u64,
    /// Requests that arrived after a later one (SRD is unordered).
    pub reordered: u64,
    /// Replies received (ping-pong).
    pub replies: u64,
    /// Sends that completed with an error status.
    pub failed: u64,
}

pub(super) struct EfaFlow {
    pub(super) spec: EfaFlowSpec,
    src: usize,
    dst: usize,
    vcpu: usize,
    /// When its requests fall due (the paced flows' one schedule).
    pacer: Pacer,
    first_seq: u64,
    burst: Vec<u64>,
    posting: bool,
    seen: BTreeSet<u64>,
    highest: Option<u64>,
    /// The fixed wire time of one message (link latency and serialisation; 0 within a PF).
    wire_ns: u64,
    pub(super) out: EfaOutcome,
}

/// One VM's EFA device, its queue pair and its buffers.
pub(super) struct EfaNode {
    vm: usize,
    device: EfaDevice,
    ep: EfaEndpoint,
    window: DmaWindow,
    mr: MemoryRegion,
    free_send: Vec<u32>,
    /// Address handles by peer node.
    ahs: BTreeMap<usize, u16>,
    qpns: BTreeMap<usize, u16>,
    free_at: u64,
    step_at: Option<u64>,
    app_scheduled: bool,
    /// When the completions the application was woken for became visible.
    visible_at: u64,
    /// Replies waiting for the application's next post.
    replies: Vec<(usize, [u8; HEADER_BYTES])>,
    cqes: Vec<Cqe>,
}

/// The EFA side of a simulation.
#[derive(Default)]
pub(super) struct EfaWorld {
    pub(super) flows: Vec<EfaFlow>,
    pub(super) nodes: Vec<EfaNode>,
    node_of: BTreeMap<usize, usize>,
    fabric: Option<Arc<SrdFabric>>,
    /// Round trips per path.
    pub(super) rtt: Vec<Histogram<u64>>,
}

fn header(flow: usize, seq: u64, stamp: u64, origin: u64, reply: bool) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&(flow as u32).to_be_bytes());
    h[4..12].copy_from_slice(&seq.to_be_bytes());
    h[12..20].copy_from_slice(&stamp.to_be_bytes());
    h[20..28].copy_from_slice(&origin.to_be_bytes());
    h[28] = u8::from(reply);
    h
}

fn parse(h: &[u8; HEADER_BYTES]) -> (usize, u64, u64, u64, bool) {
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b[8 - r.len()..].copy_from_slice(&h[r]);
        u64::from_be_bytes(b)
    };
    (word(0..4) as usize, word(4..12), word(12..20), word(20..28), h[28] != 0)
}

impl EfaWorld {
    /// The devices, queue pairs and buffers of every VM in an EFA flow, on one SRD fabric
    /// whose pair delays are the hosts' fabric's.
    pub(super) fn build(
        sim: &mut Sim<'_>,
        specs: &[EfaFlowSpec],
        loss: f64,
    ) -> Result<Self, String> {
        let mut world = EfaWorld {
            rtt: (0..sim.latency.len()).map(|_| crate::traffic::latency_histogram()).collect(),
            ..Default::default()
        };
        if specs.is_empty() {
            return Ok(world);
        }
        let mut vm_of_node = Vec::new();
        for f in specs {
            for id in [f.from, f.to] {
                let vm =
                    sim.vms.iter().position(|v| v.id == id).ok_or("an EFA VM is not running")?;
                if let std::collections::btree_map::Entry::Vacant(e) = world.node_of.entry(vm) {
                    e.insert(vm_of_node.len());
                    vm_of_node.push(vm);
                }
            }
        }
        // The delay between two nodes: their PFs' fabric link (nothing within one PF).
        let endpoints: Vec<Option<usize>> =
            vm_of_node.iter().map(|&vm| sim.vm_endpoint(vm)).collect();
        let links: Vec<Option<crate::fabric::LinkSpec>> = endpoints
            .iter()
            .flat_map(|a| endpoints.iter().map(move |b| (*a, *b)))
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) if a != b => sim.cloud.fabric().link(a, b),
                _ => None,
            })
            .collect();
        let n = vm_of_node.len();
        let pair_ns = move |src: usize, dst: usize, bytes: usize| match links
            .get(src * n + dst)
            .copied()
            .flatten()
        {
            Some(link) => {
                let bits = bytes as u64 * 8 * 1_000_000_000;
                link.latency_ns + bits.div_ceil(link.bits_per_second.max(1))
            }
            None => 0,
        };
        let wire = pair_ns.clone();
        // Devices join the fabric in node order, so a device's address is its node index.
        let delay: vnic::efa::PairDelay =
            Box::new(move |src, dst, bytes| pair_ns(usize::from(src), usize::from(dst), bytes));
        let fabric = SrdFabric::with_pair_delay(1, delay, 0, loss, sim.seed ^ 0x5244);
        // EC2's rule: the security group must allow all traffic to and from itself.
        let group =
            SecurityGroup { id: "efa".into(), self_inbound_all: true, self_outbound_all: true };
        // The network model owns the SRD cap (ENA Express: 25 Gbps by default).
        let cap_bps = (sim.cloud.network().srd_flow_cap_gbps * 1e9) as u64;
        for &vm in &vm_of_node {
            let layout = QpLayout::new(0, QP_DEPTH);
            let bytes = BUFFERS_AT + (SEND_SLOTS + RECV_SLOTS) as usize * SLOT_BYTES;
            let region = Arc::new(SharedRegion::anonymous(bytes).map_err(|e| e.to_string())?);
            let window = DmaWindow::new(region.clone(), Iova(REGION_IOVA));
            let mut device = EfaDevice::new(window.clone(), "vpc", &group, fabric.clone())
                .map_err(|e| e.to_string())?;
            device.set_flow_cap(cap_bps);
            let pd = device.alloc_pd();
            let ep = EfaEndpoint::create(&region, &mut device, pd, QpKind::Srd, layout)
                .map_err(|e| e.to_string())?;
            let buffers = window.iova(BUFFERS_AT).0;
            let mr = device
                .register(pd, buffers, (bytes - BUFFERS_AT) as u64, access::LOCAL_WRITE)
                .map_err(|e| e.to_string())?;
            let mut node = EfaNode {
                vm,
                device,
                ep,
                window,
                mr,
                free_send: (0..SEND_SLOTS).rev().collect(),
                ahs: BTreeMap::new(),
                qpns: BTreeMap::new(),
                free_at: 0,
                step_at: None,
                app_scheduled: false,
                visible_at: 0,
                replies: Vec::new(),
                cqes: vec![Cqe::default(); 64],
            };
            for slot in 0..RECV_SLOTS {
                let at = Iova(node.recv_iova(slot));
                node.ep.post_recv(recv_wqe(slot, &node.mr, at, SLOT_BYTES as u32));
            }
            world.nodes.push(node);
        }
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let (addr, qpn) = (world.nodes[b].device.addr(), world.nodes[b].ep.qpn);
                let ah = world.nodes[a].device.create_ah(0, addr).map_err(|e| e.to_string())?;
                world.nodes[a].ahs.insert(b, ah);
                world.nodes[a].qpns.insert(b, qpn);
            }
        }
        let windows = sim.flows.first().map_or(0, |f| f.out.samples.len()).max(2);
        for (i, f) in specs.iter().enumerate() {
            let node = |id: VmId| {
                let vm = sim.vms.iter().position(|v| v.id == id)?;
                world.node_of.get(&vm).copied()
            };
            let (Some(src), Some(dst)) = (node(f.from), node(f.to)) else {
                return Err(format!("EFA flow {i}: an end is not running"));
            };
            if !(HEADER_BYTES..=SLOT_BYTES).contains(&f.bytes) {
                return Err(format!(
                    "EFA flow {i}: {} B messages; simulated EFA messages are {HEADER_BYTES} to \
                     {SLOT_BYTES} B",
                    f.bytes
                ));
            }
            let vcpus = sim.vms[world.nodes[src].vm].vcpu_free.len();
            let before = sim.flows.iter().filter(|g| g.vm == world.nodes[src].vm).count()
                + world.flows.iter().filter(|g: &&EfaFlow| g.src == src).count();
            world.flows.push(EfaFlow {
                spec: f.clone(),
                src,
                dst,
                vcpu: (1 + before) % vcpus,
                pacer: Pacer::new(
                    f.interval_ns,
                    f.start_ns,
                    f.stop_ns,
                    Arrivals::Periodic,
                    SplitMix64::new(sim.seed, 0x4546_4100 + i as u64),
                ),
                first_seq: 0,
                burst: Vec::with_capacity(BURST),
                posting: false,
                seen: BTreeSet::new(),
                highest: None,
                wire_ns: wire(src, dst, f.bytes + vnic::efa::SRD_HEADER_BYTES),
                out: EfaOutcome {
                    flow: FlowOutcome { samples: vec![0; windows], ..Default::default() },
                    ..Default::default()
                },
            });
        }
        world.fabric = Some(fabric);
        Ok(world)
    }
}

impl EfaNode {
    fn send_iova(&self, slot: u32) -> u64 {
        self.window.iova(BUFFERS_AT + slot as usize * SLOT_BYTES).0
    }

    fn recv_iova(&self, slot: u32) -> u64 {
        self.window.iova(BUFFERS_AT + (SEND_SLOTS + slot) as usize * SLOT_BYTES).0
    }

    /// Writes a message into a free send buffer and posts it to `peer`; false if no buffer or
    /// no room in the send queue.
    fn post(&mut self, peer: usize, bytes: usize, head: &[u8; HEADER_BYTES]) -> bool {
        let (Some(&ah), Some(&qpn)) = (self.ahs.get(&peer), self.qpns.get(&peer)) else {
            return false;
        };
        let Some(slot) = self.free_send.pop() else { return false };
        let at = self.send_iova(slot);
        if self.window.write(at, head).is_err() {
            self.free_send.push(slot);
            return false;
        }
        let wqe = send_wqe(slot | SEND_BIT, ah, qpn, &self.mr, Iova(at), bytes as u32);
        if !self.ep.post_send(wqe) {
            self.free_send.push(slot);
            return false;
        }
        true
    }
}

impl Sim<'_> {
    /// The fabric endpoint of VM `vm`'s primary NIC.
    pub(super) fn vm_endpoint(&self, vm: usize) -> Option<usize> {
        let eni = self.vms[vm].ctx.nics.first()?.eni;
        let (h, p) = match self.cloud.nic_home(eni)? {
            crate::cloud::NicHome::Vf { host, pf } => (host, pf),
            crate::cloud::NicHome::Emulated { host, backend_pf } => (host, backend_pf),
        };
        Some(self.cloud.engine(h, p)?.endpoint())
    }

    /// An EFA flow's sender takes the messages due and posts them.
    pub(super) fn efa_due(&mut self, now: u64, f: usize) {
        let Sim { efa, vms, costs, sched, .. } = self;
        let flow = &mut efa.flows[f];
        let vm = &mut vms[efa.nodes[flow.src].vm];
        let Some(next) = flow.pacer.next_due().filter(|_| vm.alive && !flow.posting) else {
            return;
        };
        let free = vm.vcpu_free[flow.vcpu];
        if free > now {
            sched.at(free, Event::EfaDue(f));
            return;
        }
        let taken = flow.pacer.take_due(now, &mut flow.burst);
        flow.out.flow.sender_drops += taken.dropped;
        flow.first_seq = taken.first_seq;
        let k = flow.burst.len() as u64;
        if k == 0 {
            if let Some(due) = flow.pacer.next_due() {
                sched.at(due.max(next), Event::EfaDue(f));
            }
            return;
        }
        let cost = k * costs.efa_post_ns + costs.doorbell_ns;
        let parts = &mut flow.out.flow.tx_parts.sum_ns;
        parts[super::SENDER_WAIT] += flow.burst.iter().map(|d| now - d).sum::<u64>();
        parts[super::GUEST_TX] += k * (cost - costs.doorbell_ns);
        parts[super::DOORBELL] += k * costs.doorbell_ns;
        parts[super::WIRE] += k * flow.wire_ns;
        vm.vcpu_free[flow.vcpu] = now + cost;
        vm.busy_ns += cost;
        flow.posting = true;
        sched.at(now + cost, Event::EfaPost(f));
    }

    /// The burst's work requests go into the queue pair; the doorbell reaches the device.
    pub(super) fn efa_post(&mut self, now: u64, f: usize) {
        let flow = &mut self.efa.flows[f];
        flow.posting = false;
        let (src, dst, bytes) = (flow.src, flow.dst, flow.spec.bytes);
        let mut posted = 0u64;
        for j in 0..flow.burst.len() {
            let head = header(f, flow.first_seq + j as u64, flow.burst[j], flow.burst[j], false);
            if self.efa.nodes[src].post(dst, bytes, &head) {
                posted += 1;
            }
        }
        let k = flow.burst.len() as u64;
        flow.out.flow.sent_frames += posted;
        flow.out.flow.sent_bytes += posted * bytes as u64;
        flow.out.flow.sender_drops += k - posted;
        if let Some(due) = flow.pacer.next_due() {
            self.sched.at(due.max(now), Event::EfaDue(f));
        }
        if posted > 0 {
            self.efa_doorbell(now, src, posted, posted * bytes as u64, Some(f));
        }
    }

    /// The device fetches the posted work requests and their payload.
    fn efa_doorbell(&mut self, now: u64, node: usize, msgs: u64, bytes: u64, flow: Option<usize>) {
        let c = self.costs;
        let n = &mut self.efa.nodes[node];
        let start = now.max(n.free_at);
        n.free_at = start + c.device_occupancy_ns(msgs, bytes);
        let done = start + c.device_tx_ns(msgs, bytes);
        if let Some(f) = flow {
            self.efa.flows[f].out.flow.tx_parts.sum_ns[super::DEVICE] += msgs * (done - now);
        }
        self.efa_schedule(node, done);
    }

    fn efa_schedule(&mut self, node: usize, at: u64) {
        let now = self.sched.now_ns();
        let n = &mut self.efa.nodes[node];
        let at = at.max(now);
        if n.step_at.is_none_or(|t| at < t || t < now) {
            n.step_at = Some(at);
            self.sched.at(at, Event::EfaStep(node));
        }
    }

    /// The real EFA device runs; arrivals and timers ask for the next steps, completions for
    /// the application.
    pub(super) fn efa_step(&mut self, now: u64, node: usize) {
        if self.efa.nodes[node].step_at == Some(now) {
            self.efa.nodes[node].step_at = None;
        }
        let work = self.efa.nodes[node].device.poll(now);
        let Some(fabric) = self.efa.fabric.clone() else { return };
        for m in 0..self.efa.nodes.len() {
            let n = &self.efa.nodes[m];
            let next = [fabric.next_due(n.device.addr()), n.device.next_timer_ns()]
                .into_iter()
                .flatten()
                .min();
            if let Some(at) = next {
                self.efa_schedule(m, at);
            }
        }
        let n = &mut self.efa.nodes[node];
        if work > 0 && !n.app_scheduled {
            n.app_scheduled = true;
            n.visible_at = now + self.costs.dma_write_ns;
            self.sched.at(n.visible_at, Event::EfaApp(node));
        }
    }

    /// The application polls its completion queue: receives recorded (and answered), send
    /// buffers freed.
    pub(super) fn efa_app(&mut self, now: u64, node: usize) {
        let c = self.costs;
        let sample_ns = self.sample_ns;
        let Sim { efa, vms, latency, sched, .. } = self;
        let EfaWorld { flows, nodes, rtt, .. } = efa;
        let vm = &mut vms[nodes[node].vm];
        nodes[node].app_scheduled = false;
        if !vm.alive {
            return;
        }
        if vm.vcpu_free[0] > now {
            nodes[node].app_scheduled = true;
            sched.at(vm.vcpu_free[0], Event::EfaApp(node));
            return;
        }
        let wait = now - nodes[node].visible_at.min(now);
        let mut t = now;
        // One poll of up to 64 completions; if it found any, the application polls again
        // once it has handled them.
        let more = {
            let n = &mut nodes[node];
            let got = n.ep.poll_cq(&mut n.cqes);
            for k in 0..got {
                let cqe = n.cqes[k];
                t += c.efa_poll_ns;
                if cqe.wr_id & SEND_BIT != 0 {
                    n.free_send.push(cqe.wr_id & !SEND_BIT);
                    if cqe.status != status::SUCCESS {
                        // Attributed to no flow: the header is in the buffer, read it.
                        let mut head = [0u8; HEADER_BYTES];
                        let _ = n.window.read(n.send_iova(cqe.wr_id & !SEND_BIT), &mut head);
                        if let Some(f) = flows.get_mut(parse(&head).0) {
                            f.out.failed += 1;
                        }
                    }
                    continue;
                }
                if cqe.opcode != opcode::RECV {
                    continue;
                }
                let slot = cqe.wr_id;
                let mut head = [0u8; HEADER_BYTES];
                let read = n.window.read(n.recv_iova(slot), &mut head);
                let at = Iova(n.recv_iova(slot));
                n.ep.post_recv(recv_wqe(slot, &n.mr, at, SLOT_BYTES as u32));
                if read.is_err() || cqe.status != status::SUCCESS {
                    continue;
                }
                let (f, seq, stamp, origin, is_reply) = parse(&head);
                let Some(flow) = flows.get_mut(f) else { continue };
                if is_reply {
                    // Round trips only, as on the kernel paths: the flow's one-way latency is
                    // its requests'.
                    flow.out.replies += 1;
                    if let Some(h) = rtt.get_mut(flow.spec.path) {
                        let _ = h.record(t.saturating_sub(origin).max(1));
                    }
                    continue;
                }
                let one_way = t.saturating_sub(stamp).max(1);
                if let Some(log) = latency.get_mut(flow.spec.path) {
                    log.record(t, one_way);
                }
                let out = &mut flow.out;
                if !flow.seen.insert(seq) {
                    out.duplicates += 1;
                    continue;
                }
                if flow.highest.is_some_and(|h| seq < h) {
                    out.reordered += 1;
                }
                flow.highest = flow.highest.max(Some(seq));
                out.flow.recv_frames += 1;
                out.flow.recv_bytes += u64::from(cqe.length);
                out.flow.latency_sum_ns += one_way;
                if let Some(s) = out.flow.samples.get_mut((t / sample_ns) as usize) {
                    *s += u64::from(cqe.length);
                }
                let parts = &mut out.flow.rx_parts.sum_ns;
                parts[super::INTERRUPT] += c.dma_write_ns;
                parts[super::RECEIVER_WAIT] += wait;
                parts[super::GUEST_RX] += t - now;
                if flow.spec.pattern == Pattern::PingPong {
                    n.replies.push((flow.src, header(f, seq, t, origin, true)));
                }
            }
            got > 0
        };
        // Replies leave in one burst: a WQE each, one doorbell.
        let n = &mut nodes[node];
        let replies = std::mem::take(&mut n.replies);
        let mut posted = 0u64;
        let mut bytes = 0u64;
        for (peer, head) in &replies {
            let f = parse(head).0;
            let size = flows.get(f).map_or(HEADER_BYTES, |fl| fl.spec.bytes);
            t += c.efa_post_ns;
            if n.post(*peer, size, head) {
                posted += 1;
                bytes += size as u64;
            }
        }
        if !replies.is_empty() {
            t += c.doorbell_ns;
        }
        vm.busy_ns += t - now;
        vm.vcpu_free[0] = t;
        if more {
            nodes[node].app_scheduled = true;
            nodes[node].visible_at = t;
            sched.at(t, Event::EfaApp(node));
        }
        if posted > 0 {
            self.efa_doorbell(t, node, posted, bytes, None);
        }
    }
}
