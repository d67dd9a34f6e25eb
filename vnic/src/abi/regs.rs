//! ENA's register space (BAR0): offsets, fields, and the readless MMIO read.
//!
//! Every register is 32 bits wide and little endian. The driver programs the admin queues through
//! `AQ_*`, `ACQ_*` and `AENQ_*`, resets the function through `DEV_CTL` and watches `DEV_STS`.
//! Reading a register across PCIe is slow and, on some hypervisors, trapped; ENA's drivers
//! therefore read registers **readless**: the driver writes `(offset << 16) | request id` to
//! `MMIO_REG_READ` and the device writes an 8-byte [`ReadlessResponse`] (request id, offset,
//! value) to the DMA address the driver left in `MMIO_RESP_LO/HI`. The driver polls that memory
//! until the request id it sent shows up.
//!
//! Offsets and fields are those of the public ENA driver headers (`ena_regs_defs.h`).

/// ENA specification version: minor 7:0, major 15:8.
pub const VERSION: u32 = 0x00;
/// Controller version: subminor 7:0, minor 15:8, major 23:16, implementation id 31:24.
pub const CONTROLLER_VERSION: u32 = 0x04;
/// Capabilities: see [`caps`].
pub const CAPS: u32 = 0x08;
/// Extended capabilities.
pub const CAPS_EXT: u32 = 0x0c;
/// Admin queue base address, low 32 bits (the address of entry 0).
pub const AQ_BASE_LO: u32 = 0x10;
/// Admin queue base address, high 32 bits.
pub const AQ_BASE_HI: u32 = 0x14;
/// Admin queue depth 15:0 and entry size in bytes 31:16.
pub const AQ_CAPS: u32 = 0x18;
/// Admin completion queue base address, low 32 bits.
pub const ACQ_BASE_LO: u32 = 0x20;
/// Admin completion queue base address, high 32 bits.
pub const ACQ_BASE_HI: u32 = 0x24;
/// Admin completion queue depth 15:0 and entry size 31:16.
pub const ACQ_CAPS: u32 = 0x28;
/// Admin queue doorbell: the driver writes its running (unmasked) tail.
pub const AQ_DB: u32 = 0x2c;
/// Admin completion queue tail.
pub const ACQ_TAIL: u32 = 0x30;
/// Async event queue depth 15:0 and entry size 31:16.
pub const AENQ_CAPS: u32 = 0x34;
/// Async event queue base address, low 32 bits.
pub const AENQ_BASE_LO: u32 = 0x38;
/// Async event queue base address, high 32 bits.
pub const AENQ_BASE_HI: u32 = 0x3c;
/// Async event queue head doorbell: events consumed plus the queue's depth.
pub const AENQ_HEAD_DB: u32 = 0x40;
/// Async event queue tail.
pub const AENQ_TAIL: u32 = 0x44;
/// Interrupt mask.
pub const INTR_MASK: u32 = 0x4c;
/// Device control: see [`dev_ctl`].
pub const DEV_CTL: u32 = 0x54;
/// Device status: see [`dev_sts`].
pub const DEV_STS: u32 = 0x58;
/// Readless read request: request id 15:0, register offset 31:16.
pub const MMIO_REG_READ: u32 = 0x5c;
/// Where readless responses go, low 32 bits.
pub const MMIO_RESP_LO: u32 = 0x60;
/// Where readless responses go, high 32 bits.
pub const MMIO_RESP_HI: u32 = 0x64;
/// Indirection table entry update: index 15:0, CQ index 31:16.
pub const RSS_IND_ENTRY_UPDATE: u32 = 0x68;
/// Bytes of register space modelled (one past `RSS_IND_ENTRY_UPDATE`).
pub const SIZE: u32 = 0x6c;

/// Fields of `VERSION`.
pub mod version {
    /// Minor version, 7:0.
    pub const MINOR_MASK: u32 = 0xff;
    /// Major version, 15:8.
    pub const MAJOR_SHIFT: u32 = 8;
}

/// Fields of `CAPS`.
pub mod caps {
    /// Bit 0: queues must be physically contiguous.
    pub const CONTIGUOUS_QUEUE_REQUIRED: u32 = 1;
    /// Reset timeout in 100 ms units, 5:1.
    pub const RESET_TIMEOUT_SHIFT: u32 = 1;
    /// Width mask of the reset timeout.
    pub const RESET_TIMEOUT_MASK: u32 = 0x3e;
    /// DMA address width in bits, 15:8.
    pub const DMA_ADDR_WIDTH_SHIFT: u32 = 8;
    /// Width mask of the DMA address width.
    pub const DMA_ADDR_WIDTH_MASK: u32 = 0xff00;
    /// Admin command timeout in 100 ms units, 19:16.
    pub const ADMIN_CMD_TO_SHIFT: u32 = 16;
    /// Width mask of the admin command timeout.
    pub const ADMIN_CMD_TO_MASK: u32 = 0xf_0000;
}

/// Fields of `AQ_CAPS`, `ACQ_CAPS` and `AENQ_CAPS`.
pub mod queue_caps {
    /// Depth in entries, 15:0.
    pub const DEPTH_MASK: u32 = 0xffff;
    /// Entry size in bytes, 31:16.
    pub const ENTRY_SIZE_SHIFT: u32 = 16;
}

/// Fields of `DEV_CTL`.
pub mod dev_ctl {
    /// Bit 0: reset the function (held until the driver writes 0).
    pub const DEV_RESET: u32 = 1 << 0;
    /// Bit 1: restart the admin queue.
    pub const AQ_RESTART: u32 = 1 << 1;
    /// Bit 2: quiesce.
    pub const QUIESCENT: u32 = 1 << 2;
    /// Bit 3: resume IO.
    pub const IO_RESUME: u32 = 1 << 3;
    /// Reset reason, 31:28.
    pub const RESET_REASON_SHIFT: u32 = 28;
}

/// Fields of `DEV_STS`.
pub mod dev_sts {
    /// Bit 0: ready.
    pub const READY: u32 = 1 << 0;
    /// Bit 1: admin queue restart in progress.
    pub const AQ_RESTART_IN_PROGRESS: u32 = 1 << 1;
    /// Bit 2: admin queue restart finished.
    pub const AQ_RESTART_FINISHED: u32 = 1 << 2;
    /// Bit 3: reset in progress (while `DEV_CTL` holds `DEV_RESET`).
    pub const RESET_IN_PROGRESS: u32 = 1 << 3;
    /// Bit 4: reset finished.
    pub const RESET_FINISHED: u32 = 1 << 4;
    /// Bit 5: fatal error.
    pub const FATAL_ERROR: u32 = 1 << 5;
}

/// Fields of `MMIO_REG_READ` and `RSS_IND_ENTRY_UPDATE`: a 16-bit value low, a 16-bit one high.
pub mod pair16 {
    /// Low half, 15:0 (request id; indirection index).
    pub const LO_MASK: u32 = 0xffff;
    /// High half, 31:16 (register offset; CQ index).
    pub const HI_SHIFT: u32 = 16;
}

/// Reset reasons a driver writes into `DEV_CTL` 31:28 (`ena_regs_reset_reason_types`).
pub mod reset_reason {
    /// A reset as part of normal bring-up or teardown.
    pub const NORMAL: u32 = 0;
    /// The device's keep-alive events stopped coming.
    pub const KEEP_ALIVE_TO: u32 = 1;
    /// The admin queue stopped answering.
    pub const ADMIN_TO: u32 = 2;
    /// TX completions stopped coming.
    pub const MISS_TX_CMPL: u32 = 3;
}

/// The request word a driver writes to `MMIO_REG_READ` to read `offset`.
pub const fn readless_request(offset: u32, req_id: u16) -> u32 {
    (offset << pair16::HI_SHIFT) | req_id as u32
}

/// What the device writes to `MMIO_RESP_LO/HI` for one readless read (8 bytes:
/// `ena_admin_ena_mmio_req_read_less_resp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadlessResponse {
    /// The request id the driver wrote.
    pub req_id: u16,
    /// The register offset read.
    pub reg_off: u16,
    /// The register's value.
    pub reg_val: u32,
}

impl ReadlessResponse {
    /// Bytes on the wire.
    pub const BYTES: usize = 8;

    /// The response's bytes.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0; Self::BYTES];
        b[0..2].copy_from_slice(&self.req_id.to_le_bytes());
        b[2..4].copy_from_slice(&self.reg_off.to_le_bytes());
        b[4..8].copy_from_slice(&self.reg_val.to_le_bytes());
        b
    }

    /// A response read back from memory.
    pub fn decode(b: &[u8; Self::BYTES]) -> Self {
        Self {
            req_id: u16::from_le_bytes([b[0], b[1]]),
            reg_off: u16::from_le_bytes([b[2], b[3]]),
            reg_val: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A function's registers: what a driver reads and writes through BAR0.
pub trait RegisterSpace {
    /// Reads the 32-bit register at `offset`.
    fn read32(&mut self, offset: u32) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: u32, value: u32);
}
