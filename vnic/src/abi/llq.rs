//! ENA's low-latency queues (LLQ): TX submission queues placed in device memory.
//!
//! With LLQ the driver does not leave descriptors in its own memory for the device to fetch: it
//! writes each packet's descriptors **and its first bytes** (the header) straight into the
//! device's LLQ BAR, one fixed-size entry per packet, so the device starts on a packet without a
//! DMA read; 6th-generation EC2 instances require it. The layout ENA's driver uses by default
//! (`ena_com_config_llq_info`): entries of 128 bytes, inline header, 2 descriptor slots before
//! the header, several descriptors per continuation entry:
//!
//! ```text
//! entry 0 of a packet   desc 0 (first, comp_req, req_id, header length, first buffer) | desc 1 | header (96 B)
//! entry 1.. if needed   up to 8 more descriptors (16 per 256-byte entry)
//! ```
//!
//! The first descriptor carries the header's length (`buff_addr_hi_hdr_sz` 31:24) and, if the
//! packet is longer than the header, the first buffer of the rest; a packet that fits in the
//! header has no buffer at all. ENA's "large header" option uses 256-byte entries (224 bytes of
//! header) in the same memory, so the ring holds half as many; 192-byte entries (160 bytes of
//! header) fit 512 too. Every descriptor of an entry
//! carries the phase of the entry's position ([`super::io::sq_phase`]).

use bytemuck::{Pod, Zeroable};

use super::io::TxDesc;

/// Header locations (`ena_admin_llq_header_location`).
pub mod header_location {
    /// The header sits in the entry after the descriptors.
    pub const INLINE: u16 = 1;
    /// Headers in a ring of their own (not modelled).
    pub const HEADER_RING: u16 = 2;
}

/// Entry sizes (`ena_admin_llq_ring_entry_size`), as bits.
pub mod entry_size {
    /// 128 bytes.
    pub const B128: u16 = 1;
    /// 192 bytes.
    pub const B192: u16 = 2;
    /// 256 bytes ("large header").
    pub const B256: u16 = 4;
}

/// Descriptor slots before the header (`ena_admin_llq_num_descs_before_header`), as bits.
pub mod descs_before_header {
    /// Two, ENA's default.
    pub const TWO: u16 = 2;
}

/// Stride control (`ena_admin_llq_stride_ctrl`).
pub mod stride {
    /// One descriptor per continuation entry.
    pub const SINGLE_DESC_PER_ENTRY: u16 = 1;
    /// As many as fit (ENA's default).
    pub const MULTIPLE_DESCS_PER_ENTRY: u16 = 2;
}

/// Descriptor slots before the header in the layout modelled.
pub const DESCS_BEFORE_HEADER: usize = 2;
const DESC_BYTES: usize = size_of::<TxDesc>();

/// An LLQ entry of `N` bytes.
pub trait LlqEntry: Pod {
    /// Its size.
    const BYTES: usize;
    /// Its bytes.
    fn bytes(&self) -> &[u8];
    /// Its bytes, to write.
    fn bytes_mut(&mut self) -> &mut [u8];

    /// Bytes of header the first entry of a packet holds: 96 in 128-byte entries, 224 in
    /// 256-byte ones.
    fn header_room() -> usize {
        Self::BYTES - DESCS_BEFORE_HEADER * DESC_BYTES
    }

    /// Descriptors a continuation entry holds.
    fn descs_per_entry() -> usize {
        Self::BYTES / DESC_BYTES
    }

    /// Descriptor `i` of the entry (`i` below [`Self::descs_per_entry`]).
    fn desc(&self, i: usize) -> TxDesc {
        let b = &self.bytes()[i * DESC_BYTES..(i + 1) * DESC_BYTES];
        bytemuck::pod_read_unaligned(b)
    }

    /// Writes descriptor `i`.
    fn set_desc(&mut self, i: usize, d: TxDesc) {
        self.bytes_mut()[i * DESC_BYTES..(i + 1) * DESC_BYTES]
            .copy_from_slice(bytemuck::bytes_of(&d));
    }

    /// The header area of a packet's first entry.
    fn header(&self) -> &[u8] {
        &self.bytes()[DESCS_BEFORE_HEADER * DESC_BYTES..]
    }

    /// The header area, to write.
    fn header_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[DESCS_BEFORE_HEADER * DESC_BYTES..]
    }
}

/// A 128-byte LLQ entry (ENA's default).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Entry128(pub [u8; 128]);

/// A 192-byte LLQ entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Entry192(pub [u8; 128], pub [u8; 64]);

/// A 256-byte LLQ entry (ENA's large-header option).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Entry256(pub [u8; 256]);

impl LlqEntry for Entry128 {
    const BYTES: usize = 128;
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl LlqEntry for Entry192 {
    const BYTES: usize = 192;
    fn bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::bytes_of_mut(self)
    }
}

impl LlqEntry for Entry256 {
    const BYTES: usize = 256;
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Entries a packet takes: one, plus continuations for the descriptors beyond the first
/// entry's two.
pub fn entries_for<E: LlqEntry>(descs: usize) -> usize {
    1 + descs.saturating_sub(DESCS_BEFORE_HEADER).div_ceil(E::descs_per_entry())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_entry_holds_two_descriptors_and_96_header_bytes() {
        assert_eq!(Entry128::header_room(), 96);
        assert_eq!(Entry256::header_room(), 224);
        assert_eq!((Entry192::header_room(), Entry192::descs_per_entry()), (160, 12));
        assert_eq!(size_of::<Entry192>(), 192);
        assert_eq!((Entry128::descs_per_entry(), Entry256::descs_per_entry()), (8, 16));
        assert_eq!(entries_for::<Entry128>(1), 1);
        assert_eq!(entries_for::<Entry128>(2), 1);
        assert_eq!(entries_for::<Entry128>(3), 2);
        assert_eq!(entries_for::<Entry128>(10), 2);
        assert_eq!(entries_for::<Entry128>(11), 3);
        let mut e = Entry128::zeroed();
        let d = TxDesc::new(0x1234, 100, 9).with_first(true);
        e.set_desc(1, d);
        assert_eq!(e.desc(1), d);
        assert_eq!(&e.0[16..20], &d.len_ctrl.to_le_bytes());
        e.header_mut()[0] = 0xab;
        assert_eq!(e.0[32], 0xab, "the header follows the two descriptor slots");
    }
}
