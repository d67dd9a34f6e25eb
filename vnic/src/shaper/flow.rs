//! Flows: EC2's 5-tuple (TCP, UDP) or 3-tuple (other protocols) and the table of live ones.
//!
//! A flow is kept once for both directions, keyed from the ENI's side (local address and port
//! first), with one rate-limiter timestamp per direction and the name of its queue in the shaper
//! while it has packets waiting. An entry is 57 bytes, packed: a 37-byte key, two 64-bit
//! theoretical arrival times (the outbound one carrying the flow's rate class in its low 4 bits:
//! picoseconds below 16 do not matter at any rate modelled) and a 32-bit queue name (the queues
//! themselves exist only for flows that have packets waiting). At 1,000,000 live flows the table
//! (2²¹ buckets of 57 bytes plus a control byte) costs 122 bytes per flow.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

pub use crate::frame::ip_proto::{TCP as PROTO_TCP, UDP as PROTO_UDP};

/// Which way a packet goes through the ENI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the instance (TX).
    Out,
    /// Received by the instance (RX).
    In,
}

/// A flow as seen from the ENI: local end first. Addresses are IPv6 (IPv4 as v4-mapped).
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct FlowKey {
    /// The ENI's address.
    pub local: [u8; 16],
    /// The peer's address.
    pub remote: [u8; 16],
    /// The ENI's port (0 for 3-tuple flows).
    pub local_port: u16,
    /// The peer's port (0 for 3-tuple flows).
    pub remote_port: u16,
    /// IP protocol.
    pub protocol: u8,
}

const _: () = assert!(size_of::<FlowKey>() == 37);

/// The two link-local service addresses, v4-mapped, as the `u128`s [`FlowKey`] compares.
const LINK_LOCAL_SERVICES: [u128; 2] = [
    u128::from_ne_bytes(crate::policy::flowlog::DNS_LINK_LOCAL.to_ipv6_mapped().octets()),
    u128::from_ne_bytes(crate::policy::flowlog::METADATA.to_ipv6_mapped().octets()),
];

impl PartialEq for FlowKey {
    /// Two 128-bit compares and one of the ports and protocol, not a byte-wise compare.
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        a == b
    }
}

impl Eq for FlowKey {}

impl FlowKey {
    /// The key as three words: local address, remote address, ports and protocol.
    #[inline(always)]
    fn words(&self) -> (u128, u128, u64) {
        let (local, remote) = (self.local, self.remote);
        let ports = u64::from(self.local_port) << 24
            | u64::from(self.remote_port) << 8
            | u64::from(self.protocol);
        (u128::from_ne_bytes(local), u128::from_ne_bytes(remote), ports)
    }
}

impl std::hash::Hash for FlowKey {
    /// Three word-sized writes instead of one per field and byte array.
    #[inline(always)]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (local, remote, ports) = self.words();
        state.write_u128(local);
        state.write_u128(remote);
        state.write_u64(ports);
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl FlowKey {
    /// The flow of a packet: `src`/`dst` as on the wire, oriented from the ENI's side by `dir`.
    /// Protocols other than TCP and UDP are keyed by addresses and protocol only.
    pub fn of_packet(
        dir: Direction,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> Self {
        let (src_port, dst_port) =
            if matches!(protocol, PROTO_TCP | PROTO_UDP) { (src_port, dst_port) } else { (0, 0) };
        let (local, remote, local_port, remote_port) = match dir {
            Direction::Out => (src, dst, src_port, dst_port),
            Direction::In => (dst, src, dst_port, src_port),
        };
        Self { local: v6(local), remote: v6(remote), local_port, remote_port, protocol }
    }

    /// The peer's address.
    pub fn remote_ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.remote);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// True for the link-local services EC2 rate-limits (Route 53 Resolver 169.254.169.253 and
    /// the instance metadata service 169.254.169.254).
    #[inline(always)]
    pub fn is_link_local_service(&self) -> bool {
        let remote = u128::from_ne_bytes(self.remote);
        remote == LINK_LOCAL_SERVICES[0] || remote == LINK_LOCAL_SERVICES[1]
    }
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lp, rp, proto) = (self.local_port, self.remote_port, self.protocol);
        let local = Ipv6Addr::from(self.local);
        write!(f, "{local}:{lp} <-> {}:{rp} proto {proto}", self.remote_ip())
    }
}

/// A live flow's limiter state.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Outbound theoretical arrival time in ps; the low 4 bits hold the rate class.
    out: u64,
    /// Inbound theoretical arrival time in ps.
    inbound: u64,
    /// 1 + the index of the flow's queue in the shaper's fair queue; 0 with nothing waiting.
    queue: u32,
}

/// Bits of [`FlowState::out`] that hold the rate class.
pub(crate) const CLASS_BITS: u64 = 0xF;

impl FlowState {
    pub(crate) fn new(class: u8) -> Self {
        Self { out: u64::from(class) & CLASS_BITS, inbound: 0, queue: 0 }
    }

    /// True while the flow has packets waiting in the shaper.
    pub fn is_waiting(&self) -> bool {
        self.queue != 0
    }

    /// The index of the flow's queue, while it has one.
    #[inline(always)]
    pub(crate) fn queue(&self) -> Option<u32> {
        let q = self.queue;
        q.checked_sub(1)
    }

    #[inline(always)]
    pub(crate) fn set_queue(&mut self, index: Option<u32>) {
        self.queue = index.map_or(0, |i| i + 1);
    }

    /// The flow's rate class.
    pub fn class(&self) -> u8 {
        let out = self.out;
        (out & CLASS_BITS) as u8
    }

    /// Theoretical arrival time of `dir`, ps.
    #[inline(always)]
    pub(crate) fn tat(&self, dir: Direction) -> u64 {
        match dir {
            Direction::Out => {
                let out = self.out;
                out & !CLASS_BITS
            }
            Direction::In => self.inbound,
        }
    }

    #[inline(always)]
    pub(crate) fn set_tat(&mut self, dir: Direction, tat: u64) {
        match dir {
            Direction::Out => {
                let class = self.out & CLASS_BITS;
                self.out = (tat & !CLASS_BITS) | class;
            }
            Direction::In => self.inbound = tat,
        }
    }

    /// Last time, ps, either direction was charged (the flow's idle clock).
    pub(crate) fn last_active(&self) -> u64 {
        let inbound = self.inbound;
        self.tat(Direction::Out).max(inbound)
    }
}

/// The live flows of one ENI, bounded by its conntrack allowance.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, FlowState, foldhash::fast::RandomState>,
    max_flows: usize,
}

impl FlowTable {
    /// A table that tracks at most `max_flows` flows.
    pub fn new(max_flows: usize) -> Self {
        Self { map: HashMap::default(), max_flows }
    }

    /// A table with room for `n` flows allocated up front.
    pub fn with_capacity(max_flows: usize, n: usize) -> Self {
        let mut map = HashMap::default();
        map.reserve(n.min(max_flows));
        Self { map, max_flows }
    }

    /// The flow's state, created with `class()` if new; `None` if it is new and the table is
    /// full (the conntrack allowance is exhausted).
    #[inline]
    pub fn get_or_insert(
        &mut self,
        key: FlowKey,
        class: impl FnOnce() -> u8,
    ) -> Option<&mut FlowState> {
        if self.map.len() >= self.max_flows {
            // Full: known flows only (a lookup, never an insertion).
            return self.map.get_mut(&key);
        }
        Some(self.map.entry(key).or_insert_with(|| FlowState::new(class())))
    }

    /// Forgets flows idle since before `idle_before_ps` (and with nothing queued); returns how
    /// many.
    pub fn expire_idle(&mut self, idle_before_ps: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, s| s.last_active() >= idle_before_ps || s.is_waiting());
        before - self.map.len()
    }

    /// A tracked flow's state.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState> {
        self.map.get_mut(key)
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True with no live flow.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The conntrack allowance.
    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    /// Bytes the table's buckets occupy (entries plus hashbrown's control bytes).
    pub fn memory_bytes(&self) -> usize {
        let buckets = (self.map.capacity() * 8 / 7).next_power_of_two();
        buckets * (size_of::<(FlowKey, FlowState)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_directions_of_a_connection_share_one_flow() {
        let out = FlowKey::of_packet(
            Direction::Out,
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            PROTO_TCP,
            40000,
            443,
        );
        let back = FlowKey::of_packet(
            Direction::In,
            ip("10.0.0.2"),
            ip("10.0.0.1"),
            PROTO_TCP,
            443,
            40000,
        );
        assert!(out == back);
        let icmp = FlowKey::of_packet(Direction::Out, ip("10.0.0.1"), ip("10.0.0.2"), 1, 7, 9);
        assert_eq!((icmp.local_port, icmp.remote_port), (0, 0), "3-tuple for non-TCP/UDP");
        assert!(
            FlowKey::of_packet(
                Direction::Out,
                ip("10.0.0.1"),
                ip("169.254.169.254"),
                PROTO_TCP,
                1,
                80
            )
            .is_link_local_service()
        );
        assert!(!out.is_link_local_service());
        assert_eq!(out.remote_ip(), ip("10.0.0.2"));
        assert_eq!(size_of::<(FlowKey, FlowState)>(), 37 + 8 + 8 + 4);
    }

    #[test]
    fn the_table_is_bounded_and_expires_idle_flows() {
        let mut t = FlowTable::new(2);
        let k = |p| {
            FlowKey::of_packet(Direction::Out, ip("10.0.0.1"), ip("10.0.0.9"), PROTO_UDP, p, 53)
        };
        t.get_or_insert(k(1), || 3).unwrap().set_tat(Direction::Out, 5_000);
        assert_eq!(
            t.get_or_insert(k(1), || 9).unwrap().class(),
            3,
            "existing flow keeps its class"
        );
        t.get_or_insert(k(2), || 3).unwrap().set_tat(Direction::In, 9_000);
        assert!(t.get_or_insert(k(3), || 3).is_none(), "conntrack allowance exhausted");
        assert_eq!(t.expire_idle(6_000), 1);
        assert!(t.get_or_insert(k(3), || 3).is_some());
        let s = FlowState::new(5);
        let mut s2 = s;
        s2.set_tat(Direction::Out, 123_456);
        assert_eq!((s2.class(), s2.tat(Direction::Out)), (5, 123_456 & !CLASS_BITS));
    }
}
