//! ENA's descriptor and completion layouts, with their bit positions in one place.
//!
//! | entry | size | phase bit |
//! | --- | --- | --- |
//! | [`TxDesc`] (TX submission) | 16 B | `len_ctrl` bit 24 |
//! | [`TxCompletion`] | 8 B | `flags` bit 0 (word 0 bit 24) |
//! | [`RxDesc`] (RX submission) | 16 B | `ctrl` bit 0 |
//! | [`RxCompletion`] | 16 B | `status` bit 24 |
//!
//! Field widths follow the public ENA driver headers (`ena_eth_io_defs.h`): a request id is 16
//! bits (split 6 + 10 across two words in the TX descriptor), a buffer address 48 bits. All fields
//! are little endian on the wire; this crate targets little-endian hosts, as ENA does.
//!
//! **ENA's rules for a submission ring** ([`sq_phase`]): every descriptor carries the ring's phase,
//! 1 on the first lap and flipped at every wrap, so a device can tell a descriptor written on
//! this lap from a stale one. A TX frame's chain (`ena_com_prepare_tx`) sets `first`,
//! `comp_req` and the request id on its **first** descriptor only; the others carry their
//! buffer, the phase and, on the last, `last`. The device completes the chain once, with the
//! first descriptor's request id.

use bytemuck::{Pod, Zeroable};

use crate::ring::CompletionEntry;

#[cfg(target_endian = "big")]
compile_error!("vnic models ENA's little-endian descriptors on little-endian hosts only");

/// The phase a submission descriptor at ring position `position` (counted from the ring's
/// creation, wrapping) carries: 1 on even laps, 0 on odd ones. Every ring's depth is a power of
/// two ([`depth_is_valid`](crate::ring::depth_is_valid)), so the lap's parity is the bit
/// `depth` of the position: a test, where `(position / depth) & 1` was a division per
/// descriptor on the engine's path (two a frame; a profile of the one-thread VF path put 3% of
/// its samples on them).
#[inline(always)]
pub const fn sq_phase(position: u32, depth: u32) -> bool {
    debug_assert!(depth.is_power_of_two());
    position & depth == 0
}

/// A TX completion's size in 32-bit words, as `CREATE_CQ` gives it (`cq_entry_size_words`).
pub const TX_CQ_ENTRY_WORDS: u8 = (size_of::<TxCompletion>() / 4) as u8;
/// An RX completion's size in 32-bit words.
pub const RX_CQ_ENTRY_WORDS: u8 = (size_of::<RxCompletion>() / 4) as u8;

/// Largest buffer address a descriptor can carry (48 bits).
pub const MAX_DMA_ADDR: u64 = (1 << 48) - 1;

/// Bit positions of [`TxDesc`].
pub mod tx_field {
    /// `len_ctrl` 15:0, buffer length in bytes.
    pub const LENGTH_MASK: u32 = 0xffff;
    /// `len_ctrl` 21:16, request id bits 15:10.
    pub const REQ_ID_HI_SHIFT: u32 = 16;
    /// Width mask of the request id's high part.
    pub const REQ_ID_HI_MASK: u32 = 0x3f;
    /// `len_ctrl` 23, meta descriptor.
    pub const META_DESC: u32 = 1 << 23;
    /// `len_ctrl` 24, phase.
    pub const PHASE: u32 = 1 << 24;
    /// `len_ctrl` 26, first descriptor of a frame.
    pub const FIRST: u32 = 1 << 26;
    /// `len_ctrl` 27, last descriptor of a frame.
    pub const LAST: u32 = 1 << 27;
    /// `len_ctrl` 28, completion requested.
    pub const COMP_REQ: u32 = 1 << 28;
    /// `meta_ctrl` 31:22, request id bits 9:0.
    pub const REQ_ID_LO_SHIFT: u32 = 22;
    /// Width mask of the request id's low part.
    pub const REQ_ID_LO_MASK: u32 = 0x3ff;
    /// `buff_addr_hi_hdr_sz` 15:0, address bits 47:32.
    pub const ADDR_HI_MASK: u32 = 0xffff;
    /// `buff_addr_hi_hdr_sz` 31:24, header length.
    pub const HEADER_LEN_SHIFT: u32 = 24;
}

/// Bits of [`RxDesc::ctrl`].
pub mod rx_field {
    /// Phase.
    pub const PHASE: u8 = 1 << 0;
    /// First buffer of a frame.
    pub const FIRST: u8 = 1 << 2;
    /// Last buffer of a frame.
    pub const LAST: u8 = 1 << 3;
    /// Completion requested.
    pub const COMP_REQ: u8 = 1 << 4;
}

/// Bits of [`RxCompletion::status`].
pub mod rx_cq_field {
    /// Phase.
    pub const PHASE: u32 = 1 << 24;
    /// First buffer of a frame.
    pub const FIRST: u32 = 1 << 26;
    /// Last buffer of a frame.
    pub const LAST: u32 = 1 << 27;
}

/// Bits of [`TxCompletion::flags`].
pub mod tx_cq_field {
    /// Phase.
    pub const PHASE: u8 = 1 << 0;
}

/// ENA TX submission descriptor (16 bytes): one buffer of an outgoing frame.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TxDesc {
    /// Length, request id high bits, meta / phase / first / last / comp_req flags.
    pub len_ctrl: u32,
    /// Request id low bits (31:22) and meta-descriptor fields.
    pub meta_ctrl: u32,
    /// Buffer address bits 31:0.
    pub buff_addr_lo: u32,
    /// Buffer address bits 47:32 (15:0) and header length (31:24).
    pub buff_addr_hi_hdr_sz: u32,
}

impl TxDesc {
    /// A descriptor for `len` bytes at `addr` (masked to 48 bits) with request id `req_id`.
    pub const fn new(addr: u64, len: u16, req_id: u16) -> Self {
        use tx_field::*;
        let req_id = req_id as u32;
        Self {
            len_ctrl: len as u32 | ((req_id >> 10) & REQ_ID_HI_MASK) << REQ_ID_HI_SHIFT,
            meta_ctrl: (req_id & REQ_ID_LO_MASK) << REQ_ID_LO_SHIFT,
            buff_addr_lo: addr as u32,
            buff_addr_hi_hdr_sz: ((addr >> 32) as u32) & ADDR_HI_MASK,
        }
    }

    const fn flag(self, bit: u32, on: bool) -> Self {
        let mut d = self;
        d.len_ctrl = if on { d.len_ctrl | bit } else { d.len_ctrl & !bit };
        d
    }

    /// Sets the first-of-frame flag.
    pub const fn with_first(self, on: bool) -> Self {
        self.flag(tx_field::FIRST, on)
    }
    /// Sets the last-of-frame flag.
    pub const fn with_last(self, on: bool) -> Self {
        self.flag(tx_field::LAST, on)
    }
    /// Sets the completion-requested flag.
    pub const fn with_comp_req(self, on: bool) -> Self {
        self.flag(tx_field::COMP_REQ, on)
    }
    /// Sets the phase bit.
    pub const fn with_phase(self, on: bool) -> Self {
        self.flag(tx_field::PHASE, on)
    }
    /// Sets the header length.
    pub const fn with_header_len(mut self, len: u8) -> Self {
        self.buff_addr_hi_hdr_sz = (self.buff_addr_hi_hdr_sz & tx_field::ADDR_HI_MASK)
            | (len as u32) << tx_field::HEADER_LEN_SHIFT;
        self
    }

    /// Buffer length in bytes.
    pub const fn len(&self) -> u16 {
        (self.len_ctrl & tx_field::LENGTH_MASK) as u16
    }
    /// True for a zero-length buffer.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Request id (16 bits, reassembled from both words).
    pub const fn req_id(&self) -> u16 {
        use tx_field::*;
        let hi = (self.len_ctrl >> REQ_ID_HI_SHIFT) & REQ_ID_HI_MASK;
        let lo = (self.meta_ctrl >> REQ_ID_LO_SHIFT) & REQ_ID_LO_MASK;
        ((hi << 10) | lo) as u16
    }
    /// Buffer address (48 bits).
    pub const fn addr(&self) -> u64 {
        ((self.buff_addr_hi_hdr_sz & tx_field::ADDR_HI_MASK) as u64) << 32
            | self.buff_addr_lo as u64
    }
    /// Header length.
    pub const fn header_len(&self) -> u8 {
        (self.buff_addr_hi_hdr_sz >> tx_field::HEADER_LEN_SHIFT) as u8
    }
    /// First buffer of a frame.
    pub const fn is_first(&self) -> bool {
        self.len_ctrl & tx_field::FIRST != 0
    }
    /// Last buffer of a frame.
    pub const fn is_last(&self) -> bool {
        self.len_ctrl & tx_field::LAST != 0
    }
    /// Completion requested.
    pub const fn comp_req(&self) -> bool {
        self.len_ctrl & tx_field::COMP_REQ != 0
    }
    /// Phase bit.
    pub const fn phase(&self) -> bool {
        self.len_ctrl & tx_field::PHASE != 0
    }
}

impl std::fmt::Debug for TxDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxDesc")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .field("req_id", &self.req_id())
            .field("first", &self.is_first())
            .field("last", &self.is_last())
            .field("comp_req", &self.comp_req())
            .field("phase", &self.phase())
            .finish()
    }
}

/// ENA TX completion (8 bytes): the device is done with request `req_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct TxCompletion {
    /// Request id of the finished descriptor chain.
    pub req_id: u16,
    /// Completion status (0 = success).
    pub status: u8,
    /// Bit 0: phase.
    pub flags: u8,
    /// Sub-queue id.
    pub sub_qid: u16,
    /// Submission queue head index after this completion.
    pub sq_head_idx: u16,
}

impl CompletionEntry for TxCompletion {
    const PHASE_WORD: usize = 0;
    const PHASE_MASK: u32 = (tx_cq_field::PHASE as u32) << 24;
}

/// ENA RX submission descriptor (16 bytes): an empty buffer posted for an incoming frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RxDesc {
    /// Buffer length in bytes (0 means 64 KiB).
    pub length: u16,
    /// Reserved.
    pub reserved2: u8,
    /// Phase (0), first (2), last (3), comp_req (4).
    pub ctrl: u8,
    /// Request id.
    pub req_id: u16,
    /// Reserved.
    pub reserved6: u16,
    /// Buffer address bits 31:0.
    pub buff_addr_lo: u32,
    /// Buffer address bits 47:32.
    pub buff_addr_hi: u16,
    /// Reserved.
    pub reserved16_w3: u16,
}

impl RxDesc {
    /// A single-buffer descriptor (first, last and comp_req set) for `len` bytes at `addr`.
    pub const fn new(addr: u64, len: u16, req_id: u16) -> Self {
        Self {
            length: len,
            reserved2: 0,
            ctrl: rx_field::FIRST | rx_field::LAST | rx_field::COMP_REQ,
            req_id,
            reserved6: 0,
            buff_addr_lo: addr as u32,
            buff_addr_hi: (addr >> 32) as u16,
            reserved16_w3: 0,
        }
    }
    /// Sets the phase bit.
    pub const fn with_phase(mut self, on: bool) -> Self {
        self.ctrl = if on { self.ctrl | rx_field::PHASE } else { self.ctrl & !rx_field::PHASE };
        self
    }
    /// Phase bit.
    pub const fn phase(&self) -> bool {
        self.ctrl & rx_field::PHASE != 0
    }
    /// Buffer address (48 bits).
    pub const fn addr(&self) -> u64 {
        (self.buff_addr_hi as u64) << 32 | self.buff_addr_lo as u64
    }
    /// Buffer length in bytes; ENA's 0 stands for 64 KiB.
    pub const fn buffer_len(&self) -> u32 {
        if self.length == 0 { 65536 } else { self.length as u32 }
    }
}

/// ENA RX completion (16 bytes): a frame (or one buffer of it) has landed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RxCompletion {
    /// Protocol and flag bits; phase 24, first 26, last 27.
    pub status: u32,
    /// Bytes written into the buffer.
    pub length: u16,
    /// Request id of the buffer used.
    pub req_id: u16,
    /// RSS hash of the frame.
    pub hash: u32,
    /// Sub-queue id.
    pub sub_qid: u16,
    /// Offset of the data in the buffer.
    pub offset: u8,
    /// Reserved.
    pub reserved: u8,
}

impl RxCompletion {
    /// First buffer of a frame.
    pub const fn is_first(&self) -> bool {
        self.status & rx_cq_field::FIRST != 0
    }
    /// Last buffer of a frame.
    pub const fn is_last(&self) -> bool {
        self.status & rx_cq_field::LAST != 0
    }
    /// Phase bit.
    pub const fn phase(&self) -> bool {
        self.status & rx_cq_field::PHASE != 0
    }
}

impl CompletionEntry for RxCompletion {
    const PHASE_WORD: usize = 0;
    const PHASE_MASK: u32 = rx_cq_field::PHASE;
}

const _: () = {
    assert!(size_of::<TxDesc>() == 16);
    assert!(size_of::<TxCompletion>() == 8);
    assert!(size_of::<RxDesc>() == 16);
    assert!(size_of::<RxCompletion>() == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_descriptor_fields_round_trip_at_ena_bit_positions() {
        let d = TxDesc::new(0xABCD_1234_5678, 1500, 0xFFFF)
            .with_first(true)
            .with_last(true)
            .with_comp_req(true)
            .with_phase(true)
            .with_header_len(42);
        assert_eq!(d.addr(), 0xABCD_1234_5678);
        assert_eq!(d.len(), 1500);
        assert_eq!(d.req_id(), 0xFFFF);
        assert_eq!(d.header_len(), 42);
        assert!(d.is_first() && d.is_last() && d.comp_req() && d.phase());
        // Word-level positions from ena_eth_io_defs.h.
        assert_eq!(d.len_ctrl & 0xffff, 1500);
        assert_eq!((d.len_ctrl >> 16) & 0x3f, 0x3f);
        assert_eq!(d.len_ctrl >> 24 & 1, 1);
        assert_eq!(d.meta_ctrl >> 22, 0x3ff);
        assert_eq!(d.buff_addr_hi_hdr_sz, 42 << 24 | 0xABCD);
        let d = TxDesc::new(1 << 50 | 0x10, 64, 0x0401);
        assert_eq!(d.addr(), 0x10, "addresses are 48 bits");
        assert_eq!(d.req_id(), 0x0401);
        assert!(!d.is_first() && !d.phase());
        assert!(d.with_phase(true).with_phase(false) == d);
    }

    #[test]
    fn completion_phase_bits_sit_where_the_ring_looks() {
        let c = TxCompletion { flags: tx_cq_field::PHASE, ..Default::default() };
        let word = u32::from_le_bytes(bytemuck::bytes_of(&c)[..4].try_into().unwrap());
        assert_eq!(word, TxCompletion::PHASE_MASK);
        let r =
            RxCompletion { status: rx_cq_field::PHASE | rx_cq_field::LAST, ..Default::default() };
        assert!(r.phase() && r.is_last() && !r.is_first());
        let rx = RxDesc::new(0x1_0000_2000, 0, 7);
        assert_eq!(rx.addr(), 0x1_0000_2000);
        assert_eq!(rx.buffer_len(), 65536);
    }

    #[test]
    fn the_phase_is_one_on_even_laps_and_flips_at_every_wrap() {
        // Counted lap by lap, never by the bit the function tests: positions 0..depth are lap
        // 0 (phase 1), the next depth lap 1 (phase 0), and so on, through the u32 wrap.
        for shift in 0..=14 {
            let depth = 1u32 << shift;
            let (mut lap_phase, mut in_lap) = (true, 0u32);
            for position in 0..4 * depth {
                assert_eq!(sq_phase(position, depth), lap_phase, "depth {depth} at {position}");
                in_lap += 1;
                if in_lap == depth {
                    (lap_phase, in_lap) = (!lap_phase, 0);
                }
            }
            // 2^32 is an even number of laps: the position after u32::MAX is lap 0 again.
            assert!(sq_phase(u32::MAX.wrapping_add(1), depth));
            assert_eq!(sq_phase(u32::MAX, depth), (u32::MAX / depth).is_multiple_of(2));
        }
    }
}
