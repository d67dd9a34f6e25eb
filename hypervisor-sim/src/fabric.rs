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
//! Due times are read from a [`DeviceClock`]: the wall clock in a live run, or the scheduler's
//! virtual clock in a simulation ([`Fabric::with_clock`]), where [`FabricPort::next_due_ns`]
//! tells the scheduler when to deliver next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crossbeam_queue::ArrayQueue;
use vnic::frame::MacAddr;
use vnic::shaper::{Clock, DeviceClock};
use vnic::switch::Uplink;

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

    fn send(&self, src: usize, dst: usize, frame: &[u8]) {
        let k = src * self.endpoints + dst;
        let link = self.links[k];
        let now = self.now_ns();
        // Serialisation at the link rate, after what is already on the link.
        let wire = (frame.len() as u64 * 8 * 1_000_000_000).div_ceil(link.bits_per_second.max(1));
        let start = now.max(self.free_at[k].load(Ordering::Relaxed));
        let done = start + wire;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        let item = InFlight { due_ns: done + link.latency_ns, frame: buf };
        if self.queues[dst * self.endpoints + src].push(item).is_ok() {
            if let Some(bell) = self.doorbells[dst].get() {
                bell.kick();
            }
            self.free_at[k].store(done, Ordering::Relaxed);
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        } else {
            self.stats.fabric_drops.fetch_add(1, Ordering::Relaxed);
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
        let Some(dst) = frame.get(..6) else { return };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(dst);
        let mac = MacAddr(mac);
        let f = &self.fabric;
        if mac.is_group() {
            for dst in (0..f.endpoints).filter(|&d| d != self.src) {
                f.send(self.src, dst, frame);
            }
            return;
        }
        match f.endpoint_of(mac) {
            Some(dst) if dst != self.src => f.send(self.src, dst, frame),
            _ => {
                f.stats.unroutable.fetch_add(1, Ordering::Relaxed);
            }
        }
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
