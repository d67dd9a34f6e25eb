//! The register block of an 82576 / I350 virtual function (BAR0, 16 KiB), from Intel's 82576
//! datasheet (section 8.27, "Virtual Function Registers") as Linux's igbvf driver names it.
//! Offsets are bytes into BAR0; every register is 32 bits wide. A VF sees a window of the PF's
//! registers: its own queues at the first queue's offsets, its mailbox, its statistics.

/// Device control. Bit 26 resets the VF's queues and interrupts (a function-level reset of
/// the VF's share of the NIC; the PF's state is untouched).
pub const CTRL: u32 = 0x0000;
/// VF reset.
pub const CTRL_RST: u32 = 1 << 26;

/// Device status (VTSTATUS): link, speed, duplex as the PF's port has them.
pub const STATUS: u32 = 0x0008;
/// Full duplex.
pub const STATUS_FD: u32 = 1 << 0;
/// Link up.
pub const STATUS_LU: u32 = 1 << 1;
/// Speed field: 100 Mb/s.
pub const STATUS_SPEED_100: u32 = 1 << 6;
/// Speed field: 1000 Mb/s.
pub const STATUS_SPEED_1000: u32 = 1 << 7;

/// Extended interrupt mask clear (write 1s to mask causes). A polled driver masks them all.
pub const EIMC: u32 = 0x1528;
/// The VF's interrupt causes: three MSI-X vectors (two queues, the mailbox).
pub const EIMC_ALL: u32 = 0x7;

/// VF-to-PF mailbox control (V2PMAILBOX).
pub const V2PMAILBOX: u32 = 0x0C40;
/// The VF requests the PF's attention: a message is in the buffer.
pub const MBX_REQ: u32 = 1 << 0;
/// The VF acknowledges the PF's message.
pub const MBX_ACK: u32 = 1 << 1;
/// The VF owns the buffer.
pub const MBX_VFU: u32 = 1 << 2;
/// The PF owns the buffer.
pub const MBX_PFU: u32 = 1 << 3;
/// The PF wrote a message (read to clear).
pub const MBX_PFSTS: u32 = 1 << 4;
/// The PF acknowledged the VF's message (read to clear).
pub const MBX_PFACK: u32 = 1 << 5;
/// The PF is resetting (read to clear).
pub const MBX_RSTI: u32 = 1 << 6;
/// The PF's reset is done (read to clear).
pub const MBX_RSTD: u32 = 1 << 7;
/// The bits a read clears, which the driver remembers between reads.
pub const MBX_READ_TO_CLEAR: u32 = MBX_PFSTS | MBX_PFACK | MBX_RSTD;

/// The mailbox buffer (VMBMEM): 16 words shared by the VF and the PF.
pub const VMBMEM: u32 = 0x0800;
/// Words in the mailbox buffer.
pub const MAILBOX_WORDS: usize = 16;

/// Queue registers of queue `q` (0 or 1; the driver uses queue 0).
const fn queue(base: u32, q: u32) -> u32 {
    base + q * 0x100
}
/// RX descriptor ring base, low 32 bits (128-byte aligned).
pub const fn rdbal(q: u32) -> u32 {
    queue(0x2800, q)
}
/// RX descriptor ring base, high 32 bits.
pub const fn rdbah(q: u32) -> u32 {
    queue(0x2804, q)
}
/// RX descriptor ring length in bytes (a multiple of 128).
pub const fn rdlen(q: u32) -> u32 {
    queue(0x2808, q)
}
/// Split and replication receive control: buffer size, descriptor type, drop when full.
pub const fn srrctl(q: u32) -> u32 {
    queue(0x280C, q)
}
/// RX descriptor head (the device's).
pub const fn rdh(q: u32) -> u32 {
    queue(0x2810, q)
}
/// RX descriptor tail (the driver's: one past the last descriptor posted).
pub const fn rdt(q: u32) -> u32 {
    queue(0x2818, q)
}
/// RX descriptor control (enable, thresholds).
pub const fn rxdctl(q: u32) -> u32 {
    queue(0x2828, q)
}
/// TX descriptor ring base, low 32 bits (128-byte aligned).
pub const fn tdbal(q: u32) -> u32 {
    queue(0x3800, q)
}
/// TX descriptor ring base, high 32 bits.
pub const fn tdbah(q: u32) -> u32 {
    queue(0x3804, q)
}
/// TX descriptor ring length in bytes (a multiple of 128).
pub const fn tdlen(q: u32) -> u32 {
    queue(0x3808, q)
}
/// TX descriptor head (the device's).
pub const fn tdh(q: u32) -> u32 {
    queue(0x3810, q)
}
/// TX descriptor tail (the driver's doorbell).
pub const fn tdt(q: u32) -> u32 {
    queue(0x3818, q)
}
/// TX descriptor control (enable, thresholds).
pub const fn txdctl(q: u32) -> u32 {
    queue(0x3828, q)
}

/// SRRCTL: packet buffer size in KiB units, bits 6:0.
pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 10;
/// SRRCTL: the largest buffer size field (127 KiB).
pub const SRRCTL_BSIZEPKT_MASK: u32 = 0x7f;
/// SRRCTL: advanced descriptors, one buffer per frame.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0x0200_0000;
/// SRRCTL: drop frames when no descriptor is free instead of stalling the port.
pub const SRRCTL_DROP_EN: u32 = 0x8000_0000;
/// RXDCTL / TXDCTL: the queue is enabled.
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// Good packets received (VFGPRC), as the VF's pool counts them; 32 bits, wraps.
pub const VFGPRC: u32 = 0x0F10;
/// Good packets transmitted (VFGPTC).
pub const VFGPTC: u32 = 0x0F14;
/// Good octets received (VFGORC).
pub const VFGORC: u32 = 0x0F18;
/// Good octets transmitted (VFGOTC).
pub const VFGOTC: u32 = 0x0F34;
/// Multicast packets received (VFMPRC).
pub const VFMPRC: u32 = 0x0F3C;

/// The size of a VF's register BAR.
pub const BAR0_BYTES: u64 = 0x4000;

/// PCI ids of the virtual functions this driver runs.
pub mod ids {
    /// Intel.
    pub const VENDOR_INTEL: u16 = 0x8086;
    /// 82576 virtual function (QEMU's `igb` model has these).
    pub const DEVICE_82576_VF: u16 = 0x10ca;
    /// I350 virtual function.
    pub const DEVICE_I350_VF: u16 = 0x1520;
}
