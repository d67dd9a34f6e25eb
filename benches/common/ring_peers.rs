//! What the ring benchmarks share: one burst interface over vnic's rings and their peers (rtrb,
//! crossbeam's `ArrayQueue`), a spinning start barrier, and the two measurements (one-way
//! transfer and ping-pong round trip).
//!
//! Threads are not pinned: on the 2-vCPU KVM machines this was tuned on, pinning with
//! `sched_setaffinity` made every ring ~700× slower, while the scheduler alone keeps the two
//! spinning threads on separate cores.
#![allow(dead_code, reason = "each bench uses its own part")]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use vnic::abi::io::{TxCompletion, TxDesc};
use vnic::ring::{CompletionConsumer, CompletionProducer, SubmissionConsumer, SubmissionProducer};

/// ENA's default ring depth.
pub const DEPTH: u32 = 1024;

/// A two-party barrier that spins: both threads leave it within nanoseconds of each other, so
/// neither thread start-up nor a futex wake-up is timed.
#[derive(Clone)]
pub struct SpinBarrier(Arc<AtomicU32>);

impl SpinBarrier {
    pub fn new() -> Self {
        Self(Arc::new(AtomicU32::new(0)))
    }
    pub fn wait(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
    }
}

/// One end that sends bursts.
pub trait Sender<T>: Send + 'static {
    fn send(&mut self, batch: &[T]) -> usize;
}
/// One end that receives bursts.
pub trait Receiver<T>: Send + 'static {
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
pub struct Crossbeam<T>(pub Arc<ArrayQueue<T>>);

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

pub fn tx_desc(i: u64) -> TxDesc {
    TxDesc::new(i << 12, 64, i as u16).with_first(true).with_last(true)
}

pub fn tx_completion(i: u64) -> TxCompletion {
    TxCompletion { req_id: i as u16, ..Default::default() }
}

/// Moves `count` entries from a sender thread to this thread in bursts of `burst`; returns the
/// time from the barrier to the last entry received.
pub fn transfer<T, S, R>(
    mut tx: S,
    mut rx: R,
    count: u64,
    burst: usize,
    make: fn(u64) -> T,
) -> Duration
where
    T: Copy + Default + Send + 'static,
    S: Sender<T>,
    R: Receiver<T>,
{
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

/// Sends one descriptor out on ring A and waits for its echo on ring B, `count` times; returns
/// the total time and calls `each` with every round trip's duration in nanoseconds when given.
pub fn ping_pong<S, R>(
    mut out: S,
    mut back_rx: R,
    echo: (R, S),
    count: u64,
    mut each: Option<&mut dyn FnMut(u64)>,
) -> Duration
where
    S: Sender<TxDesc>,
    R: Receiver<TxDesc>,
{
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
    let mut sent_at = start;
    for i in 0..count {
        while out.send(&[tx_desc(i)]) == 0 {}
        while back_rx.recv(&mut buf) == 0 {}
        if let Some(each) = each.as_mut() {
            let now = Instant::now();
            each(now.duration_since(sent_at).as_nanos() as u64);
            sent_at = now;
        }
    }
    let elapsed = start.elapsed();
    black_box(buf);
    drop(echoer.join());
    elapsed
}
