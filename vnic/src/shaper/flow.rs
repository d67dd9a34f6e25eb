//! Flows: EC2's 5-tuple (TCP, UDP) or 3-tuple (other protocols) and the table of live ones.
//!
//! A flow is kept once for both directions, keyed from the ENI's side (local address and port
//! first), with one rate-limiter timestamp per direction and the name of its queue in the shaper
//! while it has packets waiting. An entry is 57 bytes, packed: a 37-byte key, two 64-bit
//! theoretical arrival times (the outbound one carrying the flow's rate class in its low 4 bits:
//! picoseconds below 16 do not matter at any rate modelled) and a 32-bit queue name (the queues
//! themselves exist only for flows that have packets waiting). With a control byte, an entry
//! fills one 64-byte bucket; at a load of at most 5/8, 1,000,000 live flows take 1,600,000
//! buckets: 102 bytes per flow. Of those flows, 69% sit in their home bucket, 15% in the next
//! and 16% further on (a mean displacement of 0.83 buckets, as linear probing predicts:
//! ½(1/(1 − α) − 1) at α = 0.625).

use std::hash::BuildHasher;
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
                self.out = Self::as_stored(dir, tat) | class;
            }
            Direction::In => self.inbound = tat,
        }
    }

    /// What [`tat`](Self::tat) gives back after `set_tat(dir, tat)`: outbound TATs lose the
    /// class's 4 bits (16 ps).
    #[inline(always)]
    pub(crate) fn as_stored(dir: Direction, tat: u64) -> u64 {
        match dir {
            Direction::Out => tat & !CLASS_BITS,
            Direction::In => tat,
        }
    }

    /// Last time, ps, either direction was charged (the flow's idle clock).
    pub(crate) fn last_active(&self) -> u64 {
        let inbound = self.inbound;
        self.tat(Direction::Out).max(inbound)
    }
}

/// One bucket of the flow table: a flow and its state in one 64-byte cache line, so a lookup
/// that finds its flow at home costs one cache miss.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Slot {
    key: FlowKey,
    state: FlowState,
    /// 0 for an empty bucket; else `0x80` | the low 7 bits of the key's hash (a mismatch is
    /// rejected on this byte before the key is compared).
    ctrl: u8,
}

const _: () = assert!(size_of::<Slot>() == 64);

impl Slot {
    /// An empty bucket: all zero bytes, as a fresh anonymous mapping reads.
    const EMPTY: Slot = Slot {
        key: FlowKey {
            local: [0; 16],
            remote: [0; 16],
            local_port: 0,
            remote_port: 0,
            protocol: 0,
        },
        state: FlowState { out: 0, inbound: 0, queue: 0 },
        ctrl: 0,
    };
}

/// Buckets at or above this many bytes live in their own anonymous mapping, advised to use
/// transparent huge pages: a 100 MB table on 4 KiB pages misses the TLB on nearly every lookup.
const MAPPED_BYTES: usize = 2 << 20;

/// The buckets' memory.
enum Buckets {
    Heap(Vec<Slot>),
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, len) = match self {
            Buckets::Heap(v) => ("heap", v.len()),
            Buckets::Mapped { len, .. } => ("mapped", *len),
        };
        write!(f, "{len} buckets ({kind})")
    }
}

impl Buckets {
    /// `n` empty buckets: a huge-page-advised mapping when large (the heap if mapping fails).
    fn new(n: usize) -> Self {
        let bytes = n * size_of::<Slot>();
        if bytes >= MAPPED_BYTES
            && let Ok(map) = memmap2::MmapMut::map_anon(bytes)
        {
            #[cfg(target_os = "linux")]
            // Only a hint: without huge pages the table still works, on 4 KiB pages.
            let _ = map.advise(memmap2::Advice::HugePage);
            return Buckets::Mapped { map, len: n };
        }
        Buckets::Heap(vec![Slot::EMPTY; n])
    }

    #[inline(always)]
    fn slots(&self) -> &[Slot] {
        match self {
            Buckets::Heap(v) => v,
            // SAFETY: the mapping is `len * 64` bytes, page-aligned (so 64-byte aligned), lives
            // as long as `self`, and every bit pattern is a valid `Slot` (integers and byte
            // arrays only; a fresh anonymous mapping reads as zeros, an empty bucket).
            Buckets::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<Slot>(), *len)
            },
        }
    }

    #[inline(always)]
    fn slots_mut(&mut self) -> &mut [Slot] {
        match self {
            Buckets::Heap(v) => v,
            // SAFETY: as in `slots`, and `&mut self` makes this the only view of the mapping.
            Buckets::Mapped { map, len } => unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<Slot>(), *len)
            },
        }
    }
}

/// Buckets per live flow the table keeps at most: a load of at most 5/8, where linear probing
/// finds a flow in 1.8 buckets on average (Knuth: ½(1 + 1/(1 − α)) at α = 0.625) and the
/// table stays within 128 bytes per flow.
const LOAD_NUM: usize = 5;
const LOAD_DEN: usize = 8;
/// The fewest buckets a table has (one 4 KiB page).
const MIN_BUCKETS: usize = 64;

/// The live flows of one ENI, bounded by its conntrack allowance.
///
/// An open-addressing table with linear probing over 64-byte buckets (one flow each, see the
/// module docs for the entry), sized to a load of at most 5/8: 102 bytes per flow at 1,000,000
/// flows (1,600,000 buckets). A key's home bucket is its 64-bit hash scaled to the bucket count
/// (a multiply, no modulo, so the count need not be a power of two). The hash is keyed at random
/// per table (`foldhash::quality`): the flows are a guest's choice, and a known hash would let
/// a guest pile its flows into one probe sequence. `foldhash::fast` is not enough: its high bits
/// follow sequential ports, and 100,000 such flows lay from 0.02 to 47 buckets from home on
/// average depending on the seed (30 seeds), against 0.82–0.85 with `quality` (40 seeds). [`FlowTable::prefetch`] starts a bucket's cache
/// miss ahead of its lookup, which is how [`super::Shaper::admit_burst`] overlaps a burst's
/// misses.
#[derive(Debug)]
pub struct FlowTable {
    buckets: Buckets,
    len: usize,
    max_flows: usize,
    hasher: foldhash::quality::RandomState,
    /// Bumped whenever a flow may change buckets: an insert (which may grow the table) and a
    /// removal (which shifts later flows back). While it stands still, an index from
    /// [`FlowTable::find_or_insert`] stays the flow's.
    generation: u64,
}

impl FlowTable {
    /// A table that tracks at most `max_flows` flows.
    pub fn new(max_flows: usize) -> Self {
        Self::with_capacity(max_flows, 0)
    }

    /// A table with room for `n` flows allocated up front.
    pub fn with_capacity(max_flows: usize, n: usize) -> Self {
        let buckets = Buckets::new(Self::buckets_for(n.min(max_flows)));
        Self {
            buckets,
            len: 0,
            max_flows,
            hasher: foldhash::quality::RandomState::default(),
            generation: 0,
        }
    }

    /// Buckets that hold `n` flows within the load limit, a whole page of them.
    fn buckets_for(n: usize) -> usize {
        (n * LOAD_DEN).div_ceil(LOAD_NUM).next_multiple_of(MIN_BUCKETS).max(MIN_BUCKETS)
    }

    /// The key's hash, which [`FlowTable::find_or_insert`] and [`FlowTable::prefetch`] take.
    #[inline(always)]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline(always)]
    fn home(hash: u64, buckets: usize) -> usize {
        ((u128::from(hash) * buckets as u128) >> 64) as usize
    }

    #[inline(always)]
    fn ctrl(hash: u64) -> u8 {
        0x80 | (hash as u8 & 0x7F)
    }

    /// Starts loading the home bucket of the key with `hash` into the cache. (Loading the
    /// next one or two as well, where about 3 flows in 10 at a load of 5/8 lie, measured no
    /// faster at 1,000,000 flows.)
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        let slots = self.buckets.slots();
        let home = slots.as_ptr().wrapping_add(Self::home(hash, slots.len()));
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch never faults and changes no state the program can observe;
            // the address is a bucket of this table (`home` < the bucket count).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(home.cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = home;
    }

    /// The bucket holding `key`, or the empty bucket that ends its probe sequence.
    #[inline(always)]
    fn probe(slots: &[Slot], hash: u64, key: &FlowKey) -> (usize, bool) {
        let ctrl = Self::ctrl(hash);
        let mut i = Self::home(hash, slots.len());
        loop {
            let s = &slots[i];
            if s.ctrl == ctrl && s.key == *key {
                return (i, true);
            }
            if s.ctrl == 0 {
                return (i, false);
            }
            i += 1;
            if i == slots.len() {
                i = 0;
            }
        }
    }

    /// The bucket of the flow with `hash` (from [`FlowTable::hash`]), created with `class()` if
    /// new, and whether it was created; `None` if it is new and the table is full (the conntrack
    /// allowance is exhausted). The index names the flow until the next insertion or removal
    /// ([`FlowTable::state`]).
    #[inline]
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        key: &FlowKey,
        class: impl FnOnce() -> u8,
    ) -> Option<(usize, bool)> {
        let (mut i, found) = Self::probe(self.buckets.slots(), hash, key);
        if found {
            return Some((i, false));
        }
        if self.len >= self.max_flows {
            return None;
        }
        if (self.len + 1) * LOAD_DEN > self.buckets.slots().len() * LOAD_NUM {
            self.grow();
            i = Self::probe(self.buckets.slots(), hash, key).0;
        }
        let state = FlowState::new(class());
        self.buckets.slots_mut()[i] = Slot { key: *key, state, ctrl: Self::ctrl(hash) };
        self.len += 1;
        self.generation += 1;
        Some((i, true))
    }

    /// Changes whenever a flow may have moved to another bucket; see the field.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The state of the flow in bucket `index` (from [`FlowTable::find_or_insert`]).
    #[inline(always)]
    pub fn state(&mut self, index: usize) -> &mut FlowState {
        &mut self.buckets.slots_mut()[index].state
    }

    /// The flow's state, created with `class()` if new; `None` if it is new and the table is
    /// full (the conntrack allowance is exhausted).
    #[inline]
    pub fn get_or_insert(
        &mut self,
        key: FlowKey,
        class: impl FnOnce() -> u8,
    ) -> Option<&mut FlowState> {
        let hash = self.hash(&key);
        let (i, _) = self.find_or_insert(hash, &key, class)?;
        Some(self.state(i))
    }

    /// Twice the buckets, every flow moved to its new home.
    fn grow(&mut self) {
        let twice = Buckets::new(self.buckets.slots().len() * 2);
        let old = std::mem::replace(&mut self.buckets, twice);
        let slots = self.buckets.slots_mut();
        for s in old.slots().iter().filter(|s| s.ctrl != 0) {
            let hash = self.hasher.hash_one(s.key);
            let (i, _) = Self::probe(slots, hash, &s.key);
            slots[i] = *s;
        }
    }

    /// Empties bucket `i` and moves later members of its probe run back into the gap, so
    /// that no probe sequence passes an empty bucket before its key (Knuth's Algorithm R).
    fn remove_at(&mut self, mut i: usize) {
        let n = self.buckets.slots().len();
        let mut j = i;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let s = self.buckets.slots()[j];
            if s.ctrl == 0 {
                break;
            }
            let home = Self::home(self.hasher.hash_one(s.key), n);
            // `s` may fill the gap at `i` unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.buckets.slots_mut()[i] = s;
                i = j;
            }
        }
        self.buckets.slots_mut()[i] = Slot::EMPTY;
        self.len -= 1;
        self.generation += 1;
    }

    /// Forgets flows idle since before `idle_before_ps` (and with nothing queued); returns how
    /// many.
    pub fn expire_idle(&mut self, idle_before_ps: u64) -> usize {
        let idle: Vec<FlowKey> = self
            .buckets
            .slots()
            .iter()
            .filter(|s| {
                s.ctrl != 0 && s.state.last_active() < idle_before_ps && !s.state.is_waiting()
            })
            .map(|s| s.key)
            .collect();
        for key in &idle {
            let (i, found) = Self::probe(self.buckets.slots(), self.hash(key), key);
            if found {
                self.remove_at(i);
            }
        }
        idle.len()
    }

    /// A tracked flow's state.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState> {
        let (i, found) = Self::probe(self.buckets.slots(), self.hash(key), key);
        found.then(|| self.state(i))
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True with no live flow.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The conntrack allowance.
    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    /// Bytes the table's buckets occupy.
    pub fn memory_bytes(&self) -> usize {
        size_of_val(self.buckets.slots())
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

    fn udp(port: u16) -> FlowKey {
        FlowKey::of_packet(Direction::Out, ip("10.0.0.1"), ip("10.0.0.9"), PROTO_UDP, port, 53)
    }

    #[test]
    fn a_million_flows_fit_in_128_bytes_each() {
        // 10⁶ flows at a load of at most 5/8 need 1.6 × 10⁶ buckets (a multiple of 64 already),
        // one 64-byte cache line each.
        let t = FlowTable::with_capacity(1_000_000, 1_000_000);
        assert_eq!(size_of::<Slot>(), 64);
        assert_eq!(t.memory_bytes(), 1_600_000 * 64);
        assert!(t.memory_bytes() / 1_000_000 <= 128);
    }

    #[test]
    fn growth_keeps_every_flow_and_its_state() {
        let mut t = FlowTable::new(10_000);
        assert_eq!(t.memory_bytes(), MIN_BUCKETS * 64, "one page to start");
        for p in 0..5_000u16 {
            t.get_or_insert(udp(p), || (p % 16) as u8).unwrap().set_tat(Direction::In, p.into());
        }
        assert_eq!(t.len(), 5_000);
        // The smallest page-multiple of buckets, doubling from 64, above 5000 × 8/5 = 8000.
        assert_eq!(t.memory_bytes(), 8_192 * 64);
        for p in 0..5_000u16 {
            let s = t.get_mut(&udp(p)).expect("every flow survives growth");
            assert_eq!((s.class(), s.tat(Direction::In)), ((p % 16) as u8, u64::from(p)));
        }
        assert!(t.get_mut(&udp(5_000)).is_none());
    }

    /// The mean number of buckets `keys` lie past their home, and the table's load.
    fn mean_displacement(keys: &[FlowKey]) -> (f64, f64) {
        let mut t = FlowTable::with_capacity(keys.len(), keys.len());
        for k in keys {
            t.get_or_insert(*k, || 0).unwrap();
        }
        let slots = t.buckets.slots();
        let displaced: usize = keys
            .iter()
            .map(|k| {
                let hash = t.hash(k);
                let (at, found) = FlowTable::probe(slots, hash, k);
                assert!(found);
                (at + slots.len() - FlowTable::home(hash, slots.len())) % slots.len()
            })
            .sum();
        (displaced as f64 / keys.len() as f64, keys.len() as f64 / slots.len() as f64)
    }

    #[test]
    fn flows_lie_no_further_from_home_than_linear_probing_predicts() {
        // 100,000 flows fill 160,000 buckets (α = 5/8). With a uniform hash, linear probing
        // displaces a flow ½(1/(1 − α) − 1) = 0.833 buckets on average; keys that differ in
        // only a few bits (what a guest controls: its ports, its peers) must not cluster worse.
        let n = 100_000u32;
        let tcp = |remote: IpAddr, lp: u16, rp: u16| {
            FlowKey::of_packet(Direction::Out, ip("10.0.0.1"), remote, PROTO_TCP, lp, rp)
        };
        let v4 = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(i));
        type KeyOf<'a> = Box<dyn Fn(u32) -> FlowKey + 'a>;
        let patterns: [(&str, KeyOf<'_>); 4] = [
            (
                "ports",
                Box::new(|i| tcp(ip("10.0.0.2"), (i % 50_000) as u16, 443 + (i / 50_000) as u16)),
            ),
            ("low address bits", Box::new(move |i| tcp(v4(0x0A00_0000 | i), 40_000, 443))),
            ("high address bits", Box::new(move |i| tcp(v4(i << 15 | 7), 40_000, 443))),
            (
                "IPv6 interface ids",
                Box::new(|i| {
                    let peer =
                        Ipv6Addr::new(0x2600, 0x1f18, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
                    tcp(IpAddr::V6(peer), 40_000, 443)
                }),
            ),
        ];
        for (name, key) in patterns {
            let keys: Vec<FlowKey> = (0..n).map(&key).collect();
            let (mean, alpha) = mean_displacement(&keys);
            assert_eq!(alpha, 0.625);
            let predicted = 0.5 * (1.0 / (1.0 - alpha) - 1.0);
            assert!(mean <= predicted * 1.15, "{name}: mean {mean:.3}, predicted {predicted:.3}");
        }
    }

    proptest::proptest! {
        /// Insertions, lookups and expiry (the backward-shift removal) against a `HashMap`: every
        /// flow the model holds is found with its state, none other is, and the counts agree; no
        /// flow changes buckets in a step that leaves the generation where it was.
        #[test]
        fn the_table_agrees_with_a_map(
            ops in proptest::collection::vec((0u16..300, 0u64..1_000, proptest::bool::ANY), 1..600),
            max_flows in 1usize..400,
        ) {
            let mut t = FlowTable::new(max_flows);
            let mut model = std::collections::HashMap::new();
            // Every live flow's bucket: the same after any step that left the generation alone.
            let buckets = |t: &FlowTable| -> Vec<(u16, usize)> {
                (0..300u16)
                    .filter_map(|p| {
                        let key = udp(p);
                        let (i, found) = FlowTable::probe(t.buckets.slots(), t.hash(&key), &key);
                        found.then_some((p, i))
                    })
                    .collect()
            };
            for (port, at, expire) in ops {
                let (generation, before) = (t.generation(), buckets(&t));
                if expire {
                    let gone = t.expire_idle(at);
                    let before = model.len();
                    model.retain(|_, tat: &mut u64| *tat >= at);
                    proptest::prop_assert_eq!(gone, before - model.len());
                } else {
                    let fits = model.len() < max_flows || model.contains_key(&port);
                    match t.get_or_insert(udp(port), || 1) {
                        Some(s) => {
                            proptest::prop_assert!(fits);
                            s.set_tat(Direction::In, at);
                            model.insert(port, at);
                        }
                        None => proptest::prop_assert!(!fits, "refused with room"),
                    }
                }
                proptest::prop_assert_eq!(t.len(), model.len());
                if t.generation() == generation {
                    proptest::prop_assert_eq!(buckets(&t), before, "moved, generation unchanged");
                }
            }
            for port in 0..300u16 {
                let found = t.get_mut(&udp(port)).map(|s| s.tat(Direction::In));
                proptest::prop_assert_eq!(found, model.get(&port).copied());
            }
        }
    }
}
