//! # placement — where instances land and what bandwidth they get
//!
//! This crate will model EC2's region → availability zone → rack → host topology, the three kinds
//! of placement group (cluster: one AZ, packed, 10 Gbps per flow; spread: one instance per rack,
//! at most 7 per AZ per group; partition: at most 7 partitions per AZ that never share a rack),
//! the network class between two instances, a max-min fair capacity planner and failure blast
//! radius. It depends on no sibling crate.
#![deny(missing_docs)]
