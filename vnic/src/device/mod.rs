//! The NIC: a physical function, its virtual functions, their ENA queue pairs, and the engine
//! that moves frames between them.
//!
//! * A [`PhysicalFunction`] has `total_vfs` (at most 256) and Linux's `sriov_numvfs` semantics:
//!   VFs are enabled 0 → N and disabled N → 0; changing N while VFs are enabled, disabling them
//!   while one is assigned, or asking above `total_vfs` is an error.
//! * A [`VirtualFunction`] has a MAC, an MTU (at most 9001), a port VLAN and spoof check for the
//!   embedded switch, a DMA window (the guest memory it may touch, given when the VF is assigned
//!   to a VM), RSS (Toeplitz key, 128-entry indirection table) and 1 to 128 queue pairs (ENA's
//!   default ceiling is 32 per ENI).
//! * A queue pair is four rings in the guest's memory, laid out by the guest's driver and attached
//!   by the device when it creates the queue: TX submission (16-byte [`TxDesc`]), TX completion
//!   (8-byte [`TxCompletion`]), RX submission (16-byte [`RxDesc`]) and RX completion (16-byte
//!   [`RxCompletion`]); ENA numbers them 2q and 2q + 1. The TX ring may instead be a low-latency
//!   queue in the VF's LLQ BAR (`llq.rs`): 128-, 192- or 256-byte entries holding the
//!   descriptors and the frame's first bytes.
//! * The engine ([`PhysicalFunction::poll`], in `engine.rs`) serves the VFs in weighted round
//!   robin (each its weight of work per poll, 64 small descriptors by default, every descriptor
//!   and byte charged to the VF that posted it), their TX queues in bursts of 32, validates each descriptor, gathers multi-descriptor frames up to jumbo size, switches them by
//!   MAC and VLAN, picks the receiving queue by RSS, copies into a posted RX buffer, and writes the
//!   completions. A bad descriptor is counted and dropped (or completed with an error status so the
//!   driver gets its buffer back); nothing a guest writes can make the engine panic or touch memory
//!   outside that guest's window.
//!
//! A VF reset ([`PhysicalFunction::reset_vf`]) destroys its queues and returns the request ids
//! still in flight to the caller (the driver's buffers); counters are kept.

pub mod admin;
mod dma;
mod engine;
mod irq;
mod llq;
pub mod neighbours;
pub mod stats;

use std::sync::Arc;

pub use dma::{DmaError, DmaWindow, Iova};
pub use engine::{
    BURST, BYTES_PER_UNIT, COPY_ONCE_MIN, DEFAULT_ENGINE_WEIGHT, DEFAULT_POLL_BUDGET, HEADER_BYTES,
    MAX_ENGINE_WEIGHT, RX_STATUS_DROPPED, TX_STATUS_BAD_DESC, TX_STATUS_OK, TX_STATUS_RESET,
    engine_weight,
};
pub use irq::{InterruptLine, Notification};
pub use llq::{LLQ_MAX_DEPTH, LLQ_QUEUES, LLQ_SLOT_BYTES};
use llq::{LlqChoice, TxRing};
use stats::{QueueStats, QueueStatsSnapshot, VfStats, VfStatsSnapshot};

use crate::abi::io::{RxCompletion, RxDesc, TxCompletion, TxDesc};
use crate::frame::MacAddr;
use crate::ring::{
    CompletionProducer, CompletionRing, RingError, SubmissionConsumer, SubmissionRing,
};
use crate::rss::{FlowHasher, IndirectionTable, MICROSOFT_RSS_KEY};
use crate::shaper::{AllowanceCounters, Clock, DeviceClock, FlowKey, Shaper, ShaperConfig};
use crate::switch::{EmbeddedSwitch, Uplink, VfPort};

/// Most VFs a PF can expose.
pub const MAX_VFS: u16 = 256;
/// Most queue pairs per VF (ENA's driver maximum is 128 IO queues).
pub const MAX_QUEUE_PAIRS: usize = 128;
/// Largest MTU (jumbo frames inside a VPC).
pub const MAX_MTU: u16 = 9001;
/// Ethernet header, one VLAN tag and FCS on top of the MTU.
pub const FRAME_OVERHEAD: usize = 22;

/// What the device refuses.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// More VFs than the PF has.
    #[error("sriov_numvfs {requested} is above sriov_totalvfs {total}")]
    TooManyVfs {
        /// Asked for.
        requested: u16,
        /// The PF's total.
        total: u16,
    },
    /// `total_vfs` above 256.
    #[error("a PF exposes at most {MAX_VFS} VFs, not {0}")]
    TotalVfs(u16),
    /// N → M without going through 0, as Linux refuses with EBUSY.
    #[error("{current} VFs are enabled: write 0 to sriov_numvfs before enabling {requested}")]
    VfsEnabled {
        /// Enabled now.
        current: u16,
        /// Asked for.
        requested: u16,
    },
    /// Disabling VFs while one is assigned to a VM.
    #[error("VF {0} is in use: release it before disabling VFs")]
    VfInUse(u16),
    /// No such VF.
    #[error("VF {vf} does not exist ({enabled} enabled)")]
    NoSuchVf {
        /// Asked for.
        vf: u16,
        /// Enabled now.
        enabled: u16,
    },
    /// No such queue pair.
    #[error("VF {vf} has no queue pair {queue}")]
    NoSuchQueue {
        /// The VF.
        vf: u16,
        /// The queue asked for.
        queue: u16,
    },
    /// The VF has no DMA window yet.
    #[error("VF {0} is not assigned (no DMA window)")]
    NotAssigned(u16),
    /// The VF already has a DMA window.
    #[error("VF {0} is already assigned")]
    AlreadyAssigned(u16),
    /// MTU out of range.
    #[error("MTU {0} is outside 68..=9001")]
    Mtu(u16),
    /// Engine weight out of range.
    #[error("engine weight {0} is outside 1..={MAX_ENGINE_WEIGHT} descriptors per poll")]
    EngineWeight(u32),
    /// Too many queue pairs.
    #[error("VF {vf} already has {MAX_QUEUE_PAIRS} queue pairs")]
    TooManyQueues {
        /// The VF.
        vf: u16,
    },
    /// A ring address outside the VF's window.
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// A MAC filter another VF already has.
    #[error("MAC {0} belongs to another VF")]
    MacInUse(MacAddr),
    /// A ring that is not a valid ring of the expected shape.
    #[error("queue ring at {iova:#x}: {source}")]
    Ring {
        /// Where the driver said it is.
        iova: u64,
        /// What is wrong with it.
        #[source]
        source: RingError,
    },
}

/// Where a queue pair's four rings are, in the VF's DMA window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePairSpec {
    /// Depth of all four rings.
    pub depth: u32,
    /// TX submission ring.
    pub tx_sq: Iova,
    /// TX completion ring.
    pub tx_cq: Iova,
    /// RX submission ring.
    pub rx_sq: Iova,
    /// RX completion ring.
    pub rx_cq: Iova,
}

/// The device's end of one queue pair.
#[derive(Debug)]
pub(crate) struct DeviceQueue {
    pub(crate) depth: u32,
    /// The TX submission ring: descriptors in guest memory, or LLQ entries in the LLQ BAR.
    pub(crate) tx: TxRing,
    /// Destroyed through the admin queue while a pair above it lives: not served.
    pub(crate) stopped: bool,
    pub(crate) tx_cq: CompletionProducer<TxCompletion>,
    pub(crate) rx_sq: SubmissionConsumer<RxDesc>,
    pub(crate) rx_cq: CompletionProducer<RxCompletion>,
    /// TX request ids between their first descriptor and their completion.
    pub(crate) tx_in_flight: Vec<bool>,
    /// The frame being gathered: its request id, bytes so far, and whether it is already bad.
    pub(crate) partial: Option<PartialFrame>,
    /// The bytes gathered so far of a chain that a burst cut in two: the gather buffer is the
    /// PF's and other queues use it before this chain resumes.
    pub(crate) partial_bytes: Vec<u8>,
    /// A chain cut short by a new first descriptor, waiting for its error completion.
    pub(crate) abandoned: Option<u16>,
    /// Count of TX descriptors consumed (ENA's SQ head index).
    pub(crate) tx_head: u16,
    /// RX descriptors taken from the ring a burst at a time, as a NIC's descriptor cache.
    pub(crate) rx_cache: Vec<RxDesc>,
    pub(crate) rx_cache_next: usize,
    /// Ring position of the cache's first descriptor (for its phase bit).
    pub(crate) rx_cache_start: u32,
    /// RX completions written this poll, published with one doorbell at its end.
    pub(crate) rx_done: Vec<RxCompletion>,
    /// Interrupt moderation of TX and RX completions.
    pub(crate) tx_irq: irq::Moderator,
    pub(crate) rx_irq: irq::Moderator,
    pub(crate) stats: Arc<QueueStats>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PartialFrame {
    pub(crate) req_id: u16,
    pub(crate) len: usize,
    pub(crate) bad: bool,
}

/// A virtual function.
#[derive(Debug)]
pub struct VirtualFunction {
    id: u16,
    mtu: u16,
    window: Option<DmaWindow>,
    pub(crate) queues: Vec<DeviceQueue>,
    pub(crate) rss: FlowHasher,
    pub(crate) indirection: IndirectionTable,
    pub(crate) stats: Arc<VfStats>,
    /// Queue stats of destroyed queues, so that counters survive a reset.
    retired: QueueStatsSnapshot,
    /// Admin queue, async event queue and register state.
    pub(crate) admin: admin::AdminState,
    /// Its LLQ BAR (device memory for low-latency queues), once used, and the entry layout
    /// its driver chose.
    pub(crate) llq_bar: Option<Arc<crate::ring::SharedRegion>>,
    pub(crate) llq: LlqChoice,
    /// Interrupt moderation delays set through the admin queue: (TX, RX) µs.
    pub(crate) moderation_us: (u32, u32),
    /// Whether the guest may change its own MAC (`ip link set dev PF vf N trust on`).
    pub(crate) trusted: bool,
    /// EC2's source/destination check: the IPv4 addresses the VF may send from and receive for
    /// (`None`: the check is off).
    pub(crate) addresses: Option<Arc<[[u8; 4]]>>,
    /// The ENI's shaper on the VF's outbound traffic, and the frames it holds.
    pub(crate) shaper: Option<Box<EgressShaper>>,
    /// The ENI's security groups and its subnet's NACL, on every frame both ways.
    pub(crate) policy: Option<Box<VfPolicy>>,
    /// Its share of the engine.
    pub(crate) engine: EngineShare,
}

/// A VF's share of the engine (see `engine.rs`): the units it earns per poll, its balance (debt
/// when negative), and the queue its next turn starts at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineShare {
    pub(crate) weight: u32,
    pub(crate) balance: i64,
    pub(crate) next_queue: usize,
    /// Its last turn ended with TX descriptors still waiting.
    pub(crate) waiting: bool,
}

/// A flow-cap policy the device can own: a closure from a flow to its cap in bits/s.
pub type FlowCapPolicy = Box<dyn Fn(&FlowKey) -> u64 + Send>;

/// Why a VF's filters refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No security group rule allows it.
    SecurityGroup,
    /// A rule allows it but the conntrack allowance is spent.
    Conntrack,
    /// The subnet's NACL denies it.
    Nacl,
}

/// A VF's security groups (with their connection tracking) and its subnet's network ACL: the
/// filters EC2 applies to an ENI's traffic before the shaper, the NACL only for traffic that
/// crosses the subnet's boundary (`vnic::policy`).
#[derive(Debug)]
pub struct VfPolicy {
    /// The ENI's compiled groups and tracked connections.
    pub filter: crate::policy::conntrack::EniFilter,
    /// The ENI's subnet.
    pub subnet: crate::policy::Cidr,
    /// The subnet's NACL.
    pub nacl: Arc<crate::policy::nacl::Nacl>,
    /// The ENI's flow log, if it has one: every decision is recorded in it.
    pub flow_log: Option<crate::policy::flowlog::FlowLog>,
}

impl VfPolicy {
    /// Decides a frame the VF sends: its groups, then its subnet's NACL if it leaves the
    /// subnet.
    #[inline]
    pub fn egress(
        &mut self,
        now_ns: u64,
        ip: &crate::frame::Ipv4Info,
        len: usize,
    ) -> Result<(), Refusal> {
        self.decide_and_log(now_ns, ip, len, crate::policy::Direction::Outbound)
    }

    /// Decides a frame arriving for the VF: its subnet's NACL if it comes from outside the
    /// subnet, then its groups.
    #[inline]
    pub fn ingress(
        &mut self,
        now_ns: u64,
        ip: &crate::frame::Ipv4Info,
        len: usize,
    ) -> Result<(), Refusal> {
        self.decide_and_log(now_ns, ip, len, crate::policy::Direction::Inbound)
    }

    fn decide_and_log(
        &mut self,
        now_ns: u64,
        ip: &crate::frame::Ipv4Info,
        len: usize,
        dir: crate::policy::Direction,
    ) -> Result<(), Refusal> {
        use crate::policy::flowlog::LogAction;
        let t = crate::policy::Tuple::of_frame(ip);
        let verdict = self.decide(now_ns, &t, ip.tcp_flags, dir);
        if let Some(log) = self.flow_log.as_mut() {
            let action = if verdict.is_ok() { LogAction::Accept } else { LogAction::Reject };
            log.record(now_ns, &t, len as u64, action);
        }
        verdict
    }

    fn decide(
        &mut self,
        now_ns: u64,
        t: &crate::policy::Tuple,
        tcp_flags: u8,
        dir: crate::policy::Direction,
    ) -> Result<(), Refusal> {
        use crate::policy::Direction;
        use crate::policy::conntrack::SgVerdict;
        use crate::policy::nacl::Action;
        let crosses = !self.subnet.contains(t.remote(dir));
        let nacl_ok = || !crosses || self.nacl.decide(dir, t).action() == Action::Allow;
        if dir == Direction::Inbound && !nacl_ok() {
            return Err(Refusal::Nacl);
        }
        match self.filter.decide(now_ns, dir, t, tcp_flags) {
            SgVerdict::Denied => return Err(Refusal::SecurityGroup),
            SgVerdict::ConntrackFull => return Err(Refusal::Conntrack),
            SgVerdict::Tracked | SgVerdict::Opened | SgVerdict::Untracked => {}
        }
        if dir == Direction::Outbound && !nacl_ok() {
            return Err(Refusal::Nacl);
        }
        Ok(())
    }
}

/// A VF's outbound shaper and the frames it holds until their departure time.
pub(crate) struct EgressShaper {
    pub(crate) shaper: Shaper<FlowCapPolicy>,
    /// Held frames by handle (the handle is the slot index).
    pub(crate) held: Vec<Option<Vec<u8>>>,
    pub(crate) free_slots: Vec<usize>,
    /// Buffers of frames already sent, for reuse.
    pub(crate) pool: Vec<Vec<u8>>,
}

impl std::fmt::Debug for EgressShaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressShaper").field("held", &self.shaper.queued()).finish()
    }
}

impl VirtualFunction {
    fn new(id: u16) -> Self {
        Self {
            id,
            mtu: 1500,
            window: None,
            queues: Vec::new(),
            rss: FlowHasher::new(MICROSOFT_RSS_KEY),
            indirection: IndirectionTable::spread(1),
            stats: Arc::default(),
            retired: QueueStatsSnapshot::default(),
            admin: admin::AdminState::default(),
            llq_bar: None,
            llq: LlqChoice::default(),
            moderation_us: (64, 20),
            trusted: false,
            addresses: None,
            shaper: None,
            policy: None,
            engine: EngineShare {
                weight: engine::DEFAULT_ENGINE_WEIGHT,
                balance: 0,
                next_queue: 0,
                waiting: false,
            },
        }
    }

    /// Its index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Its MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Its DMA window, once assigned.
    pub fn window(&self) -> Option<&DmaWindow> {
        self.window.as_ref()
    }

    /// Its queue pairs.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// One queue pair's counters, readable while traffic runs.
    pub fn queue_stats(&self, q: usize) -> Option<Arc<QueueStats>> {
        self.queues.get(q).map(|q| q.stats.clone())
    }

    /// The VF's counters (readable while traffic runs).
    pub fn vf_stats(&self) -> Arc<VfStats> {
        self.stats.clone()
    }

    /// All its queue counters summed, including queues destroyed by resets.
    pub fn totals(&self) -> (QueueStatsSnapshot, VfStatsSnapshot) {
        let mut q = self.retired;
        for queue in &self.queues {
            q += queue.stats.snapshot();
        }
        (q, self.stats.snapshot())
    }
}

/// What a reset hands back: per queue, the TX request ids that were in flight.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// `(queue, request ids)`.
    pub tx_in_flight: Vec<(u16, Vec<u16>)>,
}

/// A physical function with its VFs and embedded switch.
pub struct PhysicalFunction {
    total_vfs: u16,
    pub(crate) vfs: Vec<VirtualFunction>,
    pub(crate) switch: EmbeddedSwitch,
    /// The switch's last decision for a frame a VF sent, reused by the frames like it.
    pub(crate) forward_memo: crate::switch::ForwardMemo,
    pub(crate) uplink: Option<Arc<dyn Uplink>>,
    /// Frames switched to the uplink, sent together when the burst's deliveries are flushed.
    pub(crate) uplink_out: crate::switch::FrameBatch,
    pub(crate) scratch: Vec<u8>,
    /// Each VF's window as the engine holds it outside `vfs` (by index), so that the tails of a
    /// TX burst's frames can be copied from there straight into RX buffers while `vfs` is
    /// borrowed for delivery. Checked against the VF's own window at every burst and cloned
    /// again only when that changed: a clone per burst was an atomic add and subtract on the
    /// region's reference count, a cache line the guest's core reads too (6% of the engine's
    /// samples at 64 B, two threads).
    pub(crate) held_windows: Vec<Option<DmaWindow>>,
    /// RX queues with completions waiting for the end of the poll: (VF, queue).
    pub(crate) rx_dirty: Vec<(u16, u16)>,
    /// A TX burst being processed, and its completions (one more than the burst: a chain from
    /// an earlier burst may be cut short in this one).
    pub(crate) tx_descs: [TxDesc; engine::BURST],
    /// A burst of LLQ entries (up to 256 bytes each).
    pub(crate) llq_burst: Vec<u8>,
    pub(crate) tx_done: [TxCompletion; engine::BURST + 1],
    /// The device's time (shapers, interrupt moderation): the wall clock, or a simulation's.
    pub(crate) clock: DeviceClock,
    /// Handles of held frames due, reused across polls.
    pub(crate) due: Vec<u64>,
    /// VFs with an egress shaper (so a poll looks only at those).
    pub(crate) shaped: Vec<u16>,
    /// The device's time during this poll, read at most once per poll (when a shaper, a
    /// policy or a receiver's connection table first needs it), not once per frame: at
    /// 8 Mpps a clock read per frame was a fifth of the engine's time.
    pub(crate) poll_now: Option<u64>,
    /// Set when a moderated queue may have completions waiting for their interrupt (cleared
    /// by a poll that finds none), so that [`PhysicalFunction::next_timer_ns`] skips the queues
    /// otherwise.
    pub(crate) moderation_pending: bool,
    /// Set by a poll that left TX descriptors waiting because a VF's share ran out: the next
    /// poll has work now.
    pub(crate) tx_backlog: bool,
    /// Engine units a poll may spend in rounds of turns.
    pub(crate) poll_budget: u64,
}

impl std::fmt::Debug for PhysicalFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalFunction")
            .field("total_vfs", &self.total_vfs)
            .field("num_vfs", &self.vfs.len())
            .finish()
    }
}

impl PhysicalFunction {
    /// A PF that can expose `total_vfs` VFs (none enabled).
    pub fn new(total_vfs: u16) -> Result<Self, DeviceError> {
        if total_vfs > MAX_VFS {
            return Err(DeviceError::TotalVfs(total_vfs));
        }
        Ok(Self {
            total_vfs,
            vfs: Vec::new(),
            switch: EmbeddedSwitch::new(),
            forward_memo: crate::switch::ForwardMemo::default(),
            uplink: None,
            uplink_out: crate::switch::FrameBatch::default(),
            scratch: vec![0; usize::from(MAX_MTU) + FRAME_OVERHEAD],
            held_windows: Vec::new(),
            rx_dirty: Vec::new(),
            tx_descs: [TxDesc::default(); engine::BURST],
            llq_burst: vec![0; engine::BURST * 256],
            tx_done: [TxCompletion::default(); engine::BURST + 1],
            clock: DeviceClock::default(),
            due: Vec::new(),
            shaped: Vec::new(),
            poll_now: None,
            moderation_pending: false,
            tx_backlog: false,
            poll_budget: engine::DEFAULT_POLL_BUDGET,
        })
    }

    /// `sriov_totalvfs`.
    pub fn total_vfs(&self) -> u16 {
        self.total_vfs
    }

    /// `sriov_numvfs`.
    pub fn num_vfs(&self) -> u16 {
        self.vfs.len() as u16
    }

    /// Writes `sriov_numvfs`: 0 → N enables N VFs (MACs `02:56:…`, spoof check on), N → 0
    /// disables them.
    pub fn set_num_vfs(&mut self, n: u16) -> Result<(), DeviceError> {
        let current = self.num_vfs();
        if n > self.total_vfs {
            return Err(DeviceError::TooManyVfs { requested: n, total: self.total_vfs });
        }
        if n == current {
            return Ok(());
        }
        if n != 0 && current != 0 {
            return Err(DeviceError::VfsEnabled { current, requested: n });
        }
        if n == 0 {
            if let Some(vf) = self.vfs.iter().find(|vf| vf.window.is_some()) {
                return Err(DeviceError::VfInUse(vf.id));
            }
            for vf in 0..current {
                self.switch.remove_port(vf);
            }
            self.vfs.clear();
            return Ok(());
        }
        for id in 0..n {
            self.vfs.push(VirtualFunction::new(id));
            let mac = MacAddr::local(u32::from(id) + 1);
            self.switch.set_port(id, VfPort { mac, vlan: None, spoof_check: true });
        }
        Ok(())
    }

    /// VEPA (`true`) or VEB switching between VFs ([`EmbeddedSwitch::set_vepa`]).
    pub fn set_vepa(&mut self, vepa: bool) {
        self.switch.set_vepa(vepa);
    }

    /// Sets the clock the device's shapers and interrupt moderation read (a simulation's
    /// [`crate::shaper::VirtualClock`], typically); set it before any traffic.
    pub fn set_clock(&mut self, clock: DeviceClock) {
        self.clock = clock;
    }

    /// The earliest time, ns on the device's clock, at which a poll has work: now if the last
    /// poll left TX descriptors waiting (a VF's share ran out), else when a frame a shaper holds
    /// falls due or a moderated interrupt's delay runs out (`None` if none of these). A
    /// discrete-event scheduler polls the device then; a live engine needs no such call.
    pub fn next_timer_ns(&self) -> Option<u64> {
        if self.tx_backlog {
            return Some(self.clock.now_ns());
        }
        let shaped = self.shaped.iter().filter_map(|&vf| {
            self.vfs.get(usize::from(vf))?.shaper.as_ref()?.shaper.next_release_ns()
        });
        let moderated = self
            .vfs
            .iter()
            .filter(|_| self.moderation_pending)
            .flat_map(|v| v.queues.iter())
            .flat_map(|q| [q.tx_irq.deadline_ns(), q.rx_irq.deadline_ns()])
            .flatten();
        shaped.chain(moderated).min()
    }

    /// Connects the uplink (the host's fabric).
    pub fn set_uplink(&mut self, uplink: Arc<dyn Uplink>) {
        self.uplink = Some(uplink);
    }

    fn check(&self, vf: u16) -> Result<usize, DeviceError> {
        if vf < self.num_vfs() {
            Ok(usize::from(vf))
        } else {
            Err(DeviceError::NoSuchVf { vf, enabled: self.num_vfs() })
        }
    }

    /// A VF.
    pub fn vf(&self, vf: u16) -> Result<&VirtualFunction, DeviceError> {
        Ok(&self.vfs[self.check(vf)?])
    }

    /// A VF's switch port (MAC, VLAN, spoof check).
    pub fn port(&self, vf: u16) -> Result<VfPort, DeviceError> {
        self.check(vf)?;
        self.switch.port(vf).copied().ok_or(DeviceError::NoSuchVf { vf, enabled: self.num_vfs() })
    }

    /// Sets a VF's MAC, port VLAN and spoof check (`ip link set dev PF vf N mac M vlan V spoofchk`).
    pub fn set_port(&mut self, vf: u16, port: VfPort) -> Result<(), DeviceError> {
        self.check(vf)?;
        self.switch.set_port(vf, port);
        Ok(())
    }

    /// Lets a VF's guest change its own MAC through the admin queue (off by default: an ENA's MAC
    /// is the cloud's to assign).
    pub fn set_trusted(&mut self, vf: u16, trusted: bool) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        self.vfs[i].trusted = trusted;
        Ok(())
    }

    /// Sets a VF's MTU (68 to 9001).
    pub fn set_mtu(&mut self, vf: u16, mtu: u16) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        if !(68..=MAX_MTU).contains(&mtu) {
            return Err(DeviceError::Mtu(mtu));
        }
        self.vfs[i].mtu = mtu;
        Ok(())
    }

    /// Sets a VF's RSS key and indirection table.
    pub fn set_rss(
        &mut self,
        vf: u16,
        key: [u8; crate::rss::RSS_KEY_LEN],
        table: IndirectionTable,
    ) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        self.vfs[i].rss = FlowHasher::new(key);
        self.vfs[i].indirection = table;
        Ok(())
    }

    /// Assigns a VF to a guest: from now on it may DMA to `window` and nowhere else.
    pub fn assign(&mut self, vf: u16, window: DmaWindow) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        if self.vfs[i].window.is_some() {
            return Err(DeviceError::AlreadyAssigned(vf));
        }
        self.vfs[i].window = Some(window);
        Ok(())
    }

    /// Resets a VF and takes its DMA window away, returning it to the pool as it came: default
    /// MAC, no filters, address check or shaper, counters at zero.
    pub fn release(&mut self, vf: u16) -> Result<ResetReport, DeviceError> {
        let report = self.reset_vf(vf)?;
        let i = self.check(vf)?;
        self.vfs[i].window = None;
        if let Some(held) = self.held_windows.get_mut(i) {
            *held = None;
        }
        self.vfs[i].addresses = None;
        // Its next VM starts counting from zero.
        self.vfs[i].retired = QueueStatsSnapshot::default();
        self.vfs[i].stats = Arc::default();
        self.set_shaper(vf, None)?;
        // Back to the pool as it came: the default MAC, no VLAN, spoof check on, no filters.
        self.switch.take_extras(vf);
        let mac = MacAddr::local(u32::from(vf) + 1);
        self.switch.set_port(vf, VfPort { mac, vlan: None, spoof_check: true });
        Ok(report)
    }

    /// Turns EC2's source/destination check on (with the addresses the VF owns) or off: with it
    /// on, an IPv4 frame the VF sends from another address, or that arrives for another
    /// address, is dropped and counted (`tx_src_dst_check`, `rx_src_dst_check`). Frames that are
    /// not IPv4 (ARP) pass.
    pub fn set_address_check(
        &mut self,
        vf: u16,
        addresses: Option<&[std::net::Ipv4Addr]>,
    ) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        self.vfs[i].addresses = addresses.map(|a| a.iter().map(|ip| ip.octets()).collect());
        Ok(())
    }

    /// Sets VF `vf`'s share of the engine: units per poll (a unit is one descriptor, or
    /// [`BYTES_PER_UNIT`] bytes copied), 1 to [`MAX_ENGINE_WEIGHT`]
    /// ([`engine_weight`] derives one from an ENI's allowances).
    pub fn set_engine_weight(&mut self, vf: u16, weight: u32) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        if !(1..=MAX_ENGINE_WEIGHT).contains(&weight) {
            return Err(DeviceError::EngineWeight(weight));
        }
        self.vfs[i].engine.weight = weight;
        Ok(())
    }

    /// How many engine units a poll may spend in rounds of turns before it ends (at least one
    /// round always runs: 1 means one round per poll).
    pub fn set_poll_budget(&mut self, units: u64) {
        self.poll_budget = units;
    }

    /// VF `vf`'s engine weight.
    pub fn engine_weight(&self, vf: u16) -> Result<u32, DeviceError> {
        Ok(self.vfs[self.check(vf)?].engine.weight)
    }

    /// Puts a VF behind its ENI's security groups and its subnet's NACL (`None`: nothing is
    /// filtered, as before). Frames are decided before the shaper on the way out and after the
    /// source/destination check on the way in; what is refused is counted in the VF's stats
    /// (`tx_security_group_drops`, `rx_nacl_drops`, ...).
    pub fn set_policy(&mut self, vf: u16, policy: Option<VfPolicy>) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        self.vfs[i].policy = policy.map(Box::new);
        Ok(())
    }

    /// New rules for a VF: its groups' (a group's rules or members changed) and its subnet's
    /// NACL. Its tracked connections live on, as in EC2; so do its flow log and counters. False
    /// if the VF has no policy.
    pub fn update_policy_rules(
        &mut self,
        vf: u16,
        groups: crate::policy::sg::CompiledGroups,
        nacl: Arc<crate::policy::nacl::Nacl>,
    ) -> Result<bool, DeviceError> {
        let i = self.check(vf)?;
        Ok(match self.vfs[i].policy.as_deref_mut() {
            Some(p) => {
                p.filter.set_groups(groups);
                p.nacl = nacl;
                true
            }
            None => false,
        })
    }

    /// Ends the VF's flow log at `end_ns` and returns its records (`None`: it has none).
    pub fn take_flow_log(
        &mut self,
        vf: u16,
        end_ns: u64,
    ) -> Result<Option<Vec<String>>, DeviceError> {
        let i = self.check(vf)?;
        Ok(self.vfs[i]
            .policy
            .as_deref_mut()
            .and_then(|p| p.flow_log.take())
            .map(|l| l.finish(end_ns)))
    }

    /// The VF's policy (its groups, NACL and tracked connections), if it has one.
    pub fn policy(&self, vf: u16) -> Result<Option<&VfPolicy>, DeviceError> {
        let i = self.check(vf)?;
        Ok(self.vfs[i].policy.as_deref())
    }

    /// Shapes the VF's outbound traffic with an ENI's limits (flow caps from `policy`,
    /// bandwidth with burst credits, PPS, conntrack, link-local), or stops shaping it (`None`,
    /// releasing held frames at once). Frames over a limit are held in the device and leave at
    /// their departure time; the sender's TX completion does not wait for them. Returns the
    /// allowance counters (ENA's names), readable while traffic runs.
    pub fn set_shaper(
        &mut self,
        vf: u16,
        shaper: Option<(ShaperConfig, FlowCapPolicy)>,
    ) -> Result<Option<Arc<AllowanceCounters>>, DeviceError> {
        let i = self.check(vf)?;
        if let Some(old) = self.vfs[i].shaper.take() {
            // Whatever it held leaves now rather than being lost.
            for frame in old.held.into_iter().flatten() {
                self.forward_released(i, &frame);
            }
            self.flush_deliveries();
        }
        self.shaped.retain(|&v| v != vf);
        let Some((config, policy)) = shaper else { return Ok(None) };
        let shaper = Shaper::new(config, policy);
        let counters = shaper.counters();
        self.vfs[i].shaper = Some(Box::new(EgressShaper {
            shaper,
            held: Vec::new(),
            free_slots: Vec::new(),
            pool: Vec::new(),
        }));
        self.shaped.push(vf);
        Ok(Some(counters))
    }

    /// Adds an extra unicast MAC filter to a VF (a hypervisor's backend VF carrying the
    /// emulated NICs of its VMs: it receives their frames and may send as them). Fails if
    /// another VF has the MAC.
    pub fn add_mac_filter(&mut self, vf: u16, mac: MacAddr) -> Result<(), DeviceError> {
        self.check(vf)?;
        if self.switch.add_mac_filter(vf, mac) { Ok(()) } else { Err(DeviceError::MacInUse(mac)) }
    }

    /// Removes an extra MAC filter.
    pub fn remove_mac_filter(&mut self, vf: u16, mac: MacAddr) -> Result<(), DeviceError> {
        self.check(vf)?;
        self.switch.remove_mac_filter(vf, mac);
        Ok(())
    }

    /// Creates a queue pair from rings the driver laid out in the VF's window; returns its index.
    pub fn create_queue_pair(&mut self, vf: u16, spec: QueuePairSpec) -> Result<u16, DeviceError> {
        self.attach_queue_pair(vf, spec, None)
    }

    /// [`Self::create_queue_pair`], its TX ring `llq` in the LLQ BAR if given (then
    /// `spec.tx_sq` is not used).
    pub(crate) fn attach_queue_pair(
        &mut self,
        vf: u16,
        spec: QueuePairSpec,
        llq: Option<TxRing>,
    ) -> Result<u16, DeviceError> {
        let i = self.check(vf)?;
        let v = &self.vfs[i];
        let window = v.window.clone().ok_or(DeviceError::NotAssigned(vf))?;
        if v.queues.len() >= MAX_QUEUE_PAIRS {
            return Err(DeviceError::TooManyQueues { vf });
        }
        let d = spec.depth;
        let at = |iova: Iova, bytes: usize| window.offset(iova.0, bytes as u64);
        let ring = |iova: Iova| move |source| DeviceError::Ring { iova: iova.0, source };
        let region = window.region().clone();
        let tx = match llq {
            Some(tx) => tx,
            None => TxRing::Host(
                SubmissionConsumer::attach(
                    region.clone(),
                    at(spec.tx_sq, SubmissionRing::<TxDesc>::bytes(d))?,
                )
                .map_err(ring(spec.tx_sq))?,
            ),
        };
        let tx_cq = CompletionProducer::attach(
            region.clone(),
            at(spec.tx_cq, CompletionRing::<TxCompletion>::bytes(d))?,
        )
        .map_err(ring(spec.tx_cq))?;
        let rx_sq = SubmissionConsumer::attach(
            region.clone(),
            at(spec.rx_sq, SubmissionRing::<RxDesc>::bytes(d))?,
        )
        .map_err(ring(spec.rx_sq))?;
        let rx_cq = CompletionProducer::attach(
            region,
            at(spec.rx_cq, CompletionRing::<RxCompletion>::bytes(d))?,
        )
        .map_err(ring(spec.rx_cq))?;
        let depth = tx_cq.depth();
        if [d, rx_sq.depth(), rx_cq.depth()].iter().any(|&x| x != depth) {
            return Err(DeviceError::Ring {
                iova: spec.tx_cq.0,
                source: RingError::BadDepth { depth: tx_cq.depth() },
            });
        }
        let v = &mut self.vfs[i];
        v.queues.push(DeviceQueue {
            depth,
            tx,
            stopped: false,
            tx_cq,
            rx_sq,
            rx_cq,
            tx_in_flight: vec![false; depth as usize],
            partial: None,
            partial_bytes: Vec::new(),
            abandoned: None,
            tx_head: 0,
            rx_cache: Vec::with_capacity(engine::BURST),
            rx_cache_next: 0,
            rx_cache_start: 0,
            rx_done: Vec::with_capacity(engine::BURST * 4),
            tx_irq: irq::Moderator::busy_poll(),
            rx_irq: irq::Moderator::busy_poll(),
            stats: Arc::default(),
        });
        let n = v.queues.len() as u16;
        v.indirection = IndirectionTable::spread(n);
        Ok(n - 1)
    }

    /// Sets how queue `q` of VF `vf` signals TX and RX completions: busy polling, or moderated
    /// interrupts on the given lines.
    pub fn set_notification(
        &mut self,
        vf: u16,
        q: u16,
        tx: (Notification, Option<Arc<InterruptLine>>),
        rx: (Notification, Option<Arc<InterruptLine>>),
    ) -> Result<(), DeviceError> {
        let i = self.check(vf)?;
        let queue = self.vfs[i]
            .queues
            .get_mut(usize::from(q))
            .ok_or(DeviceError::NoSuchQueue { vf, queue: q })?;
        queue.tx_irq.set(tx.0, tx.1);
        queue.rx_irq.set(rx.0, rx.1);
        Ok(())
    }

    /// Completion-ns that VF `vf`'s receive completions waited for their (moderated)
    /// interrupt, summed over its queues and its life: what moderation added to latency.
    pub fn rx_moderation_waited_ns(&self, vf: u16) -> Result<u64, DeviceError> {
        let v = &self.vfs[self.check(vf)?];
        Ok(v.queues.iter().map(|q| q.rx_irq.waited_ns).sum())
    }

    /// Interrupts raised so far by queue `q` of VF `vf`: (TX, RX).
    pub fn interrupts(&self, vf: u16, q: u16) -> Result<(u64, u64), DeviceError> {
        let queue = self.vfs[self.check(vf)?]
            .queues
            .get(usize::from(q))
            .ok_or(DeviceError::NoSuchQueue { vf, queue: q })?;
        Ok((queue.tx_irq.raised, queue.rx_irq.raised))
    }

    /// Resets a VF: its queues are destroyed and the TX request ids still in flight (a frame
    /// half gathered, or descriptors not yet consumed) are returned, both in the report and as TX
    /// completions with status [`TX_STATUS_RESET`] so the driver frees the buffers; counters are
    /// kept; MAC, MTU, RSS and the DMA window stay.
    pub fn reset_vf(&mut self, vf: u16) -> Result<ResetReport, DeviceError> {
        let i = self.check(vf)?;
        let v = &mut self.vfs[i];
        let mut report = ResetReport::default();
        for (q, mut queue) in v.queues.drain(..).enumerate() {
            // Descriptors the device has not consumed yet are in flight too.
            queue.tx.drain_into(&mut queue.tx_in_flight);
            let ids: Vec<u16> = (0..queue.depth as usize)
                .filter(|&r| queue.tx_in_flight[r])
                .map(|r| r as u16)
                .collect();
            // Hand the buffers back through the completion ring as well, marked reset.
            let returned: Vec<TxCompletion> = ids
                .iter()
                .map(|&req_id| TxCompletion {
                    req_id,
                    status: engine::TX_STATUS_RESET,
                    sub_qid: q as u16,
                    ..Default::default()
                })
                .collect();
            queue.tx_cq.push_burst(&returned);
            v.retired += queue.stats.snapshot();
            if !ids.is_empty() {
                report.tx_in_flight.push((q as u16, ids));
            }
        }
        v.indirection = IndirectionTable::spread(1);
        v.admin.forget_queues();
        Ok(report)
    }
}
