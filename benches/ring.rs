//! Cross-thread ring throughput and round-trip latency: vnic's submission and completion rings
//! against rtrb and crossbeam's `ArrayQueue`, moving the same 16-byte ENA TX descriptor.
//!
//! `cargo bench --bench ring`. Each measurement starts a second thread and releases both
//! together through a spinning barrier, so
//! neither thread start-up nor a futex wake-up is timed (`iter_custom`). One iteration moves
//! [`PER_ITER`] descriptors, and `Throughput::Elements` makes criterion report descriptors per
//! second. Threads are not pinned: on the 2-vCPU KVM machines this was tuned on, pinning with
//! `sched_setaffinity` made every ring ~700× slower, while the scheduler alone keeps the two
//! spinning threads on separate cores.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use vnic::desc::{TxCompletion, TxDesc};
use vnic::ring::{
    CompletionConsumer, CompletionProducer, CompletionRing, SubmissionConsumer, SubmissionProducer,
    SubmissionRing,
};

/// ENA's default ring depth.
const DEPTH: u32 = 1024;
const BURSTS: [usize; 4] = [1, 8, 32, 128];
/// Descriptors moved per criterion iteration (16 laps of a 1024-entry ring).
const PER_ITER: u64 = 16 * 1024;
/// Round trips per criterion iteration.
const ROUND_TRIPS_PER_ITER: u64 = 256;

/// A two-party barrier that spins: both threads leave it within nanoseconds of each other.
#[derive(Clone)]
struct SpinBarrier(Arc<AtomicU32>);

impl SpinBarrier {
    fn new() -> Self {
        Self(Arc::new(AtomicU32::new(0)))
    }
    fn wait(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
    }
}

/// One end that sends bursts.
trait Sender<T>: Send + 'static {
    fn send(&mut self, batch: &[T]) -> usize;
}
/// One end that receives bursts.
trait Receiver<T>: Send + 'static {
    fn recv(&mut self, buf: &mut [T]) -> usize;
}

impl Sender<TxDesc> for SubmissionProducer<TxDesc> {
    #[inline]
    fn send(&mut self, batch: &[TxDesc]) -> usize {
        self.push_burst(batch)
    }
}
impl Receiver<TxDesc> for SubmissionConsumer<TxDesc> {
    #[inline]
    fn recv(&mut self, buf: &mut [TxDesc]) -> usize {
        self.pop_burst(buf)
    }
}
impl Sender<TxCompletion> for CompletionProducer<TxCompletion> {
    #[inline]
    fn send(&mut self, batch: &[TxCompletion]) -> usize {
        self.push_burst(batch)
    }
}
impl Receiver<TxCompletion> for CompletionConsumer<TxCompletion> {
    #[inline]
    fn recv(&mut self, buf: &mut [TxCompletion]) -> usize {
        self.pop_burst(buf)
    }
}
impl<T: Copy + Send + 'static> Sender<T> for rtrb::Producer<T> {
    #[inline]
    fn send(&mut self, batch: &[T]) -> usize {
        batch.len() - self.push_partial_slice(batch).1.len()
    }
}
impl<T: Copy + Default + Send + 'static> Receiver<T> for rtrb::Consumer<T> {
    #[inline]
    fn recv(&mut self, buf: &mut [T]) -> usize {
        self.pop_partial_slice(buf).0.len()
    }
}
/// crossbeam's `ArrayQueue` has no burst API: a burst is a loop of single operations.
struct Crossbeam<T>(Arc<ArrayQueue<T>>);
impl<T: Copy + Send + 'static> Sender<T> for Crossbeam<T> {
    #[inline]
    fn send(&mut self, batch: &[T]) -> usize {
        batch.iter().take_while(|d| self.0.push(**d).is_ok()).count()
    }
}
impl<T: Copy + Send + 'static> Receiver<T> for Crossbeam<T> {
    #[inline]
    fn recv(&mut self, buf: &mut [T]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match self.0.pop() {
                Some(d) => buf[n] = d,
                None => break,
            }
            n += 1;
        }
        n
    }
}

/// Moves `count` entries from a sender thread to a receiver thread in bursts of `burst`; returns
/// the time from the barrier to the last entry received.
fn transfer<T, S, R>(mut tx: S, mut rx: R, iters: u64, burst: usize, make: fn(u64) -> T) -> Duration
where
    T: Copy + Default + Send + 'static,
    S: Sender<T>,
    R: Receiver<T>,
{
    let count = iters * PER_ITER;
    let barrier = SpinBarrier::new();
    let start_line = barrier.clone();
    let sender = std::thread::spawn(move || {
        let batch: Vec<T> = (0..burst as u64).map(make).collect();
        start_line.wait();
        let mut sent = 0u64;
        while sent < count {
            let n = (count - sent).min(burst as u64) as usize;
            sent += tx.send(&batch[..n]) as u64;
        }
        tx
    });
    let mut buf = vec![T::default(); burst];
    barrier.wait();
    let start = Instant::now();
    let mut received = 0u64;
    while received < count {
        received += rx.recv(&mut buf) as u64;
    }
    let elapsed = start.elapsed();
    black_box(&buf);
    drop(sender.join());
    elapsed
}

fn tx_desc(i: u64) -> TxDesc {
    TxDesc::new(i << 12, 64, i as u16).with_first(true).with_last(true)
}

fn tx_completion(i: u64) -> TxCompletion {
    TxCompletion { req_id: i as u16, ..Default::default() }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(PER_ITER));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for burst in BURSTS {
        group.bench_with_input(BenchmarkId::new("vnic_submission", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
                transfer(p, c, iters, burst, tx_desc)
            })
        });
        group.bench_with_input(BenchmarkId::new("vnic_completion", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = CompletionRing::<TxCompletion>::in_process(DEPTH).expect("ring");
                transfer(p, c, iters, burst, tx_completion)
            })
        });
        group.bench_with_input(BenchmarkId::new("rtrb", burst), &burst, |b, &burst| {
            b.iter_custom(|iters| {
                let (p, c) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
                transfer(p, c, iters, burst, tx_desc)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("crossbeam_arrayqueue", burst),
            &burst,
            |b, &burst| {
                b.iter_custom(|iters| {
                    let q = Arc::new(ArrayQueue::<TxDesc>::new(DEPTH as usize));
                    transfer(Crossbeam(q.clone()), Crossbeam(q), iters, burst, tx_desc)
                })
            },
        );
    }
    group.finish();
}

/// One descriptor out on ring A, echoed back on ring B, [`ROUND_TRIPS_PER_ITER`] times an
/// iteration; returns the total time.
fn ping_pong<S, R>(mut out: S, mut back_rx: R, echo: (R, S), iters: u64) -> Duration
where
    S: Sender<TxDesc>,
    R: Receiver<TxDesc>,
{
    let count = iters * ROUND_TRIPS_PER_ITER;
    let barrier = SpinBarrier::new();
    let start_line = barrier.clone();
    let (mut echo_rx, mut echo_tx) = echo;
    let echoer = std::thread::spawn(move || {
        let mut buf = [TxDesc::default(); 1];
        start_line.wait();
        for _ in 0..count {
            while echo_rx.recv(&mut buf) == 0 {}
            while echo_tx.send(&buf) == 0 {}
        }
    });
    let mut buf = [TxDesc::default(); 1];
    barrier.wait();
    let start = Instant::now();
    for i in 0..count {
        while out.send(&[tx_desc(i)]) == 0 {}
        while back_rx.recv(&mut buf) == 0 {}
    }
    let elapsed = start.elapsed();
    black_box(buf);
    drop(echoer.join());
    elapsed
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
            ping_pong(a_tx, b_rx, (a_rx, b_tx), iters)
        })
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (a_tx, a_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
            let (b_tx, b_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
            ping_pong(a_tx, b_rx, (a_rx, b_tx), iters)
        })
    });
    group.finish();
}

criterion_group!(benches, throughput, round_trip);
criterion_main!(benches);
