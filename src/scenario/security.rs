//! Security groups and network ACLs as a scenario declares them, checked into
//! `vnic::policy`'s types: every rule's protocol, ports and peer parsed, every group a rule or
//! an ENI names defined, every NACL a subnet names defined, EC2's quotas kept (with EC2's
//! error codes). The VPC always has its `default` group (everything in from itself, everything
//! out) and its `acl-default` NACL (everything, both ways), which ENIs and subnets get unless
//! they name others.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use vnic::policy::nacl::{Action, Nacl, NaclRule};
use vnic::policy::sg::{Peer, SecurityGroup, SgRule};
use vnic::policy::vpc::{DEFAULT_GROUP, DEFAULT_NACL};
use vnic::policy::{Cidr, Direction, Ports, Protocol, Quotas};

use super::decl::{NaclRuleDecl, Scenario, SgRuleDecl};
use super::{ScenarioError, Source};

/// The VPC's id in flow logs and errors.
pub const VPC_ID: &str = "vpc-1";

/// A scenario's security groups and NACLs, checked.
#[derive(Debug, Clone)]
pub struct Security {
    /// EC2's quotas.
    pub quotas: Quotas,
    /// Every group, `default` first.
    pub groups: Vec<SecurityGroup>,
    /// Every NACL, `acl-default` first.
    pub nacls: Vec<Nacl>,
    /// Flow logs.
    pub flow_logs: Vec<FlowLogSpec>,
}

/// What a flow log covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowLogOf {
    /// A VM's ENIs.
    Vm(String),
    /// Every ENI in a subnet.
    Subnet(String),
    /// Every ENI in the VPC.
    Vpc,
}

/// A flow log, checked.
#[derive(Debug, Clone)]
pub struct FlowLogSpec {
    /// What it covers.
    pub of: FlowLogOf,
    /// Aggregation interval, s.
    pub interval_s: u64,
}

/// The account id flow log records carry.
pub const ACCOUNT_ID: &str = "123456789012";
/// The Unix second a run's clock starts at in flow logs: 2026-01-01T00:00:00Z, the same on
/// every run so that a virtual run's logs are too.
pub const FLOW_LOG_EPOCH_UNIX_S: u64 = 1_767_225_600;

impl Security {
    /// Whether the scenario declares any group, NACL or flow log of its own (else everything
    /// passes and nothing is logged: the devices need no filter).
    pub fn is_declared(&self) -> bool {
        self.groups.len() > 1 || self.nacls.len() > 1 || !self.flow_logs.is_empty()
    }

    /// The interval of the flow log covering an ENI of `vm` in `subnet`, if one does.
    pub fn flow_log_interval(&self, vm: &str, subnet: &str) -> Option<u64> {
        self.flow_logs
            .iter()
            .find(|l| match &l.of {
                FlowLogOf::Vm(v) => v == vm,
                FlowLogOf::Subnet(s) => s == subnet,
                FlowLogOf::Vpc => true,
            })
            .map(|l| l.interval_s)
    }
}

/// The scenario's flow logs, each naming a VM or subnet it has.
pub(super) fn flow_logs(
    s: &Scenario,
    src: &Source<'_>,
    vm_names: &[String],
    subnet_names: &[String],
) -> Result<Vec<FlowLogSpec>, ScenarioError> {
    let mut out = Vec::new();
    for d in &s.flow_logs {
        let text = d.of.get_ref().as_str();
        let of = match text.split_once(':') {
            _ if text == "vpc" => FlowLogOf::Vpc,
            Some(("vm", v)) if vm_names.iter().any(|n| n == v) => FlowLogOf::Vm(v.into()),
            Some(("subnet", n)) if subnet_names.iter().any(|x| x == n) => {
                FlowLogOf::Subnet(n.into())
            }
            Some(("vm", v)) => return Err(src.at(d.of.span(), format!("no VM named `{v}`"))),
            Some(("subnet", n)) => {
                return Err(src.at(d.of.span(), format!("no subnet named `{n}`")));
            }
            _ => {
                return Err(src.at(
                    d.of.span(),
                    format!("flow log of `{text}`: expected `vm:NAME`, `subnet:NAME` or `vpc`"),
                ));
            }
        };
        let interval_s = src.ranged(&d.interval_s, "interval_s", 1..=600, 60)?;
        out.push(FlowLogSpec { of, interval_s });
    }
    Ok(out)
}

fn protocol(s: &Spanned<String>, src: &Source<'_>) -> Result<Protocol, ScenarioError> {
    s.get_ref().parse().map_err(|e: vnic::policy::PolicyError| src.at(s.span(), e.to_string()))
}

/// `443`, `8000-8100`, `all`; for ICMP, the type and code.
fn ports(
    protocol: Protocol,
    ports: &Option<Spanned<String>>,
    icmp: (Option<u8>, Option<u8>),
    at: Range<usize>,
    src: &Source<'_>,
) -> Result<Ports, ScenarioError> {
    use vnic::policy::PROTO_ICMP;
    if protocol == Protocol::Number(PROTO_ICMP) {
        if ports.is_some() {
            return Err(src.at(at, "an ICMP rule takes icmp_type and icmp_code, not ports"));
        }
        return Ok(match icmp {
            (None, None) => Ports::All,
            (Some(t), code) => Ports::Icmp(t, code),
            (None, Some(_)) => return Err(src.at(at, "icmp_code needs an icmp_type")),
        });
    }
    if icmp != (None, None) {
        return Err(src.at(at, "icmp_type and icmp_code are for ICMP rules"));
    }
    let Some(p) = ports else { return Ok(Ports::All) };
    let text = p.get_ref().as_str();
    let bad =
        || src.at(p.span(), format!("ports `{text}`: expected a port, a range `from-to` or `all`"));
    let parsed = match text.split_once('-') {
        _ if text == "all" => Ports::All,
        Some((a, b)) => Ports::Range(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => Ports::port(text.parse().map_err(|_| bad())?),
    };
    parsed.check().map_err(|e| src.at(p.span(), e.to_string()))
}

fn sg_rule(
    r: &SgRuleDecl,
    dir: Direction,
    names: &BTreeSet<String>,
    src: &Source<'_>,
) -> Result<SgRule, ScenarioError> {
    let proto = protocol(&r.protocol, src)?;
    let ports = ports(proto, &r.ports, (r.icmp_type, r.icmp_code), r.protocol.span(), src)?;
    let (peer, wrong, key) = match dir {
        Direction::Inbound => (&r.from, &r.to, "from"),
        Direction::Outbound => (&r.to, &r.from, "to"),
    };
    if let Some(w) = wrong {
        return Err(
            src.at(w.span(), format!("an {dir} rule names its peer with `{key}`, not this key"))
        );
    }
    let Some(peer) = peer else {
        return Err(src.at(
            r.protocol.span(),
            format!("an {dir} rule needs `{key}`: a CIDR or a security group"),
        ));
    };
    let text = peer.get_ref();
    let peer = if text.contains('/') {
        Peer::Cidr(
            text.parse()
                .map_err(|e: vnic::policy::PolicyError| src.at(peer.span(), e.to_string()))?,
        )
    } else if names.contains(text) {
        Peer::Group(text.clone())
    } else {
        return Err(src.at(
            peer.span(),
            format!("`{text}` is neither a CIDR (a.b.c.d/n) nor a security group of the scenario"),
        ));
    };
    Ok(SgRule::new(proto, ports, peer))
}

fn nacl_rule(r: &NaclRuleDecl, src: &Source<'_>) -> Result<NaclRule, ScenarioError> {
    let number = u16::try_from(*r.rule.get_ref())
        .ok()
        .filter(|n| (1..=vnic::policy::nacl::MAX_RULE_NUMBER).contains(n))
        .ok_or_else(|| {
            src.at(
                r.rule.span(),
                format!(
                    "InvalidNetworkAclEntry: rule number {} is not 1 to {}",
                    r.rule.get_ref(),
                    vnic::policy::nacl::MAX_RULE_NUMBER
                ),
            )
        })?;
    let proto = protocol(&r.protocol, src)?;
    let ports = ports(proto, &r.ports, (r.icmp_type, r.icmp_code), r.protocol.span(), src)?;
    let cidr: Cidr = r
        .cidr
        .get_ref()
        .parse()
        .map_err(|e: vnic::policy::PolicyError| src.at(r.cidr.span(), e.to_string()))?;
    let action = match r.action.get_ref().as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => {
            return Err(
                src.at(r.action.span(), format!("action `{other}`: expected allow or deny"))
            );
        }
    };
    Ok(NaclRule { number, protocol: proto, ports, cidr, action })
}

/// Checks the scenario's quotas, groups and NACLs.
pub(super) fn resolve(s: &Scenario, src: &Source<'_>) -> Result<Security, ScenarioError> {
    let defaults = Quotas::default();
    let quotas = match &s.quotas {
        None => defaults,
        Some(q) => {
            let d = q.get_ref();
            let quotas = Quotas {
                groups_per_eni: d.security_groups_per_eni.unwrap_or(defaults.groups_per_eni),
                rules_per_group: d.rules_per_security_group.unwrap_or(defaults.rules_per_group),
                nacl_rules: d.rules_per_nacl.unwrap_or(defaults.nacl_rules),
            };
            quotas.check().map_err(|e| src.at(q.span(), e.to_string()))?;
            quotas
        }
    };
    let mut names: BTreeSet<String> = BTreeSet::from([DEFAULT_GROUP.to_string()]);
    for g in &s.security_groups {
        if !names.insert(g.name.get_ref().clone()) {
            return Err(src.at(
                g.name.span(),
                format!(
                    "security group `{}` is defined twice (or is the VPC's default)",
                    g.name.get_ref()
                ),
            ));
        }
    }
    let mut groups = vec![SecurityGroup::vpc_default(DEFAULT_GROUP, VPC_ID)];
    for g in &s.security_groups {
        let mut group = SecurityGroup::empty(g.name.get_ref().as_str(), VPC_ID);
        let outbound_default = [SgRule::all(Peer::Cidr(Cidr::ANY))];
        let add = |group: &mut SecurityGroup, dir: Direction, rule: SgRule| {
            group.authorize(dir, rule, &quotas).map_err(|e| src.at(g.name.span(), e.to_string()))
        };
        for r in &g.inbound {
            add(&mut group, Direction::Inbound, sg_rule(r, Direction::Inbound, &names, src)?)?;
        }
        match &g.outbound {
            Some(rules) => {
                for r in rules {
                    add(
                        &mut group,
                        Direction::Outbound,
                        sg_rule(r, Direction::Outbound, &names, src)?,
                    )?;
                }
            }
            None => add(&mut group, Direction::Outbound, outbound_default[0].clone())?,
        }
        groups.push(group);
    }
    let mut nacls = vec![Nacl::vpc_default(DEFAULT_NACL)];
    for n in &s.nacls {
        if nacls.iter().any(|x| x.id == *n.name.get_ref()) {
            return Err(src.at(
                n.name.span(),
                format!(
                    "network ACL `{}` is defined twice (or is the VPC's default)",
                    n.name.get_ref()
                ),
            ));
        }
        let mut nacl = Nacl::new(n.name.get_ref().as_str());
        for (dir, rules) in [(Direction::Inbound, &n.inbound), (Direction::Outbound, &n.outbound)] {
            for r in rules {
                nacl.add(dir, nacl_rule(r, src)?, &quotas)
                    .map_err(|e| src.at(r.rule.span(), e.to_string()))?;
            }
        }
        nacls.push(nacl);
    }
    Ok(Security { quotas, groups, nacls, flow_logs: Vec::new() })
}

/// The groups an ENI names (checked: defined, within the quota, none twice), or `default`.
pub(super) fn eni_groups(
    declared: &Option<Vec<Spanned<String>>>,
    security: &Security,
    at: Range<usize>,
    src: &Source<'_>,
) -> Result<Vec<String>, ScenarioError> {
    let Some(names) = declared else { return Ok(vec![DEFAULT_GROUP.to_string()]) };
    if names.is_empty() {
        return Err(src.at(at, vnic::policy::PolicyError::NoSecurityGroup.to_string()));
    }
    if names.len() > security.quotas.groups_per_eni {
        let e = vnic::policy::PolicyError::SecurityGroupsPerInterfaceLimitExceeded {
            groups: names.len(),
            quota: security.quotas.groups_per_eni,
        };
        return Err(src.at(names[security.quotas.groups_per_eni].span(), e.to_string()));
    }
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !security.groups.iter().any(|g| g.id == *n.get_ref()) {
            return Err(src.at(n.span(), format!("no security group named `{}`", n.get_ref())));
        }
        if out.contains(n.get_ref()) {
            return Err(
                src.at(n.span(), format!("security group `{}` is named twice", n.get_ref()))
            );
        }
        out.push(n.get_ref().clone());
    }
    Ok(out)
}

/// A subnet's NACL (checked: defined), or `acl-default`.
pub(super) fn subnet_nacl(
    declared: &Option<Spanned<String>>,
    security: &Security,
    src: &Source<'_>,
) -> Result<String, ScenarioError> {
    match declared {
        None => Ok(DEFAULT_NACL.to_string()),
        Some(n) if security.nacls.iter().any(|x| x.id == *n.get_ref()) => Ok(n.get_ref().clone()),
        Some(n) => Err(src.at(n.span(), format!("no network ACL named `{}`", n.get_ref()))),
    }
}
