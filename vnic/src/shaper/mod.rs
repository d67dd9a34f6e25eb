//! The shaper: per-flow caps and per-ENI allowances, counted under ENA's names.
//!
//! EC2 limits every 5-tuple flow to 5 Gbps (10 Gbps between members of one cluster placement
//! group, 25 Gbps over ENA Express / SRD), and each ENI to an aggregate bandwidth in and out
//! (small "up to" instances: a baseline plus burst credits good for 5–60 minutes of burst), a
//! packet rate, a number of tracked connections, and 1024 PPS to the link-local services. A
//! [`Shaper`] holds one ENI's worth of those limits:
//!
//! * every limit is a GCRA limiter ([`gcra`]): one timestamp, which says *when* a packet may go;
//! * a packet's departure is the latest of what its flow's, the ENI's bandwidth (peak and credit)
//!   and the ENI's PPS limiter allow; each limiter is charged at the time it alone allowed (as
//!   Carousel composes policies), so one flow's wait is never billed to the ENI;
//! * a packet that may go now passes; one that must wait is filed in a Carousel timing wheel
//!   ([`wheel`]) and handed back by [`Shaper::release`] when due; one that would wait beyond the
//!   wheel's horizon, or finds the wheel full, is dropped;
//! * every packet that had to wait or was dropped is counted against the limit(s) that set its
//!   departure time:
//!   `bw_out_allowance_exceeded`, `bw_in_allowance_exceeded`, `pps_allowance_exceeded`,
//!   `conntrack_allowance_exceeded` (a new flow beyond the allowance is refused),
//!   `linklocal_allowance_exceeded`, and `flow_cap_exceeded` (a flow over its own cap, which ENA
//!   does not count separately); `conntrack_allowance_available` is the room left.
//!
//! Burst credits are a second limiter in series with the peak one: rate = baseline, depth = (burst
//! − baseline) × burst time. At full demand the ENI runs at its burst rate until the credits are
//! spent, then at its baseline, and earns credits back whenever it sends less than its baseline.
//!
//! Flow limiters tolerate a burst of 20 µs at their rate (two jumbo frames at least), the
//! scheduling granularity of the device engine, so that a 5 Gbps flow is smooth at that scale.
//! Time comes from a [`Clock`]: the wall clock for live runs, a [`VirtualClock`] for tests.

mod clock;
mod flow;
pub mod gcra;
pub mod live;
pub mod wheel;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use clock::{Clock, DeviceClock, MonotonicClock, VirtualClock};
pub use flow::{Direction, FlowKey, FlowState, FlowTable, PROTO_TCP, PROTO_UDP};
use gcra::{Gcra, PS_PER_NS, RateLimit};
use wheel::TimingWheel;

/// EC2's single-flow limit outside a cluster placement group.
pub const FLOW_CAP_BPS: u64 = 5_000_000_000;
/// The single-flow limit between members of one cluster placement group.
pub const CLUSTER_FLOW_CAP_BPS: u64 = 10_000_000_000;
/// The single-flow limit with ENA Express (SRD).
pub const SRD_FLOW_CAP_BPS: u64 = 25_000_000_000;
/// Packets per second an ENI may exchange with the link-local services.
pub const LINKLOCAL_PPS: u64 = 1024;
/// The largest frame (jumbo, inside a VPC), plus Ethernet header, VLAN tag and FCS.
const MAX_FRAME_BYTES: u64 = 9001 + 18;
/// Rate classes a shaper keeps (the flow table stores a class in 4 bits).
const MAX_CLASSES: usize = 16;

/// An aggregate bandwidth allowance: a baseline, and a burst rate on credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthAllowance {
    /// Sustained rate, bits/s.
    pub baseline_bps: u64,
    /// Peak rate while credits last, bits/s (equal to the baseline: no burst).
    pub burst_bps: u64,
    /// How long full credits sustain the burst rate, ns.
    pub burst_duration_ns: u64,
}

impl BandwidthAllowance {
    /// A flat allowance (large instances).
    pub const fn fixed(bps: u64) -> Self {
        Self { baseline_bps: bps, burst_bps: bps, burst_duration_ns: 0 }
    }

    /// An "up to" allowance: `baseline_bps`, bursting to `burst_bps` for `burst`.
    pub fn burstable(baseline_bps: u64, burst_bps: u64, burst: std::time::Duration) -> Self {
        Self {
            baseline_bps,
            burst_bps: burst_bps.max(baseline_bps),
            burst_duration_ns: burst.as_nanos() as u64,
        }
    }
}

/// One ENI's limits and the shaper's own sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaperConfig {
    /// Outbound aggregate bandwidth.
    pub bw_out: BandwidthAllowance,
    /// Inbound aggregate bandwidth.
    pub bw_in: BandwidthAllowance,
    /// Packets per second, both directions together.
    pub pps: u64,
    /// Tracked connections.
    pub conntrack_max: usize,
    /// Packets per second to the link-local services.
    pub linklocal_pps: u64,
    /// Burst tolerance of every rate limiter, ns (the engine's scheduling granularity).
    pub granularity_ns: u64,
    /// Timing-wheel tick, ns.
    pub wheel_tick_ns: u64,
    /// Timing-wheel ticks (the horizon is ticks × tick).
    pub wheel_slots: usize,
    /// Packets the wheel may hold.
    pub queue_limit: usize,
    /// Packets one flow may have waiting: a flow with this many queued has further packets
    /// dropped (the backpressure Carousel applies), which keeps flows that share an allowance
    /// fair.
    pub per_flow_queue: u16,
}

impl Default for ShaperConfig {
    /// A large instance: 100 Gbps each way, 14 Mpps, 1,000,000 tracked connections.
    fn default() -> Self {
        Self {
            bw_out: BandwidthAllowance::fixed(100_000_000_000),
            bw_in: BandwidthAllowance::fixed(100_000_000_000),
            pps: 14_000_000,
            conntrack_max: 1_000_000,
            linklocal_pps: LINKLOCAL_PPS,
            granularity_ns: 20_000,
            wheel_tick_ns: 1_000,
            wheel_slots: 65_536,
            queue_limit: 65_536,
            per_flow_queue: 128,
        }
    }
}

/// Decides each new flow's cap. The hypervisor's policy gives 10 Gbps to cluster-group peers and
/// 25 Gbps to SRD flows; closures `Fn(&FlowKey) -> u64` are policies too.
pub trait FlowPolicy {
    /// The cap of a new flow, bits/s.
    fn flow_cap_bps(&self, key: &FlowKey) -> u64;
}

/// Every flow gets EC2's default 5 Gbps.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultFlowPolicy;

impl FlowPolicy for DefaultFlowPolicy {
    fn flow_cap_bps(&self, _: &FlowKey) -> u64 {
        FLOW_CAP_BPS
    }
}

impl<F: Fn(&FlowKey) -> u64> FlowPolicy for F {
    fn flow_cap_bps(&self, key: &FlowKey) -> u64 {
        self(key)
    }
}

/// A packet offered to the shaper.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// Its flow.
    pub key: FlowKey,
    /// Bytes on the wire.
    pub len: u32,
    /// Which way.
    pub dir: Direction,
    /// The caller's name for it, handed back by [`Shaper::release`] if it is queued.
    pub handle: u64,
}

/// What became of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it now.
    Pass,
    /// Held; [`Shaper::release`] returns its handle at `depart_ns`.
    Queued {
        /// When it may go.
        depart_ns: u64,
    },
    /// Dropped.
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A new flow beyond the conntrack allowance.
    Conntrack,
    /// Over an allowance, and it would wait beyond the wheel's horizon or the wheel is full.
    QueueFull,
}

/// The allowance counters, readable from any thread while traffic runs.
#[derive(Debug, Default)]
pub struct AllowanceCounters {
    bw_in_allowance_exceeded: AtomicU64,
    bw_out_allowance_exceeded: AtomicU64,
    pps_allowance_exceeded: AtomicU64,
    conntrack_allowance_exceeded: AtomicU64,
    linklocal_allowance_exceeded: AtomicU64,
    conntrack_allowance_available: AtomicU64,
    flow_cap_exceeded: AtomicU64,
    shaper_drops: AtomicU64,
}

/// A snapshot of [`AllowanceCounters`], with ENA's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowanceStats {
    /// Inbound packets queued or dropped over the ENI's inbound bandwidth.
    pub bw_in_allowance_exceeded: u64,
    /// Outbound packets queued or dropped over the ENI's outbound bandwidth.
    pub bw_out_allowance_exceeded: u64,
    /// Packets queued or dropped over the ENI's PPS allowance.
    pub pps_allowance_exceeded: u64,
    /// New flows refused over the conntrack allowance.
    pub conntrack_allowance_exceeded: u64,
    /// Link-local packets queued or dropped over 1024 PPS.
    pub linklocal_allowance_exceeded: u64,
    /// Flows that can still be tracked.
    pub conntrack_allowance_available: u64,
    /// Packets queued or dropped over their flow's cap (not an ENA counter).
    pub flow_cap_exceeded: u64,
    /// Packets dropped because they could not be queued.
    pub shaper_drops: u64,
}

impl std::ops::AddAssign for AllowanceStats {
    /// Sums two ENIs' (or two lifetimes of one ENI's) counters; the room left is the later one's.
    fn add_assign(&mut self, other: Self) {
        self.bw_in_allowance_exceeded += other.bw_in_allowance_exceeded;
        self.bw_out_allowance_exceeded += other.bw_out_allowance_exceeded;
        self.pps_allowance_exceeded += other.pps_allowance_exceeded;
        self.conntrack_allowance_exceeded += other.conntrack_allowance_exceeded;
        self.linklocal_allowance_exceeded += other.linklocal_allowance_exceeded;
        self.conntrack_allowance_available = other.conntrack_allowance_available;
        self.flow_cap_exceeded += other.flow_cap_exceeded;
        self.shaper_drops += other.shaper_drops;
    }
}

impl AllowanceCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> AllowanceStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AllowanceStats {
            bw_in_allowance_exceeded: r(&self.bw_in_allowance_exceeded),
            bw_out_allowance_exceeded: r(&self.bw_out_allowance_exceeded),
            pps_allowance_exceeded: r(&self.pps_allowance_exceeded),
            conntrack_allowance_exceeded: r(&self.conntrack_allowance_exceeded),
            linklocal_allowance_exceeded: r(&self.linklocal_allowance_exceeded),
            conntrack_allowance_available: r(&self.conntrack_allowance_available),
            flow_cap_exceeded: r(&self.flow_cap_exceeded),
            shaper_drops: r(&self.shaper_drops),
        }
    }
}

/// A limit and its state.
#[derive(Debug, Clone, Copy)]
struct Limiter {
    limit: RateLimit,
    state: Gcra,
}

impl Limiter {
    fn new(limit: RateLimit) -> Self {
        Self { limit, state: Gcra::default() }
    }
}

/// An ENI's bandwidth in one direction: a peak limiter, and a credit limiter if it bursts.
#[derive(Debug, Clone, Copy)]
struct BandwidthLimiter {
    peak: Limiter,
    credit: Option<Limiter>,
}

impl BandwidthLimiter {
    fn new(a: BandwidthAllowance, granularity_ns: u64) -> Self {
        let burst_bytes =
            |bps: u64| (u128::from(bps) * u128::from(granularity_ns) / 8_000_000_000) as u64;
        let peak_bps = a.burst_bps.max(a.baseline_bps);
        let peak = Limiter::new(RateLimit::bytes(
            peak_bps,
            burst_bytes(peak_bps).max(2 * MAX_FRAME_BYTES),
        ));
        let credit = (a.burst_bps > a.baseline_bps).then(|| {
            // Credit bucket depth: (burst − baseline) × burst time, in bytes.
            let depth = (u128::from(a.burst_bps - a.baseline_bps) * u128::from(a.burst_duration_ns)
                / 8_000_000_000) as u64;
            Limiter::new(RateLimit::bytes(a.baseline_bps, depth))
        });
        Self { peak, credit }
    }

    #[inline(always)]
    fn earliest_ps(&self, now: u64) -> u64 {
        let t = self.peak.state.earliest_ps(&self.peak.limit, now);
        match &self.credit {
            Some(c) => t.max(c.state.earliest_ps(&c.limit, now)),
            None => t,
        }
    }

    /// Charges both limiters for `bytes`, each at the time it let them go: a limiter is never
    /// charged for the wait another one imposed.
    #[inline(always)]
    fn charge(&mut self, now: u64, bytes: u64) {
        let at = self.peak.state.earliest_ps(&self.peak.limit, now);
        self.peak.state.charge(&self.peak.limit, at, bytes);
        if let Some(c) = &mut self.credit {
            let at = c.state.earliest_ps(&c.limit, now);
            c.state.charge(&c.limit, at, bytes);
        }
    }
}

/// One ENI's shaper (see the module docs).
#[derive(Debug)]
pub struct Shaper<P: FlowPolicy = DefaultFlowPolicy> {
    config: ShaperConfig,
    policy: P,
    /// Rate classes: the caps handed out so far, and their limits.
    class_bps: Vec<u64>,
    classes: Vec<RateLimit>,
    flows: FlowTable,
    pps: Limiter,
    linklocal: Limiter,
    bw: [BandwidthLimiter; 2],
    wheel: TimingWheel<Waiting>,
    released: Vec<Waiting>,
    counters: Arc<AllowanceCounters>,
}

/// A packet in the wheel: the caller's handle and, for tracked flows, the flow to credit back.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    handle: u64,
    flow: Option<FlowKey>,
}

impl<P: FlowPolicy> Shaper<P> {
    /// A shaper for one ENI.
    pub fn new(config: ShaperConfig, policy: P) -> Self {
        let tolerance =
            |per_second: u64| (per_second * config.granularity_ns / 1_000_000_000).max(1);
        let counters = Arc::new(AllowanceCounters::default());
        counters
            .conntrack_allowance_available
            .store(config.conntrack_max as u64, Ordering::Relaxed);
        Self {
            policy,
            class_bps: Vec::new(),
            classes: Vec::new(),
            flows: FlowTable::new(config.conntrack_max),
            pps: Limiter::new(RateLimit::packets(config.pps, tolerance(config.pps))),
            linklocal: Limiter::new(RateLimit::packets(
                config.linklocal_pps,
                tolerance(config.linklocal_pps),
            )),
            bw: [
                BandwidthLimiter::new(config.bw_out, config.granularity_ns),
                BandwidthLimiter::new(config.bw_in, config.granularity_ns),
            ],
            wheel: TimingWheel::new(config.wheel_tick_ns, config.wheel_slots, config.queue_limit),
            released: Vec::new(),
            counters,
            config,
        }
    }

    /// Reserves room for `n` flows up front.
    pub fn reserve_flows(&mut self, n: usize) {
        self.flows = FlowTable::with_capacity(self.config.conntrack_max, n);
    }

    /// The counters, to read from another thread.
    pub fn counters(&self) -> Arc<AllowanceCounters> {
        self.counters.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> AllowanceStats {
        self.counters.snapshot()
    }

    /// The flow table.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Packets waiting in the wheel.
    pub fn queued(&self) -> usize {
        self.wheel.len()
    }

    fn class_for(
        policy: &P,
        class_bps: &mut Vec<u64>,
        classes: &mut Vec<RateLimit>,
        granularity_ns: u64,
        key: &FlowKey,
    ) -> u8 {
        let bps = policy.flow_cap_bps(key).max(1);
        if let Some(i) = class_bps.iter().position(|&c| c == bps) {
            return i as u8;
        }
        if class_bps.len() == MAX_CLASSES {
            // Out of classes: the closest slower one (never more than the policy asked for),
            // else the slowest.
            let below =
                (0..class_bps.len()).filter(|&i| class_bps[i] <= bps).max_by_key(|&i| class_bps[i]);
            let slowest = (0..class_bps.len()).min_by_key(|&i| class_bps[i]).unwrap_or(0);
            return below.unwrap_or(slowest) as u8;
        }
        let burst = (u128::from(bps) * u128::from(granularity_ns) / 8_000_000_000) as u64;
        classes.push(RateLimit::bytes(bps, burst.max(2 * MAX_FRAME_BYTES)));
        class_bps.push(bps);
        (class_bps.len() - 1) as u8
    }

    /// Decides a packet's fate at `now_ns`.
    #[inline]
    pub fn admit(&mut self, now_ns: u64, pkt: &Packet) -> Verdict {
        let now = now_ns * PS_PER_NS;
        if pkt.key.is_link_local_service() {
            return self.admit_link_local(now, pkt.handle);
        }
        let known = self.flows.len();
        let (policy, class_bps, classes, granularity) =
            (&self.policy, &mut self.class_bps, &mut self.classes, self.config.granularity_ns);
        let Some(flow) = self.flows.get_or_insert(pkt.key, || {
            Self::class_for(policy, class_bps, classes, granularity, &pkt.key)
        }) else {
            AllowanceCounters::bump(&self.counters.conntrack_allowance_exceeded);
            return Verdict::Drop(DropReason::Conntrack);
        };
        let flow_limit = self.classes[usize::from(flow.class())];
        let dir = pkt.dir as usize;
        let flow_at = now.max(flow.tat(pkt.dir).saturating_sub(flow_limit.tau_ps));
        let bw_at = self.bw[dir].earliest_ps(now);
        let pps_at = self.pps.state.earliest_ps(&self.pps.limit, now);
        let at = flow_at.max(bw_at).max(pps_at);
        let verdict = if at > now {
            // Counted against the limits that set the departure time.
            let c = &self.counters;
            if bw_at == at {
                AllowanceCounters::bump(match pkt.dir {
                    Direction::Out => &c.bw_out_allowance_exceeded,
                    Direction::In => &c.bw_in_allowance_exceeded,
                });
            }
            if pps_at == at {
                AllowanceCounters::bump(&c.pps_allowance_exceeded);
            }
            if flow_at == at {
                AllowanceCounters::bump(&c.flow_cap_exceeded);
            }
            let queued = flow.queued();
            self.wheel.catch_up(now);
            if queued >= self.config.per_flow_queue
                || !self.wheel.insert(at, Waiting { handle: pkt.handle, flow: Some(pkt.key) })
            {
                AllowanceCounters::bump(&c.shaper_drops);
                return Verdict::Drop(DropReason::QueueFull);
            }
            flow.set_queued(queued + 1);
            Verdict::Queued { depart_ns: at.div_ceil(PS_PER_NS) }
        } else {
            Verdict::Pass
        };
        // Each limit is charged at the time it alone would have let the packet go (Carousel's
        // composition): charging at the final departure would bill one flow's wait to the ENI.
        let bytes = u64::from(pkt.len);
        flow.set_tat(pkt.dir, flow.tat(pkt.dir).max(flow_at) + flow_limit.cost_ps(bytes));
        self.bw[dir].charge(now, bytes);
        self.pps.state.charge(&self.pps.limit, pps_at, 1);
        if self.flows.len() != known {
            let left = self.config.conntrack_max.saturating_sub(self.flows.len());
            self.counters.conntrack_allowance_available.store(left as u64, Ordering::Relaxed);
        }
        verdict
    }

    /// Link-local traffic answers to its own 1024-PPS limit only.
    fn admit_link_local(&mut self, now: u64, handle: u64) -> Verdict {
        let at = self.linklocal.state.earliest_ps(&self.linklocal.limit, now);
        let verdict = if at > now {
            AllowanceCounters::bump(&self.counters.linklocal_allowance_exceeded);
            self.wheel.catch_up(now);
            if !self.wheel.insert(at, Waiting { handle, flow: None }) {
                AllowanceCounters::bump(&self.counters.shaper_drops);
                return Verdict::Drop(DropReason::QueueFull);
            }
            Verdict::Queued { depart_ns: at.div_ceil(PS_PER_NS) }
        } else {
            Verdict::Pass
        };
        self.linklocal.state.charge(&self.linklocal.limit, at, 1);
        verdict
    }

    /// Appends the handles of queued packets due by `now_ns` to `out`.
    pub fn release(&mut self, now_ns: u64, out: &mut Vec<u64>) {
        if self.wheel.is_empty() {
            return;
        }
        self.wheel.release(now_ns * PS_PER_NS, &mut self.released);
        for w in self.released.drain(..) {
            if let Some(flow) = w.flow.and_then(|k| self.flows.get_mut(&k)) {
                flow.set_queued(flow.queued().saturating_sub(1));
            }
            out.push(w.handle);
        }
    }

    /// When the next queued packet is released, ns (`None` with nothing queued): a scheduler
    /// wakes the device then.
    pub fn next_release_ns(&self) -> Option<u64> {
        self.wheel.next_release_ps().map(|ps| ps.div_ceil(PS_PER_NS))
    }

    /// Forgets flows idle for `idle_ns`; returns how many.
    pub fn expire_idle(&mut self, now_ns: u64, idle_ns: u64) -> usize {
        let n = self.flows.expire_idle(now_ns.saturating_sub(idle_ns) * PS_PER_NS);
        let left = self.config.conntrack_max.saturating_sub(self.flows.len());
        self.counters.conntrack_allowance_available.store(left as u64, Ordering::Relaxed);
        n
    }
}
