//! ENA's binary interface, byte for byte: what a driver and a device agree on and nothing else.
//!
//! The driver ([`crate::driver`]) and the device ([`crate::device`]) both import this module and
//! never each other, the way DPDK keeps `ena_defs/` apart from its PMD and from the hardware it
//! drives. Everything here follows the public ENA driver headers (`ena_regs_defs.h`,
//! `ena_admin_defs.h`, `ena_eth_io_defs.h`, `ena_common_defs.h`):
//!
//! * [`regs`] — BAR0: register offsets and fields, `DEV_CTL`/`DEV_STS` reset handshake, the
//!   readless MMIO read, and the [`regs::RegisterSpace`] trait a driver talks through;
//! * [`admin`] — 64-byte admin commands and completions, typed ([`admin::Command`],
//!   [`admin::Completion`] with one [`admin::ResponseBody`] type per answer) and the control
//!   buffers that carry the RSS key, indirection table and hash input;
//! * [`aenq`] — the 64-byte asynchronous events (link change, keep-alive, notifications);
//! * [`io`] — the data path's descriptors: TX (16 B), TX completion (8 B), RX (16 B), RX
//!   completion (16 B), their phase bits and ENA's rule for them;
//! * [`llq`] — low-latency queues: TX descriptors and packet headers in device memory, in
//!   128- or 256-byte entries.
//!
//! What is not ENA's: IO rings keep a 384-byte index block (producer and consumer indices on
//! their own cache lines) in the bytes just before entry 0, which stands in for ENA's doorbell
//! and head registers; the ring base in `CREATE_SQ`/`CREATE_CQ` is entry 0, as ENA's.
//! `SET_FEATURE INTERRUPT_MODERATION` (ENA moderates in its driver) and `SET_FEATURE
//! DEVICE_ATTRIBUTES` with a MAC (for trusted VFs) are vnic extensions; each says so where it
//! is defined.

pub mod admin;
pub mod aenq;
pub mod io;
pub mod llq;
pub mod regs;
mod wire;
