//! What an ENI may send and receive: security groups (stateful, allow-only, attached to the
//! ENI), network ACLs (stateless, numbered, attached to the subnet and applied only where
//! traffic crosses the subnet's boundary), the connection tracking that makes security groups
//! stateful, and VPC flow logs of the decisions. EC2's rules, as this model keeps them:
//!
//! * An ENI has 1 to [`Quotas::groups_per_eni`] security groups (5 by default, up to 16), each
//!   with up to [`Quotas::rules_per_group`] rules per direction (60). A rule allows a protocol
//!   (`tcp`, `udp`, `icmp`, a number, or all), a port range (ICMP: a type and code), from or to
//!   a CIDR or every ENI of a security group (itself included). A new group allows nothing in
//!   and everything out; a VPC's default group also allows everything from itself.
//! * A connection allowed one way has its replies allowed whatever the rules say, while it is
//!   tracked. TCP and UDP connections that the rules open to `0.0.0.0/0` on every port in both
//!   directions are not tracked (so removing a rule stops them at once); ICMP and every other
//!   connection is tracked and counts against the ENI's conntrack allowance. Tracked
//!   connections expire when idle ([`conntrack::Timeouts`]: TCP established 432,000 s, UDP
//!   stream 180 s, other UDP 30 s, other protocols 600 s); removing a rule does not cut one.
//! * A subnet has one network ACL: inbound and outbound rules numbered 1 to 32,766, lowest
//!   first, the first that matches decides, and what none match is denied (the `*` rule). The
//!   VPC's default NACL allows everything, a new one denies everything. 20 rules per direction
//!   by default, up to 40. Replies need their own rules: clients answer from ephemeral ports
//!   ([`EphemeralPorts`]: Linux 32,768–60,999, NAT gateways and load balancers 1,024–65,535).
//!
//! Rules are compiled ([`sg::CompiledGroups`], [`nacl::Nacl`]) so that a packet is decided by
//! two binary searches, not by scanning 300 rules; the explanation of a decision ("no rule of
//! sg-db inbound allows tcp/5432 from 10.0.1.5") is worked out from the rules themselves, only
//! when someone asks.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub mod conntrack;
pub mod flowlog;
pub mod nacl;
pub mod sg;
pub mod vpc;

pub use crate::shaper::{PROTO_TCP, PROTO_UDP};

/// ICMP's IP protocol number (TCP's and UDP's are the shaper's).
pub const PROTO_ICMP: u8 = 1;

/// An error in a security group, NACL or their use, with EC2's error code where EC2 has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// More security groups on one ENI than the quota.
    #[error(
        "SecurityGroupsPerInterfaceLimitExceeded: {groups} security groups on one interface, \
         the quota is {quota}"
    )]
    SecurityGroupsPerInterfaceLimitExceeded {
        /// Groups asked for.
        groups: usize,
        /// The quota.
        quota: usize,
    },
    /// An ENI with no security group.
    #[error("InvalidParameterValue: an interface has at least one security group")]
    NoSecurityGroup,
    /// More rules in one direction of a group than the quota.
    #[error(
        "RulesPerSecurityGroupLimitExceeded: security group {group} would have {rules} {dir} \
         rules, the quota is {quota}"
    )]
    RulesPerSecurityGroupLimitExceeded {
        /// The group.
        group: String,
        /// Inbound or outbound.
        dir: Direction,
        /// Rules asked for.
        rules: usize,
        /// The quota.
        quota: usize,
    },
    /// More rules in one direction of a NACL than the quota.
    #[error(
        "NetworkAclEntryLimitExceeded: network ACL {nacl} would have {rules} {dir} rules, the \
         quota is {quota}"
    )]
    NetworkAclEntryLimitExceeded {
        /// The NACL.
        nacl: String,
        /// Inbound or outbound.
        dir: Direction,
        /// Rules asked for.
        rules: usize,
        /// The quota.
        quota: usize,
    },
    /// A NACL rule number outside 1..=32766, or used twice in one direction.
    #[error("InvalidNetworkAclEntry: {0}")]
    InvalidNetworkAclEntry(String),
    /// A rule that cannot be: an unknown protocol, a reversed port range, a bad CIDR.
    #[error("InvalidParameterValue: {0}")]
    InvalidParameterValue(String),
    /// A rule names a security group that does not exist.
    #[error("InvalidGroup.NotFound: the security group {0} does not exist")]
    GroupNotFound(String),
    /// A quota raised beyond what EC2 allows.
    #[error("InvalidParameterValue: {what} quota {asked} is above EC2's most, {most}")]
    QuotaTooHigh {
        /// Which quota.
        what: &'static str,
        /// What was asked.
        asked: usize,
        /// The most.
        most: usize,
    },
}

/// Which way a packet or rule goes, from the ENI's (or subnet's) point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Arriving.
    Inbound,
    /// Leaving.
    Outbound,
}

impl Direction {
    /// The other way.
    pub fn reverse(self) -> Self {
        match self {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }

    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// EC2's quotas that bound the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Security groups per ENI (EC2's default 5).
    pub groups_per_eni: usize,
    /// Rules per direction of a security group (60).
    pub rules_per_group: usize,
    /// Rules per direction of a NACL (20).
    pub nacl_rules: usize,
}

/// The most security groups per ENI EC2 allows a quota to be raised to.
pub const MAX_GROUPS_PER_ENI: usize = 16;
/// The most rules per NACL direction EC2 allows a quota to be raised to.
pub const MAX_NACL_RULES: usize = 40;
/// The most rules per security group direction EC2 allows (with 5 groups per ENI).
pub const MAX_RULES_PER_GROUP: usize = 200;

impl Default for Quotas {
    fn default() -> Self {
        Self { groups_per_eni: 5, rules_per_group: 60, nacl_rules: 20 }
    }
}

impl Quotas {
    /// Checks each quota against the most EC2 allows.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (what, asked, most) in [
            ("security groups per interface", self.groups_per_eni, MAX_GROUPS_PER_ENI),
            ("rules per security group", self.rules_per_group, MAX_RULES_PER_GROUP),
            ("rules per network ACL", self.nacl_rules, MAX_NACL_RULES),
        ] {
            if asked > most {
                return Err(PolicyError::QuotaTooHigh { what, asked, most });
            }
        }
        Ok(())
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: u32,
    len: u8,
}

impl Cidr {
    /// Every address.
    pub const ANY: Cidr = Cidr { network: 0, len: 0 };

    /// `network/len`, the host bits cleared (EC2 accepts `10.0.0.5/16` as `10.0.0.0/16`).
    pub fn new(network: Ipv4Addr, len: u8) -> Result<Self, PolicyError> {
        if len > 32 {
            return Err(PolicyError::InvalidParameterValue(format!("/{len} is not a prefix")));
        }
        Ok(Self { network: u32::from(network) & Self::mask(len), len })
    }

    /// One address.
    pub fn host(ip: Ipv4Addr) -> Self {
        Self { network: u32::from(ip), len: 32 }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
    }

    /// Whether `ip` is in it.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == self.network
    }

    /// Its first and last address.
    pub fn range(&self) -> (u32, u32) {
        (self.network, self.network | !Self::mask(self.len))
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Its network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }
}

impl FromStr for Cidr {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::InvalidParameterValue(format!("`{s}` is not a.b.c.d/n"));
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Cidr::new(ip, len).map_err(|_| bad())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

/// What protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Every protocol (`-1`).
    All,
    /// One IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    Number(u8),
}

impl Protocol {
    /// Whether it matches IP protocol `proto`.
    pub fn matches(self, proto: u8) -> bool {
        match self {
            Protocol::All => true,
            Protocol::Number(n) => n == proto,
        }
    }
}

impl FromStr for Protocol {
    type Err = PolicyError;

    /// `tcp`, `udp`, `icmp`, `-1` or `all`, or a protocol number.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Ok(match s {
            "-1" | "all" => Protocol::All,
            "tcp" => Protocol::Number(PROTO_TCP),
            "udp" => Protocol::Number(PROTO_UDP),
            "icmp" => Protocol::Number(PROTO_ICMP),
            n => Protocol::Number(n.parse().map_err(|_| {
                PolicyError::InvalidParameterValue(format!(
                    "protocol `{s}`: expected tcp, udp, icmp, -1 or a number 0 to 255"
                ))
            })?),
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::All => f.write_str("all"),
            Protocol::Number(n) => f.write_str(&proto_name(*n)),
        }
    }
}

/// `tcp`, `udp`, `icmp` or the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        n => format!("protocol {n}"),
    }
}

/// What ports (or ICMP type and code) a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Every port (and every ICMP type).
    All,
    /// A TCP or UDP destination port range, inclusive.
    Range(u16, u16),
    /// ICMP: a type, and a code (`None`: every code).
    Icmp(u8, Option<u8>),
}

impl Ports {
    /// One port.
    pub fn port(p: u16) -> Self {
        Ports::Range(p, p)
    }

    /// Checks a range is not reversed.
    pub fn check(self) -> Result<Self, PolicyError> {
        match self {
            Ports::Range(a, b) if a > b => {
                Err(PolicyError::InvalidParameterValue(format!("port range {a}-{b} is reversed")))
            }
            p => Ok(p),
        }
    }

    /// Whether it matches the packet's port (TCP/UDP) or ICMP type and code.
    pub fn matches(self, t: &Tuple) -> bool {
        match self {
            Ports::All => true,
            Ports::Range(a, b) => {
                matches!(t.proto, PROTO_TCP | PROTO_UDP) && (a..=b).contains(&t.dst_port)
            }
            Ports::Icmp(ty, code) => {
                t.proto == PROTO_ICMP
                    && t.icmp_type() == ty
                    && code.is_none_or(|c| c == t.icmp_code())
            }
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ports::All => f.write_str("all ports"),
            Ports::Range(a, b) if a == b => write!(f, "{a}"),
            Ports::Range(a, b) => write!(f, "{a}-{b}"),
            Ports::Icmp(t, None) => write!(f, "type {t}"),
            Ports::Icmp(t, Some(c)) => write!(f, "type {t} code {c}"),
        }
    }
}

/// A packet as the rules see it: addresses, protocol and ports. For ICMP, `src_port` is the
/// echo identifier (what connection tracking keys on) and `dst_port` the type (high byte) and
/// code (low byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol.
    pub proto: u8,
    /// Source port (ICMP: identifier).
    pub src_port: u16,
    /// Destination port (ICMP: type << 8 | code).
    pub dst_port: u16,
}

/// ICMP echo request and reply types.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;

impl Tuple {
    /// A TCP or UDP packet.
    pub fn new(proto: u8, src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16) -> Self {
        Self { src, dst, proto, src_port, dst_port }
    }

    /// An ICMP message of `ty`/`code` with identifier `id`.
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, id: u16) -> Self {
        Self {
            src,
            dst,
            proto: PROTO_ICMP,
            src_port: id,
            dst_port: u16::from(ty) << 8 | u16::from(code),
        }
    }

    /// A parsed frame's tuple, if it is IPv4.
    pub fn of_frame(ip: &crate::frame::Ipv4Info) -> Self {
        let (src, dst) = (Ipv4Addr::from(ip.src), Ipv4Addr::from(ip.dst));
        match (ip.protocol, ip.icmp, ip.ports) {
            (PROTO_ICMP, Some((ty, code, id)), _) => Tuple::icmp(src, dst, ty, code, id),
            (proto, _, Some((sp, dp))) => Tuple::new(proto, src, sp, dst, dp),
            (proto, _, None) => Tuple::new(proto, src, 0, dst, 0),
        }
    }

    /// The ICMP type.
    pub fn icmp_type(&self) -> u8 {
        (self.dst_port >> 8) as u8
    }

    /// The ICMP code.
    pub fn icmp_code(&self) -> u8 {
        (self.dst_port & 0xFF) as u8
    }

    /// The reply's tuple: addresses and ports swapped (an ICMP echo request's reply is an echo
    /// reply with the same identifier).
    pub fn reply(&self) -> Self {
        if self.proto == PROTO_ICMP {
            let ty = if self.icmp_type() == ICMP_ECHO_REQUEST {
                ICMP_ECHO_REPLY
            } else {
                self.icmp_type()
            };
            return Tuple::icmp(self.dst, self.src, ty, self.icmp_code(), self.src_port);
        }
        Self {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// The peer's address from the ENI's point of view: the source of what arrives, the
    /// destination of what leaves.
    pub fn remote(&self, dir: Direction) -> Ipv4Addr {
        match dir {
            Direction::Inbound => self.src,
            Direction::Outbound => self.dst,
        }
    }

    /// `tcp/5432`, `icmp type 8 code 0`, `protocol 47`.
    pub fn service(&self) -> String {
        match self.proto {
            PROTO_TCP | PROTO_UDP => format!("{}/{}", proto_name(self.proto), self.dst_port),
            PROTO_ICMP => format!("icmp type {} code {}", self.icmp_type(), self.icmp_code()),
            n => proto_name(n),
        }
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            PROTO_TCP | PROTO_UDP => write!(
                f,
                "{} {}:{} -> {}:{}",
                proto_name(self.proto),
                self.src,
                self.src_port,
                self.dst,
                self.dst_port
            ),
            _ => write!(f, "{} {} -> {}", self.service(), self.src, self.dst),
        }
    }
}

/// Where a client's replies come from: the ephemeral port range of its OS or gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EphemeralPorts {
    /// Linux (`net.ipv4.ip_local_port_range`): 32,768–60,999.
    Linux,
    /// Windows Server 2008 and later: 49,152–65,535.
    Windows,
    /// NAT gateways and Elastic Load Balancing: 1,024–65,535.
    NatGateway,
}

impl EphemeralPorts {
    /// The range, inclusive.
    pub fn range(self) -> (u16, u16) {
        match self {
            EphemeralPorts::Linux => (32_768, 60_999),
            EphemeralPorts::Windows => (49_152, 65_535),
            EphemeralPorts::NatGateway => (1_024, 65_535),
        }
    }

    /// The `n`-th connection's source port: the range walked from its start, as a client
    /// opening connections one after another picks them (deterministic, so a run repeats).
    pub fn port(self, n: u64) -> u16 {
        let (lo, hi) = self.range();
        let span = u64::from(hi - lo) + 1;
        lo + (n % span) as u16
    }
}

impl FromStr for EphemeralPorts {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "linux" => Ok(EphemeralPorts::Linux),
            "windows" => Ok(EphemeralPorts::Windows),
            "nat-gateway" | "elb" => Ok(EphemeralPorts::NatGateway),
            _ => Err(PolicyError::InvalidParameterValue(format!(
                "ephemeral ports `{s}`: expected linux, windows or nat-gateway"
            ))),
        }
    }
}
