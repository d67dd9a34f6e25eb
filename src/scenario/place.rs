//! Placing the fleet: placement groups, then each `[[vms]]` entry launched as one request with
//! `placement`'s rules (so an impossible placement is an error at the entry, with EC2's code),
//! then the secondary ENIs attached to the VMs placed.

use std::net::Ipv4Addr;

use placement::{Fleet, InstanceType, LaunchRequest, PlacementStrategy, Topology};

use super::decl::{EniDecl, Scenario, VmDecl};
use super::security::{self, Security};
use super::source::parse_path;
use super::{Eni, PathName, ScenarioError, Source, Subnet, Vm};
use vnic::policy::EphemeralPorts;

/// Seconds full burst credits last when a VM entry does not say.
const DEFAULT_BURST_S: f64 = 300.0;
/// MTU of a VM's interfaces when its entry does not say (a VPC's).
pub(super) const DEFAULT_MTU: u16 = 9001;

/// The fleet on `topology`, fragmented by other tenants as the scenario says, with its
/// placement groups created; and the names of the cluster groups.
pub(super) fn fleet(
    s: &Scenario,
    src: &Source<'_>,
    topology: Topology,
    types: &[InstanceType],
) -> Result<(Fleet, Vec<String>), ScenarioError> {
    let mut fleet = Fleet::new(topology, types.to_vec());
    if s.fragmentation > 0.0 {
        fleet.fragment(s.seed, s.fragmentation);
    }
    let mut cluster_groups: Vec<String> = Vec::new();
    for g in &s.groups {
        let strategy = match (g.strategy.get_ref().as_str(), g.partitions) {
            ("cluster", None) => PlacementStrategy::Cluster,
            ("spread", None) => PlacementStrategy::Spread { level: g.level.unwrap_or_default() },
            ("partition", Some(partitions)) => PlacementStrategy::Partition { partitions },
            ("partition", None) => {
                return Err(src.at(g.strategy.span(), "a partition group needs `partitions`"));
            }
            ("cluster" | "spread", Some(_)) => {
                return Err(src.at(g.strategy.span(), "only partition groups take `partitions`"));
            }
            (other, _) => {
                return Err(src.at(
                    g.strategy.span(),
                    format!("unknown strategy `{other}`: expected cluster, spread or partition"),
                ));
            }
        };
        if strategy == PlacementStrategy::Cluster {
            cluster_groups.push(g.name.get_ref().clone());
        }
        fleet
            .create_group(g.name.get_ref(), None, strategy)
            .map_err(|e| src.at(g.name.span(), e.to_string()))?;
    }
    Ok((fleet, cluster_groups))
}

/// What every VM of one entry shares, checked.
struct Interfaces {
    path: PathName,
    mtu: u16,
    queues: u16,
    rx_interrupts: bool,
    burst_s: f64,
}

fn interfaces(d: &VmDecl, src: &Source<'_>) -> Result<Interfaces, ScenarioError> {
    let path = match &d.path {
        Some(p) => parse_path(p, src)?,
        None => PathName::Sriov,
    };
    let mtu = src.ranged(&d.mtu, "mtu", 576..=9001, DEFAULT_MTU)?;
    let queues = src.ranged(&d.queues, "queues", 1..=32, 1)?;
    let rx_interrupts = match &d.rx {
        None => true,
        Some(r) => match r.get_ref().as_str() {
            "interrupt" => true,
            "poll" => false,
            other => {
                return Err(
                    src.at(r.span(), format!("rx `{other}`: expected `interrupt` or `poll`"))
                );
            }
        },
    };
    let burst_s = match &d.burst_s {
        Some(b) if !(b.get_ref().is_finite() && *b.get_ref() >= 0.0) => {
            return Err(src.at(b.span(), format!("burst_s {} is not a duration", b.get_ref())));
        }
        Some(b) => *b.get_ref(),
        None => DEFAULT_BURST_S,
    };
    Ok(Interfaces { path, mtu, queues, rx_interrupts, burst_s })
}

/// The entry's subnet if it names one (which must agree with its AZ, if it names one too).
fn declared_subnet<'s>(
    d: &VmDecl,
    src: &Source<'_>,
    subnets: &'s [Subnet],
    az_names: &[String],
) -> Result<Option<&'s Subnet>, ScenarioError> {
    if let Some(az) = &d.az
        && !az_names.contains(az.get_ref())
        && d.subnet.is_none()
    {
        return Err(src.at(az.span(), format!("no AZ named `{}`", az.get_ref())));
    }
    let Some(sn) = &d.subnet else { return Ok(None) };
    let Some(found) = subnets.iter().find(|x| x.name == *sn.get_ref()) else {
        return Err(src.at(sn.span(), format!("no subnet named `{}`", sn.get_ref())));
    };
    if let Some(az) = &d.az
        && *az.get_ref() != found.az
    {
        return Err(src.at(
            az.span(),
            format!("az `{}` but subnet `{}` is in {}", az.get_ref(), found.name, found.az),
        ));
    }
    Ok(Some(found))
}

/// Launches every `[[vms]]` entry in order, one request per entry.
pub(super) fn vms(
    s: &Scenario,
    src: &Source<'_>,
    fleet: &mut Fleet,
    subnets: &[Subnet],
    az_names: &[String],
    cluster_groups: &[String],
    security: &Security,
) -> Result<Vec<Vm>, ScenarioError> {
    let mut vms: Vec<Vm> = Vec::new();
    let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
    for d in &s.vms {
        let name_at = d.name.span();
        let Some(ty) =
            fleet.instance_types().iter().find(|t| t.name == *d.instance_type.get_ref()).cloned()
        else {
            return Err(src.at(
                d.instance_type.span(),
                format!("unknown instance type `{}`", d.instance_type.get_ref()),
            ));
        };
        let subnet = declared_subnet(d, src, subnets, az_names)?;
        let interfaces = interfaces(d, src)?;
        let security_groups =
            security::eni_groups(&d.security_groups, security, name_at.clone(), src)?;
        let ephemeral = match &d.ephemeral_ports {
            None => EphemeralPorts::Linux,
            Some(e) => e
                .get_ref()
                .parse()
                .map_err(|x: vnic::policy::PolicyError| src.at(e.span(), x.to_string()))?,
        };
        let listens = match &d.listens {
            None => None,
            Some(ports) => {
                if let Some(zero) = ports.iter().find(|p| *p.get_ref() == 0) {
                    return Err(src.at(zero.span(), "listens: port 0 is not a port to listen on"));
                }
                Some(ports.iter().map(|p| *p.get_ref()).collect())
            }
        };
        let tcp_syn_retries = src.ranged(
            &d.tcp_syn_retries,
            "tcp_syn_retries",
            0..=hypervisor_sim::sim::traffic::MAX_SYN_RETRIES,
            hypervisor_sim::sim::traffic::LINUX_SYN_RETRIES,
        )?;
        if d.count == Some(0) {
            return Err(src.at(name_at.clone(), "count 0: a VM entry launches at least one"));
        }
        let request = LaunchRequest {
            instance_type: ty.name.clone(),
            count: d.count.unwrap_or(1),
            group: d.group.as_ref().map(|g| g.get_ref().clone()),
            region: None,
            az: subnet.map(|x| x.az.clone()).or_else(|| d.az.as_ref().map(|a| a.get_ref().clone())),
            partition: d.partition,
        };
        let ids = fleet.launch(&request).map_err(|e| {
            let at = match (&d.group, e.to_string().contains("does not exist")) {
                (Some(g), true) => g.span(),
                _ => name_at.clone(),
            };
            src.at(at, format!("vm {}: {e}", d.name.get_ref()))
        })?;
        let cluster_group =
            d.group.as_ref().map(|g| g.get_ref().clone()).filter(|g| cluster_groups.contains(g));
        for (k, id) in ids.into_iter().enumerate() {
            let name = vm_name(d, k);
            if !names.insert(name.clone()) {
                return Err(src.at(name_at.clone(), format!("VM name `{name}` is used twice")));
            }
            let inst = fleet.instance(id).map_err(|e| src.at(name_at.clone(), e.to_string()))?;
            let t = fleet.topology();
            let az = &t.azs[t.az_of(inst.host).index()].name;
            let subnet = match subnet.or_else(|| subnets.iter().find(|x| x.az == *az)) {
                Some(x) => x.name.clone(),
                None => {
                    return Err(src.at(
                        name_at.clone(),
                        format!("vm {name} landed in {az}, which has no subnet"),
                    ));
                }
            };
            vms.push(Vm {
                name,
                id,
                instance_type: ty.clone(),
                subnet,
                path: interfaces.path,
                mtu: interfaces.mtu,
                queues: interfaces.queues,
                rx_interrupts: interfaces.rx_interrupts,
                burst_s: interfaces.burst_s,
                src_dst_check: d.src_dst_check.unwrap_or(true),
                cluster_group: cluster_group.clone(),
                ip: std::net::Ipv4Addr::UNSPECIFIED,
                security_groups: security_groups.clone(),
                ephemeral,
                listens: listens.clone(),
                tcp_syn_retries,
            });
        }
    }
    Ok(vms)
}

/// The name of the `k`-th VM an entry launches: `web-0`, `web-1`, ... with a `count`, else the
/// entry's name.
fn vm_name(d: &VmDecl, k: usize) -> String {
    match d.count {
        Some(_) => format!("{}-{k}", d.name.get_ref()),
        None => d.name.get_ref().clone(),
    }
}

/// Every VM's name, in launch order, before any is placed.
pub(super) fn declared_names(s: &Scenario) -> Vec<String> {
    s.vms
        .iter()
        .flat_map(|d| (0..d.count.unwrap_or(1) as usize).map(move |k| vm_name(d, k)))
        .collect()
}

/// Counts the instances the `[[vms]]` entries ask for before any is placed: past
/// `max_instances` in all, the entry that crosses it is refused with its count.
pub(super) fn check_instance_count(
    s: &Scenario,
    src: &Source<'_>,
    max_instances: u64,
) -> Result<(), ScenarioError> {
    let mut total: u64 = 0;
    for d in &s.vms {
        let count = u64::from(d.count.unwrap_or(1));
        total = total.saturating_add(count);
        if total > max_instances {
            return Err(src.at(
                d.name.span(),
                format!(
                    "vms `{}` brings the scenario to {} instances; the limit is {} \
                     (--max-instances)",
                    d.name.get_ref(),
                    super::thousands(total),
                    super::thousands(max_instances)
                ),
            ));
        }
    }
    Ok(())
}

/// The secondary ENIs, each attached to a placed VM in a subnet of the VM's AZ.
pub(super) fn enis(
    s: &Scenario,
    src: &Source<'_>,
    vms: &[Vm],
    subnets: &[Subnet],
    security: &Security,
) -> Result<Vec<Eni>, ScenarioError> {
    let mut enis: Vec<Eni> = Vec::new();
    for d in &s.enis {
        let Some(vm) = vms.iter().position(|v| v.name == *d.vm.get_ref()) else {
            return Err(src.at(d.vm.span(), format!("no VM named `{}`", d.vm.get_ref())));
        };
        let subnet = eni_subnet(d, src, &vms[vm], subnets)?;
        let path = match &d.path {
            Some(p) => parse_path(p, src)?,
            None => PathName::Sriov,
        };
        let mut ips = Vec::new();
        for ip in &d.ips {
            match ip.get_ref().parse::<Ipv4Addr>() {
                Ok(a) => ips.push(a),
                Err(_) => {
                    return Err(
                        src.at(ip.span(), format!("`{}` is not an IPv4 address", ip.get_ref()))
                    );
                }
            }
        }
        if enis.iter().any(|e| e.name == *d.name.get_ref()) {
            return Err(
                src.at(d.name.span(), format!("ENI `{}` is defined twice", d.name.get_ref()))
            );
        }
        let security_groups =
            security::eni_groups(&d.security_groups, security, d.name.span(), src)?;
        enis.push(Eni {
            name: d.name.get_ref().clone(),
            subnet,
            vm,
            path,
            ips,
            src_dst_check: d.src_dst_check.unwrap_or(true),
            ip: Ipv4Addr::UNSPECIFIED,
            security_groups,
        });
    }
    Ok(enis)
}

/// A secondary ENI's subnet: the one it names, in its VM's AZ, or its VM's.
fn eni_subnet(
    d: &EniDecl,
    src: &Source<'_>,
    vm: &Vm,
    subnets: &[Subnet],
) -> Result<String, ScenarioError> {
    let Some(sn) = &d.subnet else { return Ok(vm.subnet.clone()) };
    let Some(found) = subnets.iter().find(|x| x.name == *sn.get_ref()) else {
        return Err(src.at(sn.span(), format!("no subnet named `{}`", sn.get_ref())));
    };
    let vm_az = subnets.iter().find(|x| x.name == vm.subnet).map(|x| x.az.as_str());
    if vm_az != Some(found.az.as_str()) {
        return Err(src.at(
            sn.span(),
            format!(
                "eni {}: subnet {} is in {}, VM {} in {}: an ENI attaches only within its AZ",
                d.name.get_ref(),
                found.name,
                found.az,
                vm.name,
                vm_az.unwrap_or("?")
            ),
        ));
    }
    Ok(found.name.clone())
}
