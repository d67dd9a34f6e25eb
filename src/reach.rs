//! Reachability: whether each flow of a scenario gets through the VPC's security groups and
//! network ACLs, both ways, and if not which rule stops it (or which rule is missing), in words:
//! "blocked: db-0: sg-db inbound has no rule for tcp/5432 from 10.0.1.4". One walk decides for
//! `plan`, for `run` (a blocked flow sends nothing that arrives) and for `vnic-lab why`.
//!
//! A flow's request goes from its sender's ephemeral port to the receiver's port; its reply
//! (a TCP handshake's SYN-ACK, a ping-pong answer, what a UDP server sends back) comes back
//! through the same filters the other way, where security groups let it pass as a tracked
//! connection and NACLs judge it afresh. A dropped SYN is what a TCP client sees as a timeout.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use vnic::policy::conntrack::{Timeouts, tcp_flags};
use vnic::policy::vpc::{Hop, Passage, Vpc};
use vnic::policy::{Cidr, PROTO_TCP, Tuple};

use crate::scenario::{Placed, security::VPC_ID};

/// One filter's decision on a flow's way.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HopReport {
    /// `security group out`, `network ACL out`, `network ACL in`, `security group in`.
    pub filter: String,
    /// Whether it let the packet on.
    pub passed: bool,
    /// Why, naming the rule (or that none matched).
    pub why: String,
}

/// A flow's way through the VPC, both directions.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FlowReach {
    /// Whether the request and its reply both get through.
    pub allowed: bool,
    /// The first refusal, in words (`None` when allowed).
    pub blocked: Option<String>,
    /// The request's hops.
    pub request: Vec<HopReport>,
    /// The reply's hops (empty when the request did not arrive).
    pub reply: Vec<HopReport>,
}

/// The smallest prefix holding every subnet (the VPC's CIDR as the model takes it).
fn vpc_cidr(placed: &Placed) -> Cidr {
    let mut len = 16u8;
    loop {
        let first = placed.subnets.first().map_or(Ipv4Addr::new(10, 0, 0, 0), |s| s.network);
        let Ok(c) = Cidr::new(first, len) else { return Cidr::ANY };
        if placed.subnets.iter().all(|s| c.contains(s.network) && s.prefix >= len) || len == 0 {
            return c;
        }
        len -= 1;
    }
}

/// The VPC of a placed scenario, every ENI at its address with its groups.
pub fn vpc(placed: &Placed) -> Result<Vpc, String> {
    let sec = &placed.security;
    let err = |e: vnic::policy::PolicyError| e.to_string();
    let mut vpc = Vpc::new(VPC_ID, vpc_cidr(placed), sec.quotas).map_err(err)?;
    for n in &sec.nacls {
        vpc.put_nacl(n.clone());
    }
    // Groups first without members (a rule may name a group before it has any).
    for g in &sec.groups {
        vpc.put_group(g.clone()).map_err(err)?;
    }
    let mut subnet_index = Vec::new();
    for s in &placed.subnets {
        let cidr = Cidr::new(s.network, s.prefix).map_err(err)?;
        subnet_index.push(vpc.add_subnet(&s.name, cidr, &s.nacl).map_err(err)?);
    }
    let index_of = |name: &str| placed.subnets.iter().position(|s| s.name == name);
    for (i, v) in placed.vms.iter().enumerate() {
        let groups: Vec<&str> = v.security_groups.iter().map(String::as_str).collect();
        let subnet = index_of(&v.subnet).map(|k| subnet_index[k]).ok_or("a VM's subnet")?;
        let max = hypervisor_sim::cloud::DEFAULT_CONNTRACK_MAX;
        vpc.add_eni(&v.name, v.ip, subnet, &groups, max, Timeouts::default()).map_err(err)?;
        for e in placed.enis.iter().filter(|e| e.vm == i) {
            let groups: Vec<&str> = e.security_groups.iter().map(String::as_str).collect();
            let subnet = index_of(&e.subnet).map(|k| subnet_index[k]).ok_or("an ENI's subnet")?;
            vpc.add_eni(&e.name, e.ip, subnet, &groups, max, Timeouts::default()).map_err(err)?;
        }
    }
    Ok(vpc)
}

fn hop_label(hop: Hop) -> &'static str {
    match hop {
        Hop::SgOut(_) => "security group out",
        Hop::NaclOut(_) => "network ACL out",
        Hop::NaclIn(_) => "network ACL in",
        Hop::SgIn(_) => "security group in",
    }
}

fn hops(p: &Passage) -> Vec<HopReport> {
    p.hops
        .iter()
        .map(|h| HopReport {
            filter: hop_label(h.hop).into(),
            passed: h.passed,
            why: h.why.clone(),
        })
        .collect()
}

/// The request of flow `f` (from its sender's primary address and ephemeral port).
pub fn request(placed: &Placed, f: usize) -> Tuple {
    let fl = &placed.flows[f];
    let (from, to) = (&placed.vms[fl.from], &placed.vms[fl.to]);
    Tuple::new(fl.protocol, from.ip, fl.src_port, to.ip, fl.dst_port)
}

/// Walks every flow's request and reply through `vpc` (a fresh one per scenario: the walks
/// open the connections their replies ride on).
pub fn flows(placed: &Placed, vpc: &mut Vpc) -> Vec<FlowReach> {
    (0..placed.flows.len())
        .map(|f| {
            let fl = &placed.flows[f];
            // A UDP stream is datagrams one way: whether a reply would pass is not its concern.
            let one_way = fl.protocol != PROTO_TCP
                && fl.pattern == hypervisor_sim::sim::traffic::Pattern::Stream;
            walk(vpc, &request(placed, f), one_way)
        })
        .collect()
}

/// The request `t` and its reply through `vpc`; a `one_way` flow is allowed if its request is
/// (the reply is walked, and shown, all the same).
pub fn walk(vpc: &mut Vpc, t: &Tuple, one_way: bool) -> FlowReach {
    let (first, answer) = if t.proto == PROTO_TCP {
        (tcp_flags::SYN, tcp_flags::SYN | tcp_flags::ACK)
    } else {
        (0, 0)
    };
    let Some(from) = vpc.eni_at(t.src) else {
        return FlowReach {
            allowed: false,
            blocked: Some(format!("no ENI has the address {}", t.src)),
            request: Vec::new(),
            reply: Vec::new(),
        };
    };
    let there = match vpc.send(0, from, t, first) {
        Ok(p) => p,
        Err(e) => {
            return FlowReach {
                allowed: false,
                blocked: Some(e.to_string()),
                request: Vec::new(),
                reply: Vec::new(),
            };
        }
    };
    let mut reach =
        FlowReach { allowed: false, blocked: None, request: hops(&there), reply: Vec::new() };
    if let Some(b) = there.blocked_at() {
        reach.blocked = Some(blocked_words(t, b.why.as_str(), false));
        return reach;
    }
    let Some(to) = there.to else {
        reach.allowed = true;
        return reach;
    };
    let back = match vpc.send(0, to, &t.reply(), answer) {
        Ok(p) => p,
        Err(e) => {
            reach.blocked = Some(e.to_string());
            return reach;
        }
    };
    reach.reply = hops(&back);
    match back.blocked_at() {
        Some(b) if !one_way => reach.blocked = Some(blocked_words(t, b.why.as_str(), true)),
        _ => reach.allowed = true,
    }
    reach
}

/// "blocked: ..." with what a user of the flow would see.
fn blocked_words(t: &Tuple, why: &str, reply: bool) -> String {
    let seen = match (t.proto == PROTO_TCP, reply) {
        (true, false) => "; the client's SYN is dropped: a connection timeout after its retries",
        (true, true) => "; the SYN-ACK is dropped: a connection timeout after the client's retries",
        (false, false) => "; every datagram is dropped",
        (false, true) => "; the requests arrive, the replies are dropped",
    };
    let which = if reply { "the reply: " } else { "" };
    format!("blocked: {which}{why}{seen}")
}

/// `vnic-lab why`: the request and its reply through every filter, by the rules alone.
pub fn explain(
    placed: &Placed,
    from: &str,
    to: &str,
    proto: u8,
    port: u16,
) -> Result<String, String> {
    let vm = |name: &str| {
        placed.vms.iter().find(|v| v.name == name).ok_or_else(|| format!("no VM named `{name}`"))
    };
    let (a, b) = (vm(from)?, vm(to)?);
    // The scenario's own flow of that kind, if it has one (its source port); else the
    // sender's next ephemeral port.
    let declared = placed.flows.iter().find(|f| {
        placed.vms[f.from].name == from
            && placed.vms[f.to].name == to
            && f.dst_port == port
            && f.protocol == proto
    });
    let src_port =
        declared.map_or_else(|| a.ephemeral.port(placed.flows.len() as u64), |f| f.src_port);
    let t = Tuple::new(proto, a.ip, src_port, b.ip, port);
    let mut vpc = vpc(placed)?;
    let reach = walk(&mut vpc, &t, false);
    let mut out = String::new();
    let _ = writeln!(out, "{t}  ({from} -> {to})");
    hop_lines(&mut out, &reach.request);
    if !reach.reply.is_empty() {
        let _ = writeln!(out, "{}  (the reply)", t.reply());
        hop_lines(&mut out, &reach.reply);
    }
    let _ = writeln!(out, "{}", reach.blocked.as_deref().unwrap_or("allowed, both ways"));
    Ok(out)
}

/// One line per hop: `pass` or `STOP`, the filter, why.
fn hop_lines(out: &mut String, hops: &[HopReport]) {
    for h in hops {
        let verdict = if h.passed { "pass" } else { "STOP" };
        let _ = writeln!(out, "  {verdict} {:<20} {}", h.filter, h.why);
    }
}
