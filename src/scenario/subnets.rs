//! Subnets: declared (`[[subnets]]`, a name, an AZ and a /16 to /28 prefix, as in a VPC) or,
//! when none are, one `10.<n>.0.0/16` per AZ named after it; and the one check of whether the
//! ENIs placed in a subnet fit in it (AWS reserves 5 addresses of every subnet), which `plan`
//! and `run` share.

use std::net::Ipv4Addr;

use super::decl::Scenario;
use super::security::{self, Security};
use super::{Eni, ScenarioError, Source, Subnet, Vm};

/// The scenario's subnets, each in a known AZ with a VPC prefix and a unique name.
pub(super) fn resolve(
    s: &Scenario,
    src: &Source<'_>,
    az_names: &[String],
    security: &Security,
) -> Result<Vec<Subnet>, ScenarioError> {
    let mut subnets: Vec<Subnet> = Vec::new();
    for d in &s.subnets {
        if !az_names.contains(d.az.get_ref()) {
            return Err(src.at(
                d.az.span(),
                format!("subnet {}: no AZ named `{}`", d.name.get_ref(), d.az.get_ref()),
            ));
        }
        let text = d.cidr.get_ref();
        let cidr: vnic::policy::Cidr = text
            .parse()
            .map_err(|e: vnic::policy::PolicyError| src.at(d.cidr.span(), e.to_string()))?;
        let (network, prefix) = (cidr.network(), cidr.prefix_len());
        if text.split_once('/').and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok()) != Some(network) {
            return Err(
                src.at(d.cidr.span(), format!("`{text}` has host bits set: the subnet is {cidr}"))
            );
        }
        if !(16..=28).contains(&prefix) {
            return Err(src
                .at(d.cidr.span(), format!("a VPC subnet's prefix is /16 to /28, not /{prefix}")));
        }
        if subnets.iter().any(|x| x.name == *d.name.get_ref()) {
            return Err(
                src.at(d.name.span(), format!("subnet `{}` is defined twice", d.name.get_ref()))
            );
        }
        subnets.push(Subnet {
            name: d.name.get_ref().clone(),
            az: d.az.get_ref().clone(),
            network,
            prefix,
            nacl: security::subnet_nacl(&d.nacl, security, src)?,
        });
    }
    if s.subnets.is_empty() {
        for (i, az) in az_names.iter().enumerate() {
            subnets.push(Subnet {
                name: az.clone(),
                az: az.clone(),
                network: Ipv4Addr::new(10, (i % 256) as u8, 0, 0),
                prefix: 16,
                nacl: vnic::policy::vpc::DEFAULT_NACL.to_string(),
            });
        }
    }
    Ok(subnets)
}

/// Every subnet has an address for each ENI and secondary address placed in it, counted as
/// the cloud gives them (AWS reserves five of every subnet).
pub(super) fn check_room(
    src: &Source<'_>,
    s: &Scenario,
    subnets: &[Subnet],
    vms: &[Vm],
    enis: &[Eni],
) -> Result<(), ScenarioError> {
    for subnet in subnets {
        let primaries = vms.iter().filter(|v| v.subnet == subnet.name).count() as u64;
        let secondary: u64 =
            enis.iter().filter(|e| e.subnet == subnet.name).map(|e| 1 + e.ips.len() as u64).sum();
        let needed = primaries + secondary;
        let usable = hypervisor_sim::eni::Subnet::usable_addresses(subnet.prefix);
        if needed > usable {
            let message = format!(
                "subnet {} ({}/{}) has {usable} usable addresses (AWS reserves {}) for {needed} \
                 ({primaries} VMs' primary ENIs, {secondary} for secondary ENIs and their \
                 addresses): use a shorter prefix",
                subnet.name,
                subnet.network,
                subnet.prefix,
                hypervisor_sim::eni::AWS_RESERVED_ADDRESSES,
            );
            let declared = s.subnets.iter().find(|d| *d.name.get_ref() == subnet.name);
            return Err(match declared {
                Some(d) => src.at(d.cidr.span(), message),
                None => src.whole(message),
            });
        }
    }
    Ok(())
}

/// Gives every ENI its primary address as EC2 does: the first free one of its subnet after the
/// four AWS reserves, VM by VM in declaration order, each VM's secondary ENIs before its
/// primary (the order `run` launches them in); declared secondary addresses are taken first.
pub(super) fn assign_addresses(
    src: &Source<'_>,
    subnets: &[Subnet],
    vms: &mut [Vm],
    enis: &mut [Eni],
) -> Result<(), ScenarioError> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut used: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for e in enis.iter() {
        used.entry(e.subnet.clone()).or_default().extend(e.ips.iter().copied());
    }
    // Each subnet's addresses in EC2's order, consumed as they are handed out: the next free
    // one is found from where the last was taken, not from the start.
    type Addresses = Box<dyn Iterator<Item = Ipv4Addr>>;
    let mut free: BTreeMap<String, Addresses> = BTreeMap::new();
    let mut next = |subnet_name: &str, who: &str| -> Result<Ipv4Addr, ScenarioError> {
        let Some(subnet) = subnets.iter().find(|s| s.name == subnet_name) else {
            return Err(src.whole(format!("{who}: no subnet named `{subnet_name}`")));
        };
        let taken = used.entry(subnet.name.clone()).or_default();
        let addresses = free.entry(subnet.name.clone()).or_insert_with(|| {
            Box::new(hypervisor_sim::eni::Subnet::usable(subnet.network, subnet.prefix))
        });
        let Some(ip) = addresses.find(|ip| !taken.contains(ip)) else {
            return Err(src.whole(format!(
                "{who}: subnet {} ({}/{}) has no free address left",
                subnet.name, subnet.network, subnet.prefix
            )));
        };
        taken.insert(ip);
        Ok(ip)
    };
    let mut enis_of: Vec<Vec<usize>> = vec![Vec::new(); vms.len()];
    for (k, e) in enis.iter().enumerate() {
        if let Some(list) = enis_of.get_mut(e.vm) {
            list.push(k);
        }
    }
    for (i, vm) in vms.iter_mut().enumerate() {
        for &k in &enis_of[i] {
            let e = &mut enis[k];
            e.ip = next(&e.subnet, &e.name)?;
        }
        vm.ip = next(&vm.subnet, &vm.name)?;
    }
    Ok(())
}
