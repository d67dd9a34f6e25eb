//! The queue-pair demo: a guest driver and a device engine talking through one TX queue pair.
//!
//! The guest keeps ENA's request-id free list: it takes ids for a burst, writes the descriptors
//! in place in the submission ring (one doorbell per burst), and reaps TX completions to return
//! the ids. The device validates each descriptor (length, request id) before completing it. Each
//! completion's latency is the time from the burst that posted it to the reap that saw it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use vnic::abi::io::{TxCompletion, TxDesc, sq_phase};
use vnic::ring::{
    CompletionConsumer, CompletionProducer, CompletionRing, RingError, SharedRegion,
    SubmissionConsumer, SubmissionProducer, SubmissionRing,
};

/// Largest frame a VF accepts (jumbo frames inside a VPC).
const MAX_FRAME: u16 = 9001;
/// How long the demo waits on a silent peer before giving up.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Options of the queue-pair demo.
#[derive(Debug, Clone, Copy, Args)]
pub struct DemoArgs {
    /// Descriptors to send.
    #[arg(long, default_value_t = 20_000_000)]
    pub descriptors: u64,
    /// Descriptors per doorbell.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Ring depth (power of two, 64..=16384; ENA's default is 1024).
    #[arg(long, default_value_t = 1024)]
    pub depth: u32,
    /// Frame length written into each descriptor.
    #[arg(long, default_value_t = 64)]
    pub frame: u16,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self { descriptors: 20_000_000, burst: 32, depth: 1024, frame: 64 }
    }
}

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The rings could not be set up.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// An option is out of range.
    #[error("--{option} {value}: {why}")]
    BadOption {
        /// Which option.
        option: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// One side stopped making progress.
    #[error("the {0} made no progress for {STALL_LIMIT:?}")]
    Stalled(&'static str),
    /// A thread died.
    #[error("the {0} thread panicked")]
    ThreadPanicked(&'static str),
}

/// What the demo measured.
#[derive(Debug)]
pub struct DemoReport {
    args: DemoArgs,
    elapsed: Duration,
    completed: u64,
    bad_descriptors: u64,
    latency_ns: Histogram<u64>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let mpps = self.completed as f64 / secs / 1e6;
        let gbps = self.completed as f64 * f64::from(self.args.frame) * 8.0 / secs / 1e9;
        let h = &self.latency_ns;
        writeln!(f, "vnic-lab queue-pair demo (guest thread -> device thread, one TX queue pair)")?;
        writeln!(
            f,
            "  ring depth {}, burst {}, {}-byte frames, {} descriptors",
            self.args.depth, self.args.burst, self.args.frame, self.completed
        )?;
        writeln!(
            f,
            "  throughput: {mpps:.2} Mpps ({:.2} ns per descriptor, {gbps:.2} Gbps of frames)",
            1e3 / mpps
        )?;
        writeln!(f, "  bad descriptors dropped by the device: {}", self.bad_descriptors)?;
        writeln!(f, "  submit-to-completion latency (ns), at saturation:")?;
        writeln!(
            f,
            "    p50 {}  p99 {}  p99.9 {}  max {}",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    }
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<DemoReport, DemoError> {
    if args.burst == 0 || args.burst > args.depth as usize {
        return Err(DemoError::BadOption {
            option: "burst",
            value: args.burst.to_string(),
            why: "must be between 1 and the ring depth",
        });
    }
    if args.frame == 0 || args.frame > MAX_FRAME {
        return Err(DemoError::BadOption {
            option: "frame",
            value: args.frame.to_string(),
            why: "must be between 1 and 9001 bytes",
        });
    }
    if !vnic::ring::depth_is_valid(args.depth) {
        return Err(RingError::BadDepth { depth: args.depth }.into());
    }
    // One region holds the queue pair, as a VF's DMA window would.
    let sq_bytes = SubmissionRing::<TxDesc>::bytes(args.depth);
    let region = Arc::new(
        SharedRegion::anonymous(sq_bytes + CompletionRing::<TxCompletion>::bytes(args.depth))
            .map_err(RingError::from)?,
    );
    SubmissionRing::<TxDesc>::init(&region, 0, args.depth)?;
    CompletionRing::<TxCompletion>::init(&region, sq_bytes, args.depth)?;
    let guest_sq = SubmissionProducer::<TxDesc>::attach(region.clone(), 0)?;
    let guest_cq = CompletionConsumer::<TxCompletion>::attach(region.clone(), sq_bytes)?;
    let device_sq = SubmissionConsumer::<TxDesc>::attach(region.clone(), 0)?;
    let device_cq = CompletionProducer::<TxCompletion>::attach(region, sq_bytes)?;

    let depth = args.depth;
    let burst = args.burst;
    let device = std::thread::spawn(move || device_loop(device_sq, device_cq, depth, burst));
    let start = Instant::now();
    let guest = guest_loop(guest_sq, guest_cq, args);
    let elapsed = start.elapsed();
    let bad_descriptors = device.join().map_err(|_| DemoError::ThreadPanicked("device"))??;
    let (completed, latency_ns) = guest?;
    Ok(DemoReport { args: *args, elapsed, completed, bad_descriptors, latency_ns })
}

fn guest_loop(
    mut sq: SubmissionProducer<TxDesc>,
    mut cq: CompletionConsumer<TxCompletion>,
    args: &DemoArgs,
) -> Result<(u64, Histogram<u64>), DemoError> {
    let depth = args.depth as usize;
    // Request ids: a free list, and when each in-flight one was posted.
    let mut free_ids: Vec<u16> = (0..depth as u16).rev().collect();
    let mut posted_at = vec![Instant::now(); depth];
    let mut in_flight = vec![false; depth];
    let mut latency = hypervisor_sim::traffic::latency_histogram();
    let mut completions = vec![TxCompletion::default(); args.burst];
    let (mut sent, mut completed) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut idle = 0u32;
    while completed < args.descriptors {
        // Reap completions first, freeing request ids.
        let n = cq.pop_burst(&mut completions);
        if n > 0 {
            let now = Instant::now();
            for c in &completions[..n] {
                let id = usize::from(c.req_id);
                // A driver never trusts a completion blindly either.
                if id < depth && std::mem::take(&mut in_flight[id]) {
                    let ns = now.duration_since(posted_at[id]).as_nanos() as u64;
                    latency.saturating_record(ns.max(1));
                    free_ids.push(c.req_id);
                    completed += 1;
                }
            }
        }
        // Post a burst in place: one doorbell.
        let want = (args.descriptors - sent).min(args.burst as u64) as usize;
        let want = want.min(free_ids.len());
        let mut posted = 0;
        if want > 0 {
            let now = Instant::now();
            let mut res = sq.reserve_up_to(want);
            let len = res.len();
            let first_position = res.position(0);
            let (a, b) = res.as_mut_slices();
            for (k, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                let Some(id) = free_ids.pop() else { break };
                posted_at[usize::from(id)] = now;
                in_flight[usize::from(id)] = true;
                let addr = (u64::from(id) << 14) | 0x1000_0000;
                let position = first_position.wrapping_add(k as u32);
                *slot = TxDesc::new(addr, args.frame, id)
                    .with_first(true)
                    .with_last(true)
                    .with_comp_req(true)
                    .with_phase(sq_phase(position, args.depth));
                posted += 1;
            }
            debug_assert_eq!(posted, len);
            res.commit();
            sent += posted as u64;
        }
        if n == 0 && posted == 0 {
            idle += 1;
            if idle.is_multiple_of(1024) && last_progress.elapsed() > STALL_LIMIT {
                return Err(DemoError::Stalled("device"));
            }
            std::hint::spin_loop();
        } else {
            idle = 0;
            last_progress = Instant::now();
        }
    }
    Ok((completed, latency))
}

/// Validates each descriptor and completes it; returns how many were dropped as bad.
fn device_loop(
    mut sq: SubmissionConsumer<TxDesc>,
    mut cq: CompletionProducer<TxCompletion>,
    depth: u32,
    burst: usize,
) -> Result<u64, DemoError> {
    let mut descs = vec![TxDesc::default(); burst];
    let mut done = vec![TxCompletion::default(); burst];
    let mut head = 0u16;
    let mut bad = 0u64;
    let mut last_progress = Instant::now();
    let mut idle = 0u32;
    loop {
        // Take no more than there is room to complete.
        let room = cq.free_slots().min(burst);
        let n = sq.pop_burst(&mut descs[..room]);
        let mut k = 0;
        for d in &descs[..n] {
            head = head.wrapping_add(1);
            if d.is_empty() || d.len() > MAX_FRAME || u32::from(d.req_id()) >= depth {
                bad += 1;
                continue;
            }
            done[k] = TxCompletion { req_id: d.req_id(), sq_head_idx: head, ..Default::default() };
            k += 1;
        }
        if k > 0 && !cq.push_bulk(&done[..k]) {
            return Err(DemoError::Stalled("guest"));
        }
        if n == 0 {
            // The guest drops its endpoints when it is done: then nobody is left to serve.
            idle += 1;
            if idle.is_multiple_of(1024) {
                if sq.reset().is_ok() {
                    return Ok(bad);
                }
                if last_progress.elapsed() > STALL_LIMIT {
                    return Err(DemoError::Stalled("guest"));
                }
            }
            std::hint::spin_loop();
        } else {
            idle = 0;
            last_progress = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_completes_every_descriptor_and_measures_latency() {
        let args = DemoArgs { descriptors: 100_000, burst: 8, depth: 64, frame: 1500 };
        let report = run(&args).unwrap();
        assert_eq!(report.completed, 100_000);
        assert_eq!(report.bad_descriptors, 0);
        assert_eq!(report.latency_ns.len(), 100_000);
        let text = report.to_string();
        assert!(text.contains("Mpps") && text.contains("p99.9"), "{text}");
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let err = run(&DemoArgs { depth: 1000, ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("1000 is not a power of two"), "{err}");
        let err = run(&DemoArgs { burst: 0, ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("--burst 0"), "{err}");
        let err = run(&DemoArgs { frame: 9002, ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("--frame 9002"), "{err}");
    }
}
