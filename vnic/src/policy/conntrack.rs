//! Connection tracking, and an ENI's security-group filter built on it ([`EniFilter`]).
//!
//! A connection is keyed from the ENI's side (protocol, local address and port, remote address
//! and port; ICMP by its identifier), so a packet and its reply find the same entry. While an
//! entry lives, packets of the connection pass whatever the rules say now. Entries expire when
//! idle for their state's timeout ([`Timeouts`]) and are found expired lazily, when their
//! connection is next seen or when the table is full. The table holds at most the instance's
//! conntrack allowance; a new tracked connection beyond it is refused and counted
//! (`conntrack_allowance_exceeded`).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::sg::{CompiledGroups, SgReason};
use super::{Direction, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PolicyError, Tuple};

/// TCP flags connection tracking reads.
pub use crate::frame::tcp_flags;

/// Idle timeouts of tracked connections, seconds, as EC2 documents them and lets an ENI set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP connection (432,000 s; 60 to 432,000).
    pub tcp_established_s: u64,
    /// A UDP flow that has seen more than one request and response (180 s; 60 to 180).
    pub udp_stream_s: u64,
    /// A UDP flow seen one way only, or one request and its response (30 s; 30 to 60).
    pub udp_s: u64,
}

/// Idle timeout of a tracked connection of any protocol but TCP and UDP, s.
pub const OTHER_TIMEOUT_S: u64 = 600;
/// Idle timeout of a TCP connection not yet established or closing (SYN or FIN seen), s. EC2
/// does not document it; this is Linux's `nf_conntrack_tcp_timeout_syn_sent` and `fin_wait`.
pub const TCP_TRANSITORY_TIMEOUT_S: u64 = 120;

impl Default for Timeouts {
    fn default() -> Self {
        Self { tcp_established_s: 432_000, udp_stream_s: 180, udp_s: 30 }
    }
}

impl Timeouts {
    /// Checks each timeout against the range EC2 accepts.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (name, v, lo, hi) in [
            ("tcp_established_timeout", self.tcp_established_s, 60, 432_000),
            ("udp_stream_timeout", self.udp_stream_s, 60, 180),
            ("udp_timeout", self.udp_s, 30, 60),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(PolicyError::InvalidParameterValue(format!(
                    "{name} {v} s is not {lo} to {hi}"
                )));
            }
        }
        Ok(())
    }
}

/// A connection's key, from the ENI's side: protocol, local and remote address and port
/// packed into two words (two hash rounds per lookup; 8-byte aligned, so an entry with its
/// 8-byte state is 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    addresses: u64,
    ports: u64,
}

impl ConnKey {
    fn pack(
        proto: u8,
        local: Ipv4Addr,
        local_port: u16,
        remote: Ipv4Addr,
        remote_port: u16,
    ) -> Self {
        Self {
            addresses: u64::from(u32::from(local)) << 32 | u64::from(u32::from(remote)),
            ports: u64::from(local_port) << 32 | u64::from(remote_port) << 16 | u64::from(proto),
        }
    }

    #[inline]
    fn of(dir: Direction, t: &Tuple) -> Self {
        let (local, remote) = match dir {
            Direction::Outbound => (t.src, t.dst),
            Direction::Inbound => (t.dst, t.src),
        };
        match t.proto {
            // Request and reply differ in type; the identifier is the connection.
            PROTO_ICMP => Self::pack(t.proto, local, t.src_port, remote, 0),
            PROTO_TCP | PROTO_UDP => {
                let (lp, rp) = match dir {
                    Direction::Outbound => (t.src_port, t.dst_port),
                    Direction::Inbound => (t.dst_port, t.src_port),
                };
                Self::pack(t.proto, local, lp, remote, rp)
            }
            _ => Self::pack(t.proto, local, 0, remote, 0),
        }
    }
}

/// What a tracked connection has seen, for its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// TCP, one way so far (or a SYN only).
    TcpOpening,
    /// TCP, seen both ways.
    TcpEstablished,
    /// TCP after a FIN.
    TcpClosing,
    /// UDP seen one way, or one request and its response.
    Udp,
    /// UDP with more than one request and response.
    UdpStream,
    /// Any other protocol.
    Other,
}

/// A tracked connection's state: 8 bytes.
#[derive(Debug, Clone, Copy)]
struct Conn {
    /// When it was last seen, ms on the device's clock (saturating after 49 days; timeouts
    /// are whole seconds, so a millisecond is fine enough).
    last_ms: u32,
    state: ConnState,
    /// Who opened it (bit 0: inbound), the direction of the last packet (bit 1: inbound, to
    /// count UDP exchanges), whether a reply was seen (bit 2).
    bits: u8,
}

const OPENED_INBOUND: u8 = 1;
const LAST_INBOUND: u8 = 2;
const REPLIED: u8 = 4;

fn ms(now_ns: u64) -> u32 {
    u32::try_from(now_ns / 1_000_000).unwrap_or(u32::MAX)
}

fn inbound_bit(dir: Direction, bit: u8) -> u8 {
    if dir == Direction::Inbound { bit } else { 0 }
}

impl Conn {
    fn timeout_s(&self, t: &Timeouts) -> u64 {
        match self.state {
            ConnState::TcpOpening | ConnState::TcpClosing => TCP_TRANSITORY_TIMEOUT_S,
            ConnState::TcpEstablished => t.tcp_established_s,
            ConnState::Udp => t.udp_s,
            ConnState::UdpStream => t.udp_stream_s,
            ConnState::Other => OTHER_TIMEOUT_S,
        }
    }

    #[inline]
    fn expired(&self, now_ns: u64, t: &Timeouts) -> bool {
        u64::from(ms(now_ns).saturating_sub(self.last_ms)) > self.timeout_s(t) * 1_000
    }

    fn new(dir: Direction, proto: u8, now_ns: u64) -> Self {
        let state = match proto {
            PROTO_TCP => ConnState::TcpOpening,
            PROTO_UDP => ConnState::Udp,
            _ => ConnState::Other,
        };
        let bits = inbound_bit(dir, OPENED_INBOUND) | inbound_bit(dir, LAST_INBOUND);
        Self { last_ms: ms(now_ns), state, bits }
    }

    fn opened(&self) -> Direction {
        if self.bits & OPENED_INBOUND != 0 { Direction::Inbound } else { Direction::Outbound }
    }

    /// Sees one more packet in `dir`.
    #[inline]
    fn see(&mut self, dir: Direction, flags: u8, now_ns: u64) {
        let reply = dir != self.opened();
        let replied = self.bits & REPLIED != 0;
        let last_dir =
            if self.bits & LAST_INBOUND != 0 { Direction::Inbound } else { Direction::Outbound };
        self.state = match self.state {
            ConnState::TcpOpening | ConnState::TcpEstablished if flags & tcp_flags::FIN != 0 => {
                ConnState::TcpClosing
            }
            ConnState::TcpOpening if reply || replied => ConnState::TcpEstablished,
            ConnState::Udp if !reply && last_dir != dir && replied => {
                // A new request after a response: a second exchange.
                ConnState::UdpStream
            }
            s => s,
        };
        let opened = self.bits & OPENED_INBOUND;
        let replied = if reply || replied { REPLIED } else { 0 };
        self.bits = opened | inbound_bit(dir, LAST_INBOUND) | replied;
        self.last_ms = ms(now_ns);
    }
}

const _: () = assert!(std::mem::size_of::<Conn>() == 8);
const _: () = assert!(std::mem::size_of::<(ConnKey, Conn)>() == 24);

/// The tracked connections of one ENI, at most `max`. The table is keyed per instance
/// (`foldhash::fast::RandomState`): the tuples are the guests' choice, and a hash known in
/// advance would let a guest aim its connections at one probe group. Nothing iterates it in an
/// order that shows (expiry is a `retain`), so a run stays deterministic.
#[derive(Debug)]
pub struct Conntrack {
    table: HashMap<ConnKey, Conn, foldhash::fast::RandomState>,
    max: usize,
    timeouts: Timeouts,
    exceeded: u64,
}

impl Conntrack {
    /// A table of at most `max` connections expiring after `timeouts`.
    pub fn new(max: usize, timeouts: Timeouts) -> Self {
        Self { table: HashMap::default(), max, timeouts, exceeded: 0 }
    }

    /// Connections tracked (expired ones not yet noticed included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when it tracks nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Connections it can still take (`conntrack_allowance_available`).
    pub fn available(&self) -> usize {
        self.max.saturating_sub(self.table.len())
    }

    /// New connections refused for want of room (`conntrack_allowance_exceeded`).
    pub fn exceeded(&self) -> u64 {
        self.exceeded
    }

    /// If `t` belongs to a live connection, notes it and returns true; forgets it if expired.
    #[inline]
    fn continue_conn(&mut self, now_ns: u64, dir: Direction, t: &Tuple, flags: u8) -> bool {
        let key = ConnKey::of(dir, t);
        let Some(c) = self.table.get_mut(&key) else { return false };
        if c.expired(now_ns, &self.timeouts) {
            self.table.remove(&key);
            return false;
        }
        if t.proto == PROTO_TCP && flags & tcp_flags::RST != 0 {
            // A reset ends the connection; the reset itself passes.
            self.table.remove(&key);
            return true;
        }
        c.see(dir, flags, now_ns);
        true
    }

    /// Tracks a new connection opened by `t` going `dir`; false if the table is full.
    fn open(&mut self, now_ns: u64, dir: Direction, t: &Tuple) -> bool {
        if self.table.len() >= self.max {
            let timeouts = self.timeouts;
            self.table.retain(|_, c| !c.expired(now_ns, &timeouts));
            if self.table.len() >= self.max {
                self.exceeded += 1;
                return false;
            }
        }
        self.table.insert(ConnKey::of(dir, t), Conn::new(dir, t.proto, now_ns));
        true
    }
}

/// What an ENI's security groups decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SgVerdict {
    /// It belongs to a tracked connection: it passes whatever the rules say now.
    Tracked,
    /// The rules allow it and it opened a tracked connection.
    Opened,
    /// The rules allow it and its protocol goes untracked.
    Untracked,
    /// No rule allows it.
    Denied,
    /// The rules allow it but the conntrack allowance is spent.
    ConntrackFull,
}

impl SgVerdict {
    /// Whether it passes.
    pub fn passes(self) -> bool {
        matches!(self, SgVerdict::Tracked | SgVerdict::Opened | SgVerdict::Untracked)
    }
}

/// An ENI's security groups with their connection tracking: the stateful filter on its path.
#[derive(Debug)]
pub struct EniFilter {
    groups: CompiledGroups,
    conntrack: Conntrack,
}

impl EniFilter {
    /// The filter of an ENI with `groups`, tracking at most `max_connections`.
    pub fn new(groups: CompiledGroups, max_connections: usize, timeouts: Timeouts) -> Self {
        Self { groups, conntrack: Conntrack::new(max_connections, timeouts) }
    }

    /// Decides `t` going `dir` at `now_ns` (`flags`: its TCP flags, 0 otherwise).
    #[inline]
    pub fn decide(&mut self, now_ns: u64, dir: Direction, t: &Tuple, flags: u8) -> SgVerdict {
        if self.conntrack.continue_conn(now_ns, dir, t, flags) {
            return SgVerdict::Tracked;
        }
        if !self.groups.allows(dir, t) {
            return SgVerdict::Denied;
        }
        if self.groups.untracked(t.proto) {
            return SgVerdict::Untracked;
        }
        if self.conntrack.open(now_ns, dir, t) {
            SgVerdict::Opened
        } else {
            SgVerdict::ConntrackFull
        }
    }

    /// New rules (a group changed, or its members did): tracked connections live on.
    pub fn set_groups(&mut self, groups: CompiledGroups) {
        self.groups = groups;
    }

    /// The compiled groups.
    pub fn groups(&self) -> &CompiledGroups {
        &self.groups
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// Why the rules (not the connection table) allow `t` going `dir` or not.
    pub fn explain(&self, dir: Direction, t: &Tuple) -> SgReason {
        self.groups.explain(dir, t)
    }
}
