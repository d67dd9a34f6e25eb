//! A VPC's filters in one place: its security groups, NACLs, subnets and ENIs, and the walk of
//! one packet from ENI to ENI through every filter on its way, in the order EC2 applies them:
//! the sender's security groups (outbound), the sender's subnet's NACL (outbound) and the
//! receiver's subnet's NACL (inbound) when the two subnets differ, the receiver's security
//! groups (inbound). Each hop's decision comes with the rule that made it, or the rule that is
//! missing, in words.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::conntrack::{EniFilter, SgVerdict, Timeouts};
use super::nacl::{Action, Nacl};
use super::sg::{CompiledGroups, SecurityGroup, SgRule};
use super::{Cidr, Direction, PolicyError, Quotas, Tuple};

/// Where a packet is decided on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// The sending ENI's security groups.
    SgOut(usize),
    /// The sending subnet's NACL.
    NaclOut(usize),
    /// The receiving subnet's NACL.
    NaclIn(usize),
    /// The receiving ENI's security groups.
    SgIn(usize),
}

/// One hop's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopDecision {
    /// Where.
    pub hop: Hop,
    /// Whether it let the packet on.
    pub passed: bool,
    /// Why, in words.
    pub why: String,
}

/// A packet's way through the VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// Every hop it was decided at, in order, up to the one that stopped it.
    pub hops: Vec<HopDecision>,
    /// The receiving ENI, if the destination is one of the VPC's.
    pub to: Option<usize>,
}

impl Passage {
    /// Whether it arrived (or left the VPC, for a destination outside it).
    pub fn delivered(&self) -> bool {
        self.hops.iter().all(|h| h.passed)
    }

    /// The hop that stopped it.
    pub fn blocked_at(&self) -> Option<&HopDecision> {
        self.hops.iter().find(|h| !h.passed)
    }
}

#[derive(Debug)]
struct Subnet {
    name: String,
    cidr: Cidr,
    nacl: String,
}

#[derive(Debug)]
struct Eni {
    name: String,
    ip: Ipv4Addr,
    subnet: usize,
    groups: Vec<String>,
    filter: EniFilter,
}

/// A VPC (see the module docs).
#[derive(Debug)]
pub struct Vpc {
    /// Its id.
    pub id: String,
    /// Its prefix.
    pub cidr: Cidr,
    quotas: Quotas,
    groups: BTreeMap<String, SecurityGroup>,
    nacls: BTreeMap<String, Nacl>,
    subnets: Vec<Subnet>,
    enis: Vec<Eni>,
    /// ENIs were added since the rules were compiled.
    stale: bool,
}

/// The id of every VPC's default security group here.
pub const DEFAULT_GROUP: &str = "default";
/// The id of every VPC's default NACL here.
pub const DEFAULT_NACL: &str = "acl-default";

impl Vpc {
    /// A VPC of `cidr` with its default security group and NACL.
    pub fn new(id: &str, cidr: Cidr, quotas: Quotas) -> Result<Self, PolicyError> {
        quotas.check()?;
        let mut groups = BTreeMap::new();
        groups.insert(DEFAULT_GROUP.to_string(), SecurityGroup::vpc_default(DEFAULT_GROUP, id));
        let mut nacls = BTreeMap::new();
        nacls.insert(DEFAULT_NACL.to_string(), Nacl::vpc_default(DEFAULT_NACL));
        Ok(Self {
            id: id.to_string(),
            cidr,
            quotas,
            groups,
            nacls,
            subnets: Vec::new(),
            enis: Vec::new(),
            stale: false,
        })
    }

    /// The quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Adds (or replaces) a security group.
    pub fn put_group(&mut self, group: SecurityGroup) -> Result<(), PolicyError> {
        self.groups.insert(group.id.clone(), group);
        self.recompile()
    }

    /// Adds (or replaces) a NACL.
    pub fn put_nacl(&mut self, nacl: Nacl) {
        self.nacls.insert(nacl.id.clone(), nacl);
    }

    /// The NACL `id`.
    pub fn nacl(&self, id: &str) -> Option<&Nacl> {
        self.nacls.get(id)
    }

    /// Adds a subnet with its NACL; returns its index.
    pub fn add_subnet(&mut self, name: &str, cidr: Cidr, nacl: &str) -> Result<usize, PolicyError> {
        if !self.cidr.contains(cidr.network()) || cidr.prefix_len() < self.cidr.prefix_len() {
            return Err(PolicyError::InvalidParameterValue(format!(
                "subnet {name} ({cidr}) is not within the VPC's {}",
                self.cidr
            )));
        }
        if !self.nacls.contains_key(nacl) {
            return Err(PolicyError::InvalidParameterValue(format!("no network ACL {nacl}")));
        }
        self.subnets.push(Subnet { name: name.to_string(), cidr, nacl: nacl.to_string() });
        Ok(self.subnets.len() - 1)
    }

    /// Adds an ENI at `ip` in subnet `subnet` with `groups`; returns its index.
    pub fn add_eni(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        subnet: usize,
        groups: &[&str],
        max_connections: usize,
        timeouts: Timeouts,
    ) -> Result<usize, PolicyError> {
        timeouts.check()?;
        let Some(s) = self.subnets.get(subnet) else {
            return Err(PolicyError::InvalidParameterValue(format!("no subnet {subnet}")));
        };
        if !s.cidr.contains(ip) {
            return Err(PolicyError::InvalidParameterValue(format!(
                "{name}'s address {ip} is not in subnet {} ({})",
                s.name, s.cidr
            )));
        }
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if groups.is_empty() {
            return Err(PolicyError::NoSecurityGroup);
        }
        if groups.len() > self.quotas.groups_per_eni {
            return Err(PolicyError::SecurityGroupsPerInterfaceLimitExceeded {
                groups: groups.len(),
                quota: self.quotas.groups_per_eni,
            });
        }
        if let Some(g) = groups.iter().find(|g| !self.groups.contains_key(*g)) {
            return Err(PolicyError::GroupNotFound(g.clone()));
        }
        // Every ENI's rules are compiled again, once, before the next packet: a new member
        // changes what rules naming its groups allow.
        self.enis.push(Eni {
            name: name.to_string(),
            ip,
            subnet,
            groups,
            filter: EniFilter::new(self.placeholder_groups()?, max_connections, timeouts),
        });
        self.stale = true;
        Ok(self.enis.len() - 1)
    }

    /// Compiles every ENI's rules if an ENI was added since they last were.
    fn compile_if_stale(&mut self) -> Result<(), PolicyError> {
        if self.stale {
            self.recompile()?;
        }
        Ok(())
    }

    fn placeholder_groups(&self) -> Result<CompiledGroups, PolicyError> {
        let g = SecurityGroup::empty("-", &self.id);
        CompiledGroups::compile(&[&g], &BTreeMap::new(), &self.quotas)
    }

    /// Adds a rule to a group; every ENI's filter is recompiled, tracked connections kept.
    pub fn authorize(
        &mut self,
        group: &str,
        dir: Direction,
        rule: SgRule,
    ) -> Result<(), PolicyError> {
        let quotas = self.quotas;
        self.groups
            .get_mut(group)
            .ok_or_else(|| PolicyError::GroupNotFound(group.to_string()))?
            .authorize(dir, rule, &quotas)?;
        self.recompile()
    }

    /// Removes a rule from a group; tracked connections it allowed live on.
    pub fn revoke(
        &mut self,
        group: &str,
        dir: Direction,
        rule: &SgRule,
    ) -> Result<bool, PolicyError> {
        let had = self
            .groups
            .get_mut(group)
            .ok_or_else(|| PolicyError::GroupNotFound(group.to_string()))?
            .revoke(dir, rule);
        self.recompile()?;
        Ok(had)
    }

    fn members(&self) -> BTreeMap<String, Vec<Ipv4Addr>> {
        let mut m: BTreeMap<String, Vec<Ipv4Addr>> =
            self.groups.keys().map(|g| (g.clone(), Vec::new())).collect();
        for e in &self.enis {
            for g in &e.groups {
                m.entry(g.clone()).or_default().push(e.ip);
            }
        }
        m
    }

    fn recompile(&mut self) -> Result<(), PolicyError> {
        let members = self.members();
        let mut compiled = Vec::with_capacity(self.enis.len());
        for e in &self.enis {
            let groups: Vec<&SecurityGroup> = e
                .groups
                .iter()
                .map(|g| self.groups.get(g).ok_or_else(|| PolicyError::GroupNotFound(g.clone())))
                .collect::<Result<_, _>>()?;
            compiled.push(CompiledGroups::compile(&groups, &members, &self.quotas)?);
        }
        for (e, c) in self.enis.iter_mut().zip(compiled) {
            e.filter.set_groups(c);
        }
        self.stale = false;
        Ok(())
    }

    /// What a device needs to filter ENI `eni`'s traffic itself: its compiled groups, its
    /// subnet's prefix and its subnet's NACL.
    pub fn device_parts(
        &mut self,
        eni: usize,
    ) -> Result<(CompiledGroups, Cidr, Nacl), PolicyError> {
        self.compile_if_stale()?;
        let e = self
            .enis
            .get(eni)
            .ok_or_else(|| PolicyError::InvalidParameterValue(format!("no ENI {eni}")))?;
        let s = &self.subnets[e.subnet];
        let nacl = self.nacls.get(&s.nacl).cloned().ok_or_else(|| {
            PolicyError::InvalidParameterValue(format!("no network ACL {}", s.nacl))
        })?;
        Ok((e.filter.groups().clone(), s.cidr, nacl))
    }

    /// The ENI at `ip`.
    pub fn eni_at(&self, ip: Ipv4Addr) -> Option<usize> {
        self.enis.iter().position(|e| e.ip == ip)
    }

    /// An ENI's name.
    pub fn eni_name(&self, eni: usize) -> &str {
        self.enis.get(eni).map_or("?", |e| e.name.as_str())
    }

    /// An ENI's filter (its compiled groups and connections; compiled by the last `send`).
    pub fn filter(&self, eni: usize) -> Option<&EniFilter> {
        self.enis.get(eni).map(|e| &e.filter)
    }

    /// A subnet's name.
    pub fn subnet_name(&self, subnet: usize) -> &str {
        self.subnets.get(subnet).map_or("?", |s| s.name.as_str())
    }

    fn sg_hop(
        &mut self,
        now_ns: u64,
        eni: usize,
        dir: Direction,
        t: &Tuple,
        flags: u8,
    ) -> HopDecision {
        let e = &mut self.enis[eni];
        let verdict = e.filter.decide(now_ns, dir, t, flags);
        let hop = match dir {
            Direction::Outbound => Hop::SgOut(eni),
            Direction::Inbound => Hop::SgIn(eni),
        };
        let why = match verdict {
            SgVerdict::Tracked => format!("{}: a tracked connection ({})", e.name, t),
            SgVerdict::ConntrackFull => format!(
                "{}: the conntrack allowance is spent ({} connections tracked)",
                e.name,
                e.filter.conntrack().len()
            ),
            SgVerdict::Opened | SgVerdict::Untracked | SgVerdict::Denied => {
                let reason = e.filter.explain(dir, t).describe(dir, t);
                let untracked = if verdict == SgVerdict::Untracked { " (untracked)" } else { "" };
                format!("{}: {reason}{untracked}", e.name)
            }
        };
        HopDecision { hop, passed: verdict.passes(), why }
    }

    fn nacl_hop(&self, subnet: usize, dir: Direction, t: &Tuple) -> HopDecision {
        let s = &self.subnets[subnet];
        let hop = match dir {
            Direction::Outbound => Hop::NaclOut(subnet),
            Direction::Inbound => Hop::NaclIn(subnet),
        };
        match self.nacls.get(&s.nacl) {
            Some(n) => HopDecision {
                hop,
                passed: n.decide(dir, t).action() == Action::Allow,
                why: format!("subnet {}: {}", s.name, n.describe(dir, t)),
            },
            None => HopDecision {
                hop,
                passed: false,
                why: format!("subnet {}: no network ACL {}", s.name, s.nacl),
            },
        }
    }

    /// Sends `t` (TCP flags `flags`) from ENI `from` at `now_ns`, through every filter on its
    /// way (see the module docs), stopping at the first that refuses it. Connections are
    /// tracked as it goes.
    pub fn send(
        &mut self,
        now_ns: u64,
        from: usize,
        t: &Tuple,
        flags: u8,
    ) -> Result<Passage, PolicyError> {
        self.compile_if_stale()?;
        let to = self.eni_at(t.dst);
        let mut hops = vec![self.sg_hop(now_ns, from, Direction::Outbound, t, flags)];
        let from_subnet = self.enis[from].subnet;
        let to_subnet = to.map(|e| self.enis[e].subnet);
        if hops[0].passed && to_subnet != Some(from_subnet) {
            hops.push(self.nacl_hop(from_subnet, Direction::Outbound, t));
            if let Some(ts) = to_subnet
                && hops.iter().all(|h| h.passed)
            {
                hops.push(self.nacl_hop(ts, Direction::Inbound, t));
            }
        }
        if let Some(to) = to
            && hops.iter().all(|h| h.passed)
        {
            hops.push(self.sg_hop(now_ns, to, Direction::Inbound, t, flags));
        }
        Ok(Passage { hops, to })
    }
}
