//! Regions → availability zones → racks → hosts.
//!
//! The topology is stored flat (one `Vec` per level, children as index ranges, parents as ids),
//! so that placing 10,000 instances on 5,000 hosts touches contiguous memory. It is built from a
//! serde description ([`TopologySpec`]) or generated ([`GeneratedTopology`]).

use serde::{Deserialize, Serialize};

use crate::PlacementError;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            schemars::JsonSchema,
        )]
        pub struct $name(pub u32);

        impl $name {
            /// The index into the topology's table.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id!(
    /// A region.
    RegionId
);
id!(
    /// An availability zone.
    AzId
);
id!(
    /// A rack.
    RackId
);
id!(
    /// A host.
    HostId
);

/// What one host offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCapacity {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Optional per-instance-type slot limits (e.g. a host that carries at most 2 `p4d.24xlarge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<TypeSlots>,
}

/// How many instances of one type a host may carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSlots {
    /// Instance type name.
    pub instance_type: String,
    /// At most this many.
    pub max: u32,
}

/// A region.
#[derive(Clone, Debug)]
pub struct Region {
    /// Name, e.g. `us-east-1`.
    pub name: String,
    /// Its availability zones, as a range of [`Topology::azs`].
    pub azs: std::ops::Range<u32>,
}

/// An availability zone.
#[derive(Clone, Debug)]
pub struct Az {
    /// Name, e.g. `us-east-1a`.
    pub name: String,
    /// The region it belongs to.
    pub region: RegionId,
    /// Capacity of its link to the other AZs, each direction, in Gbps.
    pub uplink_gbps: f64,
    /// Its racks, as a range of [`Topology::racks`].
    pub racks: std::ops::Range<u32>,
}

/// A rack.
#[derive(Clone, Debug)]
pub struct Rack {
    /// The AZ it stands in.
    pub az: AzId,
    /// Capacity of its uplink to the AZ's spine, each direction, in Gbps.
    pub uplink_gbps: f64,
    /// Its hosts, as a range of [`Topology::hosts`].
    pub hosts: std::ops::Range<u32>,
}

/// A host.
#[derive(Clone, Debug)]
pub struct Host {
    /// The rack it sits in.
    pub rack: RackId,
    /// What it offers.
    pub capacity: HostCapacity,
}

/// The whole physical layout.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Regions.
    pub regions: Vec<Region>,
    /// Availability zones, grouped by region.
    pub azs: Vec<Az>,
    /// Racks, grouped by AZ.
    pub racks: Vec<Rack>,
    /// Hosts, grouped by rack.
    pub hosts: Vec<Host>,
    /// Racks per cluster-network segment (see [`crate::Fleet`]): a cluster placement group lives
    /// inside one segment of one AZ.
    pub cluster_segment_racks: u32,
}

/// A topology described rack by rack (for scenario files).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Regions.
    pub regions: Vec<RegionSpec>,
    /// Racks per cluster-network segment (default 8).
    #[serde(default = "default_segment")]
    pub cluster_segment_racks: u32,
}

fn default_segment() -> u32 {
    8
}

/// A region in a [`TopologySpec`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Name.
    pub name: String,
    /// Availability zones.
    pub azs: Vec<AzSpec>,
}

/// An AZ in a [`TopologySpec`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzSpec {
    /// Name.
    pub name: String,
    /// Inter-AZ link capacity, each direction, Gbps.
    pub uplink_gbps: f64,
    /// Racks.
    pub racks: Vec<RackSpec>,
}

/// A rack in a [`TopologySpec`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackSpec {
    /// Uplink capacity, each direction, Gbps.
    pub uplink_gbps: f64,
    /// Hosts.
    pub hosts: Vec<HostCapacity>,
}

/// A generated topology: `regions × azs_per_region × racks_per_az × hosts_per_rack` identical
/// hosts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedTopology {
    /// Region names; AZs are named `<region>a`, `<region>b`, ...
    pub regions: Vec<String>,
    /// AZs in each region (at most 26).
    pub azs_per_region: u32,
    /// Racks in each AZ.
    pub racks_per_az: u32,
    /// Hosts in each rack.
    pub hosts_per_rack: u32,
    /// Every host's capacity.
    pub host: HostCapacity,
    /// Rack uplink, each direction, Gbps.
    pub rack_uplink_gbps: f64,
    /// Inter-AZ link, each direction, Gbps.
    pub az_uplink_gbps: f64,
    /// Racks per cluster-network segment (default 8).
    #[serde(default = "default_segment")]
    pub cluster_segment_racks: u32,
}

impl GeneratedTopology {
    /// `n_az` AZs of `racks` racks of `hosts` hosts in one region, `us-east-1`, with hosts of
    /// 96 vCPUs / 768 GiB, 400 Gbps rack uplinks and 4 Tbps AZ links.
    pub fn simple(n_az: u32, racks: u32, hosts: u32) -> Self {
        Self {
            regions: vec!["us-east-1".into()],
            azs_per_region: n_az,
            racks_per_az: racks,
            hosts_per_rack: hosts,
            host: HostCapacity { vcpus: 96, memory_gib: 768, slots: Vec::new() },
            rack_uplink_gbps: 400.0,
            az_uplink_gbps: 4000.0,
            cluster_segment_racks: default_segment(),
        }
    }

    /// The described topology, written out rack by rack.
    pub fn to_spec(&self) -> TopologySpec {
        let regions = self
            .regions
            .iter()
            .map(|region| RegionSpec {
                name: region.clone(),
                azs: (0..self.azs_per_region)
                    .map(|a| AzSpec {
                        name: format!("{region}{}", az_letter(a)),
                        uplink_gbps: self.az_uplink_gbps,
                        racks: (0..self.racks_per_az)
                            .map(|_| RackSpec {
                                uplink_gbps: self.rack_uplink_gbps,
                                hosts: vec![self.host.clone(); self.hosts_per_rack as usize],
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        TopologySpec { regions, cluster_segment_racks: self.cluster_segment_racks }
    }

    /// Builds it.
    pub fn build(&self) -> Result<Topology, PlacementError> {
        if self.azs_per_region > 26 {
            return Err(PlacementError::InvalidTopology(format!(
                "{} AZs per region: at most 26 can be named a..z",
                self.azs_per_region
            )));
        }
        Topology::from_spec(&self.to_spec())
    }
}

fn az_letter(i: u32) -> char {
    char::from(b'a' + (i % 26) as u8)
}

impl Topology {
    /// Builds a topology from its description, checking that names are unique and capacities
    /// sane.
    pub fn from_spec(spec: &TopologySpec) -> Result<Self, PlacementError> {
        let invalid = |msg: String| Err(PlacementError::InvalidTopology(msg));
        if spec.regions.is_empty() {
            return invalid("no regions".into());
        }
        if spec.cluster_segment_racks == 0 {
            return invalid("cluster_segment_racks must be at least 1".into());
        }
        let mut topo = Topology {
            regions: Vec::new(),
            azs: Vec::new(),
            racks: Vec::new(),
            hosts: Vec::new(),
            cluster_segment_racks: spec.cluster_segment_racks,
        };
        let mut names = std::collections::BTreeSet::new();
        for region in &spec.regions {
            if !names.insert(region.name.clone()) {
                return invalid(format!("region name `{}` is used twice", region.name));
            }
            if region.azs.is_empty() {
                return invalid(format!("region `{}` has no availability zones", region.name));
            }
            let region_id = RegionId(topo.regions.len() as u32);
            let az_start = topo.azs.len() as u32;
            for az in &region.azs {
                if !names.insert(az.name.clone()) {
                    return invalid(format!("AZ name `{}` is used twice", az.name));
                }
                if !(az.uplink_gbps.is_finite() && az.uplink_gbps > 0.0) {
                    return invalid(format!("AZ `{}`: uplink_gbps must be positive", az.name));
                }
                let az_id = AzId(topo.azs.len() as u32);
                let rack_start = topo.racks.len() as u32;
                for (r, rack) in az.racks.iter().enumerate() {
                    if !(rack.uplink_gbps.is_finite() && rack.uplink_gbps > 0.0) {
                        return invalid(format!(
                            "AZ `{}` rack {r}: uplink_gbps must be positive",
                            az.name
                        ));
                    }
                    let rack_id = RackId(topo.racks.len() as u32);
                    let host_start = topo.hosts.len() as u32;
                    for (h, host) in rack.hosts.iter().enumerate() {
                        if host.vcpus == 0 || host.memory_gib == 0 {
                            return invalid(format!(
                                "AZ `{}` rack {r} host {h}: vcpus and memory_gib must be positive",
                                az.name
                            ));
                        }
                        topo.hosts.push(Host { rack: rack_id, capacity: host.clone() });
                    }
                    topo.racks.push(Rack {
                        az: az_id,
                        uplink_gbps: rack.uplink_gbps,
                        hosts: host_start..topo.hosts.len() as u32,
                    });
                }
                topo.azs.push(Az {
                    name: az.name.clone(),
                    region: region_id,
                    uplink_gbps: az.uplink_gbps,
                    racks: rack_start..topo.racks.len() as u32,
                });
            }
            topo.regions
                .push(Region { name: region.name.clone(), azs: az_start..topo.azs.len() as u32 });
        }
        if topo.hosts.is_empty() {
            return invalid("no hosts".into());
        }
        Ok(topo)
    }

    /// The AZ named `name`.
    pub fn az_by_name(&self, name: &str) -> Option<AzId> {
        self.azs.iter().position(|az| az.name == name).map(|i| AzId(i as u32))
    }

    /// The rack a host sits in.
    pub fn rack_of(&self, host: HostId) -> RackId {
        self.hosts[host.index()].rack
    }

    /// The AZ a rack stands in.
    pub fn az_of_rack(&self, rack: RackId) -> AzId {
        self.racks[rack.index()].az
    }

    /// The AZ a host stands in.
    pub fn az_of(&self, host: HostId) -> AzId {
        self.az_of_rack(self.rack_of(host))
    }

    /// The region of an AZ.
    pub fn region_of(&self, az: AzId) -> RegionId {
        self.azs[az.index()].region
    }

    /// The racks of an AZ.
    pub fn racks_in(&self, az: AzId) -> impl Iterator<Item = RackId> + '_ {
        self.azs[az.index()].racks.clone().map(RackId)
    }

    /// The hosts of a rack.
    pub fn hosts_in(&self, rack: RackId) -> impl Iterator<Item = HostId> + '_ {
        self.racks[rack.index()].hosts.clone().map(HostId)
    }

    /// The cluster segment (0-based within its AZ) that a rack belongs to.
    pub fn segment_of(&self, rack: RackId) -> u32 {
        let az = &self.azs[self.az_of_rack(rack).index()];
        (rack.0 - az.racks.start) / self.cluster_segment_racks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_topology_has_the_requested_shape() {
        let t = GeneratedTopology::simple(3, 4, 5).build().unwrap();
        assert_eq!((t.regions.len(), t.azs.len(), t.racks.len(), t.hosts.len()), (1, 3, 12, 60));
        assert_eq!(t.azs[1].name, "us-east-1b");
        let h = HostId(27);
        assert_eq!(t.rack_of(h), RackId(5));
        assert_eq!(t.az_of(h), AzId(1));
        assert_eq!(t.hosts_in(RackId(5)).count(), 5);
        assert_eq!(t.az_by_name("us-east-1c"), Some(AzId(2)));
        assert_eq!(t.segment_of(RackId(4)), 0);
    }

    #[test]
    fn a_topology_reads_from_toml_and_rejects_nonsense() {
        let text = r#"
            cluster_segment_racks = 2
            [[regions]]
            name = "eu-west-1"
            [[regions.azs]]
            name = "eu-west-1a"
            uplink_gbps = 1000.0
            [[regions.azs.racks]]
            uplink_gbps = 100.0
            hosts = [{ vcpus = 64, memory_gib = 256 }, { vcpus = 64, memory_gib = 256, slots = [{ instance_type = "c5n.18xlarge", max = 1 }] }]
        "#;
        let spec: TopologySpec = toml::from_str(text).unwrap();
        let t = Topology::from_spec(&spec).unwrap();
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.hosts[1].capacity.slots[0].max, 1);

        let bad = text.replace("uplink_gbps = 100.0", "uplink_gbps = -1.0");
        let err = Topology::from_spec(&toml::from_str(&bad).unwrap()).unwrap_err();
        assert!(err.to_string().contains("rack 0: uplink_gbps must be positive"), "{err}");
        let unknown = text.replace("cluster_segment_racks", "cluster_segments");
        assert!(toml::from_str::<TopologySpec>(&unknown).is_err());
        let mut dup = spec.clone();
        dup.regions.push(dup.regions[0].clone());
        let err = Topology::from_spec(&dup).unwrap_err();
        assert!(err.to_string().contains("region name `eu-west-1` is used twice"), "{err}");
    }
}
