//! Test traffic: UDP frames that carry a sequence number and a send timestamp, and the echo that
//! reflects them.
//!
//! The first 16 bytes of the UDP payload (bytes 42..58 of the frame, so every frame of 60 bytes
//! or more has room) hold the sequence number and the sender's clock in nanoseconds, both big
//! endian. Receivers check sequence numbers for loss and reordering and take latency from the
//! timestamp, on the clock of one process ([`TrafficClock`]).

use std::net::Ipv4Addr;
use std::time::Instant;

use vnic::frame::{MacAddr, build_udp_frame};

/// Where the stamp starts: after Ethernet (14), IPv4 (20) and UDP (8) headers.
pub const STAMP_AT: usize = 42;
/// Smallest frame that carries a stamp.
pub const MIN_FRAME: usize = 60;

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

/// Highest one-way latency a histogram records, ns (60 s).
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 1 ns to 60 s at 3 significant digits: the one shape
/// every latency report of the workspace uses.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"))
}

/// One end of a UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// MAC.
    pub mac: MacAddr,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// UDP port.
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
    if let Some(s) = frame.get_mut(STAMP_AT..STAMP_AT + 16) {
        s[..8].copy_from_slice(&seq.to_be_bytes());
        s[8..].copy_from_slice(&t_ns.to_be_bytes());
    }
}

/// Reads a frame's sequence number and timestamp.
#[inline]
pub fn read_stamp(frame: &[u8]) -> Option<(u64, u64)> {
    let s = frame.get(STAMP_AT..STAMP_AT + 16)?;
    let seq = u64::from_be_bytes(s[..8].try_into().ok()?);
    let t = u64::from_be_bytes(s[8..].try_into().ok()?);
    Some((seq, t))
}

/// The frame's UDP source port, if it is an untagged IPv4/UDP frame.
pub fn source_port(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(34)?, *frame.get(35)?]))
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
