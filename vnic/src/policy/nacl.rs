//! Network ACLs: one per subnet, numbered rules per direction, the lowest-numbered match
//! decides, and what no rule matches is denied (the `*` rule). Stateless: a reply is a packet
//! like any other and needs a rule of its own, which is why a client's ephemeral ports matter.
//!
//! A NACL of at most 40 rules is kept sorted by number with its prefixes and ports decoded, so
//! deciding is a scan of a few dozen integer compares that stops at the first match.

use std::fmt;

use super::{
    Cidr, Direction, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PolicyError, Ports, Protocol, Quotas, Tuple,
};

/// The highest rule number (32,767 is the `*` rule).
pub const MAX_RULE_NUMBER: u16 = 32_766;
/// The rule number a VPC's default NACL allows everything with.
pub const DEFAULT_ALLOW_RULE: u16 = 100;

/// What a rule does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allows",
            Action::Deny => "denies",
        })
    }
}

/// One numbered rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NaclRule {
    /// 1 to 32,766; lower is evaluated first.
    pub number: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports (ICMP: type and code).
    pub ports: Ports,
    /// The remote prefix: the source of what comes in, the destination of what goes out.
    pub cidr: Cidr,
    /// Allow or deny.
    pub action: Action,
}

impl NaclRule {
    fn matches(&self, dir: Direction, t: &Tuple) -> bool {
        self.protocol.matches(t.proto)
            && self.cidr.contains(t.remote(dir))
            && match self.protocol {
                Protocol::All => true,
                Protocol::Number(PROTO_TCP | PROTO_UDP | PROTO_ICMP) => self.ports.matches(t),
                Protocol::Number(_) => true,
            }
    }
}

impl fmt::Display for NaclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} {} ", self.number, self.action)?;
        match (self.protocol, self.ports) {
            (Protocol::All, _) => write!(f, "all traffic")?,
            (p @ Protocol::Number(PROTO_TCP | PROTO_UDP | PROTO_ICMP), ports) => {
                write!(f, "{p} {ports}")?
            }
            (p, _) => write!(f, "{p}")?,
        }
        write!(f, " {}", self.cidr)
    }
}

/// A network ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nacl {
    /// Its id (`acl-private`).
    pub id: String,
    inbound: Vec<NaclRule>,
    outbound: Vec<NaclRule>,
}

/// Which rule decided: a numbered one, or the final `*` deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NaclMatch {
    /// A numbered rule.
    Rule(NaclRule),
    /// No rule matched.
    Star,
}

impl NaclMatch {
    /// What it does.
    pub fn action(&self) -> Action {
        match self {
            NaclMatch::Rule(r) => r.action,
            NaclMatch::Star => Action::Deny,
        }
    }
}

impl Nacl {
    /// A custom NACL as EC2 creates one: no rule, so everything is denied.
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into(), inbound: Vec::new(), outbound: Vec::new() }
    }

    /// A VPC's default NACL: rule 100 allows everything, both ways.
    pub fn vpc_default(id: impl Into<String>) -> Self {
        let all = NaclRule {
            number: DEFAULT_ALLOW_RULE,
            protocol: Protocol::All,
            ports: Ports::All,
            cidr: Cidr::ANY,
            action: Action::Allow,
        };
        Self { id: id.into(), inbound: vec![all], outbound: vec![all] }
    }

    /// Its rules in `dir`, by number.
    pub fn rules(&self, dir: Direction) -> &[NaclRule] {
        match dir {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// Adds a rule in `dir`: its number 1 to 32,766 and not yet used there, within the quota.
    pub fn add(
        &mut self,
        dir: Direction,
        rule: NaclRule,
        quotas: &Quotas,
    ) -> Result<(), PolicyError> {
        rule.ports.check()?;
        if !(1..=MAX_RULE_NUMBER).contains(&rule.number) {
            return Err(PolicyError::InvalidNetworkAclEntry(format!(
                "rule number {} is not 1 to {MAX_RULE_NUMBER}",
                rule.number
            )));
        }
        let id = self.id.clone();
        let rules = match dir {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        };
        if rules.iter().any(|r| r.number == rule.number) {
            return Err(PolicyError::InvalidNetworkAclEntry(format!(
                "{id} already has {dir} rule {}",
                rule.number
            )));
        }
        if rules.len() >= quotas.nacl_rules {
            return Err(PolicyError::NetworkAclEntryLimitExceeded {
                nacl: id,
                dir,
                rules: rules.len() + 1,
                quota: quotas.nacl_rules,
            });
        }
        let at = rules.partition_point(|r| r.number < rule.number);
        rules.insert(at, rule);
        Ok(())
    }

    /// Creates rule `rule.number` in `dir`, or replaces the rule of that number (EC2's
    /// `CreateNetworkAclEntry` / `ReplaceNetworkAclEntry`); true if it replaced one. On an error
    /// the NACL is as it was.
    pub fn put(
        &mut self,
        dir: Direction,
        rule: NaclRule,
        quotas: &Quotas,
    ) -> Result<bool, PolicyError> {
        let old = self.rules(dir).iter().find(|r| r.number == rule.number).copied();
        self.remove(dir, rule.number);
        match self.add(dir, rule, quotas) {
            Ok(()) => Ok(old.is_some()),
            Err(e) => {
                if let Some(old) = old {
                    // It held this rule a moment ago: there is room for it again.
                    let _ = self.add(dir, old, quotas);
                }
                Err(e)
            }
        }
    }

    /// Removes rule `number` in `dir`; true if it had it.
    pub fn remove(&mut self, dir: Direction, number: u16) -> bool {
        let rules = match dir {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        };
        let before = rules.len();
        rules.retain(|r| r.number != number);
        rules.len() != before
    }

    /// The rule that decides `t` crossing the subnet's boundary in `dir`.
    #[inline]
    pub fn decide(&self, dir: Direction, t: &Tuple) -> NaclMatch {
        self.rules(dir)
            .iter()
            .find(|r| r.matches(dir, t))
            .map_or(NaclMatch::Star, |&r| NaclMatch::Rule(r))
    }

    /// The decision about `t` in words: "acl-private inbound rule 100 allows tcp 443
    /// 0.0.0.0/0", "acl-private inbound denies tcp/40000 from 10.0.2.5: no rule matches (the
    /// `*` rule)".
    pub fn describe(&self, dir: Direction, t: &Tuple) -> String {
        let whom = match dir {
            Direction::Inbound => format!("from {}", t.src),
            Direction::Outbound => format!("to {}", t.dst),
        };
        match self.decide(dir, t) {
            NaclMatch::Rule(r) => format!("{} {dir} {r}: {} {whom}", self.id, t.service()),
            NaclMatch::Star => format!(
                "{} {dir} denies {} {whom}: no rule matches (the * rule)",
                self.id,
                t.service()
            ),
        }
    }
}
