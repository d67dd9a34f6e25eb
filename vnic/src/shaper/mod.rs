//! The shaper: per-flow caps and per-ENI allowances, counted under ENA's names.
//!
//! EC2 limits every 5-tuple flow to 5 Gbps (10 Gbps between members of one cluster placement
//! group, 25 Gbps over ENA Express / SRD), and each ENI to an aggregate bandwidth in and out
//! (small "up to" instances: a baseline plus burst credits good for 5–60 minutes of burst), a
//! packet rate, a number of tracked connections, and 1024 PPS to the link-local services. A
//! [`Shaper`] holds one ENI's worth of those limits:
//!
//! * every limit is a GCRA limiter ([`gcra`]): one timestamp, which says *when* a packet may go;
//! * a packet may leave when its flow's, the ENI's bandwidth (peak and credit) and the ENI's PPS
//!   limiters all allow it; each is charged when it leaves, so the limiters follow what was sent;
//! * a packet that may go now passes; one that must wait joins its flow's queue, and
//!   [`Shaper::release`] hands packets out, never before the time they were promised, whenever
//!   the ENI's allowances let one go: deficit round robin over the flows with packets waiting
//!   ([`fair`]), a flow over its own cap sitting out in a Carousel timing wheel ([`wheel`]) until
//!   its limiter lets it go;
//! * a packet is dropped if it would wait beyond the wheel's horizon (65 ms by default) at its
//!   fair share of the ENI (the ENI's baseline rate and PPS divided among the flows with packets
//!   waiting) or at its own cap, if its flow has `per_flow_queue` packets waiting, or if the
//!   shaper holds `queue_limit` packets. The horizon is counted per flow, so which flow loses
//!   never depends on who came next: 1,000 flows offered 20 Mbps each on a 10 Gbps ENI each get
//!   10 Mbps (82 to 84 packets of 1500 B, −1.6% to +0.8%) in every 100 ms, in phase, at random
//!   phases or as Poisson processes (`tests/shaper_fairness.rs`);
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
//!
//! Cost per packet (`benches/shaper.rs`, 1500-byte packets that pass, classification
//! included): [`Shaper::admit_burst`] looks a burst's flows up 32 packets ahead and lets a run
//! of one flow pass on its four limiters held in registers, about 10 ns a packet for one flow,
//! 30 ns over 10,000 flows in random order, 60–70 ns over 1,000,000 (4–5× the `governor`
//! crate's keyed limiter); [`Shaper::admit`], one packet a call, remembers the last flow's
//! bucket while the flow table's generation stands, about 16 ns for one flow.

mod clock;
pub mod fair;
mod flow;
pub mod gcra;
pub mod live;
pub mod wheel;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use clock::{Clock, DeviceClock, MonotonicClock, VirtualClock};
use fair::{FairQueue, Held};
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
/// Packets [`Shaper::admit_burst`] looks up ahead of admitting them (a power of two): with
/// 1,000,000 flows in random order, 8, 16 and 32 ahead measured 124, 117 and 94 ns a packet in
/// bursts of 32 (`benches/shaper.rs`), 64 ahead in bursts of 64 no better than 32. A burst's
/// first 32 buckets are all requested before its first packet is admitted.
pub const BURST_LOOKAHEAD: usize = 32;
const _: () = assert!(BURST_LOOKAHEAD.is_power_of_two());

/// A packet's flow lookup in [`Shaper::admit_burst`], worked out ahead of admitting it.
#[derive(Debug, Clone, Copy, Default)]
struct Lookup {
    hash: u64,
    /// Its flow is the packet before's.
    same_as_previous: bool,
}

/// Packets of one flow in one direction that pass one after another within a burst (so at one
/// instant): after the first, which [`Shaper::admit_flow`] let through with nothing of the
/// ENI's waiting (no fair-queue turns, none of its flow's), each of the rest passes if every
/// limiter still lets it go now, and charges them as `admit_flow`'s pass path does. Nothing a
/// pass does touches the fair queue, so that condition holds for the whole run; the four TATs
/// (the flow's, the ENI's peak and credit bandwidth, its PPS) stay here, each `(limit, TAT)`,
/// rather than being loaded and stored for every packet, and go back at the run's end. One
/// flow, `benches/shaper.rs`, three rounds alternating with the build before: 14.4–14.7 →
/// 10.2–10.5 ns a packet (classification included); 10,000 flows in bursts of 32 14.5–17.2 →
/// 10.0–10.3 ns; 10,000 in random order (no runs) unchanged within the noise.
#[derive(Debug, Clone, Copy)]
struct PassRun {
    index: usize,
    dir: Direction,
    flow: (RateLimit, Gcra),
    peak: (RateLimit, Gcra),
    credit: Option<(RateLimit, Gcra)>,
    pps: (RateLimit, Gcra),
}

impl PassRun {
    /// Admits a packet of `len` bytes at `now` ps if every limiter lets it go now: true, its
    /// charges made. False, nothing changed, if one would hold it.
    #[inline(always)]
    fn pass(&mut self, now: u64, len: u32) -> bool {
        let free = |(limit, gcra): (RateLimit, Gcra)| gcra.earliest_ps(&limit, now) == now;
        if !(free(self.flow) && free(self.peak) && self.credit.is_none_or(free) && free(self.pps)) {
            return false;
        }
        let bytes = u64::from(len);
        let charge = |(limit, gcra): &mut (RateLimit, Gcra), units| gcra.charge(limit, now, units);
        charge(&mut self.flow, bytes);
        self.flow.1.tat_ps = FlowState::as_stored(self.dir, self.flow.1.tat_ps);
        charge(&mut self.peak, bytes);
        if let Some(c) = self.credit.as_mut() {
            charge(c, bytes);
        }
        charge(&mut self.pps, 1);
        true
    }
}

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
    /// Packets the shaper may hold, all flows together.
    pub queue_limit: usize,
    /// Packets one flow may have waiting: a flow with this many queued has further packets
    /// dropped (the backpressure Carousel applies). Fairness between flows comes from the fair
    /// queue and the per-flow share of the horizon; this bounds one flow's backlog.
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
    /// Over its own cap, it would wait beyond the wheel's horizon; or its flow has
    /// `per_flow_queue` packets waiting; or the shaper holds `queue_limit` packets.
    QueueFull,
    /// At its fair share of a congested allowance, it would wait beyond the wheel's horizon.
    OverFairShare,
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
    /// Packets dropped because they could not be queued (see [`DropReason`]).
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

    /// The rate it sustains: the baseline (the credit limiter's rate when it bursts).
    fn sustained(&self) -> &RateLimit {
        self.credit.as_ref().map_or(&self.peak.limit, |c| &c.limit)
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
    /// The flow [`Shaper::admit`] admitted last, its bucket and the table's generation then:
    /// while the generation stands, a packet of the same flow skips the hash and the probe.
    last_admitted: Option<(FlowKey, usize, u64)>,
    pps: Limiter,
    linklocal: Limiter,
    bw: [BandwidthLimiter; 2],
    /// Packets of tracked flows waiting for their turn.
    fair: FairQueue,
    /// Link-local packets waiting for the 1024-PPS limiter (their handles).
    linklocal_wheel: TimingWheel<u64>,
    woken: Vec<u32>,
    counters: Arc<AllowanceCounters>,
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
            last_admitted: None,
            pps: Limiter::new(RateLimit::packets(config.pps, tolerance(config.pps))),
            linklocal: Limiter::new(RateLimit::packets(
                config.linklocal_pps,
                tolerance(config.linklocal_pps),
            )),
            bw: [
                BandwidthLimiter::new(config.bw_out, config.granularity_ns),
                BandwidthLimiter::new(config.bw_in, config.granularity_ns),
            ],
            fair: FairQueue::new(config.wheel_tick_ns, config.wheel_slots),
            linklocal_wheel: TimingWheel::new(
                config.wheel_tick_ns,
                config.wheel_slots,
                config.queue_limit,
            ),
            woken: Vec::new(),
            counters,
            config,
        }
    }

    /// Reserves room for `n` flows up front.
    pub fn reserve_flows(&mut self, n: usize) {
        self.flows = FlowTable::with_capacity(self.config.conntrack_max, n);
        // A new table starts its generations again.
        self.last_admitted = None;
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

    /// Packets waiting.
    pub fn queued(&self) -> usize {
        self.fair.len() + self.linklocal_wheel.len()
    }

    /// How far ahead a departure may be, ps.
    fn horizon_ps(&self) -> u64 {
        self.linklocal_wheel.horizon_ps()
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
        if pkt.key.is_link_local_service() {
            return self.admit_link_local(now_ns * PS_PER_NS, pkt.handle);
        }
        let index = match self.last_admitted {
            Some((key, index, generation))
                if generation == self.flows.generation() && key == pkt.key =>
            {
                index
            }
            _ => match self.track(self.flows.hash(&pkt.key), &pkt.key) {
                Some(index) => {
                    self.last_admitted = Some((pkt.key, index, self.flows.generation()));
                    index
                }
                None => return Verdict::Drop(DropReason::Conntrack),
            },
        };
        self.admit_flow(now_ns * PS_PER_NS, pkt, index)
    }

    /// Decides the fate of a burst of packets at `now_ns`, in order, appending one verdict per
    /// packet to `verdicts`: the same verdicts as [`Shaper::admit`] packet by packet. Faster:
    /// each packet's flow is hashed and its bucket prefetched [`BURST_LOOKAHEAD`] packets
    /// before it is admitted, so the cache misses of a burst over many flows overlap (as DPDK's
    /// bulk hash lookups do), and a packet of the same flow as the packet before skips the
    /// lookup.
    pub fn admit_burst(&mut self, now_ns: u64, pkts: &[Packet], verdicts: &mut Vec<Verdict>) {
        let now = now_ns * PS_PER_NS;
        verdicts.reserve(pkts.len());
        // Lookups of packets i .. i + BURST_LOOKAHEAD, packet j's in slot j % BURST_LOOKAHEAD.
        let mut ahead = [Lookup::default(); BURST_LOOKAHEAD];
        for j in 0..pkts.len().min(BURST_LOOKAHEAD) {
            ahead[j] = self.look_up_ahead(pkts, j, &ahead);
        }
        // The bucket of the packet before, if it was tracked: a bucket stays put until a flow is
        // inserted (a growth moves them all) or removed, and a run of one flow inserts nothing
        // after its first packet.
        let mut last: Option<usize> = None;
        let mut i = 0;
        while i < pkts.len() {
            let lookup = self.take_lookup(pkts, i, &mut ahead);
            let pkt = &pkts[i];
            i += 1;
            // One push per outcome rather than one of a joined value: the joined verdict went
            // through the stack in two halves and was read back whole, a store forwarding stall
            // on every packet.
            let index = match last {
                Some(index) if lookup.same_as_previous => index,
                _ if pkt.key.is_link_local_service() => {
                    last = None;
                    verdicts.push(self.admit_link_local(now, pkt.handle));
                    continue;
                }
                _ => match self.track(lookup.hash, &pkt.key) {
                    Some(index) => index,
                    None => {
                        last = None;
                        verdicts.push(Verdict::Drop(DropReason::Conntrack));
                        continue;
                    }
                },
            };
            last = Some(index);
            match self.admit_flow(now, pkt, index) {
                Verdict::Pass => {
                    verdicts.push(Verdict::Pass);
                    // Only if the next packet continues it: in random order over many flows a
                    // run that never grows would cost four loads and four stores a packet.
                    if i < pkts.len()
                        && pkts[i].dir == pkt.dir
                        && ahead[i & (BURST_LOOKAHEAD - 1)].same_as_previous
                    {
                        i = self.pass_run(now, pkts, i, index, &mut ahead, verdicts);
                    }
                }
                held => verdicts.push(held),
            }
        }
    }

    /// Packet `i`'s lookup from `ahead`, its slot refilled with packet `i + BURST_LOOKAHEAD`'s.
    #[inline(always)]
    fn take_lookup(
        &self,
        pkts: &[Packet],
        i: usize,
        ahead: &mut [Lookup; BURST_LOOKAHEAD],
    ) -> Lookup {
        let slot = i & (BURST_LOOKAHEAD - 1);
        let lookup = ahead[slot];
        if i + BURST_LOOKAHEAD < pkts.len() {
            ahead[slot] = self.look_up_ahead(pkts, i + BURST_LOOKAHEAD, ahead);
        }
        lookup
    }

    /// Admits the packets from `i` on that continue the run of the flow in bucket `index`
    /// (same flow, same direction) for as long as they pass (a [`PassRun`]: the run's first
    /// packet, just before `i`, passed through [`Shaper::admit_flow`]); returns the first packet
    /// it did not admit. Out of line: in random order over many flows runs are rare, and the
    /// main loop stays as small as it was without them.
    #[inline(never)]
    fn pass_run(
        &mut self,
        now: u64,
        pkts: &[Packet],
        mut i: usize,
        index: usize,
        ahead: &mut [Lookup; BURST_LOOKAHEAD],
        verdicts: &mut Vec<Verdict>,
    ) -> usize {
        let dir = pkts[i - 1].dir;
        let mut run = self.start_run(index, dir);
        while i < pkts.len()
            && pkts[i].dir == dir
            && ahead[i & (BURST_LOOKAHEAD - 1)].same_as_previous
            && run.pass(now, pkts[i].len)
        {
            self.take_lookup(pkts, i, ahead);
            verdicts.push(Verdict::Pass);
            i += 1;
        }
        self.end_run(run);
        i
    }

    /// A run from the packet that just passed in bucket `index`'s flow, going `dir`: its
    /// limiters' TATs, read once.
    #[inline(always)]
    fn start_run(&mut self, index: usize, dir: Direction) -> PassRun {
        let flow = self.flows.state(index);
        let bw = &self.bw[dir as usize];
        PassRun {
            index,
            dir,
            flow: (self.classes[usize::from(flow.class())], Gcra { tat_ps: flow.tat(dir) }),
            peak: (bw.peak.limit, bw.peak.state),
            credit: bw.credit.map(|c| (c.limit, c.state)),
            pps: (self.pps.limit, self.pps.state),
        }
    }

    /// Writes a run's TATs back.
    #[inline(always)]
    fn end_run(&mut self, run: PassRun) {
        self.flows.state(run.index).set_tat(run.dir, run.flow.1.tat_ps);
        let bw = &mut self.bw[run.dir as usize];
        bw.peak.state = run.peak.1;
        if let (Some(c), Some((_, state))) = (bw.credit.as_mut(), run.credit) {
            c.state = state;
        }
        self.pps.state = run.pps.1;
    }

    /// Packet `j`'s lookup, its bucket prefetched; a packet of the same flow as the one before
    /// it (whose lookup is in `ahead`) is marked so and reuses its hash.
    #[inline(always)]
    fn look_up_ahead(
        &self,
        pkts: &[Packet],
        j: usize,
        ahead: &[Lookup; BURST_LOOKAHEAD],
    ) -> Lookup {
        if j > 0 && pkts[j].key == pkts[j - 1].key {
            let hash = ahead[(j - 1) & (BURST_LOOKAHEAD - 1)].hash;
            return Lookup { hash, same_as_previous: true };
        }
        let hash = self.flows.hash(&pkts[j].key);
        self.flows.prefetch(hash);
        Lookup { hash, same_as_previous: false }
    }

    /// The bucket of `key`'s flow, tracked from now on if new (its rate class chosen, the
    /// conntrack counters moved); `None`, counted, if it is new beyond the conntrack allowance.
    #[inline]
    fn track(&mut self, hash: u64, key: &FlowKey) -> Option<usize> {
        let known = self.flows.len();
        let (policy, class_bps, classes, granularity) =
            (&self.policy, &mut self.class_bps, &mut self.classes, self.config.granularity_ns);
        let Some((index, created)) = self.flows.find_or_insert(hash, key, || {
            Self::class_for(policy, class_bps, classes, granularity, key)
        }) else {
            AllowanceCounters::bump(&self.counters.conntrack_allowance_exceeded);
            return None;
        };
        if created {
            let left = self.config.conntrack_max.saturating_sub(known + 1);
            self.counters.conntrack_allowance_available.store(left as u64, Ordering::Relaxed);
        }
        Some(index)
    }

    /// Decides, at `now` ps, the fate of a packet whose flow is tracked in bucket `index`: it
    /// passes if no limit holds it and nothing of its flow or another's waits ahead of it (the
    /// path nearly every packet takes, kept small enough to inline); else [`Shaper::hold`].
    #[inline(always)]
    fn admit_flow(&mut self, now: u64, pkt: &Packet, index: usize) -> Verdict {
        let flow = self.flows.state(index);
        let flow_limit = self.classes[usize::from(flow.class())];
        let dir = pkt.dir as usize;
        let flow_at = now.max(flow.tat(pkt.dir).saturating_sub(flow_limit.tau_ps));
        let bw_at = self.bw[dir].earliest_ps(now);
        let pps_at = self.pps.state.earliest_ps(&self.pps.limit, now);
        if flow_at.max(bw_at).max(pps_at) == now
            && !self.fair.has_turns(pkt.dir)
            && self.fair.waiting(flow, pkt.dir).packets == 0
        {
            let bytes = u64::from(pkt.len);
            flow.set_tat(pkt.dir, flow.tat(pkt.dir).max(now) + flow_limit.cost_ps(bytes));
            self.bw[dir].charge(now, bytes);
            self.pps.state.charge(&self.pps.limit, now, 1);
            return Verdict::Pass;
        }
        self.hold(now, pkt, index, [flow_at, bw_at, pps_at])
    }

    /// Queues or drops, at `now` ps, a packet of the flow in bucket `index` that a limit holds
    /// or that waits behind others: `[flow_at, bw_at, pps_at]` are when its flow's cap, the
    /// ENI's bandwidth and its PPS would let it go.
    #[cold]
    #[inline(never)]
    fn hold(&mut self, now: u64, pkt: &Packet, index: usize, limits_at: [u64; 3]) -> Verdict {
        let [flow_at, bw_at, pps_at] = limits_at;
        let horizon = u128::from(self.horizon_ps());
        let flow = self.flows.state(index);
        let flow_limit = self.classes[usize::from(flow.class())];
        let dir = pkt.dir as usize;
        let queued = self.fair.waiting(flow, pkt.dir);
        let (waiting, waiting_bytes) = (queued.packets, queued.bytes);
        // It waits. What its own cap allows it, behind the packets its flow has waiting:
        let own_at = flow_at.max(
            (flow.tat(pkt.dir) + flow_limit.cost_ps(waiting_bytes))
                .saturating_sub(flow_limit.tau_ps),
        );
        let at = own_at.max(bw_at).max(pps_at);
        // Counted against the limits that hold it: its cap when the flow offers more than its
        // cap (its arrivals, not its departures: packets waiting behind the ENI's allowances
        // are the ENI's to count), and the ENI's allowances, which hold it too when it waits
        // behind other flows' turns (then against the tighter one).
        let offered_tat = queued.offered_tat_ps.unwrap_or(flow.tat(pkt.dir));
        let over_cap = offered_tat.saturating_sub(flow_limit.tau_ps) > now;
        let offered_tat = offered_tat.max(now) + flow_limit.cost_ps(u64::from(pkt.len));
        let c = &self.counters;
        if over_cap {
            AllowanceCounters::bump(&c.flow_cap_exceeded);
        }
        let others = self.fair.backlogged(pkt.dir) > usize::from(waiting > 0);
        let bw_tighter =
            self.bw[dir].earliest_ps(0) >= self.pps.state.earliest_ps(&self.pps.limit, 0);
        if bw_at > now || (others && bw_at == now && pps_at == now && bw_tighter) {
            AllowanceCounters::bump(match pkt.dir {
                Direction::Out => &c.bw_out_allowance_exceeded,
                Direction::In => &c.bw_in_allowance_exceeded,
            });
        }
        if pps_at > now || (others && bw_at == now && pps_at == now && !bw_tighter) {
            AllowanceCounters::bump(&c.pps_allowance_exceeded);
        }
        let drop = if self.fair.len() + self.linklocal_wheel.len() >= self.config.queue_limit
            || waiting >= usize::from(self.config.per_flow_queue)
        {
            Some(DropReason::QueueFull)
        } else {
            // Its wait if it joins: what its flow would have waiting, at the flow's fair share
            // of the ENI (the flows waiting, this one included, share the sustained rate and
            // the PPS) and at its own cap.
            let sharing = self.fair.backlogged(pkt.dir) as u128 + u128::from(waiting == 0);
            let bytes = waiting_bytes + u64::from(pkt.len);
            let packets = waiting as u64 + 1;
            let share_wait = (u128::from(self.bw[dir].sustained().cost_ps(bytes)) * sharing)
                .max(u128::from(self.pps.limit.cost_ps(packets)) * sharing);
            let own_wait = u128::from(flow_limit.cost_ps(bytes));
            if share_wait > horizon {
                Some(DropReason::OverFairShare)
            } else if own_wait > horizon {
                Some(DropReason::QueueFull)
            } else {
                None
            }
        };
        if let Some(reason) = drop {
            AllowanceCounters::bump(&c.shaper_drops);
            return Verdict::Drop(reason);
        }
        let held = Held { handle: pkt.handle, len: pkt.len };
        self.fair.enqueue(flow, pkt.key, pkt.dir, held, offered_tat);
        Verdict::Queued { depart_ns: at.div_ceil(PS_PER_NS) }
    }

    /// Link-local traffic answers to its own 1024-PPS limit only.
    fn admit_link_local(&mut self, now: u64, handle: u64) -> Verdict {
        let at = self.linklocal.state.earliest_ps(&self.linklocal.limit, now);
        let verdict = if at > now {
            AllowanceCounters::bump(&self.counters.linklocal_allowance_exceeded);
            self.linklocal_wheel.catch_up(now);
            if !self.linklocal_wheel.insert(at, handle) {
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

    /// Appends to `out` the handles of the queued packets that leave at `now_ns`: link-local
    /// packets that are due, then, in each direction, flows in round-robin order for as long as
    /// the ENI's allowances let a packet go.
    pub fn release(&mut self, now_ns: u64, out: &mut Vec<u64>) {
        if self.queued() == 0 {
            return;
        }
        let now = now_ns * PS_PER_NS;
        self.linklocal_wheel.release(now, out);
        for dir in [Direction::Out, Direction::In] {
            self.release_direction(dir, now, out);
        }
    }

    fn release_direction(&mut self, dir: Direction, now: u64, out: &mut Vec<u64>) {
        let d = dir as usize;
        self.fair.wake(dir, now, &mut self.woken);
        while self.eni_ready_ps(dir, now) <= now {
            let Some(key) = self.fair.next(dir) else { return };
            // One lookup of the flow: its cap decides whether it goes, and is charged if it does.
            let mut flow = self.flows.get_mut(&key);
            let limit = flow.as_deref().map(|f| self.classes[usize::from(f.class())]);
            if let (Some(f), Some(limit)) = (flow.as_deref(), limit) {
                let flow_at = f.tat(dir).saturating_sub(limit.tau_ps);
                if flow_at > now {
                    self.fair.throttle(dir, now, flow_at);
                    continue;
                }
            }
            let Some(held) = self.fair.dequeue(dir, flow.as_deref_mut()) else { return };
            if let (Some(f), Some(limit)) = (flow, limit) {
                f.set_tat(dir, f.tat(dir).max(now) + limit.cost_ps(u64::from(held.len)));
            }
            self.bw[d].charge(now, u64::from(held.len));
            self.pps.state.charge(&self.pps.limit, now, 1);
            out.push(held.handle);
        }
    }

    /// When the ENI's allowances in `dir` let the next packet go, ps.
    #[inline]
    fn eni_ready_ps(&self, dir: Direction, now: u64) -> u64 {
        let bw_at = self.bw[dir as usize].earliest_ps(now);
        bw_at.max(self.pps.state.earliest_ps(&self.pps.limit, now))
    }

    /// When [`Shaper::release`] next has something to hand out, ns (`None` with nothing
    /// queued): a scheduler wakes the device then.
    pub fn next_release_ns(&self) -> Option<u64> {
        let mut next = self.linklocal_wheel.next_release_ps();
        for dir in [Direction::Out, Direction::In] {
            let turn = self.fair.has_turns(dir).then(|| self.eni_ready_ps(dir, 0));
            for t in [turn, self.fair.next_wake_ps(dir)].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next.map(|ps| ps.div_ceil(PS_PER_NS))
    }

    /// Forgets flows idle for `idle_ns`; returns how many.
    pub fn expire_idle(&mut self, now_ns: u64, idle_ns: u64) -> usize {
        let n = self.flows.expire_idle(now_ns.saturating_sub(idle_ns) * PS_PER_NS);
        let left = self.config.conntrack_max.saturating_sub(self.flows.len());
        self.counters.conntrack_allowance_available.store(left as u64, Ordering::Relaxed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GBPS: u64 = 1_000_000_000;

    /// `n` outbound TCP flows from 10.0.0.1 to 10.0.0.2:`dport`, source ports from `first`.
    fn tcp_flows(n: u16, first: u16, dport: u16) -> Vec<FlowKey> {
        let src = std::net::Ipv4Addr::new(10, 0, 0, 1).into();
        let dst = std::net::Ipv4Addr::new(10, 0, 0, 2).into();
        (0..n)
            .map(|f| FlowKey::of_packet(Direction::Out, src, dst, PROTO_TCP, first + f, dport))
            .collect()
    }

    /// Every limiter's state that a pass charges: the ENI's bandwidth (peak and credit) both
    /// ways, its PPS, and each flow's TATs.
    fn charged(s: &mut Shaper<impl FlowPolicy>, keys: &[FlowKey]) -> Vec<u64> {
        let mut tats: Vec<u64> =
            s.bw.iter()
                .flat_map(|b| [b.peak.state.tat_ps, b.credit.map_or(0, |c| c.state.tat_ps)])
                .collect();
        tats.push(s.pps.state.tat_ps);
        for key in keys {
            let flow = s.flows.get_mut(key).copied();
            tats.extend(flow.map_or([0, 0], |f| [f.tat(Direction::Out), f.tat(Direction::In)]));
        }
        tats
    }

    proptest::proptest! {
        /// A run of one flow's packets admitted inside `admit_burst` leaves every limiter
        /// exactly where admitting them one by one does, to the picosecond, and gets the same
        /// verdicts: with limits loose enough for runs of up to 32 to pass and any one of the
        /// flow's cap, the ENI's peak, its burst credits or its PPS stopping a run part way.
        #[test]
        fn a_run_of_one_flow_charges_every_limiter_as_one_by_one(
            flow_gbps in 1u64..=10,
            baseline_gbps in 1u64..=10,
            burst_extra_gbps in 0u64..=10,
            pps in 200_000u64..20_000_000,
            bursts in proptest::collection::vec(
                (
                    0u64..40_000,
                    proptest::collection::vec(
                        (0u16..3, 1usize..33, 64u32..9001, proptest::bool::ANY),
                        1..5,
                    ),
                ),
                1..12,
            ),
        ) {
            let bw = BandwidthAllowance::burstable(
                baseline_gbps * GBPS,
                (baseline_gbps + burst_extra_gbps) * GBPS,
                std::time::Duration::from_micros(50),
            );
            let config = ShaperConfig { bw_out: bw, bw_in: bw, pps, ..ShaperConfig::default() };
            let policy = move |_: &FlowKey| flow_gbps * GBPS;
            let mut one_by_one = Shaper::new(config, policy);
            let mut in_bursts = Shaper::new(config, policy);
            let keys = tcp_flows(3, 40_000, 80);
            let (mut now, mut handle) = (1_000u64, 0u64);
            let (mut verdicts, mut released_a, mut released_b) = (Vec::new(), Vec::new(), Vec::new());
            for (gap_ns, runs) in bursts {
                now += gap_ns;
                let mut pkts = Vec::new();
                for (flow, run, len, inbound) in runs {
                    let dir = if inbound { Direction::In } else { Direction::Out };
                    for _ in 0..run {
                        pkts.push(Packet { key: keys[usize::from(flow)], len, dir, handle });
                        handle += 1;
                    }
                }
                let expected: Vec<Verdict> =
                    pkts.iter().map(|p| one_by_one.admit(now, p)).collect();
                verdicts.clear();
                in_bursts.admit_burst(now, &pkts, &mut verdicts);
                proptest::prop_assert_eq!(&verdicts, &expected);
                proptest::prop_assert_eq!(
                    charged(&mut in_bursts, &keys),
                    charged(&mut one_by_one, &keys)
                );
                one_by_one.release(now, &mut released_a);
                in_bursts.release(now, &mut released_b);
                proptest::prop_assert_eq!(&released_a, &released_b);
            }
            proptest::prop_assert_eq!(one_by_one.stats(), in_bursts.stats());
        }
    }

    proptest::proptest! {
        /// `admit`'s memo of the last flow stays right when `admit_burst`, new flows (growing
        /// the table) and expiries move buckets between its calls: a shaper fed a random mix
        /// ends with every limiter, every verdict and every counter where a shaper fed the
        /// same packets one at a time through `admit_burst` (no memo) does.
        #[test]
        fn admit_remembers_its_last_flow_only_while_no_bucket_moves(
            steps in proptest::collection::vec(
                (0u16..40, 1usize..4, proptest::bool::ANY, 0u64..20_000, proptest::bool::ANY),
                1..200,
            ),
        ) {
            let config = ShaperConfig { pps: 10_000_000, conntrack_max: 64, ..ShaperConfig::default() };
            let policy = |_: &FlowKey| 2 * GBPS;
            let mut mixed = Shaper::new(config, policy);
            let mut single = Shaper::new(config, policy);
            let keys = tcp_flows(40, 30_000, 443);
            let (mut now, mut handle) = (1_000u64, 0u64);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (flow, run, as_burst, gap_ns, expire) in steps {
                now += gap_ns;
                let pkts: Vec<Packet> = (0..run)
                    .map(|_| {
                        handle += 1;
                        Packet { key: keys[usize::from(flow)], len: 1500, dir: Direction::Out, handle }
                    })
                    .collect();
                a.clear();
                if as_burst {
                    mixed.admit_burst(now, &pkts, &mut a);
                } else {
                    a.extend(pkts.iter().map(|p| mixed.admit(now, p)));
                }
                b.clear();
                for p in &pkts {
                    single.admit_burst(now, std::slice::from_ref(p), &mut b);
                }
                proptest::prop_assert_eq!(&a, &b);
                if expire {
                    proptest::prop_assert_eq!(mixed.expire_idle(now, 5_000), single.expire_idle(now, 5_000));
                }
                let (mut ra, mut rb) = (Vec::new(), Vec::new());
                mixed.release(now, &mut ra);
                single.release(now, &mut rb);
                proptest::prop_assert_eq!(ra, rb);
            }
            proptest::prop_assert_eq!(charged(&mut mixed, &keys), charged(&mut single, &keys));
            proptest::prop_assert_eq!(mixed.stats(), single.stats());
        }
    }
}
