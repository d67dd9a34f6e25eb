//! The submission ring measured as DPDK's `ring_perf_autotest` measures `rte_ring`, for
//! `scripts/bench-peers.sh`: `cargo bench --bench ring_cycles`.
//!
//! DPDK's two-core case: a ring of 4,096 slots, one thread enqueueing bursts of 32 16-byte
//! elements all-or-nothing (bulk), retrying while the ring is full, the other dequeueing the
//! same way; each thread counts the TSC cycles of its own loop, and the figure is the two
//! threads' cycles per element added. 2²⁰ elements each (the figure is per element: the count
//! only sets how long a round takes). Here the same with `SubmissionRing`'s
//! `push_bulk` / `pop_bulk` of ENA's 16-byte `TxDesc`, the two threads pinned to CPUs 0 and 1
//! as DPDK's `-l 0-1` pins its lcores. Prints one line per round and the TSC
//! rate (measured against the monotonic clock), so that cycles convert to nanoseconds.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vnic::abi::io::TxDesc;
use vnic::ring::SubmissionRing;

/// `rte_ring`'s size in the DPDK test.
const RING_SLOTS: u32 = 4096;
/// Elements each side moves.
const ELEMENTS: u64 = 1 << 20;
/// Elements per bulk call.
const BULK: usize = 32;

/// One thread's burst buffer, on a cache line of its own, as DPDK's test allocates its own
/// (`rte_zmalloc(..., RTE_CACHE_LINE_SIZE)`).
#[repr(C, align(64))]
struct Burst([TxDesc; BULK]);

/// The time-stamp counter (DPDK's `rte_rdtsc`).
fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it has no memory effects and every x86-64 has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Elsewhere nanoseconds stand in for cycles (the rate printed is then 1000 MHz).
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// TSC cycles per second, over 200 ms of the monotonic clock.
fn tsc_hz() -> f64 {
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(Duration::from_millis(200));
    let (t1, c1) = (Instant::now(), tsc());
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

/// Tells the compiler that the bytes at `burst` are used, at no cost: an empty assembly
/// statement that may read memory. `black_box(&burst)` stored the slice's address on the stack
/// every burst, stores DPDK's loop (a pointer in a register) does not make and that queue behind
/// the ring's in the store buffer.
#[inline(always)]
fn used(burst: *const TxDesc) {
    // SAFETY: the statement is empty: it reads and writes nothing, and only the compiler takes
    // it to read memory through `burst`.
    unsafe { std::arch::asm!("/* {0} */", in(reg) burst, options(nostack, preserves_flags)) };
}

/// Pins the calling thread to `cpu`, as DPDK's `-l 0-1` pins its two lcores.
fn pin_to(cpu: usize) {
    if let Err(e) = vnic::affinity::pin_current_thread(cpu) {
        eprintln!("ring_cycles: could not pin to CPU {cpu}: {e}");
    }
}

/// One two-thread run: the enqueuer's plus the dequeuer's cycles per element.
fn cycles_per_element() -> f64 {
    let (mut producer, mut consumer) =
        SubmissionRing::<TxDesc>::in_process(RING_SLOTS).expect("a ring of 4096 slots");
    let arrived = Arc::new(AtomicU32::new(0));
    let start_together = |arrived: &AtomicU32| {
        arrived.fetch_add(1, Ordering::AcqRel);
        while arrived.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
    };
    let bulks = ELEMENTS / BULK as u64;
    let dequeuer = {
        let arrived = arrived.clone();
        std::thread::spawn(move || {
            pin_to(1);
            let mut burst = Burst([TxDesc::default(); BULK]);
            start_together(&arrived);
            let start = tsc();
            for _ in 0..bulks {
                while !consumer.pop_bulk(&mut burst.0) {
                    std::hint::spin_loop();
                }
                used(burst.0.as_ptr());
            }
            (tsc() - start) as f64 / ELEMENTS as f64
        })
    };
    pin_to(0);
    // Its contents unknown to the compiler, as DPDK's test's buffer is to its compiler.
    let burst = black_box(Burst([TxDesc::default(); BULK]));
    start_together(&arrived);
    let start = tsc();
    for _ in 0..bulks {
        while !producer.push_bulk(&burst.0) {
            std::hint::spin_loop();
        }
    }
    let enqueue = (tsc() - start) as f64 / ELEMENTS as f64;
    enqueue + dequeuer.join().expect("the dequeuer finishes")
}

fn main() {
    // `cargo bench` passes `--bench`; a round count may follow the bench's name.
    let rounds: usize =
        std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5).clamp(1, 100);
    let hz = tsc_hz();
    println!("tsc: {:.0} MHz", hz / 1e6);
    for round in 1..=rounds {
        let cpe = cycles_per_element();
        println!(
            "vnic SubmissionRing SP/SC bulk (size: {BULK}), 16 B, two threads, round {round}: \
             {cpe:.2} cycles per element ({:.3} ns)",
            cpe / hz * 1e9
        );
    }
}
