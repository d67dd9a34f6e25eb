//! # placement — where instances land and what bandwidth they get
//!
//! A model of EC2's physical layout and placement rules for capacity planners:
//!
//! * [`Topology`]: regions → availability zones → racks → hosts, each host with vCPUs, memory and
//!   optional per-type slots, each rack and AZ with an uplink capacity; described in TOML/JSON
//!   ([`TopologySpec`]) or generated ([`GeneratedTopology`]).
//! * [`Fleet`]: capacity, placement groups and launches with EC2's rules and error names:
//!   *cluster* (one AZ, packed, `InsufficientInstanceCapacity` when it cannot fit), *spread* (one
//!   instance per rack, at most 7 per AZ per group), *partition* (at most 7 partitions per AZ that
//!   never share a rack). Deterministic, with seeded fragmentation by other tenants.
//! * [`NetworkModel`]: the class of a pair of instances (same host / rack / AZ, other AZ, other
//!   region), its latency, and the single-flow cap: 5 Gbps, 10 Gbps inside a cluster group,
//!   25 Gbps with ENA Express, and at most 5 Gbps (or half the bandwidth at 32+ vCPUs) per
//!   instance out of the region.
//! * [`plan`]: max-min fair rates by progressive filling, with every flow's bottleneck, every
//!   link's load and the unmet demand.
//! * [`blast_radius`]: what one host, rack or AZ failure takes down, and what bandwidth the
//!   surviving flows get afterwards.
//!
//! The crate depends on no sibling.
#![deny(missing_docs)]

mod blast;
mod fleet;
mod instance;
mod network;
mod planner;
mod rng;
mod topology;

pub use blast::{BlastRadius, FailureDomain, GroupLoss, PartitionLoss, blast_radii, blast_radius};
pub use fleet::{
    Fleet, GroupId, Instance, InstanceId, LaunchRequest, MAX_PARTITIONS, PlacementGroup,
    PlacementStrategy, SPREAD_MAX_PER_AZ, SpreadLevel,
};
pub use instance::InstanceType;
pub use network::{NetworkClass, NetworkModel};
pub use planner::{Bottleneck, FlowDemand, FlowPlan, Link, LinkUse, Plan, plan, total};
pub use rng::SplitMix64;
pub use topology::{
    Az, AzId, AzSpec, GeneratedTopology, Host, HostCapacity, HostId, Rack, RackId, RackSpec,
    Region, RegionId, RegionSpec, Topology, TopologySpec, TypeSlots,
};

/// Everything that can go wrong, named as EC2 names it where EC2 has a name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// The topology description is inconsistent.
    #[error("invalid topology: {0}")]
    InvalidTopology(String),
    /// No such instance type.
    #[error("unknown instance type `{0}`")]
    UnknownInstanceType(String),
    /// No such region.
    #[error("unknown region `{0}`")]
    UnknownRegion(String),
    /// No such availability zone.
    #[error("unknown availability zone `{0}`")]
    UnknownAz(String),
    /// The AZ is not in the group's (or the request's) region.
    #[error("availability zone `{az}` is not in region `{region}`")]
    AzOutsideRegion {
        /// The AZ.
        az: String,
        /// The region.
        region: String,
    },
    /// No such placement group.
    #[error("InvalidPlacementGroup.Unknown: placement group `{0}` does not exist")]
    UnknownGroup(String),
    /// Group names are unique per region.
    #[error("InvalidPlacementGroup.Duplicate: placement group `{name}` already exists in {region}")]
    DuplicateGroup {
        /// The name.
        name: String,
        /// The region.
        region: String,
    },
    /// No such instance.
    #[error("unknown instance {0}")]
    UnknownInstance(u32),
    /// A launch of nothing.
    #[error("a launch must ask for at least one instance")]
    ZeroCount,
    /// Not enough capacity where the rules allow.
    #[error(
        "InsufficientInstanceCapacity: cannot place {count} × {instance_type}{}: {why}",
        group.as_ref().map(|g| format!(" in placement group `{g}`")).unwrap_or_default()
    )]
    InsufficientInstanceCapacity {
        /// The group, if any.
        group: Option<String>,
        /// The type asked for.
        instance_type: String,
        /// How many were asked for.
        count: u32,
        /// Why, and what to do.
        why: String,
    },
    /// The 8th running instance of a rack-level spread group in an AZ.
    #[error(
        "InsufficientInstanceCapacity: cannot place {requested} instance(s) in spread placement \
         group `{group}`: it had {running} running in {az}, and a rack spread group can have at \
         most 7 running instances per Availability Zone; use another AZ or a second group"
    )]
    SpreadLimit {
        /// The group.
        group: String,
        /// The AZ (or "every AZ of the region").
        az: String,
        /// Instances of the group running there before this launch.
        running: u32,
        /// Instances this launch asked for.
        requested: u32,
    },
    /// A partition group with no or more than 7 partitions.
    #[error(
        "partition placement group `{group}` asks for {requested} partitions: a partition group \
         has 1 to 7 partitions per availability zone"
    )]
    PartitionCount {
        /// The group.
        group: String,
        /// What was asked for.
        requested: u8,
    },
    /// A partition number outside the group.
    #[error(
        "partition {partition} does not exist in group `{group}` (partitions 1 to {partitions})"
    )]
    PartitionOutOfRange {
        /// The group.
        group: String,
        /// The number asked for.
        partition: u8,
        /// How many the group has.
        partitions: u8,
    },
    /// A partition number given without a partition group.
    #[error("a partition number can only be given for a partition placement group")]
    PartitionWithoutPartitionGroup,
    /// A cluster group lives in one AZ.
    #[error(
        "cluster placement group `{group}` is in {home}; it cannot place instances in {requested}"
    )]
    ClusterAz {
        /// The group.
        group: String,
        /// The AZ asked for.
        requested: String,
        /// The group's AZ.
        home: String,
    },
    /// A flow the planner cannot take.
    #[error("flow {flow}: {why}")]
    BadFlow {
        /// Its index in the input.
        flow: usize,
        /// What is wrong.
        why: String,
    },
}
