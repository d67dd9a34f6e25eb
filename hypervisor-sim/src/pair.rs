//! One flow between two queue pairs, driven by one thread: the lab's traffic on real virtual
//! functions, and the same workload on simulated ones.
//!
//! The sender stamps each frame with its sequence number and the time it was due
//! ([`crate::traffic::stamp`], as `run`'s paced flows do), paced by a [`Pacer`] at a frame rate
//! or flooding; the receiver checks every frame against the bytes that were sent (the same
//! template, the same stamp), its sequence number ([`SeqCheck`]: a frame not the one after the
//! last is a gap; one older than the newest seen is reordered) and records its one-way latency
//! in an HdrHistogram. The two ends share the thread's clock, so latency needs no clock
//! synchronisation.
//!
//! The sender keeps at most the receiver's capacity ([`QueuePair::rx_capacity`], less a burst)
//! in flight, as a NIC without flow control needs: a full RX ring drops. When nothing arrives
//! for [`PairFlow::stall_ns`] with frames in flight, those frames are written off as lost, so a
//! path that drops does not hang the run.

use vnic::nic::QueuePair;

use crate::paced::{Pacer, SeqCheck};
use crate::traffic::{FlowFrame, TrafficClock, latency_histogram, read_stamp, stamp};

/// How frames leave.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// As fast as the receiver's capacity lets them.
    Flood,
    /// On a pacer's schedule (a frame rate); frames behind schedule are dropped by its rule.
    Paced(Pacer),
}

/// The flow to run.
#[derive(Debug, Clone)]
pub struct PairFlow {
    /// Frames to send, cycled by sequence number (several sizes, one template each).
    pub templates: Vec<FlowFrame>,
    /// Frames in all, at most.
    pub frames: u64,
    /// No frame leaves at or after this clock reading, ns (a run's duration).
    pub send_until_ns: u64,
    /// Frames per burst when flooding (one doorbell each), at most [`MAX_BURST`]; a paced
    /// flow sends what fell due, at most the pacer's burst.
    pub burst: usize,
    /// When frames leave.
    pub schedule: Schedule,
    /// Nothing received for this long with frames in flight: they are lost.
    pub stall_ns: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct PairReport {
    /// Frames the sender's queue took.
    pub sent: u64,
    /// Bytes of those frames (without FCS).
    pub sent_bytes: u64,
    /// Frames the pacer dropped for being too far behind (paced flows only).
    pub sender_drops: u64,
    /// Frames of the flow received.
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames received whose bytes differ from those sent.
    pub corrupt: u64,
    /// Frames that arrived after a later one.
    pub reordered: u64,
    /// Frames that arrived twice.
    pub duplicates: u64,
    /// Sequence gaps: a frame not the one after the previous (a loss or a reordering).
    pub gaps: u64,
    /// Frames received that were not the flow's (other traffic on the receiver).
    pub foreign: u64,
    /// One-way latency, ns, of every frame of the flow received.
    pub latency: hdrhistogram::Histogram<u64>,
    /// Clock reading at the first frame sent and at the last frame received, ns.
    pub span_ns: (u64, u64),
}

impl PairReport {
    /// Frames sent and never received.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received.saturating_sub(self.duplicates))
    }

    /// Seconds from the first frame sent to the last received.
    pub fn seconds(&self) -> f64 {
        self.span_ns.1.saturating_sub(self.span_ns.0) as f64 / 1e9
    }
}

/// Where a run hands every frame sent and received, with its time (a pcap, typically).
pub type PairCapture<'a> = dyn FnMut(u64, &[u8]) + 'a;

/// The most frames a burst takes.
pub const MAX_BURST: usize = 64;

/// The template of frame `seq`, stamped with `t_ns`, into `out`: what the receiver must see.
/// False if there are no templates.
pub fn expected_frame(templates: &[FlowFrame], seq: u64, t_ns: u64, out: &mut Vec<u8>) -> bool {
    let Some(t) = templates.get((seq % templates.len().max(1) as u64) as usize) else {
        return false;
    };
    out.clear();
    out.extend_from_slice(t.bytes());
    stamp(out, seq, t_ns);
    true
}

/// Runs `flow` from `tx` to `rx` on this thread until every frame is received or written off.
pub fn run_pair(
    tx: &mut dyn QueuePair,
    rx: &mut dyn QueuePair,
    mut flow: PairFlow,
    clock: &TrafficClock,
    mut capture: Option<&mut PairCapture<'_>>,
) -> PairReport {
    let burst = flow.burst.clamp(1, MAX_BURST);
    let margin = match flow.schedule {
        Schedule::Flood => burst,
        Schedule::Paced(_) => crate::paced::BURST,
    };
    // A burst leaves only if all of it fits in what the receiver can hold.
    let window = rx.rx_capacity().max(margin) as u64;
    let mut report = PairReport {
        sent: 0,
        sent_bytes: 0,
        sender_drops: 0,
        received: 0,
        received_bytes: 0,
        corrupt: 0,
        reordered: 0,
        duplicates: 0,
        gaps: 0,
        foreign: 0,
        latency: latency_histogram(),
        span_ns: (0, 0),
    };
    rx.refill_rx();
    // One bit per sequence number received, grown as they come.
    let mut seen: Vec<u64> = Vec::new();
    let mut seq_check = SeqCheck::default();
    let mut newest: Option<u64> = None;
    // In flight: sent, not received, not written off.
    let (mut received_in_flight, mut written_off) = (0u64, 0u64);
    let mut next_seq = 0u64;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); MAX_BURST];
    let mut dues = Vec::with_capacity(MAX_BURST);
    let mut want = Vec::new();
    let mut last_progress = clock.now_ns();
    let mut first_sent = None;
    loop {
        let now = clock.now_ns();
        let in_flight = report.sent.saturating_sub(received_in_flight + written_off);
        let done_sending = next_seq >= flow.frames
            || now >= flow.send_until_ns
            || matches!(&flow.schedule, Schedule::Paced(p) if p.next_due().is_none());
        if done_sending && in_flight == 0 {
            break;
        }
        if !done_sending && in_flight + margin as u64 <= window {
            dues.clear();
            match &mut flow.schedule {
                Schedule::Flood => dues.extend((next_seq..flow.frames).take(burst).map(|_| now)),
                Schedule::Paced(pacer) => {
                    let taken = pacer.take_due(now, &mut dues);
                    // Frames too far behind were skipped: those of the flow's count are drops.
                    let end = flow.frames;
                    report.sender_drops += taken.first_seq.min(end) - next_seq.min(end);
                    next_seq = taken.first_seq;
                }
            }
            let count = dues.len().min(flow.frames.saturating_sub(next_seq) as usize);
            for (k, buf) in bufs.iter_mut().take(count).enumerate() {
                expected_frame(&flow.templates, next_seq + k as u64, dues[k], buf);
            }
            let refs: Vec<&[u8]> = bufs[..count].iter().map(Vec::as_slice).collect();
            let sent = if count > 0 { tx.send_burst(&refs) } else { 0 };
            if sent > 0 {
                first_sent.get_or_insert(now);
                last_progress = now;
            }
            for f in &refs[..sent] {
                report.sent_bytes += f.len() as u64;
                if let Some(c) = capture.as_mut() {
                    c(now, f);
                }
            }
            report.sent += sent as u64;
            if matches!(flow.schedule, Schedule::Paced(_)) {
                // A paced frame the ring refused is dropped, as in `run`.
                report.sender_drops += (count - sent) as u64;
                next_seq += count as u64;
            } else {
                next_seq += sent as u64;
            }
        }
        tx.reap_tx();
        let templates = &flow.templates;
        // Sequence numbers handed out so far: a frame stamped with another is not the flow's.
        let issued = next_seq;
        let before = received_in_flight;
        rx.recv_each(&mut |frame: &[u8]| {
            let now = clock.now_ns();
            if let Some(c) = capture.as_mut() {
                c(now, frame);
            }
            let Some((seq, t)) = read_stamp(frame).filter(|(s, _)| *s < issued) else {
                report.foreign += 1;
                return;
            };
            let is_flows = expected_frame(templates, seq, t, &mut want)
                && frame.len() >= 14
                && want.len() >= 14
                && frame[..14] == want[..14];
            if !is_flows {
                report.foreign += 1;
                return;
            }
            report.received += 1;
            report.received_bytes += frame.len() as u64;
            report.span_ns.1 = now;
            if frame != want.as_slice() {
                report.corrupt += 1;
            }
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            let again = seen[word] & bit != 0;
            seen[word] |= bit;
            if again {
                report.duplicates += 1;
                return;
            }
            received_in_flight += 1;
            if newest.is_some_and(|n| seq < n) {
                report.reordered += 1;
            }
            newest = Some(newest.map_or(seq, |n| n.max(seq)));
            if seq_check.gap(seq) {
                report.gaps += 1;
            }
            report.latency.saturating_record(now.saturating_sub(t).max(1));
        });
        let now = clock.now_ns();
        // Progress is a frame of the flow: other traffic on the receiver does not hold the
        // stall off.
        if received_in_flight > before {
            last_progress = now;
        } else if now.saturating_sub(last_progress) > flow.stall_ns {
            // Nothing for a while: what is in flight is not coming.
            written_off = report.sent.saturating_sub(received_in_flight);
            last_progress = now;
        }
    }
    report.span_ns.0 = first_sent.unwrap_or(0);
    report
}
