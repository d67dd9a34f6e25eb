//! Deterministic discrete-event simulation of a cloud in virtual time, over the real device.
//!
//! A live run measures the machine it runs on as much as the system it models: threads sleep
//! and wake on the host's scheduler, and every copy costs what this CPU makes it cost. Here one
//! thread steps every actor from one event queue instead, and time is the [`VirtualClock`] the
//! devices read. The device is not re-modelled: guests post real descriptors into real rings in
//! their memory, and the real engine validates, gathers, switches, shapes (on the virtual clock)
//! and copies. What time each step takes comes from the [`CostModel`]; who is busy when comes
//! from the resources work occupies (a VM's vCPUs, a PF's engine, a host's hypervisor CPU).
//!
//! * [`Scheduler`]: virtual nanoseconds, one queue ordered by (time, insertion), so ties are
//!   broken the same way on every run.
//! * [`SplitMix64`]: a seeded random stream per entity (a flow's Poisson arrivals), so adding
//!   an entity never changes another's draws.
//! * [`traffic`]: the paced UDP flows of a scenario as state machines (senders, receivers,
//!   engines, the fabric, the emulated NIC model, failures) and what they measured.
//!
//! The same scenario and seed give the same events, the same bytes and the same report on any
//! machine, however loaded: nothing reads the wall clock except the report of how long the
//! simulation itself took.

pub mod costs;
pub mod traffic;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub use costs::CostModel;
pub use vnic::shaper::VirtualClock;

/// An event due at a virtual time.
#[derive(Debug)]
struct Entry<E> {
    at_ns: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.seq) == (other.at_ns, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, insertion) compares greatest.
        (other.at_ns, other.seq).cmp(&(self.at_ns, self.seq))
    }
}

/// The event queue and the virtual clock it drives.
#[derive(Debug)]
pub struct Scheduler<E> {
    queue: BinaryHeap<Entry<E>>,
    seq: u64,
    clock: VirtualClock,
    events: u64,
}

impl<E> Scheduler<E> {
    /// A scheduler at time 0 driving `clock`.
    pub fn new(clock: VirtualClock) -> Self {
        Self { queue: BinaryHeap::new(), seq: 0, clock, events: 0 }
    }

    /// Now, ns.
    pub fn now_ns(&self) -> u64 {
        use vnic::shaper::Clock;
        self.clock.now_ns()
    }

    /// Schedules `event` at `at_ns` (an event in the past runs next, at the current time).
    pub fn at(&mut self, at_ns: u64, event: E) {
        let at_ns = at_ns.max(self.now_ns());
        self.queue.push(Entry { at_ns, seq: self.seq, event });
        self.seq += 1;
    }

    /// Takes the next event due at or before `until_ns`, moving the clock to its time.
    pub fn next_until(&mut self, until_ns: u64) -> Option<(u64, E)> {
        if self.queue.peek()?.at_ns > until_ns {
            return None;
        }
        let entry = self.queue.pop()?;
        self.clock.set(entry.at_ns);
        self.events += 1;
        Some((entry.at_ns, entry.event))
    }

    /// Moves the clock to `ns` (never backwards).
    pub fn advance_to(&mut self, ns: u64) {
        self.clock.set(ns);
    }

    /// Events taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events waiting.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// SplitMix64 (Steele, Lea and Flood, OOPSLA 2014): a small, fast, seedable stream, one per
/// entity.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream of entity `entity` under run seed `seed`.
    pub fn new(seed: u64, entity: u64) -> Self {
        let mut s = Self { state: seed ^ entity.wrapping_mul(0xD1B5_4A32_D192_ED03) };
        s.next_u64();
        s
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// An exponential gap with mean `mean_ns`, whole ns, at least 1.
    pub fn exponential_ns(&mut self, mean_ns: u64) -> u64 {
        ((-self.unit().ln()) * mean_ns as f64).round().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_order_and_ties_in_insertion_order() {
        let mut s = Scheduler::new(VirtualClock::new());
        s.at(30, "c");
        s.at(10, "a");
        s.at(30, "d");
        s.at(20, "b");
        let mut out = Vec::new();
        while let Some((t, e)) = s.next_until(25) {
            out.push((t, e));
        }
        assert_eq!(out, vec![(10, "a"), (20, "b")], "nothing after the horizon");
        assert_eq!(s.now_ns(), 20);
        s.at(5, "late");
        assert_eq!(s.next_until(u64::MAX), Some((20, "late")), "the past runs now");
        assert_eq!(s.next_until(u64::MAX), Some((30, "c")));
        assert_eq!(s.next_until(u64::MAX), Some((30, "d")));
        assert_eq!(s.events(), 5);
    }

    #[test]
    fn streams_are_seeded_per_entity_and_exponential_gaps_have_their_mean() {
        let (mut a, mut b) = (SplitMix64::new(7, 1), SplitMix64::new(7, 2));
        let (x, y) = (a.next_u64(), b.next_u64());
        assert_ne!(x, y);
        assert_eq!(SplitMix64::new(7, 1).next_u64(), x, "same seed and entity, same stream");
        let mut r = SplitMix64::new(1, 0);
        let n: u32 = 200_000;
        let mean = (0..n).map(|_| r.exponential_ns(1_000)).sum::<u64>() as f64 / f64::from(n);
        // The standard error of the mean is 1000/sqrt(n) ≈ 2.2 ns: 1% is over 4 of them.
        assert!((mean - 1_000.0).abs() < 10.0, "{mean}");
    }
}
