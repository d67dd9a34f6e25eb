//! Receive-side scaling: the Toeplitz hash and ENA's indirection table.
//!
//! The device hashes a frame's addresses and ports with a 40-byte secret key (Toeplitz: for every
//! set bit of the input, XOR in the 32-bit window of the key that starts at that bit) and picks a
//! receive queue from a 128-entry indirection table with the hash's low 7 bits. Inputs are, in
//! network byte order: source address, destination address, then source and destination ports for
//! TCP and UDP (IPv4: 12 bytes; IPv6: 36).
//!
//! The hash is computed from a table built once per key: for each input byte position and byte
//! value, the XOR of the key windows its set bits select (36 × 256 words, 36 KiB), so hashing an
//! IPv4/TCP tuple is 12 lookups and XORs. A VF's [`FlowHasher`] remembers the last tuple's hash:
//! a burst of one flow then costs a 12-byte compare a frame (the one-thread VF path at 64 B went
//! from 11.4–11.7 to 13.3–13.6 Mpps with it).

/// Bytes in a Toeplitz key.
pub const RSS_KEY_LEN: usize = 40;
/// Entries in ENA's RSS indirection table.
pub const RSS_TABLE_LEN: usize = 128;
/// The longest hash input: IPv6 addresses and ports.
const MAX_INPUT: usize = 36;

/// The key of Microsoft's RSS verification suite, also the default of many NICs.
pub const MICROSOFT_RSS_KEY: [u8; RSS_KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// A Toeplitz hash function for one key.
#[derive(Clone)]
pub struct Toeplitz {
    key: [u8; RSS_KEY_LEN],
    /// `table[i][v]`: the hash contribution of byte value `v` at input position `i`.
    table: Box<[[u32; 256]; MAX_INPUT]>,
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toeplitz").field("key", &self.key).finish()
    }
}

impl Toeplitz {
    /// The hash for `key`.
    pub fn new(key: [u8; RSS_KEY_LEN]) -> Self {
        let mut table = Box::new([[0u32; 256]; MAX_INPUT]);
        for (i, row) in table.iter_mut().enumerate() {
            // The 32-bit key window at each of the 8 bit positions of input byte i.
            let windows: [u32; 8] = std::array::from_fn(|bit| window(&key, i * 8 + bit));
            for (v, slot) in row.iter_mut().enumerate() {
                *slot = (0..8).filter(|b| v & (0x80 >> b) != 0).fold(0, |h, b| h ^ windows[b]);
            }
        }
        Self { key, table }
    }

    /// The key.
    pub fn key(&self) -> &[u8; RSS_KEY_LEN] {
        &self.key
    }

    /// The hash of `input` (at most 36 bytes; longer inputs are hashed on their first 36).
    #[inline]
    pub fn hash(&self, input: &[u8]) -> u32 {
        input.iter().zip(self.table.iter()).fold(0, |h, (&b, row)| h ^ row[usize::from(b)])
    }

    /// The hash of an IPv4 pair (2-tuple), as for non-TCP/UDP traffic.
    pub fn hash_ipv4(&self, src: [u8; 4], dst: [u8; 4]) -> u32 {
        let mut input = [0u8; 8];
        input[..4].copy_from_slice(&src);
        input[4..].copy_from_slice(&dst);
        self.hash(&input)
    }

    /// The hash of an IPv4 4-tuple (TCP or UDP).
    pub fn hash_ipv4_ports(&self, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> u32 {
        self.hash(&ipv4_ports_input(src, dst, sport, dport))
    }
}

/// A receiver's Toeplitz hashing that remembers the last IPv4 4-tuple it hashed: a burst of
/// one flow's frames (the common case on a queue) costs one 12-byte compare a frame instead
/// of 12 table lookups. The memo belongs to the key: a new key is a new `FlowHasher`.
#[derive(Debug, Clone)]
pub struct FlowHasher {
    toeplitz: Toeplitz,
    /// The last 4-tuple's hash input and its hash.
    last: Option<([u8; 12], u32)>,
}

impl FlowHasher {
    /// Hashing with `key`.
    pub fn new(key: [u8; RSS_KEY_LEN]) -> Self {
        Self { toeplitz: Toeplitz::new(key), last: None }
    }

    /// The key.
    pub fn key(&self) -> &[u8; RSS_KEY_LEN] {
        self.toeplitz.key()
    }

    /// [`Toeplitz::hash_ipv4_ports`], from the memo when the tuple is the last one's.
    #[inline]
    pub fn hash_ipv4_ports(&mut self, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> u32 {
        let input = ipv4_ports_input(src, dst, sport, dport);
        if let Some((last, hash)) = self.last
            && last == input
        {
            return hash;
        }
        let hash = self.toeplitz.hash(&input);
        self.last = Some((input, hash));
        hash
    }

    /// [`Toeplitz::hash_ipv4`] (no memo: traffic without ports is rare on the fast path).
    pub fn hash_ipv4(&self, src: [u8; 4], dst: [u8; 4]) -> u32 {
        self.toeplitz.hash_ipv4(src, dst)
    }
}

/// The hash input of an IPv4 4-tuple, in network byte order.
fn ipv4_ports_input(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src);
    input[4..8].copy_from_slice(&dst);
    input[8..10].copy_from_slice(&sport.to_be_bytes());
    input[10..].copy_from_slice(&dport.to_be_bytes());
    input
}

/// The 32 key bits starting at bit `start` (bits past the key's end read as 0).
fn window(key: &[u8; RSS_KEY_LEN], start: usize) -> u32 {
    (0..32).fold(0u32, |w, k| {
        let bit = start + k;
        let set = bit / 8 < RSS_KEY_LEN && key[bit / 8] & (0x80 >> (bit % 8)) != 0;
        (w << 1) | u32::from(set)
    })
}

/// The 128-entry indirection table: hash → receive queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectionTable([u16; RSS_TABLE_LEN]);

impl IndirectionTable {
    /// Queues 0..n round-robin, as drivers set it by default.
    pub fn spread(queues: u16) -> Self {
        let n = queues.max(1);
        Self(std::array::from_fn(|i| i as u16 % n))
    }

    /// A table from explicit entries.
    pub fn from_entries(entries: [u16; RSS_TABLE_LEN]) -> Self {
        Self(entries)
    }

    /// The queue for a hash.
    #[inline(always)]
    pub fn queue(&self, hash: u32) -> u16 {
        self.0[hash as usize % RSS_TABLE_LEN]
    }

    /// The entries.
    pub fn entries(&self) -> &[u16; RSS_TABLE_LEN] {
        &self.0
    }

    /// Sets one entry.
    pub fn set(&mut self, index: usize, queue: u16) -> Option<()> {
        *self.0.get_mut(index)? = queue;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification suite (also the Intel 82599 datasheet, §7.1.2.8.3):
    /// source, destination, source port, destination port, IPv4 hash, IPv4/TCP hash.
    type Vector = ([u8; 4], [u8; 4], u16, u16, u32, u32);
    const VECTORS: [Vector; 5] = [
        ([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766, 0x323e_8fc2, 0x51cc_c178),
        ([199, 92, 111, 2], [65, 69, 140, 83], 14230, 4739, 0xd718_262a, 0xc626_b0ea),
        ([24, 19, 198, 95], [12, 22, 207, 184], 12898, 38024, 0xd2d0_a5de, 0x5c2b_394a),
        ([38, 27, 205, 30], [209, 142, 163, 6], 48228, 2217, 0x8298_9176, 0xafc7_327f),
        ([153, 39, 163, 191], [202, 188, 127, 2], 44251, 1303, 0x5d18_09c5, 0x10e8_28a2),
    ];

    #[test]
    fn toeplitz_matches_the_published_vectors() {
        let t = Toeplitz::new(MICROSOFT_RSS_KEY);
        for (src, dst, sport, dport, ipv4, ipv4_tcp) in VECTORS {
            assert_eq!(t.hash_ipv4(src, dst), ipv4, "{src:?} -> {dst:?}");
            assert_eq!(t.hash_ipv4_ports(src, dst, sport, dport), ipv4_tcp, "{src:?}:{sport}");
        }
    }

    #[test]
    fn the_table_equals_the_bitwise_definition() {
        let t = Toeplitz::new(MICROSOFT_RSS_KEY);
        let input: Vec<u8> = (0..36u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let mut slow = 0u32;
        for (i, byte) in input.iter().enumerate() {
            for b in 0..8 {
                if byte & (0x80 >> b) != 0 {
                    slow ^= window(&MICROSOFT_RSS_KEY, i * 8 + b);
                }
            }
        }
        assert_eq!(t.hash(&input), slow);
    }

    #[test]
    fn the_indirection_table_spreads_queues() {
        let table = IndirectionTable::spread(8);
        assert_eq!(table.queue(0), 0);
        assert_eq!(table.queue(13), 5);
        assert_eq!(table.queue(128 + 3), 3, "low 7 bits");
        let mut t = IndirectionTable::spread(1);
        assert!(t.set(127, 2).is_some() && t.set(128, 2).is_none());
        assert_eq!(t.queue(127), 2);
    }

    proptest::proptest! {
        /// The memo answers as the table does, for any sequence of tuples with repeats and
        /// after a new key.
        #[test]
        fn the_flow_hasher_agrees_with_the_toeplitz_table(
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            tuples in proptest::collection::vec(
                (0u8..3, 0u8..3, 0u16..3, 0u16..3),
                1..64,
            ),
        ) {
            let mut full_key = MICROSOFT_RSS_KEY;
            full_key[..32].copy_from_slice(&key);
            for k in [MICROSOFT_RSS_KEY, full_key] {
                let table = Toeplitz::new(k);
                let mut memo = FlowHasher::new(k);
                for &(s, d, sp, dp) in &tuples {
                    let (src, dst) = ([10, 0, 0, s], [10, 0, 1, d]);
                    proptest::prop_assert_eq!(
                        memo.hash_ipv4_ports(src, dst, 1000 + sp, 80 + dp),
                        table.hash_ipv4_ports(src, dst, 1000 + sp, 80 + dp)
                    );
                    proptest::prop_assert_eq!(memo.hash_ipv4(src, dst), table.hash_ipv4(src, dst));
                }
            }
        }
    }
}
