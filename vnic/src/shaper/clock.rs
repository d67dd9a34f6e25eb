//! Time for the shaper: the monotonic wall clock for live runs, a virtual clock for deterministic
//! tests and simulations. Both count nanoseconds from an arbitrary start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A source of nanoseconds that never goes backwards.
pub trait Clock {
    /// Nanoseconds since this clock's start.
    fn now_ns(&self) -> u64;
}

/// The monotonic wall clock (`Instant`).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { start: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    now: Arc<AtomicU64>,
}

impl VirtualClock {
    /// A clock at 0 ns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.now.fetch_add(ns, Ordering::Relaxed);
    }

    /// Sets the clock to `ns`; refuses to go backwards (returns false).
    pub fn set(&self, ns: u64) -> bool {
        self.now.fetch_max(ns, Ordering::Relaxed) <= ns
    }
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

/// The clock a device reads: the wall clock in live runs, a shared [`VirtualClock`] when a
/// discrete-event simulation drives the device (then every part of the model that reads this
/// clock sees the scheduler's time, and a run is a function of its inputs alone).
#[derive(Debug, Clone)]
pub enum DeviceClock {
    /// The monotonic wall clock.
    Monotonic(MonotonicClock),
    /// Time set by a simulation's scheduler.
    Virtual(VirtualClock),
}

impl Default for DeviceClock {
    fn default() -> Self {
        Self::Monotonic(MonotonicClock::new())
    }
}

impl Clock for DeviceClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        match self {
            DeviceClock::Monotonic(c) => c.now_ns(),
            DeviceClock::Virtual(c) => c.now_ns(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_forward_and_is_shared() {
        let c = VirtualClock::new();
        let d = c.clone();
        c.advance(10);
        assert_eq!(d.now_ns(), 10);
        assert!(d.set(25));
        assert!(!c.set(5));
        assert_eq!(c.now_ns(), 25);
        let m = MonotonicClock::new();
        let a = m.now_ns();
        assert!(m.now_ns() >= a);
    }
}
