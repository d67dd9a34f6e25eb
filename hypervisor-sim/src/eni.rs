//! Elastic network interfaces: addresses that belong to an interface, not to an instance.
//!
//! An ENI has a MAC, a primary private IPv4 and secondary IPv4s inside its subnet, the subnet's
//! AZ, security-group ids and a source/destination check (on by default). Every VM has a primary
//! ENI (device index 0) that cannot be detached. Secondary ENIs attach *cold* (at launch), *warm*
//! (VM stopped) or *hot* (VM running), only to a VM in the ENI's AZ; detached and attached
//! elsewhere, an ENI keeps its MAC and IPs. When a VM terminates, its primary ENI is deleted with
//! it and its secondary ENIs are detached and kept, as EC2 does by default.
//!
//! Errors carry EC2's error codes (`OperationNotPermitted`, `InvalidNetworkInterface.InUse`,
//! `IncorrectInstanceState`, ...).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use vnic::frame::MacAddr;

/// An ENI's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EniId(pub u32);

/// A VM's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub u32);

/// A subnet: an IPv4 prefix in one AZ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// Name, e.g. `subnet-a`.
    pub name: String,
    /// Its AZ.
    pub az: String,
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// Addresses AWS keeps in every subnet: the network address, the VPC router, DNS, one reserved
/// for future use, and the broadcast address.
pub const AWS_RESERVED_ADDRESSES: u64 = 5;

impl Subnet {
    /// Addresses a subnet of `prefix` can give to ENIs: its size less
    /// [`AWS_RESERVED_ADDRESSES`] (a /28 has 11, a /24 251).
    pub fn usable_addresses(prefix: u8) -> u64 {
        (1u64 << (32 - u32::from(prefix.min(32)))).saturating_sub(AWS_RESERVED_ADDRESSES)
    }

    /// The addresses a subnet `network/prefix` gives ENIs, in the order EC2 hands them out:
    /// after the network address, the router, DNS and the one reserved for future use, up to
    /// the one before broadcast.
    pub fn usable(network: Ipv4Addr, prefix: u8) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(network);
        (AWS_RESERVED_ADDRESSES - 1..AWS_RESERVED_ADDRESSES - 1 + Self::usable_addresses(prefix))
            .map(move |k| Ipv4Addr::from(base.wrapping_add(k as u32)))
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix.min(32))).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

/// How an ENI was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachKind {
    /// At launch.
    Cold,
    /// While the VM was stopped.
    Warm,
    /// While the VM was running.
    Hot,
}

/// Where an ENI is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The VM.
    pub vm: VmId,
    /// 0 for the primary ENI.
    pub device_index: u8,
    /// How it got there.
    pub kind: AttachKind,
}

/// An elastic network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    /// Its id.
    pub id: EniId,
    /// Its MAC, kept for life.
    pub mac: MacAddr,
    /// Primary private IPv4.
    pub primary_ip: Ipv4Addr,
    /// Secondary private IPv4s.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Its subnet's name.
    pub subnet: String,
    /// Its AZ.
    pub az: String,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// Source/destination check.
    pub src_dst_check: bool,
    /// Where it is attached.
    pub attachment: Option<Attachment>,
}

impl Eni {
    /// Whether `ip` is one of the ENI's addresses.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.primary_ip == ip || self.secondary_ips.contains(&ip)
    }

    /// The source/destination check: an outbound frame must come from one of the ENI's
    /// addresses, an inbound one must be addressed to one; with the check off, anything passes.
    pub fn passes_check(&self, outbound: bool, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        !self.src_dst_check || self.owns(if outbound { src } else { dst })
    }
}

/// A VM's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Gone.
    Terminated,
}

#[derive(Debug, Clone)]
struct VmRecord {
    az: String,
    state: VmState,
}

/// What the ENI rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EniError {
    /// No such subnet.
    #[error("InvalidSubnetID.NotFound: subnet `{0}` does not exist")]
    NoSuchSubnet(String),
    /// No such ENI.
    #[error("InvalidNetworkInterfaceID.NotFound: eni-{0}")]
    NoSuchEni(u32),
    /// No such VM.
    #[error("InvalidInstanceID.NotFound: i-{0}")]
    NoSuchVm(u32),
    /// An address outside the subnet, or taken.
    #[error("InvalidParameterValue: {ip} {why}")]
    BadAddress {
        /// The address.
        ip: Ipv4Addr,
        /// Outside the subnet, or in use.
        why: &'static str,
    },
    /// The primary ENI stays.
    #[error(
        "OperationNotPermitted: the primary network interface (device index 0) of i-{0} cannot be detached"
    )]
    PrimaryDetach(u32),
    /// Attached already.
    #[error("InvalidNetworkInterface.InUse: eni-{eni} is attached to i-{vm}")]
    InUse {
        /// The ENI.
        eni: u32,
        /// Where it is.
        vm: u32,
    },
    /// Not attached.
    #[error("InvalidAttachmentID.NotFound: eni-{0} is not attached")]
    NotAttached(u32),
    /// ENI and VM in different AZs.
    #[error("InvalidParameterCombination: eni-{eni} is in {eni_az}, i-{vm} in {vm_az}")]
    OtherAz {
        /// The ENI.
        eni: u32,
        /// Its AZ.
        eni_az: String,
        /// The VM.
        vm: u32,
        /// The VM's AZ.
        vm_az: String,
    },
    /// A terminated VM takes nothing.
    #[error("IncorrectInstanceState: i-{0} is terminated")]
    Terminated(u32),
    /// Device index taken or out of range.
    #[error("InvalidParameterValue: device index {index} on i-{vm} is taken or above the limit")]
    DeviceIndex {
        /// The VM.
        vm: u32,
        /// The index.
        index: u8,
    },
}

/// Subnets, ENIs and the VMs they attach to.
#[derive(Debug, Default)]
pub struct EniRegistry {
    subnets: BTreeMap<String, Subnet>,
    enis: BTreeMap<EniId, Eni>,
    vms: BTreeMap<VmId, VmRecord>,
    next_eni: u32,
    next_vm: u32,
}

/// What a new ENI is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EniSpec {
    /// Subnet name.
    pub subnet: String,
    /// Primary address.
    pub primary_ip: Option<Ipv4Addr>,
    /// Secondary addresses.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Security groups.
    pub security_groups: Vec<String>,
}

/// Most ENIs one VM takes (device indices 0..MAX).
pub const MAX_ENIS_PER_VM: u8 = 15;

impl EniRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subnet.
    pub fn add_subnet(&mut self, subnet: Subnet) {
        self.subnets.insert(subnet.name.clone(), subnet);
    }

    /// An ENI.
    pub fn eni(&self, id: EniId) -> Result<&Eni, EniError> {
        self.enis.get(&id).ok_or(EniError::NoSuchEni(id.0))
    }

    /// A VM's state.
    pub fn vm_state(&self, vm: VmId) -> Result<VmState, EniError> {
        self.vms.get(&vm).map(|r| r.state).ok_or(EniError::NoSuchVm(vm.0))
    }

    /// The ENIs attached to a VM, by device index.
    pub fn enis_of(&self, vm: VmId) -> Vec<&Eni> {
        let mut v: Vec<&Eni> =
            self.enis.values().filter(|e| e.attachment.is_some_and(|a| a.vm == vm)).collect();
        v.sort_by_key(|e| e.attachment.map(|a| a.device_index));
        v
    }

    /// Creates a detached ENI; its MAC is new, its addresses must lie in the subnet and be free.
    pub fn create_eni(&mut self, spec: &EniSpec) -> Result<EniId, EniError> {
        let subnet = self
            .subnets
            .get(&spec.subnet)
            .ok_or_else(|| EniError::NoSuchSubnet(spec.subnet.clone()))?;
        let primary = match spec.primary_ip {
            Some(ip) => ip,
            None => self
                .free_ip(subnet)
                .ok_or(EniError::BadAddress { ip: subnet.network, why: "subnet is full" })?,
        };
        for &ip in std::iter::once(&primary).chain(&spec.secondary_ips) {
            if !subnet.contains(ip) {
                return Err(EniError::BadAddress { ip, why: "is outside the subnet" });
            }
            if self.enis.values().any(|e| e.owns(ip)) {
                return Err(EniError::BadAddress { ip, why: "is in use" });
            }
        }
        self.next_eni += 1;
        let id = EniId(self.next_eni);
        let eni = Eni {
            id,
            mac: MacAddr([0x0a, 0xe1, 0, (id.0 >> 16) as u8, (id.0 >> 8) as u8, id.0 as u8]),
            primary_ip: primary,
            secondary_ips: spec.secondary_ips.clone(),
            subnet: subnet.name.clone(),
            az: subnet.az.clone(),
            security_groups: spec.security_groups.clone(),
            src_dst_check: true,
            attachment: None,
        };
        self.enis.insert(id, eni);
        Ok(id)
    }

    fn free_ip(&self, subnet: &Subnet) -> Option<Ipv4Addr> {
        Subnet::usable(subnet.network, subnet.prefix)
            .find(|&ip| !self.enis.values().any(|e| e.owns(ip)))
    }

    /// Launches a VM in `az` with a new primary ENI and any secondary ENIs attached cold.
    pub fn launch(
        &mut self,
        az: &str,
        primary: &EniSpec,
        secondary: &[EniId],
    ) -> Result<(VmId, EniId), EniError> {
        let subnet = self
            .subnets
            .get(&primary.subnet)
            .ok_or_else(|| EniError::NoSuchSubnet(primary.subnet.clone()))?;
        let vm = VmId(self.next_vm + 1);
        if subnet.az != az {
            return Err(EniError::OtherAz {
                eni: 0,
                eni_az: subnet.az.clone(),
                vm: vm.0,
                vm_az: az.to_string(),
            });
        }
        for &e in secondary {
            let eni = self.eni(e)?;
            if let Some(a) = eni.attachment {
                return Err(EniError::InUse { eni: e.0, vm: a.vm.0 });
            }
            if eni.az != az {
                return Err(EniError::OtherAz {
                    eni: e.0,
                    eni_az: eni.az.clone(),
                    vm: vm.0,
                    vm_az: az.to_string(),
                });
            }
        }
        let primary = self.create_eni(primary)?;
        self.next_vm += 1;
        self.vms.insert(vm, VmRecord { az: az.to_string(), state: VmState::Running });
        self.set_attachment(primary, Attachment { vm, device_index: 0, kind: AttachKind::Cold });
        for (k, &e) in secondary.iter().enumerate() {
            self.set_attachment(
                e,
                Attachment { vm, device_index: k as u8 + 1, kind: AttachKind::Cold },
            );
        }
        Ok((vm, primary))
    }

    fn set_attachment(&mut self, eni: EniId, a: Attachment) {
        if let Some(e) = self.enis.get_mut(&eni) {
            e.attachment = Some(a);
        }
    }

    /// Attaches a detached ENI to a VM at `device_index`: hot if it runs, warm if stopped.
    pub fn attach(
        &mut self,
        eni: EniId,
        vm: VmId,
        device_index: u8,
    ) -> Result<AttachKind, EniError> {
        let record = self.vms.get(&vm).ok_or(EniError::NoSuchVm(vm.0))?;
        let e = self.eni(eni)?;
        if let Some(a) = e.attachment {
            return Err(EniError::InUse { eni: eni.0, vm: a.vm.0 });
        }
        let kind = match record.state {
            VmState::Running => AttachKind::Hot,
            VmState::Stopped => AttachKind::Warm,
            VmState::Terminated => return Err(EniError::Terminated(vm.0)),
        };
        if e.az != record.az {
            return Err(EniError::OtherAz {
                eni: eni.0,
                eni_az: e.az.clone(),
                vm: vm.0,
                vm_az: record.az.clone(),
            });
        }
        let taken = self
            .enis
            .values()
            .any(|x| x.attachment.is_some_and(|a| a.vm == vm && a.device_index == device_index));
        if device_index == 0 || device_index >= MAX_ENIS_PER_VM || taken {
            return Err(EniError::DeviceIndex { vm: vm.0, index: device_index });
        }
        self.set_attachment(eni, Attachment { vm, device_index, kind });
        Ok(kind)
    }

    /// Detaches a secondary ENI (it keeps its MAC and addresses).
    pub fn detach(&mut self, eni: EniId) -> Result<VmId, EniError> {
        let e = self.eni(eni)?;
        let a = e.attachment.ok_or(EniError::NotAttached(eni.0))?;
        if a.device_index == 0 {
            return Err(EniError::PrimaryDetach(a.vm.0));
        }
        if let Some(e) = self.enis.get_mut(&eni) {
            e.attachment = None;
        }
        Ok(a.vm)
    }

    /// Sets an ENI's source/destination check.
    pub fn set_src_dst_check(&mut self, eni: EniId, on: bool) -> Result<(), EniError> {
        self.enis.get_mut(&eni).ok_or(EniError::NoSuchEni(eni.0))?.src_dst_check = on;
        Ok(())
    }

    /// Stops, starts or terminates a VM. Terminating deletes its primary ENI and detaches the
    /// others.
    pub fn set_state(&mut self, vm: VmId, state: VmState) -> Result<(), EniError> {
        let record = self.vms.get_mut(&vm).ok_or(EniError::NoSuchVm(vm.0))?;
        if record.state == VmState::Terminated {
            return Err(EniError::Terminated(vm.0));
        }
        record.state = state;
        if state == VmState::Terminated {
            self.enis
                .retain(|_, e| !e.attachment.is_some_and(|a| a.vm == vm && a.device_index == 0));
            for e in self.enis.values_mut() {
                if e.attachment.is_some_and(|a| a.vm == vm) {
                    e.attachment = None;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> EniRegistry {
        let mut r = EniRegistry::new();
        r.add_subnet(Subnet {
            name: "a".into(),
            az: "us-east-1a".into(),
            network: Ipv4Addr::new(10, 0, 1, 0),
            prefix: 24,
        });
        r.add_subnet(Subnet {
            name: "b".into(),
            az: "us-east-1b".into(),
            network: Ipv4Addr::new(10, 0, 2, 0),
            prefix: 24,
        });
        r
    }

    fn spec(subnet: &str) -> EniSpec {
        EniSpec { subnet: subnet.into(), ..Default::default() }
    }

    #[test]
    fn the_primary_eni_cannot_be_detached_and_dies_with_its_vm() {
        let mut r = registry();
        let (vm, primary) = r.launch("us-east-1a", &spec("a"), &[]).unwrap();
        assert_eq!(
            r.eni(primary).unwrap().primary_ip,
            Ipv4Addr::new(10, 0, 1, 4),
            "first free after AWS's reserved four"
        );
        assert_eq!(r.detach(primary), Err(EniError::PrimaryDetach(vm.0)));
        assert!(r.detach(primary).unwrap_err().to_string().starts_with("OperationNotPermitted"));
        let extra = r.create_eni(&spec("a")).unwrap();
        assert_eq!(r.attach(extra, vm, 1), Ok(AttachKind::Hot));
        r.set_state(vm, VmState::Terminated).unwrap();
        assert!(r.eni(primary).is_err(), "deleted on termination");
        assert_eq!(r.eni(extra).unwrap().attachment, None, "secondaries are kept, detached");
        assert_eq!(r.attach(extra, vm, 1), Err(EniError::Terminated(vm.0)));
    }

    #[test]
    fn secondary_enis_attach_hot_warm_or_cold_in_their_az_only() {
        let mut r = registry();
        let cold = r.create_eni(&spec("a")).unwrap();
        let (vm, _) = r.launch("us-east-1a", &spec("a"), &[cold]).unwrap();
        assert_eq!(r.eni(cold).unwrap().attachment.map(|a| a.kind), Some(AttachKind::Cold));
        let other_az = r.create_eni(&spec("b")).unwrap();
        let err = r.attach(other_az, vm, 2).unwrap_err();
        assert!(matches!(err, EniError::OtherAz { .. }), "{err}");
        assert!(err.to_string().starts_with("InvalidParameterCombination"));
        let warm = r.create_eni(&spec("a")).unwrap();
        r.set_state(vm, VmState::Stopped).unwrap();
        assert_eq!(r.attach(warm, vm, 2), Ok(AttachKind::Warm));
        assert_eq!(r.attach(warm, vm, 3), Err(EniError::InUse { eni: warm.0, vm: vm.0 }));
        let another = r.create_eni(&spec("a")).unwrap();
        assert!(
            matches!(r.attach(another, vm, 2), Err(EniError::DeviceIndex { .. })),
            "index taken"
        );
        assert!(
            matches!(r.attach(another, vm, 0), Err(EniError::DeviceIndex { .. })),
            "index 0 is the primary's"
        );
        assert_eq!(r.enis_of(vm).len(), 3);
    }

    #[test]
    fn a_moved_eni_keeps_its_mac_and_addresses() {
        let mut r = registry();
        let eni = r
            .create_eni(&EniSpec {
                subnet: "a".into(),
                primary_ip: Some(Ipv4Addr::new(10, 0, 1, 50)),
                secondary_ips: vec![Ipv4Addr::new(10, 0, 1, 51)],
                security_groups: vec!["sg-1".into()],
            })
            .unwrap();
        let (vm1, _) = r.launch("us-east-1a", &spec("a"), &[]).unwrap();
        let (vm2, _) = r.launch("us-east-1a", &spec("a"), &[]).unwrap();
        r.attach(eni, vm1, 1).unwrap();
        let before = r.eni(eni).unwrap().clone();
        assert_eq!(r.detach(eni), Ok(vm1));
        r.attach(eni, vm2, 1).unwrap();
        let after = r.eni(eni).unwrap();
        assert_eq!(
            (after.mac, after.primary_ip, &after.secondary_ips),
            (before.mac, before.primary_ip, &before.secondary_ips)
        );
        assert_eq!(after.attachment.map(|a| a.vm), Some(vm2));
        // Addresses are unique and inside the subnet.
        let taken = EniSpec {
            subnet: "a".into(),
            primary_ip: Some(Ipv4Addr::new(10, 0, 1, 51)),
            ..Default::default()
        };
        assert!(matches!(r.create_eni(&taken), Err(EniError::BadAddress { why: "is in use", .. })));
        let outside = EniSpec {
            subnet: "a".into(),
            primary_ip: Some(Ipv4Addr::new(10, 0, 2, 9)),
            ..Default::default()
        };
        assert!(matches!(
            r.create_eni(&outside),
            Err(EniError::BadAddress { why: "is outside the subnet", .. })
        ));
    }

    #[test]
    fn the_source_destination_check_drops_spoofs_until_turned_off() {
        let mut r = registry();
        let (_, eni) = r.launch("us-east-1a", &spec("a"), &[]).unwrap();
        let me = r.eni(eni).unwrap().primary_ip;
        let other = Ipv4Addr::new(10, 0, 1, 200);
        let peer = Ipv4Addr::new(10, 0, 2, 7);
        let e = r.eni(eni).unwrap();
        assert!(e.passes_check(true, me, peer));
        assert!(!e.passes_check(true, other, peer), "spoofed source");
        assert!(e.passes_check(false, peer, me));
        assert!(!e.passes_check(false, peer, other), "not addressed to this ENI");
        r.set_src_dst_check(eni, false).unwrap();
        assert!(r.eni(eni).unwrap().passes_check(true, other, peer), "a NAT instance turns it off");
    }
}
