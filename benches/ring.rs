//! Cross-thread ring throughput and round-trip latency: vnic's submission and completion rings
//! against rtrb and crossbeam's `ArrayQueue`, moving the same 16-byte ENA TX descriptor.
//!
//! `cargo bench --bench ring`. Each measurement starts a second thread and releases both
//! together through a spinning barrier, so neither thread start-up nor a futex wake-up is timed
//! (`iter_custom`). One iteration moves [`PER_ITER`] descriptors, and `Throughput::Elements` makes
//! criterion report descriptors per second. `benches/ring_paired.rs` runs the same transfers
//! interleaved, for ratios that hold on a noisy machine.

#[path = "common/ring_peers.rs"]
mod ring_peers;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use ring_peers::{Crossbeam, DEPTH, ping_pong, transfer, tx_completion, tx_desc};
use vnic::abi::io::{TxCompletion, TxDesc};
use vnic::ring::{CompletionRing, SubmissionRing};
const BURSTS: [usize; 4] = [1, 8, 32, 128];
/// Descriptors moved per criterion iteration (16 laps of a 1024-entry ring).
const PER_ITER: u64 = 16 * 1024;
/// Round trips per criterion iteration.
const ROUND_TRIPS_PER_ITER: u64 = 256;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for burst in BURSTS {
        group.bench_with_input(BenchmarkId::new("vnic_submission", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
                transfer(p, c, iters * PER_ITER, burst, tx_desc)
            })
        });
        group.bench_with_input(BenchmarkId::new("vnic_completion", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = CompletionRing::<TxCompletion>::in_process(DEPTH).expect("ring");
                transfer(p, c, iters * PER_ITER, burst, tx_completion)
            })
        });
        group.bench_with_input(BenchmarkId::new("rtrb", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
                transfer(p, c, iters * PER_ITER, burst, tx_desc)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("crossbeam_arrayqueue", burst),
            &burst,
            |b, &burst| {
                b.iter_custom(|iters| {
                    let q = Arc::new(ArrayQueue::<TxDesc>::new(DEPTH as usize));
                    transfer(Crossbeam(q.clone()), Crossbeam(q), iters * PER_ITER, burst, tx_desc)
                })
            },
        );
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_round_trip");
    group.throughput(Throughput::Elements(ROUND_TRIPS_PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("vnic_submission", |b| {
        b.iter_custom(|iters| {
            let (a_tx, a_rx) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
            let (b_tx, b_rx) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
            ping_pong(a_tx, b_rx, (a_rx, b_tx), iters * ROUND_TRIPS_PER_ITER, None)
        })
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (a_tx, a_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
            let (b_tx, b_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
            ping_pong(a_tx, b_rx, (a_rx, b_tx), iters * ROUND_TRIPS_PER_ITER, None)
        })
    });
    group.finish();
}

criterion_group!(benches, throughput, round_trip);
criterion_main!(benches);
