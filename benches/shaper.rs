//! Shaper cost per packet: `cargo bench --bench shaper`.
//!
//! Classification (the 5-tuple key, oriented from the ENI) plus admission (flow lookup, the
//! flow's limiter, the ENI's bandwidth and PPS limiters) for 1, 10,000 and 1,000,000 live flows.
//! Limits are set high enough that every packet passes: this is the path nearly every packet
//! takes. Two orders: `random` visits flows in a shuffled order (every packet a different flow, the
//! worst case for the caches), `bursts_of_32` sends 32 packets of a flow back to back, as a NIC's
//! receive burst or a sender's TSO segment train does. Packets are handed over 32 at a time:
//! `admit` decides them one call each, `admit_burst` in one call (its lookahead prefetching),
//! and `classify_only` builds the keys and nothing else, the part every row pays before the
//! shaper. Memory per flow, and how much of the process is on huge pages, is printed once per
//! size.
//!
//! The peer: `governor` (the standard Rust GCRA rate limiter) doing the same admission per
//! packet: a keyed limiter per flow (its default `DashMap` store) and two direct limiters for
//! the ENI's bandwidth (1,500 cells a packet) and packets per second, over the same 1, 10,000
//! and 1,000,000 keys in the same two orders, its clock a `FakeRelativeClock` moved 2 ns a
//! packet as ours is. Quotas are high enough that every packet passes. Memory per key is the
//! resident-set growth of filling the store (ours is printed both ways).
//!
//! Also, once, the accuracy target on the wall clock: one flow offered 10 Gbps of 9001-byte
//! packets against its 5 Gbps cap for one second, the Gbps whose departures fall in it printed
//! against 5.00 ± 2% (a bench, not a test: a loaded machine cannot keep up with the offer).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
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

/// A shaper whose limits every packet passes, with room for `n` flows reserved.
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

/// The resident set, bytes (Linux: `/proc/self/statm`'s second field, in pages).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Anonymous memory on transparent huge pages, bytes (Linux: `/proc/self/smaps_rollup`).
fn huge_page_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let kb = l.strip_prefix("AnonHugePages:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The packet's flow key, as the ENI classifies it (outbound TCP).
fn key_of(w: &Wire) -> FlowKey {
    FlowKey::of_packet(Direction::Out, w.src, w.dst, PROTO_TCP, w.sport, w.dport)
}

/// Packets handed over together, as a NIC's poll does.
const BURST: usize = 32;

/// Benchmarks `admit` once per visiting order, `random` (every packet another flow of `visit`)
/// and `bursts_of_32` (32 packets of a flow back to back), [`PER_ITER`] packets an iteration,
/// handed to `admit` [`BURST`] at a time.
fn per_order(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: usize,
    visit: &[Wire],
    mut admit: impl FnMut(&[&Wire; BURST]),
) {
    for (order, runs) in [("random", 1usize), ("bursts_of_32", 32)] {
        group.bench_function(BenchmarkId::new(format!("{name}/{order}"), n), |b| {
            let (mut next, mut left) = (0usize, 0usize);
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters * PER_ITER / BURST as u64 {
                    let burst = std::array::from_fn(|_| {
                        &visit[next_flow(visit.len(), runs, &mut next, &mut left)]
                    });
                    admit(&burst);
                }
                start.elapsed()
            })
        });
    }
}

/// The visiting order of `n` flows: every packet another flow (`runs` 1), or bursts of `runs`.
fn next_flow(visit_len: usize, runs: usize, next: &mut usize, left: &mut usize) -> usize {
    if *left == 0 {
        *next = if *next + 1 == visit_len { 0 } else { *next + 1 };
        *left = runs;
    }
    *left -= 1;
    *next
}

fn governor_peer(c: &mut Criterion) {
    let mut group = c.benchmark_group("governor_admit");
    group.throughput(Throughput::Elements(PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let unlimited = Quota::per_second(std::num::NonZeroU32::MAX);
    let one_packet = std::num::NonZeroU32::new(1500).expect("1500 is not zero");
    for n in [1usize, 10_000, 1_000_000] {
        let wires = flows(n);
        let clock = FakeRelativeClock::default();
        let before = resident_bytes();
        let per_flow = RateLimiter::dashmap_with_clock(unlimited, clock.clone());
        let eni_bytes = RateLimiter::direct_with_clock(unlimited, clock.clone());
        let eni_packets = RateLimiter::direct_with_clock(unlimited, clock.clone());
        for w in &wires {
            assert!(per_flow.check_key(&key_of(w)).is_ok());
        }
        assert_eq!(per_flow.len(), n);
        let grown = resident_bytes().saturating_sub(before);
        if n >= 1_000_000 {
            println!(
                "governor: {n} keys, resident set grew {:.1} MB, {:.0} bytes per key",
                grown as f64 / 1e6,
                grown as f64 / n as f64
            );
        }
        let visit: Vec<Wire> = shuffled(n).into_iter().map(|i| wires[i as usize]).collect();
        per_order(&mut group, "check_key", n, &visit, |burst| {
            for w in burst {
                clock.advance(Duration::from_nanos(2));
                let pass = per_flow.check_key(&key_of(w)).is_ok()
                    && eni_bytes.check_n(one_packet).is_ok_and(|r| r.is_ok())
                    && eni_packets.check().is_ok();
                black_box(pass);
            }
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("shaper_admit");
    group.throughput(Throughput::Elements(PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [1usize, 10_000, 1_000_000] {
        let wires = flows(n);
        let before = resident_bytes();
        let mut s = shaper(n);
        let mut now = 1_000u64;
        for w in &wires {
            let v =
                s.admit(now, &Packet { key: key_of(w), len: 1500, dir: Direction::Out, handle: 0 });
            assert_eq!(v, Verdict::Pass);
            now += 2;
        }
        assert_eq!(s.flows().len(), n);
        // The resident set moves in pages and arenas: a figure per flow only for many flows.
        let grown = resident_bytes().saturating_sub(before);
        let by_rss = if n >= 10_000 {
            format!(" ({:.0} by resident-set growth)", grown as f64 / n as f64)
        } else {
            String::new()
        };
        println!(
            "shaper: {n} live flows, table {:.1} MB, {:.0} bytes per flow{by_rss}, \
             {:.1} MB of the process on huge pages",
            s.flows().memory_bytes() as f64 / 1e6,
            s.flows().memory_bytes() as f64 / n as f64,
            huge_page_bytes() as f64 / 1e6,
        );
        // Headers arrive in the order they are visited (as a NIC hands them over, hot in
        // cache): only the flow table is accessed at random.
        let visit: Vec<Wire> = shuffled(n).into_iter().map(|i| wires[i as usize]).collect();
        let packet =
            |w: &Wire| Packet { key: key_of(w), len: 1500, dir: Direction::Out, handle: 0 };
        per_order(&mut group, "admit", n, &visit, |burst| {
            for w in burst {
                now += 2;
                black_box(s.admit(now, &packet(w)));
            }
        });
        per_order(&mut group, "classify_only", n, &visit, |burst| {
            let pkts: [Packet; BURST] = std::array::from_fn(|i| packet(burst[i]));
            black_box(&pkts);
        });
        let mut verdicts = Vec::with_capacity(BURST);
        per_order(&mut group, "admit_burst", n, &visit, |burst| {
            now += 2 * BURST as u64;
            let pkts: [Packet; BURST] = std::array::from_fn(|i| packet(burst[i]));
            verdicts.clear();
            s.admit_burst(now, &pkts, &mut verdicts);
            black_box(&verdicts);
        });
        assert!(verdicts.iter().all(|v| *v == Verdict::Pass), "every packet passes");
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

criterion_group!(benches, bench, governor_peer, accuracy);
criterion_main!(benches);
