//! Test traffic: UDP frames that carry a sequence number and a send timestamp, and the echo that
//! reflects them.
//!
//! The first 16 bytes of the payload (bytes 42..58 of a UDP frame, so every frame of 60 bytes
//! or more has room; 54..70 of a TCP segment) hold the sequence number and the sender's clock in
//! nanoseconds, both big endian. Receivers check sequence numbers for loss and reordering and take latency from the
//! timestamp, on the clock of one process ([`TrafficClock`]).

use std::net::Ipv4Addr;
use std::time::Instant;

use vnic::frame::{MacAddr, TCP_HEADERS, UDP_HEADERS, build_tcp_frame, build_udp_frame, tcp_flags};

/// Where the stamp of a UDP frame starts: after Ethernet (14), IPv4 (20) and UDP (8) headers.
pub const STAMP_AT: usize = UDP_HEADERS;
/// Smallest UDP frame that carries a stamp.
pub const MIN_FRAME: usize = 60;
/// Smallest TCP segment that carries a stamp: 54 bytes of headers and the 16 of the stamp.
pub const MIN_TCP_FRAME: usize = TCP_HEADERS + 16;

/// Where a frame's payload (and its stamp) starts: after the TCP header of a TCP segment, else
/// after UDP's.
#[inline]
pub fn payload_at(frame: &[u8]) -> usize {
    let proto = vnic::frame::field::ETH_LEN + vnic::frame::field::IP_PROTO;
    if frame.get(proto) == Some(&vnic::frame::ip_proto::TCP) { TCP_HEADERS } else { STAMP_AT }
}

/// The clock senders stamp with and receivers read.
#[derive(Debug, Clone, Copy)]
pub struct TrafficClock {
    epoch: Instant,
}

impl TrafficClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { epoch: Instant::now() }
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Default for TrafficClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Significant decimal digits every latency histogram keeps.
pub const LATENCY_SIGFIG: u8 = 3;

/// Highest one-way latency a histogram records, ns (60 s).
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 1 ns to 60 s at 3 significant digits: the one shape
/// every latency report of the workspace uses.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"))
}

/// Most intervals a [`LatencyLog`] keeps: a run of more sample windows than this logs whole
/// multiples of the window, so a 600 s run sampled every 10 ms keeps 300 intervals of 2 s, not
/// 60,000 histograms.
pub const MAX_LOG_INTERVALS: u64 = 300;

/// Latency by when it was measured: one histogram per interval of the run (a sample window, or
/// the fewest whole windows that keep to [`MAX_LOG_INTERVALS`]), the shape of HdrHistogram's
/// interval log. An interval's histogram is allocated at its first value and grows with the
/// largest value it holds (values are clamped to 1 ns ..= [`LATENCY_MAX_NS`]); the run's
/// histogram is their sum, so an interval log and the run's percentiles always agree.
#[derive(Debug, Clone)]
pub struct LatencyLog {
    interval_ns: u64,
    intervals: Vec<Option<hdrhistogram::Histogram<u64>>>,
}

impl LatencyLog {
    /// A log of a run of `span_ns` measured in windows of `sample_ns`.
    pub fn new(sample_ns: u64, span_ns: u64) -> Self {
        let sample_ns = sample_ns.max(1);
        let windows = span_ns.div_ceil(sample_ns).max(1);
        Self { interval_ns: sample_ns * windows.div_ceil(MAX_LOG_INTERVALS), intervals: Vec::new() }
    }

    /// Records `latency_ns`, measured at `at_ns` into the run.
    pub fn record(&mut self, at_ns: u64, latency_ns: u64) {
        let k = usize::try_from(at_ns / self.interval_ns).unwrap_or(usize::MAX);
        // A value measured after the span the log was sized for joins its last interval but
        // one beyond: the log's length stays bounded whatever the clock says.
        let k = k.min(MAX_LOG_INTERVALS as usize);
        if self.intervals.len() <= k {
            self.intervals.resize(k + 1, None);
        }
        let h = self.intervals[k].get_or_insert_with(|| {
            hdrhistogram::Histogram::new(LATENCY_SIGFIG)
                .unwrap_or_else(|e| unreachable!("constant histogram precision: {e}"))
        });
        let _ = h.record(latency_ns.clamp(1, LATENCY_MAX_NS));
    }

    /// How long each interval is, ns.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Intervals from the run's start up to the last that holds a value.
    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.intervals.iter().all(Option::is_none)
    }

    /// The `k`-th interval's histogram (`None`: nothing was measured in it).
    pub fn interval(&self, k: usize) -> Option<&hdrhistogram::Histogram<u64>> {
        self.intervals.get(k).and_then(Option::as_ref)
    }

    /// Every value of the run, in one [`latency_histogram`].
    pub fn total(&self) -> hdrhistogram::Histogram<u64> {
        let mut total = latency_histogram();
        for h in self.intervals.iter().flatten() {
            // Every value was clamped into the run histogram's range when recorded.
            let _ = total.add(h);
        }
        total
    }

    /// Adds `other`'s values, interval by interval (both sized for the same run).
    pub fn merge(&mut self, other: &LatencyLog) {
        debug_assert_eq!(self.interval_ns, other.interval_ns, "logs of different runs");
        if self.intervals.len() < other.intervals.len() {
            self.intervals.resize(other.intervals.len(), None);
        }
        for (mine, theirs) in self.intervals.iter_mut().zip(&other.intervals) {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => {
                    let _ = m.add(t);
                }
                (None, Some(t)) => *mine = Some(t.clone()),
                (_, None) => {}
            }
        }
    }
}

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// MAC.
    pub mac: MacAddr,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// UDP or TCP port.
    pub port: u16,
}

/// A frame of a flow, to stamp and send again and again.
#[derive(Debug, Clone)]
pub struct FlowFrame {
    frame: Vec<u8>,
}

impl FlowFrame {
    /// A `len`-byte frame (at least [`MIN_FRAME`]) from `src` to `dst`.
    pub fn new(src: Endpoint, dst: Endpoint, len: usize) -> Self {
        let len = len.max(MIN_FRAME);
        let mut frame = vec![0u8; len];
        build_udp_frame(
            &mut frame,
            len,
            dst.mac,
            src.mac,
            (src.ip.octets(), dst.ip.octets()),
            (src.port, dst.port),
        );
        Self { frame }
    }

    /// A data segment of a TCP connection from `src` to `dst`, `len` bytes (at least
    /// [`MIN_TCP_FRAME`]), PSH-ACK; its sequence numbers are set as it is sent.
    pub fn tcp(src: Endpoint, dst: Endpoint, len: usize) -> Self {
        let len = len.max(MIN_TCP_FRAME);
        let mut frame = vec![0u8; len];
        let _ = build_tcp_frame(
            &mut frame,
            len - TCP_HEADERS,
            dst.mac,
            src.mac,
            (src.ip.octets(), dst.ip.octets()),
            (src.port, dst.port),
            (0, 0),
            tcp_flags::PSH | tcp_flags::ACK,
        );
        Self { frame }
    }

    /// Whether it is a TCP segment.
    pub fn is_tcp(&self) -> bool {
        payload_at(&self.frame) == TCP_HEADERS
    }

    /// The frame with `seq` and `t_ns` stamped in.
    #[inline]
    pub fn stamped(&mut self, seq: u64, t_ns: u64) -> &[u8] {
        stamp(&mut self.frame, seq, t_ns);
        &self.frame
    }

    /// The frame as it is.
    pub fn bytes(&self) -> &[u8] {
        &self.frame
    }
}

/// Writes a sequence number and a timestamp into a frame.
#[inline]
pub fn stamp(frame: &mut [u8], seq: u64, t_ns: u64) {
    let at = payload_at(frame);
    if let Some(s) = frame.get_mut(at..at + 16) {
        s[..8].copy_from_slice(&seq.to_be_bytes());
        s[8..].copy_from_slice(&t_ns.to_be_bytes());
    }
}

/// Reads a frame's sequence number and timestamp.
#[inline]
pub fn read_stamp(frame: &[u8]) -> Option<(u64, u64)> {
    let at = payload_at(frame);
    let s = frame.get(at..at + 16)?;
    let seq = u64::from_be_bytes(s[..8].try_into().ok()?);
    let t = u64::from_be_bytes(s[8..].try_into().ok()?);
    Some((seq, t))
}

/// The frame's UDP or TCP source port, if it is an untagged IPv4 frame.
pub fn source_port(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(34)?, *frame.get(35)?]))
}

/// The frame's UDP or TCP destination port, if it is an untagged IPv4 frame.
pub fn dest_port(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(36)?, *frame.get(37)?]))
}

/// Turns a frame around: MACs, IPv4 addresses and UDP ports swapped.
pub fn reflect(frame: &mut [u8]) {
    if frame.len() < STAMP_AT {
        return;
    }
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(26 + i, 30 + i);
    }
    for i in 0..2 {
        frame.swap(34 + i, 36 + i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two VMs' logs of one run merge window by window; values beyond the histograms' range are
    /// clamped, not lost, and the total is the sum of every interval.
    #[test]
    fn latency_logs_merge_window_by_window() {
        const MS: u64 = 1_000_000;
        let mut a = LatencyLog::new(100 * MS, 500 * MS);
        let mut b = LatencyLog::new(100 * MS, 500 * MS);
        a.record(10 * MS, 5_000);
        b.record(20 * MS, 7_000);
        b.record(420 * MS, 0);
        b.record(430 * MS, LATENCY_MAX_NS * 2);
        a.merge(&b);
        assert_eq!(a.len(), 5);
        assert_eq!(a.interval(0).map(|h| h.len()), Some(2));
        assert!(a.interval(1).is_none() && a.interval(3).is_none());
        let last = a.interval(4).expect("window 4");
        assert_eq!(last.len(), 2);
        assert_eq!(last.min(), 1, "0 ns is recorded as 1 ns");
        assert!(last.max() >= LATENCY_MAX_NS && last.max() <= LATENCY_MAX_NS * 1001 / 1000);
        let total = a.total();
        assert_eq!(total.len(), 4);
        assert!(!a.is_empty() && LatencyLog::new(MS, MS).is_empty());
    }

    #[test]
    fn stamps_survive_and_reflection_swaps_both_ends() {
        let a = Endpoint { mac: MacAddr::local(1), ip: Ipv4Addr::new(10, 0, 0, 5), port: 1000 };
        let b = Endpoint { mac: MacAddr::local(2), ip: Ipv4Addr::new(10, 0, 0, 6), port: 2000 };
        let mut f = FlowFrame::new(a, b, 10);
        assert_eq!(f.bytes().len(), MIN_FRAME);
        let mut bytes = f.stamped(7, 123_456).to_vec();
        assert_eq!(read_stamp(&bytes), Some((7, 123_456)));
        reflect(&mut bytes);
        let back = FlowFrame::new(b, a, 10);
        assert_eq!(bytes[..STAMP_AT], back.bytes()[..STAMP_AT]);
        assert_eq!(source_port(&bytes), Some(2000));
        assert_eq!(read_stamp(&bytes[..50]), None);
    }
}
