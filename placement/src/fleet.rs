//! The fleet: hosts' remaining capacity, placement groups, and the instances launched into them.
//!
//! EC2's rules, as modelled:
//!
//! * **Cluster**: one AZ, and inside it one *cluster segment* (a run of
//!   [`Topology::cluster_segment_racks`] neighbouring racks behind one spine, the low-latency
//!   network a cluster group lives on). The first launch picks the segment with the most free
//!   capacity that fits the whole request; every launch packs onto as few racks and hosts as it
//!   can (racks the group already uses first, then the fullest-free ones; each host filled before
//!   the next). Later launches must fit in the same segment, so they can fail where the first would
//!   have fitted: `InsufficientInstanceCapacity`, with EC2's advice to launch a cluster group in one
//!   request.
//! * **Spread**: each instance on a rack no other running instance of the group uses (or, with
//!   host-level spread, a host); at most 7 running instances per AZ per group for rack-level spread.
//!   A group spans the AZs of its region; a launch without an AZ fills the AZs where the group
//!   has the fewest instances.
//! * **Partition**: 1 to 7 partitions per AZ; each partition owns the racks it has used, and no two
//!   partitions of a group share a rack. Instances go to the partition with the fewest instances
//!   unless the launch names one; each instance reports its partition number (1-based).
//!
//! A launch is all or nothing: if any instance cannot be placed, nothing is. Placement is
//! deterministic; [`Fleet::fragment`] models capacity already taken by other tenants with a
//! seeded generator.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{AzId, HostId, InstanceType, PlacementError, RackId, RegionId, Topology};

/// Most running instances per AZ in a rack-level spread group.
pub const SPREAD_MAX_PER_AZ: u32 = 7;
/// Most partitions per AZ in a partition group.
pub const MAX_PARTITIONS: u8 = 7;

/// An instance's index in the fleet.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct InstanceId(pub u32);

impl InstanceId {
    /// Index into [`Fleet::instances`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A placement group's index in the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub u32);

/// How a spread group separates its instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpreadLevel {
    /// A distinct rack per instance, at most 7 per AZ.
    #[default]
    Rack,
    /// A distinct host per instance (as on Outposts); no per-AZ limit beyond the hosts.
    Host,
}

/// A placement group's strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "lowercase", deny_unknown_fields)]
pub enum PlacementStrategy {
    /// Packed into one AZ, few racks; 10 Gbps per flow between members.
    Cluster,
    /// Each instance on distinct hardware.
    Spread {
        /// Rack (default) or host.
        #[serde(default)]
        level: SpreadLevel,
    },
    /// Partitions that share no rack.
    Partition {
        /// Partitions per AZ, 1 to 7.
        partitions: u8,
    },
}

/// A placement group.
#[derive(Clone, Debug)]
pub struct PlacementGroup {
    /// Name, unique within its region.
    pub name: String,
    /// Its region.
    pub region: RegionId,
    /// Its strategy.
    pub strategy: PlacementStrategy,
    state: GroupState,
}

#[derive(Clone, Debug)]
enum GroupState {
    Cluster { home: Option<(AzId, u32)> },
    Spread { per_az: BTreeMap<AzId, u32>, racks: BTreeSet<RackId>, hosts: BTreeSet<HostId> },
    Partition { per_az: BTreeMap<AzId, Partitions> },
}

#[derive(Clone, Debug, Default)]
struct Partitions {
    /// Racks owned by each partition.
    racks: Vec<Vec<RackId>>,
    /// Running instances in each partition.
    counts: Vec<u32>,
    owner: BTreeMap<RackId, u8>,
}

/// One launched instance.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its id.
    pub id: InstanceId,
    /// Index into [`Fleet::instance_types`].
    pub instance_type: usize,
    /// Where it runs.
    pub host: HostId,
    /// Its placement group, if any.
    pub group: Option<GroupId>,
    /// Its partition number (1-based) in a partition group.
    pub partition: Option<u8>,
    /// False once terminated.
    pub running: bool,
}

/// A request to launch `count` instances of one type.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// Instance type name.
    pub instance_type: String,
    /// How many.
    pub count: u32,
    /// Placement group name, if any.
    #[serde(default)]
    pub group: Option<String>,
    /// Region (default: the group's, else the first).
    #[serde(default)]
    pub region: Option<String>,
    /// AZ name (default: chosen by the placer).
    #[serde(default)]
    pub az: Option<String>,
    /// Partition number, 1-based, for partition groups.
    #[serde(default)]
    pub partition: Option<u8>,
}

#[derive(Clone, Copy, Debug)]
struct Free {
    vcpus: u32,
    memory_gib: u32,
}

/// Topology, capacity, groups and instances.
#[derive(Clone, Debug)]
pub struct Fleet {
    topology: Topology,
    types: Vec<InstanceType>,
    host_free: Vec<Free>,
    rack_free_vcpus: Vec<u64>,
    /// Instances per (host, type) on hosts with slot limits only.
    slot_use: BTreeMap<(HostId, usize), u32>,
    groups: Vec<PlacementGroup>,
    instances: Vec<Instance>,
}

impl Fleet {
    /// An empty fleet on `topology` offering `types`.
    pub fn new(topology: Topology, types: Vec<InstanceType>) -> Self {
        let host_free: Vec<Free> = topology
            .hosts
            .iter()
            .map(|h| Free { vcpus: h.capacity.vcpus, memory_gib: h.capacity.memory_gib })
            .collect();
        let rack_free_vcpus = topology
            .racks
            .iter()
            .map(|r| r.hosts.clone().map(|h| u64::from(host_free[h as usize].vcpus)).sum())
            .collect();
        Self {
            topology,
            types,
            host_free,
            rack_free_vcpus,
            slot_use: BTreeMap::new(),
            groups: Vec::new(),
            instances: Vec::new(),
        }
    }

    /// Takes capacity for other tenants: each host loses a uniformly random share of its vCPUs
    /// and memory whose mean is `mean_fraction` (0 to 1), drawn from `seed`: between 0 and
    /// twice the mean up to a mean of one half, between `2 × mean − 1` and all of it above.
    pub fn fragment(&mut self, seed: u64, mean_fraction: f64) {
        let mut rng = SplitMix64::new(seed);
        for (i, host) in self.topology.hosts.iter().enumerate() {
            let share = fragment_share(rng.next_f64(), mean_fraction);
            let free = &mut self.host_free[i];
            let take_cpu = ((f64::from(host.capacity.vcpus) * share) as u32).min(free.vcpus);
            let take_mem =
                ((f64::from(host.capacity.memory_gib) * share) as u32).min(free.memory_gib);
            free.vcpus -= take_cpu;
            free.memory_gib -= take_mem;
            self.rack_free_vcpus[host.rack.index()] -= u64::from(take_cpu);
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The instance types on offer.
    pub fn instance_types(&self) -> &[InstanceType] {
        &self.types
    }

    /// Every instance launched (terminated ones included, with `running == false`).
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// One instance.
    pub fn instance(&self, id: InstanceId) -> Result<&Instance, PlacementError> {
        // Not `ok_or`: that builds (and drops) an error on every call, 5% of a region's plan.
        match self.instances.get(id.index()) {
            Some(i) => Ok(i),
            None => Err(PlacementError::UnknownInstance(id.0)),
        }
    }

    /// The type of an instance.
    pub fn type_of(&self, id: InstanceId) -> Result<&InstanceType, PlacementError> {
        Ok(&self.types[self.instance(id)?.instance_type])
    }

    /// Placement groups.
    pub fn groups(&self) -> &[PlacementGroup] {
        &self.groups
    }

    /// One group.
    pub fn group(&self, id: GroupId) -> &PlacementGroup {
        &self.groups[id.0 as usize]
    }

    /// The group named `name` in `region`.
    pub fn group_by_name(&self, region: RegionId, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| g.region == region && g.name == name)
            .map(|i| GroupId(i as u32))
    }

    /// Free vCPUs on a host.
    pub fn free_vcpus(&self, host: HostId) -> u32 {
        self.host_free[host.index()].vcpus
    }

    fn region_by_name(&self, name: Option<&str>) -> Result<RegionId, PlacementError> {
        match name {
            None => Ok(RegionId(0)),
            Some(name) => self
                .topology
                .regions
                .iter()
                .position(|r| r.name == name)
                .map(|i| RegionId(i as u32))
                .ok_or_else(|| PlacementError::UnknownRegion(name.to_string())),
        }
    }

    /// Creates a placement group in a region (the first region when `None`).
    pub fn create_group(
        &mut self,
        name: &str,
        region: Option<&str>,
        strategy: PlacementStrategy,
    ) -> Result<GroupId, PlacementError> {
        let region = self.region_by_name(region)?;
        if self.group_by_name(region, name).is_some() {
            return Err(PlacementError::DuplicateGroup {
                name: name.to_string(),
                region: self.topology.regions[region.index()].name.clone(),
            });
        }
        let state = match strategy {
            PlacementStrategy::Cluster => GroupState::Cluster { home: None },
            PlacementStrategy::Spread { .. } => GroupState::Spread {
                per_az: BTreeMap::new(),
                racks: BTreeSet::new(),
                hosts: BTreeSet::new(),
            },
            PlacementStrategy::Partition { partitions } => {
                if partitions == 0 || partitions > MAX_PARTITIONS {
                    return Err(PlacementError::PartitionCount {
                        group: name.to_string(),
                        requested: partitions,
                    });
                }
                GroupState::Partition { per_az: BTreeMap::new() }
            }
        };
        self.groups.push(PlacementGroup { name: name.to_string(), region, strategy, state });
        Ok(GroupId(self.groups.len() as u32 - 1))
    }

    /// Launches `request.count` instances, all or none.
    pub fn launch(&mut self, request: &LaunchRequest) -> Result<Vec<InstanceId>, PlacementError> {
        if request.count == 0 {
            return Err(PlacementError::ZeroCount);
        }
        let ty =
            self.types.iter().position(|t| t.name == request.instance_type).ok_or_else(|| {
                PlacementError::UnknownInstanceType(request.instance_type.clone())
            })?;
        let region_hint = self.region_by_name(request.region.as_deref())?;
        let group = match &request.group {
            None => None,
            Some(name) => {
                // A group is found in the named region, or else in any region.
                let id = self.group_by_name(region_hint, name).or_else(|| {
                    self.groups.iter().position(|g| &g.name == name).map(|i| GroupId(i as u32))
                });
                Some(id.ok_or_else(|| PlacementError::UnknownGroup(name.clone()))?)
            }
        };
        let named_az = match &request.az {
            None => None,
            Some(name) => Some(
                self.topology
                    .az_by_name(name)
                    .ok_or_else(|| PlacementError::UnknownAz(name.clone()))?,
            ),
        };
        // The group's region, else the named one, else the named AZ's, else the first.
        let region = match (group, &request.region, named_az) {
            (Some(g), _, _) => self.group(g).region,
            (None, Some(_), _) | (None, None, None) => region_hint,
            (None, None, Some(az)) => self.topology.region_of(az),
        };
        let az = match &request.az {
            None => None,
            Some(name) => {
                let az = self
                    .topology
                    .az_by_name(name)
                    .ok_or_else(|| PlacementError::UnknownAz(name.clone()))?;
                if self.topology.region_of(az) != region {
                    return Err(PlacementError::AzOutsideRegion {
                        az: name.clone(),
                        region: self.topology.regions[region.index()].name.clone(),
                    });
                }
                Some(az)
            }
        };
        if request.partition.is_some()
            && !matches!(
                group.map(|g| self.group(g).strategy),
                Some(PlacementStrategy::Partition { .. })
            )
        {
            return Err(PlacementError::PartitionWithoutPartitionGroup);
        }

        let saved_group = group.map(|g| self.group(g).state.clone());
        let mut placed: Vec<(HostId, Option<u8>)> = Vec::with_capacity(request.count as usize);
        let result = match group {
            None => self.place_ungrouped(ty, request.count, region, az, &mut placed),
            Some(g) => match self.group(g).strategy {
                PlacementStrategy::Cluster => {
                    self.place_cluster(g, ty, request.count, az, &mut placed)
                }
                PlacementStrategy::Spread { level } => {
                    self.place_spread(g, level, ty, request.count, az, &mut placed)
                }
                PlacementStrategy::Partition { partitions } => self.place_partition(
                    g,
                    partitions,
                    ty,
                    request.count,
                    az,
                    request.partition,
                    &mut placed,
                ),
            },
        };
        if let Err(e) = result {
            for (host, _) in placed {
                self.release(host, ty);
            }
            if let (Some(g), Some(state)) = (group, saved_group) {
                self.groups[g.0 as usize].state = state;
            }
            return Err(e);
        }
        let mut ids = Vec::with_capacity(placed.len());
        for (host, partition) in placed {
            let id = InstanceId(self.instances.len() as u32);
            self.instances.push(Instance {
                id,
                instance_type: ty,
                host,
                group,
                partition,
                running: true,
            });
            ids.push(id);
        }
        Ok(ids)
    }

    /// Terminates an instance: its capacity returns to the host and it stops counting towards its
    /// group's limits.
    pub fn terminate(&mut self, id: InstanceId) -> Result<(), PlacementError> {
        let inst = self.instance(id)?.clone();
        if !inst.running {
            return Ok(());
        }
        self.release(inst.host, inst.instance_type);
        self.instances[id.index()].running = false;
        let az = self.topology.az_of(inst.host);
        let rack = self.topology.rack_of(inst.host);
        if let Some(g) = inst.group {
            match &mut self.groups[g.0 as usize].state {
                GroupState::Cluster { .. } => {}
                GroupState::Spread { per_az, racks, hosts } => {
                    if let Some(n) = per_az.get_mut(&az) {
                        *n = n.saturating_sub(1);
                    }
                    racks.remove(&rack);
                    hosts.remove(&inst.host);
                }
                GroupState::Partition { per_az } => {
                    if let (Some(p), Some(parts)) = (inst.partition, per_az.get_mut(&az))
                        && let Some(n) = parts.counts.get_mut(usize::from(p) - 1)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        Ok(())
    }

    fn fits(&self, host: HostId, ty: usize) -> bool {
        let t = &self.types[ty];
        let free = self.host_free[host.index()];
        if free.vcpus < t.vcpus || free.memory_gib < t.memory_gib {
            return false;
        }
        let slots = &self.topology.hosts[host.index()].capacity.slots;
        match slots.iter().find(|s| s.instance_type == t.name) {
            None => true,
            Some(limit) => self.slot_use.get(&(host, ty)).copied().unwrap_or(0) < limit.max,
        }
    }

    fn take(&mut self, host: HostId, ty: usize) {
        let t = &self.types[ty];
        let free = &mut self.host_free[host.index()];
        free.vcpus -= t.vcpus;
        free.memory_gib -= t.memory_gib;
        self.rack_free_vcpus[self.topology.rack_of(host).index()] -= u64::from(t.vcpus);
        if !self.topology.hosts[host.index()].capacity.slots.is_empty() {
            *self.slot_use.entry((host, ty)).or_insert(0) += 1;
        }
    }

    fn release(&mut self, host: HostId, ty: usize) {
        let t = &self.types[ty];
        let free = &mut self.host_free[host.index()];
        free.vcpus += t.vcpus;
        free.memory_gib += t.memory_gib;
        self.rack_free_vcpus[self.topology.rack_of(host).index()] += u64::from(t.vcpus);
        if let Some(n) = self.slot_use.get_mut(&(host, ty)) {
            *n = n.saturating_sub(1);
        }
    }

    /// The host with the most free vCPUs in `rack` that fits `ty` and passes `allowed`.
    fn best_host_in(
        &self,
        rack: RackId,
        ty: usize,
        allowed: impl Fn(HostId) -> bool,
    ) -> Option<HostId> {
        self.topology
            .hosts_in(rack)
            .filter(|&h| allowed(h) && self.fits(h, ty))
            .max_by_key(|&h| (self.host_free[h.index()].vcpus, std::cmp::Reverse(h)))
    }

    /// The fitting host on the rack with the most free vCPUs among `racks`.
    fn best_host_among(
        &self,
        racks: impl Iterator<Item = RackId>,
        ty: usize,
        allowed: impl Fn(HostId) -> bool + Copy,
    ) -> Option<HostId> {
        let need = u64::from(self.types[ty].vcpus);
        let mut racks: Vec<RackId> =
            racks.filter(|r| self.rack_free_vcpus[r.index()] >= need).collect();
        racks.sort_by_key(|r| (std::cmp::Reverse(self.rack_free_vcpus[r.index()]), *r));
        racks.into_iter().find_map(|r| self.best_host_in(r, ty, allowed))
    }

    fn azs_of(&self, region: RegionId) -> impl Iterator<Item = AzId> + '_ {
        self.topology.regions[region.index()].azs.clone().map(AzId)
    }

    fn insufficient(
        &self,
        group: Option<GroupId>,
        ty: usize,
        count: u32,
        why: String,
    ) -> PlacementError {
        PlacementError::InsufficientInstanceCapacity {
            group: group.map(|g| self.group(g).name.clone()),
            instance_type: self.types[ty].name.clone(),
            count,
            why,
        }
    }

    fn place_ungrouped(
        &mut self,
        ty: usize,
        count: u32,
        region: RegionId,
        az: Option<AzId>,
        placed: &mut Vec<(HostId, Option<u8>)>,
    ) -> Result<(), PlacementError> {
        let azs: Vec<AzId> = match az {
            Some(az) => vec![az],
            None => self.azs_of(region).collect(),
        };
        for _ in 0..count {
            let racks = azs.iter().flat_map(|&a| self.topology.racks_in(a));
            let host = self
                .best_host_among(racks, ty, |_| true)
                .ok_or_else(|| self.insufficient(None, ty, count, "no host has room".into()))?;
            self.take(host, ty);
            placed.push((host, None));
        }
        Ok(())
    }

    fn place_cluster(
        &mut self,
        g: GroupId,
        ty: usize,
        count: u32,
        az: Option<AzId>,
        placed: &mut Vec<(HostId, Option<u8>)>,
    ) -> Result<(), PlacementError> {
        let GroupState::Cluster { home } = self.group(g).state else {
            unreachable!("strategy and state agree")
        };
        let advice = "launch all instances of a cluster placement group in one request, \
                      and if that fails, retry later or with fewer instances";
        let segments: Vec<(AzId, u32)> = match home {
            Some((home_az, seg)) => {
                if let Some(az) = az.filter(|&a| a != home_az) {
                    return Err(PlacementError::ClusterAz {
                        group: self.group(g).name.clone(),
                        requested: self.topology.azs[az.index()].name.clone(),
                        home: self.topology.azs[home_az.index()].name.clone(),
                    });
                }
                vec![(home_az, seg)]
            }
            None => {
                let region = self.group(g).region;
                let azs: Vec<AzId> = match az {
                    Some(az) => vec![az],
                    None => self.azs_of(region).collect(),
                };
                let mut segs: Vec<((AzId, u32), u64)> = Vec::new();
                for a in azs {
                    let mut free: BTreeMap<u32, u64> = BTreeMap::new();
                    for r in self.topology.racks_in(a) {
                        *free.entry(self.topology.segment_of(r)).or_default() +=
                            self.rack_free_vcpus[r.index()];
                    }
                    segs.extend(free.into_iter().map(|(s, f)| ((a, s), f)));
                }
                segs.sort_by_key(|&(key, free)| (std::cmp::Reverse(free), key));
                segs.into_iter().map(|(key, _)| key).collect()
            }
        };
        for &(a, seg) in &segments {
            if self.pack_cluster(g, ty, count, a, seg, placed) {
                if let GroupState::Cluster { home } = &mut self.groups[g.0 as usize].state {
                    *home = Some((a, seg));
                }
                return Ok(());
            }
            for (host, _) in placed.drain(..) {
                self.release(host, ty);
            }
        }
        let where_ = match home {
            Some((a, s)) => format!(
                "the group's network segment {s} of {} is full",
                self.topology.azs[a.index()].name
            ),
            None => "no cluster network segment can hold them all".into(),
        };
        Err(self.insufficient(Some(g), ty, count, format!("{where_}; {advice}")))
    }

    /// Packs `count` instances into one segment, racks the group uses first, fullest-free next,
    /// each host filled before the next. True if all fit.
    fn pack_cluster(
        &mut self,
        g: GroupId,
        ty: usize,
        count: u32,
        az: AzId,
        seg: u32,
        placed: &mut Vec<(HostId, Option<u8>)>,
    ) -> bool {
        let mut used: BTreeMap<RackId, u32> = BTreeMap::new();
        for inst in self.instances.iter().filter(|i| i.running && i.group == Some(g)) {
            *used.entry(self.topology.rack_of(inst.host)).or_default() += 1;
        }
        let mut racks: Vec<RackId> =
            self.topology.racks_in(az).filter(|&r| self.topology.segment_of(r) == seg).collect();
        racks.sort_by_key(|r| {
            (
                std::cmp::Reverse(used.get(r).copied().unwrap_or(0)),
                std::cmp::Reverse(self.rack_free_vcpus[r.index()]),
                *r,
            )
        });
        let mut left = count;
        for rack in racks {
            let mut hosts: Vec<HostId> = self.topology.hosts_in(rack).collect();
            hosts.sort_by_key(|h| (std::cmp::Reverse(self.host_free[h.index()].vcpus), *h));
            for host in hosts {
                while left > 0 && self.fits(host, ty) {
                    self.take(host, ty);
                    placed.push((host, None));
                    left -= 1;
                }
                if left == 0 {
                    return true;
                }
            }
        }
        false
    }

    fn place_spread(
        &mut self,
        g: GroupId,
        level: SpreadLevel,
        ty: usize,
        count: u32,
        az: Option<AzId>,
        placed: &mut Vec<(HostId, Option<u8>)>,
    ) -> Result<(), PlacementError> {
        let region = self.group(g).region;
        for _ in 0..count {
            let GroupState::Spread { per_az, racks, hosts } = &self.group(g).state else {
                unreachable!("strategy and state agree")
            };
            let mut azs: Vec<AzId> = match az {
                Some(az) => vec![az],
                None => self.azs_of(region).collect(),
            };
            azs.sort_by_key(|a| (per_az.get(a).copied().unwrap_or(0), *a));
            let under_limit: Vec<AzId> = azs
                .iter()
                .copied()
                .filter(|a| {
                    level == SpreadLevel::Host
                        || per_az.get(a).copied().unwrap_or(0) < SPREAD_MAX_PER_AZ
                })
                .collect();
            if under_limit.is_empty() {
                let az_name = az.map_or_else(
                    || "every AZ of the region".to_string(),
                    |a| self.topology.azs[a.index()].name.clone(),
                );
                let here: u32 = azs.iter().map(|a| per_az.get(a).copied().unwrap_or(0)).sum();
                return Err(PlacementError::SpreadLimit {
                    group: self.group(g).name.clone(),
                    az: az_name,
                    running: here.saturating_sub(placed.len() as u32),
                    requested: count,
                });
            }
            let host = under_limit.iter().find_map(|&a| {
                let free_racks = self
                    .topology
                    .racks_in(a)
                    .filter(|r| level == SpreadLevel::Host || !racks.contains(r));
                self.best_host_among(free_racks, ty, |h| !hosts.contains(&h))
            });
            let Some(host) = host else {
                let what = match level {
                    SpreadLevel::Rack => "no rack without an instance of the group has room",
                    SpreadLevel::Host => "no host without an instance of the group has room",
                };
                return Err(self.insufficient(Some(g), ty, count, what.into()));
            };
            self.take(host, ty);
            placed.push((host, None));
            let host_az = self.topology.az_of(host);
            let rack = self.topology.rack_of(host);
            if let GroupState::Spread { per_az, racks, hosts } =
                &mut self.groups[g.0 as usize].state
            {
                *per_az.entry(host_az).or_default() += 1;
                racks.insert(rack);
                hosts.insert(host);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn place_partition(
        &mut self,
        g: GroupId,
        partitions: u8,
        ty: usize,
        count: u32,
        az: Option<AzId>,
        partition: Option<u8>,
        placed: &mut Vec<(HostId, Option<u8>)>,
    ) -> Result<(), PlacementError> {
        if let Some(p) = partition.filter(|&p| p == 0 || p > partitions) {
            return Err(PlacementError::PartitionOutOfRange {
                group: self.group(g).name.clone(),
                partition: p,
                partitions,
            });
        }
        let region = self.group(g).region;
        let GroupState::Partition { per_az } = &self.group(g).state else {
            unreachable!("strategy and state agree")
        };
        // The named AZ, else the AZ the group already uses most, else the one with most room.
        let az = match az {
            Some(az) => az,
            None => match per_az
                .iter()
                .max_by_key(|(a, p)| (p.counts.iter().sum::<u32>(), std::cmp::Reverse(**a)))
            {
                Some((&a, _)) => a,
                None => self
                    .azs_of(region)
                    .max_by_key(|a| {
                        let free: u64 = self
                            .topology
                            .racks_in(*a)
                            .map(|r| self.rack_free_vcpus[r.index()])
                            .sum();
                        (free, std::cmp::Reverse(*a))
                    })
                    .unwrap_or(AzId(self.topology.regions[region.index()].azs.start)),
            },
        };
        for _ in 0..count {
            let GroupState::Partition { per_az } = &mut self.groups[g.0 as usize].state else {
                unreachable!("strategy and state agree")
            };
            let parts = per_az.entry(az).or_insert_with(|| Partitions {
                racks: vec![Vec::new(); usize::from(partitions)],
                counts: vec![0; usize::from(partitions)],
                owner: BTreeMap::new(),
            });
            let p = match partition {
                Some(p) => usize::from(p) - 1,
                None => (0..parts.counts.len()).min_by_key(|&i| (parts.counts[i], i)).unwrap_or(0),
            };
            let owned = parts.racks[p].clone();
            let owners = parts.owner.clone();
            let host = self.best_host_among(owned.iter().copied(), ty, |_| true).or_else(|| {
                let unowned = self.topology.racks_in(az).filter(|r| !owners.contains_key(r));
                self.best_host_among(unowned, ty, |_| true)
            });
            let Some(host) = host else {
                return Err(self.insufficient(
                    Some(g),
                    ty,
                    count,
                    format!(
                        "partition {} in {} has no room, and no rack free of the group's other \
                         partitions has room",
                        p + 1,
                        self.topology.azs[az.index()].name
                    ),
                ));
            };
            self.take(host, ty);
            let rack = self.topology.rack_of(host);
            if let GroupState::Partition { per_az } = &mut self.groups[g.0 as usize].state
                && let Some(parts) = per_az.get_mut(&az)
            {
                if parts.owner.insert(rack, p as u8).is_none() {
                    parts.racks[p].push(rack);
                }
                parts.counts[p] += 1;
            }
            placed.push((host, Some(p as u8 + 1)));
        }
        Ok(())
    }
}

/// A host's share taken by other tenants, from a uniform draw `u` in [0, 1): uniform on the
/// widest interval inside [0, 1] centred on `mean` (so that its mean is `mean`, not clamped).
fn fragment_share(u: f64, mean: f64) -> f64 {
    let mean = mean.clamp(0.0, 1.0);
    let half_width = mean.min(1.0 - mean);
    mean - half_width + u * 2.0 * half_width
}

#[cfg(test)]
mod tests {
    use super::fragment_share;

    #[test]
    fn fragmentation_has_the_mean_it_was_asked_for_and_stays_within_a_host() {
        for mean in [0.0, 0.1, 0.5, 0.75, 0.9, 1.0] {
            // A uniform grid of draws: the mean of the shares is the centre of their interval.
            let n = 10_000u32;
            let shares: Vec<f64> =
                (0..n).map(|k| fragment_share((f64::from(k) + 0.5) / f64::from(n), mean)).collect();
            let got = shares.iter().sum::<f64>() / f64::from(n);
            assert!((got - mean).abs() < 1e-9, "mean {mean}: got {got}");
            assert!(shares.iter().all(|s| (0.0..=1.0).contains(s)), "mean {mean}");
        }
    }
}
