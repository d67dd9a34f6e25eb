//! Advanced descriptors of the 82576 (datasheet sections 7.1.5 and 7.2.2): 16 bytes each, in
//! rings the driver allocates in DMA memory. The driver writes the *read* format; the device
//! overwrites the same 16 bytes with the *write-back* format when it is done with one, setting
//! the descriptor-done bit last.

use bytemuck::{Pod, Zeroable};

/// Bytes in a descriptor of either ring.
pub const DESC_BYTES: usize = 16;

/// Transmit: an advanced data descriptor (read format).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TxDesc {
    /// Buffer address (IOVA).
    pub buffer_addr: u64,
    /// Command, descriptor type and this buffer's length.
    pub cmd_type_len: u32,
    /// The whole frame's length (PAYLEN) and offload fields; in write-back, the status.
    pub olinfo_status: u32,
}

/// TX descriptor fields.
pub mod tx {
    /// Descriptor type: advanced data.
    pub const DTYP_DATA: u32 = 0x0030_0000;
    /// End of packet.
    pub const DCMD_EOP: u32 = 0x0100_0000;
    /// Insert the Ethernet FCS.
    pub const DCMD_IFCS: u32 = 0x0200_0000;
    /// Report status: write DD back when done.
    pub const DCMD_RS: u32 = 0x0800_0000;
    /// Descriptor extension: advanced format.
    pub const DCMD_DEXT: u32 = 0x2000_0000;
    /// PAYLEN's position in `olinfo_status`.
    pub const PAYLEN_SHIFT: u32 = 14;
    /// Write-back status: descriptor done.
    pub const STATUS_DD: u32 = 1 << 0;
    /// The largest buffer one descriptor carries (16 bits of length).
    pub const MAX_LEN: usize = 0xffff;
}

impl TxDesc {
    /// A whole frame of `len` bytes in one buffer at `addr`: end of packet, FCS inserted,
    /// status reported.
    pub fn frame(addr: u64, len: u16) -> Self {
        Self {
            buffer_addr: addr,
            cmd_type_len: tx::DTYP_DATA
                | tx::DCMD_DEXT
                | tx::DCMD_EOP
                | tx::DCMD_IFCS
                | tx::DCMD_RS
                | u32::from(len),
            olinfo_status: u32::from(len) << tx::PAYLEN_SHIFT,
        }
    }

    /// Whether the device wrote this descriptor back as done.
    pub fn done(&self) -> bool {
        self.olinfo_status & tx::STATUS_DD != 0
    }
}

/// Receive: an advanced descriptor, read format (what the driver posts).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RxDesc {
    /// Packet buffer address (IOVA).
    pub pkt_addr: u64,
    /// Header buffer address (unused with one-buffer descriptors; bit 0 must be 0, as DD).
    pub hdr_addr: u64,
}

impl RxDesc {
    /// A buffer at `addr` to receive one frame into.
    pub fn post(addr: u64) -> Self {
        Self { pkt_addr: addr, hdr_addr: 0 }
    }
}

/// Receive: the write-back format of the same 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RxWriteback {
    /// Packet type and header length.
    pub pkt_info: u32,
    /// RSS hash (or IP id and checksum).
    pub rss: u32,
    /// Extended status (bits 19:0) and errors (bits 31:20).
    pub status_error: u32,
    /// Bytes written into the buffer.
    pub length: u16,
    /// The VLAN tag, if stripped.
    pub vlan: u16,
}

/// RX write-back fields.
pub mod rx {
    /// Descriptor done.
    pub const STAT_DD: u32 = 1 << 0;
    /// End of packet: the frame ends in this buffer.
    pub const STAT_EOP: u32 = 1 << 1;
    /// Errors that make a frame unusable: CRC, symbol, sequence, carrier extension, RX data.
    pub const ERR_FRAME: u32 = 0x0100_0000 | 0x0200_0000 | 0x0400_0000 | 0x1000_0000 | 0x8000_0000;
}

impl RxWriteback {
    /// Whether the device is done with this descriptor.
    pub fn done(&self) -> bool {
        self.status_error & rx::STAT_DD != 0
    }
}

/// Where a descriptor's status word sits, bytes into it (both rings: the TX write-back status
/// and the RX extended status share offset 8 or 12).
pub mod status_at {
    /// TX: `olinfo_status`.
    pub const TX: usize = 12;
    /// RX: `status_error`.
    pub const RX: usize = 8;
}

const _: () = {
    assert!(size_of::<TxDesc>() == DESC_BYTES);
    assert!(size_of::<RxDesc>() == DESC_BYTES);
    assert!(size_of::<RxWriteback>() == DESC_BYTES);
    assert!(std::mem::offset_of!(TxDesc, olinfo_status) == status_at::TX);
    assert!(std::mem::offset_of!(RxWriteback, status_error) == status_at::RX);
};
