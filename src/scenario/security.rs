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
    /// Rule changes during the run, in time order.
    pub changes: Vec<RuleChange>,
}

/// A change to one group's or one NACL's rules at a time of the run, checked against the rules
/// as the changes before it left them.
#[derive(Debug, Clone)]
pub struct RuleChange {
    /// When, s into the run.
    pub at_s: f64,
    /// What changes.
    pub change: Change,
    /// The same, in words ("sg-db: authorize inbound tcp 5432 from sg-app").
    pub says: String,
}

/// What a [`RuleChange`] changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// A security group's rules: added, then removed.
    Group {
        /// Its id.
        group: String,
        /// Rules added.
        authorize: Vec<(Direction, SgRule)>,
        /// Rules removed.
        revoke: Vec<(Direction, SgRule)>,
    },
    /// A NACL's rules: deleted, then created or replaced.
    Nacl {
        /// Its id.
        nacl: String,
        /// Rules created or replaced (by number).
        put: Vec<(Direction, NaclRule)>,
        /// Rule numbers deleted.
        delete: Vec<(Direction, u16)>,
    },
}

impl Change {
    /// Applies the change to `vpc`'s rules (every ENI's groups recompiled, tracked connections
    /// kept).
    pub fn apply(&self, vpc: &mut vnic::policy::vpc::Vpc) -> Result<(), vnic::policy::PolicyError> {
        match self {
            Change::Group { group, authorize, revoke } => {
                for (dir, r) in authorize {
                    vpc.authorize(group, *dir, r.clone())?;
                }
                for (dir, r) in revoke {
                    vpc.revoke(group, *dir, r)?;
                }
            }
            Change::Nacl { nacl, put, delete } => {
                let quotas = *vpc.quotas();
                let mut n = vpc.nacl(nacl).cloned().ok_or_else(|| {
                    vnic::policy::PolicyError::InvalidParameterValue(format!(
                        "no network ACL {nacl}"
                    ))
                })?;
                for (dir, number) in delete {
                    n.remove(*dir, *number);
                }
                for (dir, r) in put {
                    n.put(*dir, *r, &quotas)?;
                }
                vpc.put_nacl(n);
            }
        }
        Ok(())
    }
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
    /// Whether the scenario declares any group, NACL, flow log or rule change of its own (else
    /// everything passes and nothing is logged: the devices need no filter).
    pub fn is_declared(&self) -> bool {
        self.groups.len() > 1
            || self.nacls.len() > 1
            || !self.flow_logs.is_empty()
            || !self.changes.is_empty()
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
pub(super) fn resolve(
    s: &Scenario,
    src: &Source<'_>,
    duration_s: f64,
) -> Result<Security, ScenarioError> {
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
    let changes = rule_changes(s, src, duration_s, &names, &quotas, &groups, &nacls)?;
    Ok(Security { quotas, groups, nacls, flow_logs: Vec::new(), changes })
}

/// The scenario's rule changes, in time order, each checked against the rules the changes
/// before it leave: a group or NACL the scenario has, group keys with `group` and NACL keys with
/// `nacl`, a revoked rule the group has (EC2: `InvalidPermission.NotFound`), a deleted number
/// the NACL has, EC2's quotas kept.
fn rule_changes(
    s: &Scenario,
    src: &Source<'_>,
    duration_s: f64,
    names: &BTreeSet<String>,
    quotas: &Quotas,
    groups: &[SecurityGroup],
    nacls: &[Nacl],
) -> Result<Vec<RuleChange>, ScenarioError> {
    let mut groups = groups.to_vec();
    let mut nacls = nacls.to_vec();
    let mut order: Vec<&Spanned<super::decl::RuleChangeDecl>> = s.rule_changes.iter().collect();
    // Stable: changes at one time apply in the file's order.
    order.sort_by(|a, b| a.get_ref().at_s.get_ref().total_cmp(b.get_ref().at_s.get_ref()));
    let mut out = Vec::new();
    for entry in order {
        let d = entry.get_ref();
        let at_s = *d.at_s.get_ref();
        if !(at_s.is_finite() && at_s >= 0.0 && at_s < duration_s) {
            return Err(src
                .at(d.at_s.span(), format!("at_s {at_s} is not within the run's {duration_s} s")));
        }
        let sg_keys = !(d.authorize_inbound.is_empty()
            && d.authorize_outbound.is_empty()
            && d.revoke_inbound.is_empty()
            && d.revoke_outbound.is_empty());
        let nacl_keys = !(d.put_inbound.is_empty()
            && d.put_outbound.is_empty()
            && d.delete_inbound.is_empty()
            && d.delete_outbound.is_empty());
        if !sg_keys && !nacl_keys && d.group.is_some() != d.nacl.is_some() {
            return Err(src.at(entry.span(), "a rule change with no rule to change"));
        }
        let (change, says) = match (&d.group, &d.nacl) {
            (Some(g), None) if !nacl_keys => {
                let err = |e: vnic::policy::PolicyError| src.at(g.span(), e.to_string());
                let Some(group) = groups.iter_mut().find(|x| x.id == *g.get_ref()) else {
                    return Err(src.at(g.span(), format!("no security group `{}`", g.get_ref())));
                };
                let mut words = Vec::new();
                let mut authorize = Vec::new();
                for (dir, rules) in [
                    (Direction::Inbound, &d.authorize_inbound),
                    (Direction::Outbound, &d.authorize_outbound),
                ] {
                    for r in rules {
                        let rule = sg_rule(r, dir, names, src)?;
                        group.authorize(dir, rule.clone(), quotas).map_err(err)?;
                        words.push(format!("authorize {dir} {rule}"));
                        authorize.push((dir, rule));
                    }
                }
                let mut revoke = Vec::new();
                for (dir, rules) in [
                    (Direction::Inbound, &d.revoke_inbound),
                    (Direction::Outbound, &d.revoke_outbound),
                ] {
                    for r in rules {
                        let rule = sg_rule(r, dir, names, src)?;
                        if !group.revoke(dir, &rule) {
                            return Err(src.at(
                                r.protocol.span(),
                                format!(
                                    "InvalidPermission.NotFound: {} has no {dir} rule {rule} to \
                                     revoke at {at_s} s",
                                    group.id
                                ),
                            ));
                        }
                        words.push(format!("revoke {dir} {rule}"));
                        revoke.push((dir, rule));
                    }
                }
                let says = format!("{}: {}", group.id, words.join("; "));
                (Change::Group { group: group.id.clone(), authorize, revoke }, says)
            }
            (None, Some(n)) if !sg_keys => {
                let Some(nacl) = nacls.iter_mut().find(|x| x.id == *n.get_ref()) else {
                    return Err(src.at(n.span(), format!("no network ACL `{}`", n.get_ref())));
                };
                let mut words = Vec::new();
                let mut delete = Vec::new();
                for (dir, numbers) in [
                    (Direction::Inbound, &d.delete_inbound),
                    (Direction::Outbound, &d.delete_outbound),
                ] {
                    for k in numbers {
                        let number =
                            u16::try_from(*k.get_ref()).ok().filter(|&x| nacl.remove(dir, x));
                        let Some(number) = number else {
                            return Err(src.at(
                                k.span(),
                                format!(
                                    "InvalidNetworkAclEntry.NotFound: {} has no {dir} rule {} \
                                     to delete at {at_s} s",
                                    nacl.id,
                                    k.get_ref()
                                ),
                            ));
                        };
                        words.push(format!("delete {dir} rule {number}"));
                        delete.push((dir, number));
                    }
                }
                let mut put = Vec::new();
                for (dir, rules) in
                    [(Direction::Inbound, &d.put_inbound), (Direction::Outbound, &d.put_outbound)]
                {
                    for r in rules {
                        let rule = nacl_rule(r, src)?;
                        let replaced = nacl
                            .put(dir, rule, quotas)
                            .map_err(|e| src.at(r.rule.span(), e.to_string()))?;
                        let verb = if replaced { "replace" } else { "create" };
                        words.push(format!("{verb} {dir} {rule}"));
                        put.push((dir, rule));
                    }
                }
                let says = format!("{}: {}", nacl.id, words.join("; "));
                (Change::Nacl { nacl: nacl.id.clone(), put, delete }, says)
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(src.at(entry.span(), "a rule change names one `group` or one `nacl`"));
            }
            (Some(g), None) => {
                return Err(src.at(
                    g.span(),
                    "a security group's change takes authorize_*/revoke_* rules, not put_*/delete_*",
                ));
            }
            (None, Some(n)) => {
                return Err(src.at(
                    n.span(),
                    "a network ACL's change takes put_*/delete_* rules, not authorize_*/revoke_*",
                ));
            }
        };
        out.push(RuleChange { at_s, change, says });
    }
    Ok(out)
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
