//! The generic cell rate algorithm (GCRA): a token bucket kept as one timestamp.
//!
//! A limiter of rate *r* and burst tolerance *τ* keeps the *theoretical arrival time* (TAT) of the
//! next unit. A packet of *L* bytes arriving at *t* conforms if `TAT − τ ≤ t`; otherwise it may
//! depart at `TAT − τ`. Either way, admitting it moves `TAT ← max(TAT, departure) + L / r`. This is
//! exactly a token bucket of depth `r × τ` (plus one packet), but costs one `u64` of state, and it
//! tells when a packet may go, which is what a timing wheel needs (Carousel, SIGCOMM 2017).
//!
//! Times are in picoseconds (a `u64` lasts 213 days); the cost of a unit is kept in picoseconds
//! with 24 fractional bits, so rates from 1 kbps to 400 Gbps are exact to better than 10⁻⁶ and a
//! charge costs one multiply and one shift.

/// Picoseconds per nanosecond.
pub const PS_PER_NS: u64 = 1_000;

/// Fractional bits of [`RateLimit::ps_per_unit_q24`].
const FRAC_BITS: u32 = 24;

/// A rate limit: cost per byte (or per packet) and burst tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Picoseconds of budget one unit (byte or packet) costs, in fixed point with 24 fractional
    /// bits: a multiply and a shift per packet, no division.
    pub ps_per_unit_q24: u64,
    /// Burst tolerance in picoseconds.
    pub tau_ps: u64,
}

impl RateLimit {
    fn new(ps_per_unit_q24: u128, burst_units: u64) -> Self {
        let ps_per_unit_q24 = ps_per_unit_q24.clamp(1, u128::from(u64::MAX)) as u64;
        let tau_ps = ((u128::from(burst_units) * u128::from(ps_per_unit_q24)) >> FRAC_BITS) as u64;
        Self { ps_per_unit_q24, tau_ps }
    }

    /// `bits_per_second` over bytes, with a burst of `burst_bytes`.
    pub fn bytes(bits_per_second: u64, burst_bytes: u64) -> Self {
        // 8e12 ps per byte-second.
        Self::new(
            (8_000_000_000_000u128 << FRAC_BITS) / u128::from(bits_per_second.max(1)),
            burst_bytes,
        )
    }

    /// `per_second` packets, with a burst of `burst_packets`.
    pub fn packets(per_second: u64, burst_packets: u64) -> Self {
        Self::new(
            (1_000_000_000_000u128 << FRAC_BITS) / u128::from(per_second.max(1)),
            burst_packets,
        )
    }

    /// Picoseconds `units` cost.
    #[inline(always)]
    pub fn cost_ps(&self, units: u64) -> u64 {
        ((u128::from(units) * u128::from(self.ps_per_unit_q24)) >> FRAC_BITS) as u64
    }

    /// The rate in units per second.
    pub fn per_second(&self) -> f64 {
        1e12 * f64::from(1u32 << FRAC_BITS) / self.ps_per_unit_q24 as f64
    }
}

/// One limiter's state: the theoretical arrival time of its next unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Theoretical arrival time, ps.
    pub tat_ps: u64,
}

impl Gcra {
    /// The earliest time, at or after `now_ps`, at which this limiter lets a packet go.
    #[inline(always)]
    pub fn earliest_ps(&self, limit: &RateLimit, now_ps: u64) -> u64 {
        now_ps.max(self.tat_ps.saturating_sub(limit.tau_ps))
    }

    /// Charges `units` departing at `depart_ps`.
    #[inline(always)]
    pub fn charge(&mut self, limit: &RateLimit, depart_ps: u64, units: u64) {
        self.tat_ps = self.tat_ps.max(depart_ps) + limit.cost_ps(units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_exact() {
        let five = RateLimit::bytes(5_000_000_000, 0);
        assert_eq!(five.cost_ps(1), 1_600, "1.6 ns per byte at 5 Gbps");
        assert_eq!(five.cost_ps(1500), 2_400_000);
        assert!((RateLimit::bytes(3_000_000_000, 0).per_second() * 8.0 / 3e9 - 1.0).abs() < 1e-6);
        assert!(
            (RateLimit::bytes(400_000_000_000, 0).per_second() * 8.0 / 4e11 - 1.0).abs() < 1e-6
        );
        assert_eq!(RateLimit::packets(1024, 0).cost_ps(1), 976_562_500);
        assert_eq!(RateLimit::bytes(1_000, 0).cost_ps(1), 8_000_000_000, "1 kbps: 8 ms a byte");
    }

    #[test]
    fn a_limiter_admits_its_burst_then_paces() {
        let limit = RateLimit::bytes(8_000_000_000, 3000); // 1 byte per ns, 3000-byte burst
        let mut g = Gcra::default();
        let now = 1_000_000;
        // τ covers three packets beyond the first.
        for _ in 0..4 {
            let at = g.earliest_ps(&limit, now);
            assert_eq!(at, now);
            g.charge(&limit, at, 1000);
        }
        // The fifth waits until one packet's worth has drained.
        let at = g.earliest_ps(&limit, now);
        assert_eq!(at, now + 1_000 * PS_PER_NS);
    }
}
