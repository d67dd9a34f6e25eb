//! Shaper cost per packet: `cargo bench --bench shaper`.
//!
//! Classification (the 5-tuple key, oriented from the ENI) plus admission (flow lookup, the
//! flow's limiter, the ENI's bandwidth and PPS limiters) for 1, 10,000 and 1,000,000 live flows.
//! Limits are set high enough that every packet passes: this is the path nearly every packet
//! takes. Two orders: `random` visits flows in a shuffled order (every packet a different flow, the
//! worst case for the caches), `bursts_of_32` sends 32 packets of a flow back to back, as a NIC's
//! receive burst or a sender's TSO segment train does. Memory per flow is printed once per size.
//!
//! Also, once, the accuracy target on the wall clock: one flow offered 10 Gbps of 9001-byte
//! packets against its 5 Gbps cap for one second, the Gbps whose departures fall in it printed
//! against 5.00 ± 2% (a bench, not a test: a loaded machine cannot keep up with the offer).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vnic::shaper::{
    BandwidthAllowance, Direction, FlowKey, PROTO_TCP, Packet, Shaper, ShaperConfig, Verdict,
};

/// Packets per criterion iteration.
const PER_ITER: u64 = 4096;

#[derive(Clone, Copy)]
struct Wire {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

fn flows(n: usize) -> Vec<Wire> {
    (0..n)
        .map(|i| Wire {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8)),
            sport: 32768 + (i % 28000) as u16,
            dport: 443,
        })
        .collect()
}

fn shaper(n: usize) -> Shaper<fn(&FlowKey) -> u64> {
    let config = ShaperConfig {
        bw_out: BandwidthAllowance::fixed(100_000_000_000_000),
        bw_in: BandwidthAllowance::fixed(100_000_000_000_000),
        pps: 10_000_000_000,
        conntrack_max: n.max(1),
        ..ShaperConfig::default()
    };
    let policy: fn(&FlowKey) -> u64 = |_| 10_000_000_000_000;
    let mut s = Shaper::new(config, policy);
    s.reserve_flows(n);
    s
}

/// A permutation of 0..n from a seeded LCG shuffle.
fn shuffled(n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..v.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaper_admit");
    group.throughput(Throughput::Elements(PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [1usize, 10_000, 1_000_000] {
        let wires = flows(n);
        let mut s = shaper(n);
        let mut now = 1_000u64;
        for w in &wires {
            let key = FlowKey::of_packet(Direction::Out, w.src, w.dst, PROTO_TCP, w.sport, w.dport);
            let v = s.admit(now, &Packet { key, len: 1500, dir: Direction::Out, handle: 0 });
            assert_eq!(v, Verdict::Pass);
            now += 2;
        }
        assert_eq!(s.flows().len(), n);
        println!(
            "shaper: {n} live flows, table {:.1} MB, {:.0} bytes per flow",
            s.flows().memory_bytes() as f64 / 1e6,
            s.flows().memory_bytes() as f64 / n as f64
        );
        // Headers arrive in the order they are visited (as a NIC hands them over, hot in
        // cache): only the flow table is accessed at random.
        let visit: Vec<Wire> = shuffled(n).into_iter().map(|i| wires[i as usize]).collect();
        for (order, runs) in [("random", 1usize), ("bursts_of_32", 32)] {
            group.bench_function(BenchmarkId::new(order, n), |b| {
                let (mut next, mut left) = (0usize, 0usize);
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters * PER_ITER {
                        if left == 0 {
                            next = if next + 1 == visit.len() { 0 } else { next + 1 };
                            left = runs;
                        }
                        left -= 1;
                        let w = &visit[next];
                        let key = FlowKey::of_packet(
                            Direction::Out,
                            w.src,
                            w.dst,
                            PROTO_TCP,
                            w.sport,
                            w.dport,
                        );
                        now += 2;
                        let pkt = Packet { key, len: 1500, dir: Direction::Out, handle: 0 };
                        black_box(s.admit(now, &pkt));
                    }
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

fn accuracy(_: &mut Criterion) {
    const MS: u64 = 1_000_000;
    let config =
        ShaperConfig { wheel_slots: 1 << 18, queue_limit: 1 << 20, ..ShaperConfig::default() };
    let got =
        vnic::shaper::live::live_rate_gbps(config, 10_000_000_000, 9001, 100 * MS, 1_100 * MS);
    let verdict = if (got / 5.0 - 1.0).abs() <= 0.02 { "within" } else { "NOT within" };
    println!("shaper: live 5 Gbps cap on the wall clock: {got:.4} Gbps, {verdict} ±2%");
}

criterion_group!(benches, bench, accuracy);
criterion_main!(benches);
