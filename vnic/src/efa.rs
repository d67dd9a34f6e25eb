//! EFA: OS-bypass verbs over SRD, the reliable, unordered, multipath datagram transport AWS's
//! Elastic Fabric Adapter runs in the NIC.
//!
//! An application (MPI, NCCL through libfabric) talks to the device directly: it allocates a
//! protection domain, registers memory in it (a [`MemoryRegion`] covers a range of the VM's
//! memory and has an lkey and an rkey, with access rights; every access is bounds-checked
//! against it, and only queue pairs of the same domain may use it), creates address handles (an
//! AH names a remote device, in the same subnet only), SRD (or UD) queue pairs with their
//! completion queue,
//! then posts 64-byte [`SendWqe`]s and 32-byte [`RecvWqe`]s to rings in its own memory and polls
//! 16-byte [`Cqe`]s (phase bit, as ENA's completions) from a ring there too. No hypervisor and
//! no guest kernel is on that path: [`EfaEndpoint`] is the library's side, [`EfaDevice`] the
//! NIC's.
//!
//! SRD in the device ([`EfaDevice::poll`]): a message (up to [`EFA_MTU`], 8 KiB) is one packet;
//! the sender keeps it until the receiving *device* acknowledges it, retransmits on its own
//! timer ([`RETRANSMIT_NS`]) when a packet or its acknowledgement is lost, and completes the
//! send only on the acknowledgement. The receiver delivers each message at most once (a
//! per-sender window of message ids), in whatever order the fabric brings them: the
//! [`SrdFabric`] sprays packets over several paths of different delays, so they arrive
//! reordered, and drops a configurable share of them. A message that finds no receive posted is
//! answered receiver-not-ready and retried after [`RNR_RETRY_NS`]. RDMA write and read go
//! straight to registered memory; an access outside a region, or without its right, completes
//! with [`status::REMOTE_ACCESS`] and touches nothing. Write with immediate consumes a receive
//! and reports the immediate. SRD traffic from one queue pair to one destination is held to
//! the 25 Gbps flow cap of ENA Express; UD sends complete when handed to the fabric and are
//! lost if it loses them.
//!
//! Time is the caller's: `poll(now_ns)` and the fabric take nanoseconds from any clock, so tests
//! run on a virtual one.

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use crate::device::{DmaWindow, Iova};
use crate::ring::{
    CompletionConsumer, CompletionEntry, CompletionProducer, CompletionRing, RingError,
    SharedRegion, SubmissionConsumer, SubmissionProducer, SubmissionRing,
};
use crate::shaper::gcra::{Gcra, PS_PER_NS, RateLimit};

/// Largest message (one SRD packet).
pub const EFA_MTU: usize = 8192;
/// Sender-side retransmission timeout (above the fabric's largest delay, so a late packet is
/// never sent twice).
pub const RETRANSMIT_NS: u64 = 200_000;
/// Wait before retrying a message the receiver was not ready for.
pub const RNR_RETRY_NS: u64 = 50_000;
/// Transmissions of one message before it completes with [`status::RETRY_EXCEEDED`].
pub const MAX_TRIES: u32 = 64;
/// The single-flow cap of SRD (ENA Express) traffic: per queue pair and destination.
pub const SRD_FLOW_CAP_BPS: u64 = 25_000_000_000;

/// A queue pair's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpKind {
    /// Scalable Reliable Datagram: acknowledged, retransmitted, delivered at most once, any order.
    Srd,
    /// Unreliable datagram: sends only, completed when handed to the fabric, lost if lost.
    Ud,
}

/// Work request opcodes.
pub mod opcode {
    /// Two-sided send (consumes a posted receive).
    pub const SEND: u8 = 0;
    /// RDMA write into the remote's registered memory.
    pub const RDMA_WRITE: u8 = 1;
    /// RDMA read from the remote's registered memory.
    pub const RDMA_READ: u8 = 2;
    /// A receive completion.
    pub const RECV: u8 = 3;
}

/// Access rights of a memory region.
pub mod access {
    /// The device may write it for this endpoint (receives, read responses).
    pub const LOCAL_WRITE: u8 = 1;
    /// Remote endpoints may RDMA-write it.
    pub const REMOTE_WRITE: u8 = 2;
    /// Remote endpoints may RDMA-read it.
    pub const REMOTE_READ: u8 = 4;
}

/// Completion statuses.
pub mod status {
    /// Done.
    pub const SUCCESS: u8 = 0;
    /// A local buffer outside its region or without the right (nothing was sent).
    pub const LOCAL_PROTECTION: u8 = 1;
    /// The remote refused an access outside a region or without the right.
    pub const REMOTE_ACCESS: u8 = 2;
    /// No acknowledgement after [`super::MAX_TRIES`] transmissions.
    pub const RETRY_EXCEEDED: u8 = 3;
    /// The address handle does not exist.
    pub const BAD_AH: u8 = 4;
    /// A message longer than the MTU, or than the receive buffer.
    pub const LENGTH: u8 = 5;
    /// An opcode the device does not know.
    pub const BAD_OPCODE: u8 = 6;
}

/// A send queue entry (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SendWqe {
    /// Local buffer (guest-physical address).
    pub local_addr: u64,
    /// Remote address (RDMA).
    pub remote_addr: u64,
    /// The caller's id, returned in the completion.
    pub wr_id: u32,
    /// Bytes.
    pub length: u32,
    /// Local region key.
    pub lkey: u32,
    /// Remote region key (RDMA).
    pub rkey: u32,
    /// Immediate data (with [`SendWqe::FLAG_IMM`]).
    pub imm: u32,
    /// Address handle.
    pub ah: u16,
    /// Remote queue pair.
    pub remote_qpn: u16,
    /// [`opcode`].
    pub opcode: u8,
    /// Flags.
    pub flags: u8,
    /// Reserved (zero).
    pub reserved: [u8; 22],
}

impl SendWqe {
    /// Carries immediate data.
    pub const FLAG_IMM: u8 = 1;
}

/// A receive queue entry (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RecvWqe {
    /// Buffer (guest-physical address).
    pub addr: u64,
    /// The caller's id.
    pub wr_id: u32,
    /// Buffer bytes.
    pub length: u32,
    /// Region key.
    pub lkey: u32,
    /// Reserved (zero).
    pub reserved: [u8; 12],
}

/// A completion (16 bytes, phase bit in `flags`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Cqe {
    /// The work request's id.
    pub wr_id: u32,
    /// [`status`].
    pub status: u8,
    /// Bit 0 phase, bit 1 immediate valid.
    pub flags: u8,
    /// [`opcode`] of the work request.
    pub opcode: u8,
    /// The queue pair.
    pub qpn: u8,
    /// Bytes received (receives, reads).
    pub length: u32,
    /// Immediate data.
    pub imm: u32,
}

impl Cqe {
    /// Immediate data valid.
    pub const FLAG_IMM: u8 = 2;
}

impl CompletionEntry for Cqe {
    const PHASE_WORD: usize = 1;
    const PHASE_MASK: u32 = u32::from_ne_bytes([0, 1, 0, 0]);
}

const _: () = {
    assert!(size_of::<SendWqe>() == 64);
    assert!(size_of::<RecvWqe>() == 32);
    assert!(size_of::<Cqe>() == 16);
};

/// What the control path refuses (EC2's EFA rules among them).
#[derive(Debug, thiserror::Error)]
pub enum EfaError {
    /// An address handle to a device in another subnet.
    #[error(
        "OS-bypass traffic stays in one subnet: device {remote} is in {remote_subnet}, this one in {local_subnet}"
    )]
    OtherSubnet {
        /// The remote device.
        remote: u16,
        /// Its subnet.
        remote_subnet: String,
        /// Ours.
        local_subnet: String,
    },
    /// The EFA's security group does not allow all traffic to and from itself.
    #[error(
        "security group {0} must allow all traffic to and from itself for EFA (a self-referencing all-traffic rule, in and out)"
    )]
    SecurityGroup(String),
    /// No such device on the fabric.
    #[error("no EFA device {0} on the fabric")]
    NoSuchDevice(u16),
    /// A region outside the VM's memory.
    #[error("memory region [{iova:#x}, +{len}) is outside the VM's memory")]
    OutsideMemory {
        /// Start.
        iova: u64,
        /// Length.
        len: u64,
    },
    /// Too many queue pairs.
    #[error("a device has at most 256 queue pairs")]
    TooManyQps,
    /// No such protection domain.
    #[error("no protection domain {0}")]
    NoSuchPd(u16),
    /// Rings that are not rings.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Ring memory outside the VM's memory.
    #[error(transparent)]
    Dma(#[from] crate::device::DmaError),
}

/// A security group as EFA sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// Its id.
    pub id: String,
    /// An inbound rule allowing all traffic from the group itself.
    pub self_inbound_all: bool,
    /// An outbound rule allowing all traffic to the group itself.
    pub self_outbound_all: bool,
}

/// A registered memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Its protection domain: only queue pairs of the same domain may use it.
    pub pd: u16,
    /// First byte (guest-physical).
    pub iova: u64,
    /// Bytes.
    pub len: u64,
    /// Key for local access.
    pub lkey: u32,
    /// Key for remote access.
    pub rkey: u32,
    /// [`access`] rights.
    pub access: u8,
}

impl MemoryRegion {
    fn covers(&self, addr: u64, len: u64, right: u8) -> bool {
        self.access & right == right
            && addr >= self.iova
            && addr.checked_add(len).is_some_and(|end| end <= self.iova + self.len)
    }
}

/// Counters of a device.
#[derive(Debug, Default)]
pub struct EfaStats {
    /// Messages sent (first transmissions).
    pub tx_msgs: AtomicU64,
    /// Messages delivered to this device's memory.
    pub rx_msgs: AtomicU64,
    /// Retransmissions after a timeout.
    pub retransmits: AtomicU64,
    /// Retries after receiver-not-ready.
    pub rnr_retries: AtomicU64,
    /// Duplicates received and dropped (acknowledged again).
    pub duplicates: AtomicU64,
    /// Remote accesses refused.
    pub remote_access_errors: AtomicU64,
    /// Unreliable datagrams dropped for want of a posted receive.
    pub ud_drops: AtomicU64,
    /// Messages held back by the 25 Gbps SRD flow cap.
    pub flow_cap_held: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What one SRD packet carries.
#[derive(Debug, Clone)]
enum Payload {
    Send { data: Vec<u8>, imm: Option<u32> },
    Write { addr: u64, rkey: u32, data: Vec<u8>, imm: Option<u32> },
    ReadRequest { addr: u64, rkey: u32, len: u32 },
    ReadResponse { data: Vec<u8> },
    Ack,
    Nack { status: u8 },
    NotReady,
}

/// An SRD packet.
#[derive(Debug, Clone)]
struct Packet {
    src: u16,
    src_qp: u16,
    dst_qp: u16,
    msg: u64,
    /// SRD (acknowledged) or UD.
    reliable: bool,
    payload: Payload,
}

/// An SRD header on the wire (a UDP/IP encapsulation's worth), bytes.
pub const SRD_HEADER_BYTES: usize = 64;

impl Packet {
    /// Bytes on the wire: the header and any data.
    fn wire_bytes(&self) -> usize {
        SRD_HEADER_BYTES
            + match &self.payload {
                Payload::Send { data, .. }
                | Payload::Write { data, .. }
                | Payload::ReadResponse { data } => data.len(),
                _ => 0,
            }
    }

    fn is_response(&self) -> bool {
        matches!(
            self.payload,
            Payload::ReadResponse { .. } | Payload::Ack | Payload::Nack { .. } | Payload::NotReady
        )
    }
}

/// A packet in flight, ordered by arrival time.
#[derive(Debug)]
struct InFlight {
    due: u64,
    seq: u64,
    packet: Arc<Packet>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A max-heap of Reverse order: the earliest first.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// One-way delay of a packet of `bytes` from device `src` to device `dst`, ns (a simulation's
/// network classes and link rates).
pub type PairDelay = Box<dyn Fn(u16, u16, usize) -> u64 + Send + Sync>;

/// The fabric between EFA devices: `paths` paths whose delays differ, packets sprayed over them
/// (so one flow's packets arrive reordered), a share of packets lost. The fastest path's delay
/// is `base_ns`, or what a [`PairDelay`] says for the pair and the packet's size.
pub struct SrdFabric {
    paths: u32,
    base_ns: u64,
    pair_delay: Option<PairDelay>,
    path_step_ns: u64,
    loss_ppm: u32,
    state: Mutex<FabricState>,
    /// Packets dropped (injected loss).
    pub dropped: AtomicU64,
    /// Packets carried.
    pub carried: AtomicU64,
}

#[derive(Debug)]
struct FabricState {
    rng: u64,
    seq: u64,
    queues: Vec<BinaryHeap<InFlight>>,
    subnets: Vec<String>,
}

impl std::fmt::Debug for SrdFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrdFabric")
            .field("paths", &self.paths)
            .field("base_ns", &self.base_ns)
            .field("pair_delay", &self.pair_delay.is_some())
            .field("path_step_ns", &self.path_step_ns)
            .field("loss_ppm", &self.loss_ppm)
            .finish()
    }
}

impl SrdFabric {
    /// A fabric of `paths` paths, the fastest `base_ns` one way and each next one
    /// `path_step_ns` slower, losing `loss` of all packets (0 to 1), seeded with `seed`.
    pub fn new(paths: u32, base_ns: u64, path_step_ns: u64, loss: f64, seed: u64) -> Arc<Self> {
        Self::build(paths, base_ns, None, path_step_ns, loss, seed)
    }

    /// The same fabric with each pair's fastest delay from `delay` (by device addresses, in the
    /// order devices join, and packet size).
    pub fn with_pair_delay(
        paths: u32,
        delay: PairDelay,
        path_step_ns: u64,
        loss: f64,
        seed: u64,
    ) -> Arc<Self> {
        Self::build(paths, 0, Some(delay), path_step_ns, loss, seed)
    }

    fn build(
        paths: u32,
        base_ns: u64,
        pair_delay: Option<PairDelay>,
        path_step_ns: u64,
        loss: f64,
        seed: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            paths: paths.max(1),
            base_ns,
            pair_delay,
            path_step_ns,
            loss_ppm: (loss.clamp(0.0, 1.0) * 1e6) as u32,
            state: Mutex::new(FabricState {
                rng: seed | 1,
                seq: 0,
                queues: Vec::new(),
                subnets: Vec::new(),
            }),
            dropped: AtomicU64::new(0),
            carried: AtomicU64::new(0),
        })
    }

    /// Adds a device in `subnet`; returns its address.
    fn join(&self, subnet: &str) -> u16 {
        let Ok(mut s) = self.state.lock() else { return u16::MAX };
        s.queues.push(BinaryHeap::new());
        s.subnets.push(subnet.to_string());
        (s.queues.len() - 1) as u16
    }

    fn subnet_of(&self, dev: u16) -> Option<String> {
        self.state.lock().ok()?.subnets.get(usize::from(dev)).cloned()
    }

    /// Puts every (destination, packet) of `outbox` on its way at `now`, in order, and empties
    /// it: one hold of the fabric's lock for all of them (a device sends what one poll's phase
    /// produced together), the draws of loss, path and jitter in the order the packets were
    /// sent, so a seed gives the same run however the packets are grouped.
    fn send_all(&self, outbox: &mut Vec<(u16, Arc<Packet>)>, now: u64) {
        if outbox.is_empty() {
            return;
        }
        let Ok(mut guard) = self.state.lock() else { return outbox.clear() };
        let s = &mut *guard;
        let (mut carried, mut dropped) = (0, 0);
        for (dst, packet) in outbox.drain(..) {
            let mut next = || xorshift64_star(&mut s.rng);
            if (next() % 1_000_000) < u64::from(self.loss_ppm) {
                dropped += 1;
                continue;
            }
            let path = next() % u64::from(self.paths);
            let jitter = next() % (self.path_step_ns / 4 + 1);
            let base = match &self.pair_delay {
                Some(delay) => delay(packet.src, dst, packet.wire_bytes()),
                None => self.base_ns,
            };
            let due = now + base + path * self.path_step_ns + jitter;
            s.seq += 1;
            if let Some(q) = s.queues.get_mut(usize::from(dst)) {
                q.push(InFlight { due, seq: s.seq, packet });
                carried += 1;
            }
        }
        drop(guard);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if carried > 0 {
            self.carried.fetch_add(carried, Ordering::Relaxed);
        }
    }

    fn take_due(&self, dev: u16, now: u64, out: &mut Vec<Arc<Packet>>) {
        let Ok(mut s) = self.state.lock() else { return };
        let Some(q) = s.queues.get_mut(usize::from(dev)) else { return };
        while q.peek().is_some_and(|p| p.due <= now) {
            if let Some(p) = q.pop() {
                out.push(p.packet);
            }
        }
    }

    /// When the next packet for device `dev` arrives, ns (`None` if none is on its way).
    pub fn next_due(&self, dev: u16) -> Option<u64> {
        let s = self.state.lock().ok()?;
        s.queues.get(usize::from(dev))?.peek().map(|p| p.due)
    }

    /// Packets in flight to anyone.
    pub fn in_flight(&self) -> usize {
        self.state.lock().map_or(0, |s| s.queues.iter().map(BinaryHeap::len).sum())
    }
}

/// xorshift64*: the fabric's seeded draws.
fn xorshift64_star(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Where a queue pair's rings are in the VM's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpLayout {
    /// Ring depth (all three).
    pub depth: u32,
    /// Send queue offset in the VM's memory.
    pub sq: usize,
    /// Receive queue offset.
    pub rq: usize,
    /// Completion queue offset.
    pub cq: usize,
    /// One past the last byte.
    pub end: usize,
}

impl QpLayout {
    /// Rings of `depth` one after the other from `offset` (rounded up to 128).
    pub fn new(offset: usize, depth: u32) -> Self {
        let sq = offset.next_multiple_of(128);
        let rq = sq + SubmissionRing::<SendWqe>::bytes(depth);
        let cq = rq + SubmissionRing::<RecvWqe>::bytes(depth);
        let end = cq + CompletionRing::<Cqe>::bytes(depth);
        Self { depth, sq, rq, cq, end }
    }
}

/// A message waiting for its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    wqe: SendWqe,
    dst: u16,
    /// Shared with the fabric: a retransmission copies no payload.
    packet: Arc<Packet>,
    deadline: u64,
    tries: u32,
    /// The receiver was not ready: the next send is a receiver-not-ready retry.
    not_ready: bool,
    /// Held by the flow cap: the next send is its first.
    unsent: bool,
}

/// Messages already delivered from one sender QP: everything below `floor`, and `above`.
#[derive(Debug, Default)]
struct Delivered {
    floor: u64,
    above: BTreeSet<u64>,
}

impl Delivered {
    fn contains(&self, msg: u64) -> bool {
        msg < self.floor || self.above.contains(&msg)
    }

    fn insert(&mut self, msg: u64) {
        self.above.insert(msg);
        while self.above.remove(&self.floor) {
            self.floor += 1;
        }
    }
}

#[derive(Debug)]
struct Qp {
    pd: u16,
    kind: QpKind,
    /// The SRD flow cap, per destination (device, queue pair).
    caps: HashMap<(u16, u16), Gcra>,
    sq: SubmissionConsumer<SendWqe>,
    rq: SubmissionConsumer<RecvWqe>,
    cq: CompletionProducer<Cqe>,
    next_msg: u64,
    pending: HashMap<u64, Pending>,
    delivered: HashMap<(u16, u16), Delivered>,
    /// Messages refused (by status), so that a retransmission is refused again.
    refused: HashMap<(u16, u16, u64), u8>,
    /// Completions the CQ had no room for yet.
    backlog: Vec<Cqe>,
}

/// An EFA device (one per ENI with EFA), owning its queue pairs.
#[derive(Debug)]
pub struct EfaDevice {
    addr: u16,
    subnet: String,
    window: DmaWindow,
    fabric: Arc<SrdFabric>,
    regions: Vec<MemoryRegion>,
    /// Address handles: (protection domain, remote device).
    ahs: Vec<(u16, u16)>,
    pds: u16,
    cap: RateLimit,
    qps: Vec<Qp>,
    next_key: u32,
    scratch: Vec<Arc<Packet>>,
    /// Packets for the fabric, sent together at the end of each phase of a poll.
    outbox: Vec<(u16, Arc<Packet>)>,
    stats: Arc<EfaStats>,
}

impl EfaDevice {
    /// A device for the VM memory behind `window`, in `subnet`, joining `fabric`. Refused unless
    /// `group` allows all traffic to and from itself.
    pub fn new(
        window: DmaWindow,
        subnet: &str,
        group: &SecurityGroup,
        fabric: Arc<SrdFabric>,
    ) -> Result<Self, EfaError> {
        if !(group.self_inbound_all && group.self_outbound_all) {
            return Err(EfaError::SecurityGroup(group.id.clone()));
        }
        let addr = fabric.join(subnet);
        Ok(Self {
            addr,
            subnet: subnet.to_string(),
            window,
            fabric,
            regions: Vec::new(),
            ahs: Vec::new(),
            pds: 0,
            cap: RateLimit::bytes(SRD_FLOW_CAP_BPS, 2 * EFA_MTU as u64),
            qps: Vec::new(),
            next_key: 0x5a17,
            scratch: Vec::new(),
            outbox: Vec::new(),
            stats: Arc::default(),
        })
    }

    /// Sets the SRD flow cap (per queue pair and destination; [`SRD_FLOW_CAP_BPS`] by default).
    pub fn set_flow_cap(&mut self, bps: u64) {
        self.cap = RateLimit::bytes(bps.max(1), 2 * EFA_MTU as u64);
    }

    /// Its address on the fabric.
    pub fn addr(&self) -> u16 {
        self.addr
    }

    /// Counters.
    pub fn stats(&self) -> Arc<EfaStats> {
        self.stats.clone()
    }

    /// Allocates a protection domain: regions, address handles and queue pairs of one domain
    /// work together, never across domains.
    pub fn alloc_pd(&mut self) -> u16 {
        self.pds += 1;
        self.pds - 1
    }

    fn check_pd(&self, pd: u16) -> Result<(), EfaError> {
        if pd < self.pds { Ok(()) } else { Err(EfaError::NoSuchPd(pd)) }
    }

    /// Registers `[iova, iova + len)` of the VM's memory in `pd` with `rights` ([`access`]).
    pub fn register(
        &mut self,
        pd: u16,
        iova: u64,
        len: u64,
        rights: u8,
    ) -> Result<MemoryRegion, EfaError> {
        self.check_pd(pd)?;
        if self.window.offset(iova, len).is_err() || len == 0 {
            return Err(EfaError::OutsideMemory { iova, len });
        }
        self.next_key = self.next_key.wrapping_mul(0x9e37_79b9).wrapping_add(0x7f4a_7c15);
        let mr = MemoryRegion {
            pd,
            iova,
            len,
            lkey: self.next_key,
            rkey: self.next_key ^ 0xdead_0000,
            access: rights,
        };
        self.regions.push(mr);
        Ok(mr)
    }

    /// An address handle in `pd` for device `remote` (same subnet only).
    pub fn create_ah(&mut self, pd: u16, remote: u16) -> Result<u16, EfaError> {
        self.check_pd(pd)?;
        let theirs = self.fabric.subnet_of(remote).ok_or(EfaError::NoSuchDevice(remote))?;
        if theirs != self.subnet {
            return Err(EfaError::OtherSubnet {
                remote,
                remote_subnet: theirs,
                local_subnet: self.subnet.clone(),
            });
        }
        self.ahs.push((pd, remote));
        Ok((self.ahs.len() - 1) as u16)
    }

    /// Creates a queue pair in `pd` on rings the library laid out (see
    /// [`EfaEndpoint::create`]).
    pub fn create_qp(&mut self, pd: u16, kind: QpKind, layout: &QpLayout) -> Result<u16, EfaError> {
        self.check_pd(pd)?;
        if self.qps.len() >= 256 {
            return Err(EfaError::TooManyQps);
        }
        let r = self.window.region().clone();
        let check =
            |at: usize, bytes: usize| self.window.offset(self.window.iova(at).0, bytes as u64);
        check(layout.sq, SubmissionRing::<SendWqe>::bytes(layout.depth))?;
        check(layout.rq, SubmissionRing::<RecvWqe>::bytes(layout.depth))?;
        check(layout.cq, CompletionRing::<Cqe>::bytes(layout.depth))?;
        self.qps.push(Qp {
            sq: SubmissionConsumer::attach(r.clone(), layout.sq)?,
            rq: SubmissionConsumer::attach(r.clone(), layout.rq)?,
            cq: CompletionProducer::attach(r, layout.cq)?,
            pd,
            kind,
            caps: HashMap::new(),
            next_msg: 0,
            pending: HashMap::new(),
            delivered: HashMap::new(),
            refused: HashMap::new(),
            backlog: Vec::new(),
        });
        Ok((self.qps.len() - 1) as u16)
    }

    /// A region of `pd` by key.
    fn region(&self, pd: u16, key: u32, remote: bool) -> Option<&MemoryRegion> {
        self.regions
            .iter()
            .find(|m| m.pd == pd && if remote { m.rkey == key } else { m.lkey == key })
    }

    fn complete(&mut self, qp: usize, cqe: Cqe) {
        let q = &mut self.qps[qp];
        q.backlog.push(cqe);
        let n = q.cq.push_burst(&q.backlog);
        q.backlog.drain(..n);
    }

    /// When the device's next timer falls due (a retransmission, a receiver-not-ready retry,
    /// a message held by the flow cap), ns; a scheduler polls the device then.
    pub fn next_timer_ns(&self) -> Option<u64> {
        self.qps.iter().flat_map(|q| q.pending.values().map(|p| p.deadline)).min()
    }

    /// Runs the device once at `now_ns`: new work requests, packets that arrived, timers.
    /// Returns the work done.
    pub fn poll(&mut self, now_ns: u64) -> usize {
        let mut work = 0;
        for qp in 0..self.qps.len() {
            work += self.post_from_sq(qp, now_ns);
        }
        // Each phase's packets leave before the next phase: the same order of sends (and of
        // the fabric's draws) as one at a time.
        self.fabric.send_all(&mut self.outbox, now_ns);
        let mut packets = std::mem::take(&mut self.scratch);
        self.fabric.take_due(self.addr, now_ns, &mut packets);
        work += packets.len();
        for p in packets.drain(..) {
            self.receive(p, now_ns);
        }
        self.scratch = packets;
        self.fabric.send_all(&mut self.outbox, now_ns);
        for qp in 0..self.qps.len() {
            work += self.timers(qp, now_ns);
            if !self.qps[qp].backlog.is_empty() {
                let q = &mut self.qps[qp];
                let n = q.cq.push_burst(&q.backlog);
                q.backlog.drain(..n);
            }
        }
        self.fabric.send_all(&mut self.outbox, now_ns);
        work
    }

    fn post_from_sq(&mut self, qp: usize, now: u64) -> usize {
        let mut wqes = [SendWqe::default(); 32];
        let n = self.qps[qp].sq.pop_burst(&mut wqes);
        for w in &wqes[..n] {
            let fail = |status| Cqe {
                wr_id: w.wr_id,
                status,
                opcode: w.opcode,
                qpn: qp as u8,
                ..Default::default()
            };
            let (pd, kind) = (self.qps[qp].pd, self.qps[qp].kind);
            let Some(&(_, dst)) = self.ahs.get(usize::from(w.ah)).filter(|(p, _)| *p == pd) else {
                self.complete(qp, fail(status::BAD_AH));
                continue;
            };
            let len = u64::from(w.length);
            if w.length as usize > EFA_MTU {
                self.complete(qp, fail(status::LENGTH));
                continue;
            }
            let (right, op_ok) = match (w.opcode, kind) {
                (opcode::SEND, _) => (0, true),
                (opcode::RDMA_WRITE, QpKind::Srd) => (0, true),
                (opcode::RDMA_READ, QpKind::Srd) => (access::LOCAL_WRITE, true),
                _ => (0, false),
            };
            if !op_ok {
                self.complete(qp, fail(status::BAD_OPCODE));
                continue;
            }
            if !self.region(pd, w.lkey, false).is_some_and(|m| m.covers(w.local_addr, len, right)) {
                self.complete(qp, fail(status::LOCAL_PROTECTION));
                continue;
            }
            let imm = (w.flags & SendWqe::FLAG_IMM != 0).then_some(w.imm);
            let payload = match w.opcode {
                opcode::RDMA_READ => {
                    Payload::ReadRequest { addr: w.remote_addr, rkey: w.rkey, len: w.length }
                }
                op => {
                    let mut data = vec![0u8; w.length as usize];
                    if self.window.read(w.local_addr, &mut data).is_err() {
                        self.complete(qp, fail(status::LOCAL_PROTECTION));
                        continue;
                    }
                    if op == opcode::SEND {
                        Payload::Send { data, imm }
                    } else {
                        Payload::Write { addr: w.remote_addr, rkey: w.rkey, data, imm }
                    }
                }
            };
            let q = &mut self.qps[qp];
            let msg = q.next_msg;
            q.next_msg += 1;
            let reliable = kind == QpKind::Srd;
            let packet = Arc::new(Packet {
                src: self.addr,
                src_qp: qp as u16,
                dst_qp: w.remote_qpn,
                msg,
                reliable,
                payload,
            });
            bump(&self.stats.tx_msgs);
            if !reliable {
                // UD: done once on the wire.
                self.outbox.push((dst, packet));
                let cqe = Cqe {
                    wr_id: w.wr_id,
                    opcode: w.opcode,
                    qpn: qp as u8,
                    length: w.length,
                    ..Default::default()
                };
                self.complete(qp, cqe);
                continue;
            }
            // The SRD flow cap: a message over 25 Gbps to this destination waits its turn.
            let limiter = q.caps.entry((dst, w.remote_qpn)).or_default();
            let now_ps = now * PS_PER_NS;
            let at_ps = limiter.earliest_ps(&self.cap, now_ps);
            limiter.charge(&self.cap, at_ps, u64::from(w.length.max(64)));
            let at = at_ps.div_ceil(PS_PER_NS);
            let held = at > now;
            q.pending.insert(
                msg,
                Pending {
                    wqe: *w,
                    dst,
                    packet: packet.clone(),
                    deadline: if held { at } else { now + RETRANSMIT_NS },
                    tries: 1,
                    not_ready: false,
                    unsent: held,
                },
            );
            if held {
                bump(&self.stats.flow_cap_held);
            } else {
                self.outbox.push((dst, packet));
            }
        }
        n
    }

    fn timers(&mut self, qp: usize, now: u64) -> usize {
        let q = &mut self.qps[qp];
        let mut due: Vec<u64> =
            q.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&m, _)| m).collect();
        // In message order, whatever the map's: retransmissions (and the fabric's draws for
        // them) must come out the same on every run.
        due.sort_unstable();
        let mut work = 0;
        for msg in due {
            let Some(p) = self.qps[qp].pending.get_mut(&msg) else { continue };
            if p.tries >= MAX_TRIES {
                let wqe = p.wqe;
                self.qps[qp].pending.remove(&msg);
                let cqe = Cqe {
                    wr_id: wqe.wr_id,
                    status: status::RETRY_EXCEEDED,
                    opcode: wqe.opcode,
                    qpn: qp as u8,
                    ..Default::default()
                };
                self.complete(qp, cqe);
                continue;
            }
            if std::mem::take(&mut p.unsent) {
                // Its first transmission, held back by the flow cap.
            } else if std::mem::take(&mut p.not_ready) {
                bump(&self.stats.rnr_retries);
            } else {
                p.tries += 1;
                bump(&self.stats.retransmits);
            }
            p.deadline = now + RETRANSMIT_NS;
            let (dst, packet) = (p.dst, p.packet.clone());
            self.outbox.push((dst, packet));
            work += 1;
        }
        work
    }

    fn reply(&mut self, to: &Packet, payload: Payload) {
        let packet = Arc::new(Packet {
            src: self.addr,
            src_qp: to.dst_qp,
            dst_qp: to.src_qp,
            msg: to.msg,
            reliable: true,
            payload,
        });
        self.outbox.push((to.src, packet));
    }

    fn receive(&mut self, p: Arc<Packet>, now: u64) {
        let qp = usize::from(p.dst_qp);
        if qp >= self.qps.len() {
            return;
        }
        if p.is_response() {
            return self.on_response(qp, p, now);
        }
        let pd = self.qps[qp].pd;
        if !p.reliable || self.qps[qp].kind == QpKind::Ud {
            return self.receive_datagram(qp, pd, &p);
        }
        let key = (p.src, p.src_qp);
        let duplicate = self.qps[qp].delivered.get(&key).is_some_and(|d| d.contains(p.msg));
        if duplicate && !matches!(p.payload, Payload::ReadRequest { .. }) {
            // Its acknowledgement was lost: answer the same again, deliver nothing.
            bump(&self.stats.duplicates);
            let answer = match self.qps[qp].refused.get(&(p.src, p.src_qp, p.msg)) {
                Some(&status) => Payload::Nack { status },
                None => Payload::Ack,
            };
            return self.reply(&p, answer);
        }
        match &p.payload {
            Payload::Send { data, imm } => {
                let Some(rq) = self.qps[qp].rq.pop() else {
                    return self.reply(&p, Payload::NotReady);
                };
                if !self.land(qp, pd, &rq, data, *imm) {
                    return self.refuse(qp, &p, status::LENGTH);
                }
                self.mark(qp, key, p.msg);
                self.reply(&p, Payload::Ack);
            }
            Payload::Write { addr, rkey, data, imm } => {
                let allowed = self
                    .region(pd, *rkey, true)
                    .is_some_and(|m| m.covers(*addr, data.len() as u64, access::REMOTE_WRITE));
                if !allowed {
                    bump(&self.stats.remote_access_errors);
                    return self.refuse(qp, &p, status::REMOTE_ACCESS);
                }
                let rq = match imm {
                    Some(_) => match self.qps[qp].rq.pop() {
                        Some(rq) => Some(rq),
                        None => return self.reply(&p, Payload::NotReady),
                    },
                    None => None,
                };
                if self.window.write(*addr, data).is_err() {
                    bump(&self.stats.remote_access_errors);
                    return self.refuse(qp, &p, status::REMOTE_ACCESS);
                }
                if let Some(rq) = rq {
                    self.recv_done(qp, rq.wr_id, data.len(), *imm);
                } else {
                    bump(&self.stats.rx_msgs);
                }
                self.mark(qp, key, p.msg);
                self.reply(&p, Payload::Ack);
            }
            Payload::ReadRequest { addr, rkey, len } => {
                let allowed = self
                    .region(pd, *rkey, true)
                    .is_some_and(|m| m.covers(*addr, u64::from(*len), access::REMOTE_READ));
                let mut data = vec![0u8; *len as usize];
                if !allowed || self.window.read(*addr, &mut data).is_err() {
                    bump(&self.stats.remote_access_errors);
                    return self.reply(&p, Payload::Nack { status: status::REMOTE_ACCESS });
                }
                self.reply(&p, Payload::ReadResponse { data });
            }
            _ => {}
        }
    }

    /// An unreliable datagram: delivered into a posted receive, or dropped; never answered.
    fn receive_datagram(&mut self, qp: usize, pd: u16, p: &Packet) {
        let Payload::Send { data, imm } = &p.payload else { return };
        let Some(rq) = self.qps[qp].rq.pop() else {
            bump(&self.stats.ud_drops);
            return;
        };
        self.land(qp, pd, &rq, data, *imm);
    }

    /// Copies a received message into a posted receive buffer and completes it; a buffer too
    /// small, or outside its region, completes with [`status::LENGTH`] instead. True if landed.
    fn land(&mut self, qp: usize, pd: u16, rq: &RecvWqe, data: &[u8], imm: Option<u32>) -> bool {
        let fits = data.len() <= rq.length as usize
            && self
                .region(pd, rq.lkey, false)
                .is_some_and(|m| m.covers(rq.addr, data.len() as u64, access::LOCAL_WRITE));
        if !fits || self.window.write(rq.addr, data).is_err() {
            let cqe = Cqe {
                wr_id: rq.wr_id,
                status: status::LENGTH,
                opcode: opcode::RECV,
                qpn: qp as u8,
                ..Default::default()
            };
            self.complete(qp, cqe);
            return false;
        }
        self.recv_done(qp, rq.wr_id, data.len(), imm);
        true
    }

    /// Refuses a message with `status`, and will refuse its retransmissions the same way.
    fn refuse(&mut self, qp: usize, p: &Packet, status: u8) {
        self.mark(qp, (p.src, p.src_qp), p.msg);
        self.qps[qp].refused.insert((p.src, p.src_qp, p.msg), status);
        self.reply(p, Payload::Nack { status });
    }

    fn mark(&mut self, qp: usize, key: (u16, u16), msg: u64) {
        self.qps[qp].delivered.entry(key).or_default().insert(msg);
    }

    fn recv_done(&mut self, qp: usize, wr_id: u32, len: usize, imm: Option<u32>) {
        bump(&self.stats.rx_msgs);
        let cqe = Cqe {
            wr_id,
            status: status::SUCCESS,
            flags: if imm.is_some() { Cqe::FLAG_IMM } else { 0 },
            opcode: opcode::RECV,
            qpn: qp as u8,
            length: len as u32,
            imm: imm.unwrap_or(0),
        };
        self.complete(qp, cqe);
    }

    fn on_response(&mut self, qp: usize, p: Arc<Packet>, now: u64) {
        if let Payload::NotReady = p.payload {
            if let Some(pending) = self.qps[qp].pending.get_mut(&p.msg) {
                pending.deadline = now + RNR_RETRY_NS;
                pending.not_ready = true;
            }
            return;
        }
        let Some(pending) = self.qps[qp].pending.remove(&p.msg) else { return };
        let w = pending.wqe;
        let mut cqe = Cqe {
            wr_id: w.wr_id,
            opcode: w.opcode,
            qpn: qp as u8,
            length: w.length,
            ..Default::default()
        };
        match &p.payload {
            Payload::Ack => {}
            Payload::Nack { status } => cqe.status = *status,
            Payload::ReadResponse { data } => {
                if self.window.write(w.local_addr, data).is_err() {
                    cqe.status = status::LOCAL_PROTECTION;
                }
            }
            _ => return,
        }
        self.complete(qp, cqe);
    }
}

/// The library's side of one SRD queue pair: rings in the VM's memory, no system call on the
/// data path.
#[derive(Debug)]
pub struct EfaEndpoint {
    /// The queue pair number the device gave.
    pub qpn: u16,
    sq: SubmissionProducer<SendWqe>,
    rq: SubmissionProducer<RecvWqe>,
    cq: CompletionConsumer<Cqe>,
}

impl EfaEndpoint {
    /// Lays out a queue pair's rings at `layout` in the VM's memory and asks the device to
    /// create it.
    pub fn create(
        region: &Arc<SharedRegion>,
        device: &mut EfaDevice,
        pd: u16,
        kind: QpKind,
        layout: QpLayout,
    ) -> Result<Self, EfaError> {
        SubmissionRing::<SendWqe>::init(region, layout.sq, layout.depth)?;
        SubmissionRing::<RecvWqe>::init(region, layout.rq, layout.depth)?;
        CompletionRing::<Cqe>::init(region, layout.cq, layout.depth)?;
        let qpn = device.create_qp(pd, kind, &layout)?;
        Ok(Self {
            qpn,
            sq: SubmissionProducer::attach(region.clone(), layout.sq)?,
            rq: SubmissionProducer::attach(region.clone(), layout.rq)?,
            cq: CompletionConsumer::attach(region.clone(), layout.cq)?,
        })
    }

    /// Posts a send or RDMA work request; false if the send queue is full.
    pub fn post_send(&mut self, wqe: SendWqe) -> bool {
        self.sq.push(wqe)
    }

    /// Posts a receive buffer; false if the receive queue is full.
    pub fn post_recv(&mut self, wqe: RecvWqe) -> bool {
        self.rq.push(wqe)
    }

    /// Reaps completions into `out`; returns how many.
    pub fn poll_cq(&mut self, out: &mut [Cqe]) -> usize {
        self.cq.pop_burst(out)
    }
}

/// A send work request.
pub fn send_wqe(
    wr_id: u32,
    ah: u16,
    remote_qpn: u16,
    mr: &MemoryRegion,
    addr: Iova,
    len: u32,
) -> SendWqe {
    SendWqe {
        wr_id,
        ah,
        remote_qpn,
        local_addr: addr.0,
        length: len,
        lkey: mr.lkey,
        opcode: opcode::SEND,
        ..Default::default()
    }
}

/// A receive work request.
pub fn recv_wqe(wr_id: u32, mr: &MemoryRegion, addr: Iova, len: u32) -> RecvWqe {
    RecvWqe { wr_id, addr: addr.0, length: len, lkey: mr.lkey, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(src: u16, msg: u64) -> Arc<Packet> {
        Arc::new(Packet { src, src_qp: 0, dst_qp: 0, msg, reliable: true, payload: Payload::Ack })
    }

    /// Per device, (due time, message) of every packet on its way to it, in arrival order.
    fn arrivals(fabric: &SrdFabric, devices: u16) -> Vec<Vec<(u64, u64)>> {
        (0..devices)
            .map(|dev| {
                let mut got = Vec::new();
                let mut out = Vec::new();
                while let Some(due) = fabric.next_due(dev) {
                    fabric.take_due(dev, due, &mut out);
                    got.extend(out.drain(..).map(|p| (due, p.msg)));
                }
                got
            })
            .collect()
    }

    /// Packets sent in groups (a poll's phase at a time) take the fabric's draws in the order
    /// they were sent, exactly as one at a time would: xorshift64* (Marsaglia's xorshift with
    /// Vigna's multiplier) seeded `seed | 1`, three draws a packet — loss (parts per million),
    /// path, jitter — and two for a lost one.
    #[test]
    fn a_group_of_sends_draws_as_the_same_sends_one_by_one() {
        let (paths, base, step, loss, seed) = (4u64, 5_000u64, 10_000u64, 0.2, 41u64);
        let fabric = SrdFabric::new(paths as u32, base, step, loss, seed);
        for _ in 0..3 {
            fabric.join("a");
        }
        let sends: Vec<(u16, Arc<Packet>)> =
            (0..300).map(|m| ((m % 3) as u16, ack(0, m))).collect();
        let now = 1_000;
        for group in sends.chunks(7) {
            let mut outbox = group.to_vec();
            fabric.send_all(&mut outbox, now);
            assert!(outbox.is_empty());
        }
        let mut rng = seed | 1;
        let mut draw = || {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut expected = vec![Vec::new(); 3];
        let mut lost = 0;
        for (dst, p) in &sends {
            if draw() % 1_000_000 < 200_000 {
                lost += 1;
                continue;
            }
            let path = draw() % paths;
            let jitter = draw() % (step / 4 + 1);
            expected[usize::from(*dst)].push((now + base + path * step + jitter, p.msg));
        }
        // The fabric delivers by due time, then by the order sent.
        for e in &mut expected {
            e.sort();
        }
        assert!(lost > 30, "a fifth of 300 is lost: {lost}");
        assert_eq!(fabric.dropped.load(Ordering::Relaxed), lost);
        assert_eq!(fabric.carried.load(Ordering::Relaxed), 300 - lost);
        assert_eq!(arrivals(&fabric, 3), expected);
    }
}
