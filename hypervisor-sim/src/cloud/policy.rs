//! The network rules the cloud owns: the single-flow cap between two instances, and the network
//! class between two hosts (through `placement`'s one rule).

use super::*;

impl Cloud {
    /// The per-flow caps of a VM's ENIs: 10 Gbps to members of its cluster group, the
    /// region-egress cap to other regions (5 Gbps, or half the instance's bandwidth from 32
    /// vCPUs; applied per flow here, where EC2 caps the instance's total), 5 Gbps otherwise.
    pub(super) fn flow_policy(
        &self,
        host: usize,
        group: Option<String>,
        ty: &InstanceType,
    ) -> FlowCapPolicy {
        let directory = self.directory.clone();
        let model = self.network.clone();
        let ty = ty.clone();
        let regions: Vec<String> = self.hosts.iter().map(|h| h.spec.region.clone()).collect();
        Box::new(move |key: &FlowKey| {
            let peer = match key.remote_ip() {
                std::net::IpAddr::V4(ip) => directory.read().ok().and_then(|d| d.get(&ip).cloned()),
                std::net::IpAddr::V6(_) => None,
            };
            let (other_region, same_cluster) = match peer {
                Some(p) => (
                    regions.get(p.host) != regions.get(host),
                    group.is_some() && p.cluster_group == group,
                ),
                None => (false, false),
            };
            gbps(flow_cap_gbps(&model, &ty, other_region, same_cluster))
        })
    }
}

/// The single-flow cap the device applies to a flow of an instance of type `ty`, Gbps: the
/// region-egress allowance to another region (applied per flow here, where EC2 caps the
/// instance's total), 10 Gbps between members of one cluster group, 5 Gbps otherwise.
pub fn flow_cap_gbps(
    model: &NetworkModel,
    ty: &InstanceType,
    other_region: bool,
    same_cluster: bool,
) -> f64 {
    if other_region {
        model.region_egress_of(ty)
    } else if same_cluster {
        model.cluster_flow_cap_gbps
    } else {
        model.flow_cap_gbps
    }
}

pub(super) fn class_between(a: &HostSpec, b: &HostSpec, same: bool) -> NetworkClass {
    let (region, az) = (a.region == b.region, a.region == b.region && a.az == b.az);
    NetworkClass::between(same, az && a.rack == b.rack, az, region)
}
