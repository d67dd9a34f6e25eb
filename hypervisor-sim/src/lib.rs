//! # hypervisor-sim — hosts, a hypervisor and simulated VMs that drive the NIC
//!
//! A [`cloud::Cloud`] is a set of hosts, each with one or more physical functions (a `vnic`
//! PF on its own engine thread, up to 256 VFs) and a hypervisor that launches VMs of an
//! instance type and gives each guest memory (a shared mapping, so a VM can also be its own OS
//! process) and ENIs. A VM reaches the network one of two ways, the comparison this crate exists
//! to measure:
//!
//! * **emulated** ([`emulated`]): the guest's doorbell traps to a hypervisor thread that copies
//!   each frame through a software switch into the host's own VF — one more copy and a
//!   thread hand-off per burst;
//! * **SR-IOV** ([`guest::IoPath::SrIov`]): the guest's ENA-style driver owns a VF's queue
//!   pairs; the NIC's engine moves frames with no hypervisor on the path.
//!
//! An ENI on the EFA path is an SR-IOV VF too, plus `vnic::efa`'s OS-bypass queue pairs; EC2
//! attaches one only at launch or to a stopped instance. Between hosts a [`fabric::Fabric`]
//! carries frames with each pair's latency (5 µs one way on one host to 15 ms across regions,
//! from `placement`'s network classes) and link rate. The device enforces each ENI's rules:
//! source/destination check, the instance type's bandwidth with burst credits, PPS and
//! conntrack allowances under ENA's counter names, and EC2's per-flow caps (10 Gbps inside a
//! cluster placement group, 5 Gbps otherwise). [`eni`] holds EC2's ENI rules, [`workload`] the
//! VM-to-VM workload that reports Mpps, Gbps, CPU per packet and latency percentiles per path;
//! [`pair`] one flow between two queue pairs of any NIC (the VFIO lab's traffic on real VFs).
#![deny(missing_docs)]

pub mod cloud;
pub mod emulated;
pub mod eni;
pub mod fabric;
pub mod guest;
pub mod host;
pub mod paced;
pub mod pair;
pub mod process;
pub mod sim;
pub mod traffic;
pub mod workload;

pub use placement;
pub use vnic;
