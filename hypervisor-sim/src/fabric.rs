//! The fabric between hosts: it carries frames from one PF's uplink to another's, with the
//! latency and bandwidth of the pair's network class.
//!
//! Every PF is a fabric *endpoint*. A frame leaving an endpoint is routed by destination MAC
//! (the MACs of the VFs and emulated NICs behind each endpoint, kept up to date as ENIs attach
//! and move), stamped with the time it may arrive — when the pair's link is free, plus its
//! serialisation at the link rate, plus the one-way latency of the pair's class (half the
//! round trip `placement::NetworkModel` gives: 5 µs same host, 12.5 µs same rack, 30 µs same AZ,
//! 250 µs other AZ, 15 ms other region) — and queued on the destination's inbound queue for that
//! source. Each (source, destination) queue is single-producer, single-consumer: the source's
//! engine thread pushes, the destination's engine drains what is due in [`FabricPort::drain`].
//! Broadcast goes to every other endpoint; a full queue drops the frame and counts it
//! (`fabric_drops`). Frames of one pair arrive in order.
//!
//! The engine hands over a TX burst's frames for the uplink together ([`FrameBatch`], once per
//! burst of up to 32): one clock read and one hold of the routes' read lock for the burst, a
//! route looked up once per run of frames to one MAC, each link's free time loaded and stored
//! once (for up to 8 destinations a burst; more are written through), counters added and each
//! destination's doorbell rung once. Frame buffers come back to a pool when delivered (up to
//! 4,096 spares), so a warm fabric allocates nothing per frame.
//!
//! Due times are read from a [`DeviceClock`]: the wall clock in a live run, or the scheduler's
//! virtual clock in a simulation ([`Fabric::with_clock`]), where [`FabricPort::next_due_ns`]
//! tells the scheduler when to deliver next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crossbeam_queue::ArrayQueue;
use vnic::frame::MacAddr;
use vnic::shaper::{Clock, DeviceClock};
use vnic::switch::{FrameBatch, Uplink};

use crate::host::EngineDoorbell;

/// Frames one (source, destination) queue holds.
pub const LINK_QUEUE: usize = 4096;

/// One direction of the link between two endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// One-way latency, ns.
    pub latency_ns: u64,
    /// Link rate, bits/s.
    pub bits_per_second: u64,
}

/// Spare frame buffers kept for reuse, at most.
const SPARE_BUFFERS: usize = 4096;

/// A frame on its way.
#[derive(Debug)]
struct InFlight {
    due_ns: u64,
    frame: Vec<u8>,
}

/// Counters of the whole fabric.
#[derive(Debug, Default)]
pub struct FabricStats {
    /// Frames carried.
    pub frames: AtomicU64,
    /// Bytes carried.
    pub bytes: AtomicU64,
    /// Frames dropped because the destination's queue was full.
    pub fabric_drops: AtomicU64,
    /// Unicast frames to a MAC no endpoint has.
    pub unroutable: AtomicU64,
}

/// The fabric.
#[derive(Debug)]
pub struct Fabric {
    clock: DeviceClock,
    links: Vec<LinkSpec>,
    endpoints: usize,
    /// `queues[dst * endpoints + src]`.
    queues: Vec<ArrayQueue<InFlight>>,
    /// When each (src, dst) link is next free, ns since the epoch (written by src's engine only).
    free_at: Vec<AtomicU64>,
    routes: RwLock<HashMap<MacAddr, usize, foldhash::fast::RandomState>>,
    stats: FabricStats,
    /// Each endpoint's engine doorbell, kicked when a frame is queued for it.
    doorbells: Vec<OnceLock<Arc<EngineDoorbell>>>,
    /// Buffers of frames delivered, for the next frames sent (no allocation per frame).
    spare: ArrayQueue<Vec<u8>>,
}

impl Fabric {
    /// A fabric of `endpoints` endpoints with the link `link(src, dst)` between each pair.
    pub fn new(endpoints: usize, link: impl Fn(usize, usize) -> LinkSpec) -> Arc<Self> {
        Self::with_clock(endpoints, link, DeviceClock::default())
    }

    /// A fabric whose due times are on `clock` (a simulation's virtual clock).
    pub fn with_clock(
        endpoints: usize,
        link: impl Fn(usize, usize) -> LinkSpec,
        clock: DeviceClock,
    ) -> Arc<Self> {
        let n = endpoints;
        Arc::new(Self {
            clock,
            links: (0..n * n).map(|k| link(k / n, k % n)).collect(),
            endpoints: n,
            queues: (0..n * n).map(|_| ArrayQueue::new(LINK_QUEUE)).collect(),
            free_at: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
            routes: RwLock::default(),
            stats: FabricStats::default(),
            doorbells: (0..n).map(|_| OnceLock::new()).collect(),
            spare: ArrayQueue::new(SPARE_BUFFERS),
        })
    }

    /// Endpoints.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// The link from `src` to `dst`.
    pub fn link(&self, src: usize, dst: usize) -> Option<LinkSpec> {
        (src < self.endpoints && dst < self.endpoints)
            .then(|| self.links[src * self.endpoints + dst])
    }

    /// Nanoseconds on the fabric's clock (the clock of due times).
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Routes frames for `mac` to `endpoint` (an ENI attached behind it).
    pub fn route(&self, mac: MacAddr, endpoint: usize) {
        if let Ok(mut routes) = self.routes.write() {
            routes.insert(mac, endpoint);
        }
    }

    /// Stops routing `mac` (its ENI detached).
    pub fn unroute(&self, mac: MacAddr) {
        if let Ok(mut routes) = self.routes.write() {
            routes.remove(&mac);
        }
    }

    /// Where `mac` is routed.
    pub fn endpoint_of(&self, mac: MacAddr) -> Option<usize> {
        self.routes.read().ok().and_then(|r| r.get(&mac).copied())
    }

    /// Counters.
    pub fn stats(&self) -> &FabricStats {
        &self.stats
    }

    /// The uplink of endpoint `src`, to plug into its PF.
    pub fn uplink(self: &Arc<Self>, src: usize) -> Arc<dyn Uplink> {
        Arc::new(FabricUplink { fabric: self.clone(), src })
    }

    /// The inbound side of endpoint `dst`, for its engine to drain.
    pub fn port(self: &Arc<Self>, dst: usize) -> FabricPort {
        FabricPort {
            fabric: self.clone(),
            dst,
            pending: (0..self.endpoints).map(|_| None).collect(),
        }
    }

    /// Sends a burst from `src`: one clock read and one hold of the routes' read lock for the
    /// burst (a frame to the same MAC as the one before it is not looked up again), each
    /// link's free time loaded and stored once, counters added and doorbells rung once.
    fn send_batch<'a>(&self, src: usize, frames: impl Iterator<Item = &'a [u8]>) {
        let mut burst = Burst::new(self.now_ns());
        {
            let routes = self.routes.read().ok();
            let mut last: Option<(MacAddr, Option<usize>)> = None;
            for frame in frames {
                let Some(mac) = frame.get(..6).and_then(|m| <[u8; 6]>::try_from(m).ok()) else {
                    continue;
                };
                let mac = MacAddr(mac);
                if mac.is_group() {
                    for dst in (0..self.endpoints).filter(|&d| d != src) {
                        self.enqueue(src, dst, frame, &mut burst);
                    }
                    continue;
                }
                let dst = match last {
                    Some((m, dst)) if m == mac => dst,
                    _ => {
                        let dst = routes.as_ref().and_then(|r| r.get(&mac).copied());
                        last = Some((mac, dst));
                        dst
                    }
                };
                match dst {
                    Some(dst) if dst != src => self.enqueue(src, dst, frame, &mut burst),
                    _ => burst.unroutable += 1,
                }
            }
        }
        for &(dst, free_at) in &burst.links[..burst.used] {
            self.free_at[src * self.endpoints + dst].store(free_at, Ordering::Relaxed);
            self.ring(dst);
        }
        let add = |c: &AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.stats.frames, burst.frames);
        add(&self.stats.bytes, burst.bytes);
        add(&self.stats.fabric_drops, burst.drops);
        add(&self.stats.unroutable, burst.unroutable);
    }

    /// Queues `frame` from `src` for `dst`: due when the link is free, plus its serialisation
    /// at the link rate, plus the link's latency.
    fn enqueue(&self, src: usize, dst: usize, frame: &[u8], burst: &mut Burst) {
        let k = src * self.endpoints + dst;
        let link = self.links[k];
        let wire = (frame.len() as u64 * 8 * 1_000_000_000).div_ceil(link.bits_per_second.max(1));
        let load = || self.free_at[k].load(Ordering::Relaxed);
        let kept = burst.link(dst, load);
        let free_at = kept.map_or_else(load, |i| burst.links[i].1);
        let done = burst.now.max(free_at) + wire;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        let item = InFlight { due_ns: done + link.latency_ns, frame: buf };
        match self.queues[dst * self.endpoints + src].push(item) {
            Ok(()) => {
                burst.frames += 1;
                burst.bytes += frame.len() as u64;
                match kept {
                    Some(i) => burst.links[i].1 = done,
                    None => {
                        // More destinations in this burst than it keeps: stored and rung now.
                        self.free_at[k].store(done, Ordering::Relaxed);
                        self.ring(dst);
                    }
                }
            }
            Err(item) => {
                let _ = self.spare.push(item.frame);
                burst.drops += 1;
            }
        }
    }

    /// Kicks the engine of `dst`: frames are waiting for it.
    fn ring(&self, dst: usize) {
        if let Some(bell) = self.doorbells[dst].get() {
            bell.kick();
        }
    }
}

/// Destinations one burst keeps its links' free times for (more are written through).
const BURST_LINKS: usize = 8;

/// What one burst is putting on the fabric.
struct Burst {
    now: u64,
    /// (destination, when its link is next free), for the destinations sent to so far.
    links: [(usize, u64); BURST_LINKS],
    used: usize,
    frames: u64,
    bytes: u64,
    drops: u64,
    unroutable: u64,
}

impl Burst {
    fn new(now: u64) -> Self {
        Self {
            now,
            links: [(0, 0); BURST_LINKS],
            used: 0,
            frames: 0,
            bytes: 0,
            drops: 0,
            unroutable: 0,
        }
    }

    /// Where in `links` the free time of `dst` is kept, taken from `load` the first time;
    /// `None` if the burst keeps no more destinations.
    fn link(&mut self, dst: usize, load: impl FnOnce() -> u64) -> Option<usize> {
        let used = self.used;
        match self.links[..used].iter().position(|&(d, _)| d == dst) {
            Some(i) => Some(i),
            None if used < BURST_LINKS => {
                self.links[used] = (dst, load());
                self.used += 1;
                Some(used)
            }
            None => None,
        }
    }
}

/// An endpoint's uplink into the fabric.
struct FabricUplink {
    fabric: Arc<Fabric>,
    src: usize,
}

impl Uplink for FabricUplink {
    fn transmit(&self, frame: &[u8]) {
        self.fabric.send_batch(self.src, std::iter::once(frame));
    }

    fn transmit_batch(&self, batch: &FrameBatch) {
        self.fabric.send_batch(self.src, batch.iter());
    }
}

/// An endpoint's inbound queues.
#[derive(Debug)]
pub struct FabricPort {
    fabric: Arc<Fabric>,
    dst: usize,
    /// Per source, the first frame not yet due.
    pending: Vec<Option<InFlight>>,
}

impl FabricPort {
    /// The doorbell of the engine that drains this port.
    pub fn set_doorbell(&self, bell: Arc<EngineDoorbell>) {
        let _ = self.fabric.doorbells[self.dst].set(bell);
    }

    /// Hands every frame that is due to `deliver`; returns how many.
    pub fn drain(&mut self, mut deliver: impl FnMut(&[u8])) -> usize {
        let f = &self.fabric;
        let mut now = None;
        let mut n = 0;
        for src in 0..f.endpoints {
            let queue = &f.queues[self.dst * f.endpoints + src];
            loop {
                let item = match self.pending[src].take() {
                    Some(item) => item,
                    None => match queue.pop() {
                        Some(item) => item,
                        None => break,
                    },
                };
                let t = *now.get_or_insert_with(|| f.now_ns());
                if item.due_ns > t {
                    self.pending[src] = Some(item);
                    break;
                }
                deliver(&item.frame);
                let _ = f.spare.push(item.frame);
                n += 1;
            }
        }
        n
    }

    /// When the next frame for this endpoint is due, ns on the fabric's clock (`None` if none
    /// is on its way). Frames of one source arrive in order, so this looks at each source's
    /// first frame only.
    pub fn next_due_ns(&mut self) -> Option<u64> {
        let f = &self.fabric;
        let mut due: Option<u64> = None;
        for src in 0..f.endpoints {
            if self.pending[src].is_none() {
                self.pending[src] = f.queues[self.dst * f.endpoints + src].pop();
            }
            if let Some(item) = &self.pending[src] {
                due = Some(due.map_or(item.due_ns, |d| d.min(item.due_ns)));
            }
        }
        due
    }

    /// Frames waiting for this endpoint.
    pub fn waiting(&self) -> usize {
        let f = &self.fabric;
        let queued: usize =
            (0..f.endpoints).map(|src| f.queues[self.dst * f.endpoints + src].len()).sum();
        queued + self.pending.iter().filter(|p| p.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use vnic::shaper::VirtualClock;

    use super::*;

    fn frame(dst: MacAddr, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst.0);
        f
    }

    #[test]
    fn frames_arrive_after_latency_and_serialisation_in_order() {
        // 1 Gbit/s, 200 µs one way: a 1250-byte frame takes 10 µs on the wire.
        let fabric =
            Fabric::new(2, |_, _| LinkSpec { latency_ns: 200_000, bits_per_second: 1_000_000_000 });
        let (a, b) = (MacAddr::local(1), MacAddr::local(2));
        fabric.route(a, 0);
        fabric.route(b, 1);
        let up = fabric.uplink(0);
        let mut port = fabric.port(1);
        let start = fabric.now_ns();
        for i in 0..10u8 {
            let mut f = frame(b, 1250);
            f[6] = i;
            up.transmit(&f);
        }
        up.transmit(&frame(a, 64)); // to itself: not carried
        let mut got = Vec::new();
        while got.len() < 10 {
            port.drain(|f| got.push((f[6], fabric.now_ns() - start)));
        }
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        assert!(got[0].1 >= 210_000, "latency plus one frame's serialisation: {}", got[0].1);
        assert!(got[9].1 >= 300_000, "ten frames queue on the link: {}", got[9].1);
        assert_eq!(fabric.stats().unroutable.load(Ordering::Relaxed), 1);
        assert_eq!(port.waiting(), 0);
    }

    /// Per endpoint, (due time, the frame's tag byte) of every frame for it, in the order
    /// delivered: the virtual clock is stepped to each next due time of any endpoint.
    fn arrivals(fabric: &Arc<Fabric>, clock: &VirtualClock) -> Vec<Vec<(u64, u8)>> {
        let mut ports: Vec<FabricPort> = (0..fabric.endpoints()).map(|d| fabric.port(d)).collect();
        let mut got = vec![Vec::new(); ports.len()];
        while let Some(due) = ports.iter_mut().filter_map(|p| p.next_due_ns()).min() {
            clock.set(due);
            for (port, got) in ports.iter_mut().zip(got.iter_mut()) {
                port.drain(|f| got.push((due, f[6])));
            }
        }
        got
    }

    #[test]
    fn a_burst_is_timed_as_its_frames_one_by_one_across_more_links_than_it_keeps() {
        // 12 endpoints (a broadcast reaches 11 links, more than a burst keeps, BURST_LINKS), 1
        // Gbit/s and 1 µs one way: a 125-byte frame is 1 µs on the wire.
        let clock = VirtualClock::new();
        let link = |_, _| LinkSpec { latency_ns: 1_000, bits_per_second: 1_000_000_000 };
        let fabric = Fabric::with_clock(12, link, DeviceClock::Virtual(clock.clone()));
        let (d1, d2) = (MacAddr::local(1), MacAddr::local(2));
        fabric.route(d1, 1);
        fabric.route(d2, 2);
        let tagged = |dst: MacAddr, tag: u8| {
            let mut f = frame(dst, 125);
            f[6] = tag;
            f
        };
        let mut batch = FrameBatch::default();
        for (dst, tag) in [(d1, 1), (d2, 2), (d1, 3), (MacAddr::BROADCAST, 4), (d2, 5), (d1, 6)] {
            batch.push(&tagged(dst, tag));
        }
        batch.push(&tagged(MacAddr::local(77), 7)); // no route
        batch.push(&[0u8; 3]); // too short to have a destination
        fabric.uplink(0).transmit_batch(&batch);
        // One frame more, after the burst, continues from the links' stored free times.
        fabric.uplink(0).transmit(&tagged(d1, 8));
        fabric.uplink(0).transmit(&tagged(MacAddr::BROADCAST, 9));
        // Each link is busy from 0: frame k on it ends at k µs and arrives 1 µs later.
        let us = |k: u64| k * 1_000 + 1_000;
        let got = arrivals(&fabric, &clock);
        assert_eq!(got[0], vec![], "not back to the sender");
        assert_eq!(
            got[1],
            vec![(us(1), 1), (us(2), 3), (us(3), 4), (us(4), 6), (us(5), 8), (us(6), 9)]
        );
        assert_eq!(got[2], vec![(us(1), 2), (us(2), 4), (us(3), 5), (us(4), 9)]);
        for (other, got) in got.iter().enumerate().skip(3) {
            assert_eq!(*got, vec![(us(1), 4), (us(2), 9)], "endpoint {other}");
        }
        let stats = fabric.stats();
        let carried = 6 + 4 + 9 * 2;
        assert_eq!(stats.frames.load(Ordering::Relaxed), carried);
        assert_eq!(stats.bytes.load(Ordering::Relaxed), carried * 125);
        assert_eq!(stats.unroutable.load(Ordering::Relaxed), 1);
        assert_eq!(stats.fabric_drops.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn broadcast_reaches_every_other_endpoint_and_full_queues_drop() {
        let fabric = Fabric::new(3, |_, _| LinkSpec { latency_ns: 0, bits_per_second: u64::MAX });
        let up = fabric.uplink(0);
        up.transmit(&frame(MacAddr::BROADCAST, 60));
        let (mut p1, mut p2, mut p0) = (fabric.port(1), fabric.port(2), fabric.port(0));
        assert_eq!((p1.drain(|_| {}), p2.drain(|_| {}), p0.drain(|_| {})), (1, 1, 0));
        fabric.route(MacAddr::local(9), 1);
        for _ in 0..LINK_QUEUE + 5 {
            up.transmit(&frame(MacAddr::local(9), 60));
        }
        assert_eq!(fabric.stats().fabric_drops.load(Ordering::Relaxed), 5);
        assert_eq!(p1.drain(|_| {}), LINK_QUEUE);
    }
}
