//! The shaper on the wall clock: one flow offered more than its cap, for a window of real time,
//! and the rate whose departures fall in that window. A live run cannot promise the rate (the
//! machine may not keep up with the offer), only that it never exceeds the cap plus the burst
//! tolerance; the test asserts that, the shaper bench prints how close it comes.

use std::net::{IpAddr, Ipv4Addr};

use super::{
    Clock, DefaultFlowPolicy, Direction, FlowKey, MonotonicClock, PROTO_TCP, Packet, Shaper,
    ShaperConfig, Verdict,
};

/// Offers one TCP flow `offered_bps` of `len`-byte packets on the wall clock until
/// `to_ns + 50 ms`; returns the Gbps whose departures fall in `[from_ns, to_ns)`.
pub fn live_rate_gbps(
    config: ShaperConfig,
    offered_bps: u64,
    len: u32,
    from_ns: u64,
    to_ns: u64,
) -> f64 {
    let mut shaper = Shaper::new(config, DefaultFlowPolicy);
    let clock = MonotonicClock::new();
    let key = FlowKey::of_packet(
        Direction::Out,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        PROTO_TCP,
        1,
        5201,
    );
    let (mut in_window, mut sent) = (0u64, 0u64);
    let mut released = Vec::new();
    loop {
        let now = clock.now_ns();
        if now >= to_ns + 50_000_000 {
            break;
        }
        while u128::from(sent) * u128::from(len) * 8 * 1_000_000_000
            < u128::from(now) * u128::from(offered_bps)
        {
            let pkt = Packet { key, len, dir: Direction::Out, handle: sent };
            let depart = match shaper.admit(now, &pkt) {
                Verdict::Pass => Some(now),
                Verdict::Queued { depart_ns } => Some(depart_ns),
                Verdict::Drop(_) => None,
            };
            if depart.is_some_and(|d| (from_ns..to_ns).contains(&d)) {
                in_window += u64::from(len);
            }
            sent += 1;
        }
        released.clear();
        shaper.release(now, &mut released);
        std::thread::yield_now();
    }
    in_window as f64 * 8.0 / (to_ns - from_ns) as f64
}
