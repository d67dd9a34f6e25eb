//! The network between two instances: its class, latency, and the single-flow cap.
//!
//! EC2 limits a single flow (5-tuple) to 5 Gbps, or 10 Gbps when both ends are in the same
//! cluster placement group; ENA Express (SRD) raises it to 25 Gbps between instances in one AZ.
//! Traffic leaving the region is also capped per instance at 5 Gbps, or 50% of the instance's
//! bandwidth for instances with 32 vCPUs or more. Latencies are configurable defaults of the
//! order measured inside EC2.

use serde::{Deserialize, Serialize};

use crate::{Fleet, InstanceId, PlacementError, PlacementStrategy};

/// Where two instances stand relative to each other.
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
#[serde(rename_all = "snake_case")]
pub enum NetworkClass {
    /// Same host.
    SameHost,
    /// Same rack, different hosts.
    SameRack,
    /// Same AZ, different racks.
    SameAz,
    /// Same region, different AZs.
    OtherAz,
    /// Different regions.
    OtherRegion,
}

impl NetworkClass {
    /// Its name in reports, text and JSON alike (serde's `snake_case` of the variant).
    pub fn name(self) -> &'static str {
        match self {
            NetworkClass::SameHost => "same_host",
            NetworkClass::SameRack => "same_rack",
            NetworkClass::SameAz => "same_az",
            NetworkClass::OtherAz => "other_az",
            NetworkClass::OtherRegion => "other_region",
        }
    }

    /// The class of two places, from what they share (each level implies the ones above it:
    /// one host is one rack, one rack one AZ, one AZ one region). The one rule for the class.
    pub fn between(same_host: bool, same_rack: bool, same_az: bool, same_region: bool) -> Self {
        if same_host {
            NetworkClass::SameHost
        } else if same_rack {
            NetworkClass::SameRack
        } else if same_az {
            NetworkClass::SameAz
        } else if same_region {
            NetworkClass::OtherAz
        } else {
            NetworkClass::OtherRegion
        }
    }
}

/// The numbers behind each class and the flow caps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkModel {
    /// Round-trip latency per class, µs: same host, same rack, same AZ, other AZ, other region.
    pub latency_us: [f64; 5],
    /// Single-flow cap outside a cluster group, Gbps.
    pub flow_cap_gbps: f64,
    /// Single-flow cap between members of one cluster group, Gbps.
    pub cluster_flow_cap_gbps: f64,
    /// Single-flow cap with ENA Express (SRD), same AZ, Gbps.
    pub srd_flow_cap_gbps: f64,
    /// Per-instance cap on traffic leaving the region, Gbps (small instances).
    pub region_egress_gbps: f64,
    /// Share of instance bandwidth allowed out of the region for large instances.
    pub region_egress_large_share: f64,
    /// vCPUs from which an instance counts as large for region egress.
    pub large_instance_vcpus: u32,
}

impl Default for NetworkModel {
    fn default() -> Self {
        Self {
            latency_us: [10.0, 25.0, 60.0, 500.0, 30_000.0],
            flow_cap_gbps: 5.0,
            cluster_flow_cap_gbps: 10.0,
            srd_flow_cap_gbps: 25.0,
            region_egress_gbps: 5.0,
            region_egress_large_share: 0.5,
            large_instance_vcpus: 32,
        }
    }
}

impl std::fmt::Display for NetworkClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest round-trip latency a class may have, µs (ten seconds).
pub const MAX_LATENCY_US: f64 = 10_000_000.0;
/// The largest single-flow cap, Gbps.
pub const MAX_FLOW_CAP_GBPS: f64 = 10_000.0;

impl NetworkModel {
    /// Whether every value is possible: latencies finite, not negative and at most
    /// `MAX_LATENCY_US` (10 s), never lower for a farther class; caps positive, finite and at most
    /// `MAX_FLOW_CAP_GBPS` (10,000); the large-instance share 0 to 1; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        const CLASSES: [&str; 5] =
            ["same host", "same rack", "same AZ", "other AZ", "other region"];
        for (i, &us) in self.latency_us.iter().enumerate() {
            if !(us.is_finite() && (0.0..=MAX_LATENCY_US).contains(&us)) {
                return Err(format!(
                    "network.latency_us[{i}] ({}) = {us} is not 0 to {MAX_LATENCY_US} µs",
                    CLASSES[i]
                ));
            }
            if i > 0 && us < self.latency_us[i - 1] {
                return Err(format!(
                    "network.latency_us[{i}] ({}) = {us} µs is below latency_us[{}] ({}) = {} µs: \
                     a farther class cannot be nearer",
                    CLASSES[i],
                    i - 1,
                    CLASSES[i - 1],
                    self.latency_us[i - 1]
                ));
            }
        }
        for (name, gbps) in [
            ("flow_cap_gbps", self.flow_cap_gbps),
            ("cluster_flow_cap_gbps", self.cluster_flow_cap_gbps),
            ("srd_flow_cap_gbps", self.srd_flow_cap_gbps),
            ("region_egress_gbps", self.region_egress_gbps),
        ] {
            if !(gbps.is_finite() && gbps > 0.0 && gbps <= MAX_FLOW_CAP_GBPS) {
                return Err(format!(
                    "network.{name} = {gbps} is not a rate (more than 0, at most \
                     {MAX_FLOW_CAP_GBPS} Gbps)"
                ));
            }
        }
        let share = self.region_egress_large_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(format!("network.region_egress_large_share = {share} is not 0 to 1"));
        }
        Ok(())
    }

    /// Round-trip latency of a class, µs.
    pub fn latency_us(&self, class: NetworkClass) -> f64 {
        self.latency_us[class as usize]
    }

    /// The single-flow cap between `a` and `b` (`srd`: ENA Express requested).
    pub fn flow_cap_gbps(
        &self,
        fleet: &Fleet,
        a: InstanceId,
        b: InstanceId,
        srd: bool,
    ) -> Result<f64, PlacementError> {
        let class = fleet.network_class(a, b)?;
        let (ga, gb) = (fleet.instance(a)?.group, fleet.instance(b)?.group);
        let same_cluster = ga.is_some()
            && ga == gb
            && ga.is_some_and(|g| fleet.group(g).strategy == PlacementStrategy::Cluster);
        Ok(match class {
            NetworkClass::OtherRegion => self.flow_cap_gbps,
            _ if srd && class <= NetworkClass::SameAz => self.srd_flow_cap_gbps,
            _ if same_cluster => self.cluster_flow_cap_gbps,
            _ => self.flow_cap_gbps,
        })
    }

    /// What instance `a` may send out of its region in total, Gbps.
    pub fn region_egress_gbps(&self, fleet: &Fleet, a: InstanceId) -> Result<f64, PlacementError> {
        Ok(self.region_egress_of(fleet.type_of(a)?))
    }

    /// What an instance of type `ty` may send out of its region in total, Gbps: 5 Gbps (at most
    /// its baseline), or half its bandwidth from 32 vCPUs.
    pub fn region_egress_of(&self, ty: &crate::InstanceType) -> f64 {
        if ty.vcpus >= self.large_instance_vcpus {
            ty.baseline_gbps * self.region_egress_large_share
        } else {
            self.region_egress_gbps.min(ty.baseline_gbps)
        }
    }
}

impl Fleet {
    /// The class of the pair `a`, `b`.
    pub fn network_class(
        &self,
        a: InstanceId,
        b: InstanceId,
    ) -> Result<NetworkClass, PlacementError> {
        let (ha, hb) = (self.instance(a)?.host, self.instance(b)?.host);
        let t = self.topology();
        let (ra, rb) = (t.rack_of(ha), t.rack_of(hb));
        let (za, zb) = (t.az_of_rack(ra), t.az_of_rack(rb));
        Ok(NetworkClass::between(ha == hb, ra == rb, za == zb, t.region_of(za) == t.region_of(zb)))
    }
}
