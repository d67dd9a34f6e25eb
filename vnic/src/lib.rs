//! # vnic — a software SR-IOV NIC in the style of AWS's Elastic Network Adapter
//!
//! A physical function exposes up to 256 virtual functions; each VF owns ENA-style queue pairs
//! (a submission ring of 16-byte descriptors and a completion ring whose entries carry a phase
//! bit) that live in shared memory, so a VM running as another process, or a real device reached
//! through VFIO, can use the very same bytes. ENA's defaults set the scale: rings of 1024 entries
//! (TX at least 256, RX up to 16K), 8 queues per ENI (up to 32), TX completions of 8 bytes and RX
//! completions of 16.
//!
//! Modules:
//! * [`ring`] — the lock-free single-producer / single-consumer rings in shared memory: the
//!   submission ring (cached indices on 128-byte lines, burst and zero-copy APIs) and the
//!   completion ring (ENA's phase-bit protocol).
//! * [`abi`] — ENA's binary interface byte for byte: registers, admin commands and completions,
//!   async events, and the data path's descriptors ([`abi::io`]); driver and device share it
//!   and nothing else.
//! * `device` — the PF, its VFs, queue pairs, the engine, interrupts and the admin queue;
//!   `driver` — the guest's ENA-style driver; [`shaper`] — flow caps and ENI allowances;
//!   [`policy`] — security groups, network ACLs, connection tracking and flow logs;
//!   [`switch`], [`rss`], [`frame`] — the embedded switch, Toeplitz RSS and frame views;
//!   `efa` — OS-bypass verbs over SRD (reliable, unordered, multipath); `vfio` — sysfs and
//!   vfio-pci plumbing for real SR-IOV hardware; `igbvf` — a polled userspace driver for Intel
//!   82576 / I350 virtual functions through VFIO; `nic` — the queue-pair verbs a workload drives,
//!   the same for a simulated VF, a real one and a kernel netdev; `affinity` — pinning a
//!   measurement's threads to CPUs.
#![deny(missing_docs)]

pub mod abi;
#[cfg(not(loom))]
pub mod affinity;
#[cfg(not(loom))]
pub mod device;
#[cfg(not(loom))]
pub mod driver;
#[cfg(not(loom))]
pub mod efa;
pub mod frame;
#[cfg(not(loom))]
pub mod igbvf;
#[cfg(not(loom))]
pub mod nic;
pub mod policy;
pub mod ring;
pub mod rss;
pub mod shaper;
pub mod switch;
#[cfg(not(loom))]
pub mod vfio;
