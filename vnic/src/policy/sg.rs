//! Security groups: allow-only rules per direction, and their compiled form for one ENI.
//!
//! An ENI's groups are compiled together, per direction, into an index: for TCP and UDP the
//! destination ports are cut into segments at every rule's bounds, and each segment holds the
//! union of the peer addresses its rules allow, as sorted disjoint ranges. Deciding a packet is
//! a binary search for its port's segment and one for its peer's address, whatever the number
//! of rules (5 groups of 60 rules make at most 601 segments). A rule whose peer is a security
//! group allows the addresses of every ENI in that group when the rules are compiled; the ENIs
//! are recompiled when a group's membership changes, as EC2 updates them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::{
    Cidr, Direction, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PolicyError, Ports, Protocol, Quotas, Tuple,
};

/// Whom a rule allows: addresses, or the ENIs of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// An IPv4 prefix.
    Cidr(Cidr),
    /// Every ENI in the security group of this id (the rule's own group included).
    Group(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(c) => write!(f, "{c}"),
            Peer::Group(g) => f.write_str(g),
        }
    }
}

/// One rule: what it allows, from (inbound) or to (outbound) whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SgRule {
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports (ICMP: type and code).
    pub ports: Ports,
    /// The peer.
    pub peer: Peer,
}

impl SgRule {
    /// A rule allowing `protocol` on `ports` with `peer`.
    pub fn new(protocol: Protocol, ports: Ports, peer: Peer) -> Self {
        Self { protocol, ports, peer }
    }

    /// Everything, with `peer`.
    pub fn all(peer: Peer) -> Self {
        Self { protocol: Protocol::All, ports: Ports::All, peer }
    }

    /// Whether it matches protocol and port of `t` (not the peer).
    fn matches_service(&self, t: &Tuple) -> bool {
        self.protocol.matches(t.proto)
            && match self.protocol {
                // A rule for every protocol covers every port.
                Protocol::All => true,
                Protocol::Number(PROTO_TCP | PROTO_UDP | PROTO_ICMP) => self.ports.matches(t),
                // Other protocols have no ports.
                Protocol::Number(_) => true,
            }
    }
}

impl fmt::Display for SgRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.protocol, self.ports) {
            (Protocol::All, _) => write!(f, "all traffic"),
            (p @ Protocol::Number(PROTO_TCP | PROTO_UDP | PROTO_ICMP), ports) => {
                write!(f, "{p} {ports}")
            }
            (p, _) => write!(f, "{p}"),
        }?;
        write!(f, " {}", self.peer)
    }
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// Its id (`sg-web`).
    pub id: String,
    /// Its VPC.
    pub vpc: String,
    inbound: Vec<SgRule>,
    outbound: Vec<SgRule>,
}

impl SecurityGroup {
    /// A group as EC2 creates one: no inbound rule, and one allowing everything out.
    pub fn new(id: impl Into<String>, vpc: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            vpc: vpc.into(),
            inbound: Vec::new(),
            outbound: vec![SgRule::all(Peer::Cidr(Cidr::ANY))],
        }
    }

    /// A VPC's default group: also everything in from its own members.
    pub fn vpc_default(id: impl Into<String>, vpc: impl Into<String>) -> Self {
        let mut g = Self::new(id, vpc);
        g.inbound.push(SgRule::all(Peer::Group(g.id.clone())));
        g
    }

    /// A group with no rule at all (what `new` is after its outbound rule is revoked).
    pub fn empty(id: impl Into<String>, vpc: impl Into<String>) -> Self {
        Self { id: id.into(), vpc: vpc.into(), inbound: Vec::new(), outbound: Vec::new() }
    }

    /// Its rules in `dir`.
    pub fn rules(&self, dir: Direction) -> &[SgRule] {
        match dir {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// Adds a rule in `dir` (a rule it already has is not added twice, as in EC2), within the
    /// quota.
    pub fn authorize(
        &mut self,
        dir: Direction,
        rule: SgRule,
        quotas: &Quotas,
    ) -> Result<(), PolicyError> {
        rule.ports.check()?;
        let id = self.id.clone();
        let rules = match dir {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        };
        if rules.contains(&rule) {
            return Ok(());
        }
        if rules.len() >= quotas.rules_per_group {
            return Err(PolicyError::RulesPerSecurityGroupLimitExceeded {
                group: id,
                dir,
                rules: rules.len() + 1,
                quota: quotas.rules_per_group,
            });
        }
        rules.push(rule);
        Ok(())
    }

    /// Removes a rule in `dir`; true if it had it.
    pub fn revoke(&mut self, dir: Direction, rule: &SgRule) -> bool {
        let rules = match dir {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        };
        let before = rules.len();
        rules.retain(|r| r != rule);
        rules.len() != before
    }
}

/// Sorted, disjoint, inclusive address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AddrSet(Vec<(u32, u32)>);

impl AddrSet {
    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Self(merged)
    }

    #[inline]
    fn contains(&self, ip: u32) -> bool {
        // The last range starting at or before `ip`.
        let i = self.0.partition_point(|&(a, _)| a <= ip);
        i > 0 && self.0[i - 1].1 >= ip
    }

    fn is_everything(&self) -> bool {
        self.0 == [(0, u32::MAX)]
    }
}

/// A TCP or UDP rule as the port index takes it: first port, last port, addresses.
type PortRule<'a> = (u16, u16, &'a [(u32, u32)]);
/// An ICMP rule's type and code (`None`: every type; a `None` code: every code).
type IcmpMatch = Option<(u8, Option<u8>)>;

/// Destination-port segments of one protocol, each with the addresses its rules allow.
#[derive(Debug, Clone, Default)]
struct PortIndex {
    /// Segment `i` covers ports `starts[i]` up to `starts[i + 1] - 1`; `starts[0]` is 0.
    starts: Vec<u16>,
    sets: Vec<AddrSet>,
}

impl PortIndex {
    /// Rules as (first port, last port, addresses).
    fn build(rules: &[PortRule<'_>]) -> Self {
        let mut starts: Vec<u16> = vec![0];
        for &(a, b, _) in rules {
            starts.push(a);
            if b < u16::MAX {
                starts.push(b + 1);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let sets = starts
            .iter()
            .map(|&s| {
                let ranges: Vec<(u32, u32)> = rules
                    .iter()
                    .filter(|&&(a, b, _)| a <= s && s <= b)
                    .flat_map(|&(_, _, addrs)| addrs.iter().copied())
                    .collect();
                AddrSet::from_ranges(ranges)
            })
            .collect();
        Self { starts, sets }
    }

    #[inline]
    fn allows(&self, port: u16, ip: u32) -> bool {
        let i = self.starts.partition_point(|&s| s <= port);
        i > 0 && self.sets[i - 1].contains(ip)
    }

    /// True if every port is open to every address.
    fn everything(&self) -> bool {
        self.sets.iter().all(AddrSet::is_everything)
    }
}

/// One direction of an ENI's groups, compiled.
#[derive(Debug, Clone, Default)]
struct DirIndex {
    tcp: PortIndex,
    udp: PortIndex,
    /// ICMP rules: (type and code, or every type; addresses).
    icmp: Vec<(IcmpMatch, AddrSet)>,
    /// Rules for every protocol: what they allow of any protocol not listed.
    any: AddrSet,
    /// Rules for other protocols, by number (the `any` addresses included).
    other: BTreeMap<u8, AddrSet>,
}

impl DirIndex {
    #[inline]
    fn allows(&self, t: &Tuple, remote: u32) -> bool {
        match t.proto {
            PROTO_TCP => self.tcp.allows(t.dst_port, remote),
            PROTO_UDP => self.udp.allows(t.dst_port, remote),
            PROTO_ICMP => self.icmp.iter().any(|(m, set)| {
                m.is_none_or(|(ty, code)| {
                    ty == t.icmp_type() && code.is_none_or(|c| c == t.icmp_code())
                }) && set.contains(remote)
            }),
            p => self.other.get(&p).unwrap_or(&self.any).contains(remote),
        }
    }
}

/// The ENIs of every security group, by group id: what a rule naming a group allows.
pub trait Membership {
    /// The addresses of `group`'s ENIs (`None`: there is no such group).
    fn members(&self, group: &str) -> Option<Vec<Ipv4Addr>>;
}

impl Membership for BTreeMap<String, Vec<Ipv4Addr>> {
    fn members(&self, group: &str) -> Option<Vec<Ipv4Addr>> {
        self.get(group).cloned()
    }
}

/// Where a rule came from: its group and its place in that group's rules.
#[derive(Debug, Clone)]
struct Source {
    group: String,
    index: usize,
    rule: SgRule,
    addrs: Vec<(u32, u32)>,
}

/// Why a packet was allowed or not, in words a user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SgReason {
    /// Allowed by this rule of this group (rule numbers count from 1 in the group's `dir`).
    Allowed {
        /// The group.
        group: String,
        /// 1-based, in the group's rules of that direction.
        rule: usize,
        /// The rule.
        text: String,
    },
    /// No rule of these groups allows it.
    NoRule {
        /// The ENI's groups, in order.
        groups: Vec<String>,
    },
}

/// An ENI's security groups, compiled (see the module docs).
#[derive(Debug, Clone)]
pub struct CompiledGroups {
    groups: Vec<String>,
    dirs: [DirIndex; 2],
    /// TCP and UDP connections untracked: open to 0.0.0.0/0 on every port both ways.
    untracked: [bool; 2],
    sources: [Vec<Source>; 2],
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

impl CompiledGroups {
    /// Compiles `groups` (an ENI's, 1 to the quota, one VPC) with the peers' members.
    pub fn compile(
        groups: &[&SecurityGroup],
        members: &dyn Membership,
        quotas: &Quotas,
    ) -> Result<Self, PolicyError> {
        if groups.is_empty() {
            return Err(PolicyError::NoSecurityGroup);
        }
        if groups.len() > quotas.groups_per_eni {
            return Err(PolicyError::SecurityGroupsPerInterfaceLimitExceeded {
                groups: groups.len(),
                quota: quotas.groups_per_eni,
            });
        }
        let mut sources: [Vec<Source>; 2] = Default::default();
        for dir in [Direction::Inbound, Direction::Outbound] {
            for g in groups {
                for (index, rule) in g.rules(dir).iter().enumerate() {
                    let addrs = match &rule.peer {
                        Peer::Cidr(c) => vec![c.range()],
                        Peer::Group(id) => members
                            .members(id)
                            .ok_or_else(|| PolicyError::GroupNotFound(id.clone()))?
                            .into_iter()
                            .map(|ip| (u32::from(ip), u32::from(ip)))
                            .collect(),
                    };
                    sources[dir_index(dir)].push(Source {
                        group: g.id.clone(),
                        index,
                        rule: rule.clone(),
                        addrs,
                    });
                }
            }
        }
        let dirs = [Self::index(&sources[0]), Self::index(&sources[1])];
        let untracked = [
            dirs[0].tcp.everything() && dirs[1].tcp.everything(),
            dirs[0].udp.everything() && dirs[1].udp.everything(),
        ];
        Ok(Self { groups: groups.iter().map(|g| g.id.clone()).collect(), dirs, untracked, sources })
    }

    fn index(sources: &[Source]) -> DirIndex {
        let ports = |proto: u8| -> Vec<PortRule<'_>> {
            sources
                .iter()
                .filter_map(|s| match (s.rule.protocol, s.rule.ports) {
                    (Protocol::All, _) => Some((0, u16::MAX, s.addrs.as_slice())),
                    (Protocol::Number(p), Ports::All) if p == proto => {
                        Some((0, u16::MAX, s.addrs.as_slice()))
                    }
                    (Protocol::Number(p), Ports::Range(a, b)) if p == proto => {
                        Some((a, b, s.addrs.as_slice()))
                    }
                    _ => None,
                })
                .collect()
        };
        let any_ranges: Vec<(u32, u32)> = sources
            .iter()
            .filter(|s| s.rule.protocol == Protocol::All)
            .flat_map(|s| s.addrs.iter().copied())
            .collect();
        let any = AddrSet::from_ranges(any_ranges.clone());
        let mut icmp: Vec<(IcmpMatch, AddrSet)> = Vec::new();
        let mut other: BTreeMap<u8, Vec<(u32, u32)>> = BTreeMap::new();
        for s in sources {
            match (s.rule.protocol, s.rule.ports) {
                (Protocol::All, _) => icmp.push((None, AddrSet::from_ranges(s.addrs.clone()))),
                (Protocol::Number(PROTO_ICMP), Ports::Icmp(ty, code)) => {
                    icmp.push((Some((ty, code)), AddrSet::from_ranges(s.addrs.clone())));
                }
                (Protocol::Number(PROTO_ICMP), _) => {
                    icmp.push((None, AddrSet::from_ranges(s.addrs.clone())));
                }
                (Protocol::Number(PROTO_TCP | PROTO_UDP), _) => {}
                (Protocol::Number(p), _) => other.entry(p).or_default().extend(&s.addrs),
            }
        }
        let other = other
            .into_iter()
            .map(|(p, mut r)| {
                r.extend(&any_ranges);
                (p, AddrSet::from_ranges(r))
            })
            .collect();
        DirIndex {
            tcp: PortIndex::build(&ports(PROTO_TCP)),
            udp: PortIndex::build(&ports(PROTO_UDP)),
            icmp,
            any,
            other,
        }
    }

    /// Whether the rules allow `t` in `dir` (not counting connection tracking).
    #[inline]
    pub fn allows(&self, dir: Direction, t: &Tuple) -> bool {
        self.dirs[dir_index(dir)].allows(t, u32::from(t.remote(dir)))
    }

    /// Whether connections of protocol `proto` go untracked: TCP or UDP open to 0.0.0.0/0 on
    /// every port in both directions. ICMP and other protocols are always tracked.
    #[inline]
    pub fn untracked(&self, proto: u8) -> bool {
        match proto {
            PROTO_TCP => self.untracked[0],
            PROTO_UDP => self.untracked[1],
            _ => false,
        }
    }

    /// The groups, in order.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Why the rules allow `t` in `dir` or not: the first rule (in group order) that allows
    /// it, or the groups none of whose rules does.
    pub fn explain(&self, dir: Direction, t: &Tuple) -> SgReason {
        let remote = u32::from(t.remote(dir));
        let found = self.sources[dir_index(dir)].iter().find(|s| {
            s.rule.matches_service(t) && s.addrs.iter().any(|&(a, b)| (a..=b).contains(&remote))
        });
        match found {
            Some(s) => SgReason::Allowed {
                group: s.group.clone(),
                rule: s.index + 1,
                text: s.rule.to_string(),
            },
            None => SgReason::NoRule { groups: self.groups.clone() },
        }
    }
}

impl SgReason {
    /// The reason as a sentence about `t` going `dir` through an ENI.
    pub fn describe(&self, dir: Direction, t: &Tuple) -> String {
        let whom = match dir {
            Direction::Inbound => format!("from {}", t.src),
            Direction::Outbound => format!("to {}", t.dst),
        };
        match self {
            SgReason::Allowed { group, rule, text } => {
                format!("{group} {dir} rule {rule} ({text}) allows {} {whom}", t.service())
            }
            SgReason::NoRule { groups } => {
                format!("{} {dir} has no rule for {} {whom}", groups.join(", "), t.service())
            }
        }
    }
}
