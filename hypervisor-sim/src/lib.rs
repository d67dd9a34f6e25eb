//! # hypervisor-sim — hosts, a hypervisor and simulated VMs that drive the NIC
//!
//! This crate will model hosts with physical functions, a hypervisor that launches VMs of an
//! instance type, and the three ways a VM's packets reach the network: an emulated NIC (every
//! doorbell traps to a hypervisor thread that copies the frame through a software switch), an
//! SR-IOV virtual function driven by an ENA-style kernel driver, and EFA's OS bypass. Those three
//! paths are the comparison vnic-lab exists to measure.
//!
//! Built so far: [`eni`], the elastic network interfaces and EC2's rules for them. The hosts,
//! VMs, I/O paths and fabric are still to come (see the hypervisor-sim issue).
#![deny(missing_docs)]

pub mod eni;

pub use placement;
pub use vnic;
