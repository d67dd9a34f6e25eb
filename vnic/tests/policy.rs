//! Security groups, NACLs and connection tracking, decided packet by packet in a three-tier VPC
//! whose every answer follows from the rules written below (EC2's semantics: allow-only
//! stateful groups, numbered stateless NACLs applied only across a subnet's boundary, replies
//! on the client's ephemeral port, idle timeouts, the conntrack allowance).
//!
//! ```text
//! VPC 10.0.0.0/16
//!   public 10.0.1.0/24 (acl-default: allow all)   web-0 .10, web-1 .11 [sg-web]
//!                                                  open-0 .20 [sg-open], log-0 .30 [sg-log]
//!                                                  tiny-0 .40 [sg-web] (conntrack allowance 2)
//!   app    10.0.2.0/24 (acl-app)                   app-0 .10, app-1 .11 [sg-app]
//!   db     10.0.3.0/24 (acl-db)                    db-0 .10 [sg-db], db-1 .11 [sg-db] (TCP
//!                                                  established timeout 60 s)
//! ```

use std::net::Ipv4Addr;

use proptest::prelude::*;
use vnic::policy::conntrack::{Timeouts, tcp_flags::*};
use vnic::policy::nacl::{Action, Nacl, NaclRule};
use vnic::policy::sg::{Peer, SecurityGroup, SgRule};
use vnic::policy::vpc::{Hop, Vpc};
use vnic::policy::*;

const S: u64 = 1_000_000_000;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn tcp(from: &str, sport: u16, to: &str, dport: u16) -> Tuple {
    Tuple::new(PROTO_TCP, ip(from), sport, ip(to), dport)
}

fn udp(from: &str, sport: u16, to: &str, dport: u16) -> Tuple {
    Tuple::new(PROTO_UDP, ip(from), sport, ip(to), dport)
}

fn rule(proto: &str, ports: Ports, peer: Peer) -> SgRule {
    SgRule::new(proto.parse().unwrap(), ports, peer)
}

fn group(id: &str) -> Peer {
    Peer::Group(id.into())
}

fn net(s: &str) -> Peer {
    Peer::Cidr(cidr(s))
}

fn nacl_rule(number: u16, proto: &str, ports: Ports, c: &str, action: Action) -> NaclRule {
    NaclRule { number, protocol: proto.parse().unwrap(), ports, cidr: cidr(c), action }
}

const LINUX: (u16, u16) = (32_768, 60_999);

fn three_tier() -> Vpc {
    let q = Quotas::default();
    let mut vpc = Vpc::new("vpc-1", cidr("10.0.0.0/16"), q).unwrap();
    let mut web = SecurityGroup::new("sg-web", "vpc-1");
    web.authorize(Direction::Inbound, rule("tcp", Ports::port(443), net("0.0.0.0/0")), &q).unwrap();
    web.authorize(Direction::Inbound, SgRule::all(group("sg-web")), &q).unwrap();
    let mut open = SecurityGroup::new("sg-open", "vpc-1");
    open.authorize(Direction::Inbound, SgRule::all(net("0.0.0.0/0")), &q).unwrap();
    let mut app = SecurityGroup::empty("sg-app", "vpc-1");
    app.authorize(Direction::Inbound, rule("tcp", Ports::port(8080), group("sg-web")), &q).unwrap();
    app.authorize(Direction::Inbound, rule("icmp", Ports::Icmp(8, None), net("10.0.0.0/16")), &q)
        .unwrap();
    app.authorize(Direction::Outbound, rule("tcp", Ports::port(5432), group("sg-db")), &q).unwrap();
    let mut db = SecurityGroup::empty("sg-db", "vpc-1");
    db.authorize(Direction::Inbound, rule("tcp", Ports::port(5432), group("sg-app")), &q).unwrap();
    db.authorize(Direction::Inbound, SgRule::all(group("sg-db")), &q).unwrap();
    db.authorize(Direction::Outbound, SgRule::all(group("sg-db")), &q).unwrap();
    let mut log = SecurityGroup::empty("sg-log", "vpc-1");
    log.authorize(Direction::Inbound, rule("udp", Ports::port(514), net("10.0.1.0/24")), &q)
        .unwrap();
    log.authorize(
        Direction::Inbound,
        rule("tcp", Ports::Range(8000, 8100), net("10.0.1.0/24")),
        &q,
    )
    .unwrap();
    log.authorize(
        Direction::Inbound,
        rule("tcp", Ports::Range(8050, 8200), net("10.0.1.10/32")),
        &q,
    )
    .unwrap();
    for g in [web, open, app, db, log] {
        vpc.put_group(g).unwrap();
    }
    let mut acl_app = Nacl::new("acl-app");
    let (lo, hi) = LINUX;
    // Added out of order: the NACL keeps them by number.
    acl_app
        .add(
            Direction::Inbound,
            nacl_rule(120, "icmp", Ports::All, "10.0.0.0/16", Action::Allow),
            &q,
        )
        .unwrap();
    acl_app
        .add(
            Direction::Inbound,
            nacl_rule(100, "tcp", Ports::port(8080), "10.0.1.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    acl_app
        .add(
            Direction::Inbound,
            nacl_rule(110, "tcp", Ports::Range(lo, hi), "10.0.3.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    acl_app
        .add(
            Direction::Outbound,
            nacl_rule(100, "tcp", Ports::port(5432), "10.0.3.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    acl_app
        .add(
            Direction::Outbound,
            nacl_rule(110, "tcp", Ports::Range(lo, hi), "10.0.1.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    acl_app
        .add(
            Direction::Outbound,
            nacl_rule(120, "icmp", Ports::All, "10.0.0.0/16", Action::Allow),
            &q,
        )
        .unwrap();
    let mut acl_db = Nacl::new("acl-db");
    acl_db
        .add(
            Direction::Inbound,
            nacl_rule(110, "tcp", Ports::port(5432), "10.0.2.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    acl_db
        .add(
            Direction::Inbound,
            nacl_rule(100, "tcp", Ports::port(5432), "10.0.2.11/32", Action::Deny),
            &q,
        )
        .unwrap();
    acl_db
        .add(
            Direction::Outbound,
            nacl_rule(100, "tcp", Ports::Range(lo, hi), "10.0.2.0/24", Action::Allow),
            &q,
        )
        .unwrap();
    vpc.put_nacl(acl_app);
    vpc.put_nacl(acl_db);
    let public = vpc.add_subnet("public", cidr("10.0.1.0/24"), vpc::DEFAULT_NACL).unwrap();
    let app_net = vpc.add_subnet("app", cidr("10.0.2.0/24"), "acl-app").unwrap();
    let db_net = vpc.add_subnet("db", cidr("10.0.3.0/24"), "acl-db").unwrap();
    let t = Timeouts::default();
    let many = 1_000;
    for (name, addr, subnet, groups, max, timeouts) in [
        ("web-0", "10.0.1.10", public, "sg-web", many, t),
        ("web-1", "10.0.1.11", public, "sg-web", many, t),
        ("open-0", "10.0.1.20", public, "sg-open", many, t),
        ("log-0", "10.0.1.30", public, "sg-log", many, t),
        ("tiny-0", "10.0.1.40", public, "sg-web", 2, t),
        ("app-0", "10.0.2.10", app_net, "sg-app", many, t),
        ("app-1", "10.0.2.11", app_net, "sg-app", many, t),
        ("db-0", "10.0.3.10", db_net, "sg-db", many, t),
        ("db-1", "10.0.3.11", db_net, "sg-db", many, Timeouts { tcp_established_s: 60, ..t }),
    ] {
        vpc.add_eni(name, ip(addr), subnet, &[groups], max, timeouts).unwrap();
    }
    vpc
}

/// What a step expects: delivered, or stopped at a hop (`sg-out NAME`, `nacl-in SUBNET`, ...)
/// with words the reason must contain.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Delivered,
    Blocked(&'static str, &'static str),
}

enum Step {
    Send { at_s: u64, from: &'static str, t: Tuple, flags: u8, expect: Expect },
    Revoke { group: &'static str, dir: Direction, rule: SgRule },
    Authorize { group: &'static str, dir: Direction, rule: SgRule },
}

fn hop_name(vpc: &Vpc, hop: Hop) -> String {
    match hop {
        Hop::SgOut(e) => format!("sg-out {}", vpc.eni_name(e)),
        Hop::SgIn(e) => format!("sg-in {}", vpc.eni_name(e)),
        Hop::NaclOut(s) => format!("nacl-out {}", vpc.subnet_name(s)),
        Hop::NaclIn(s) => format!("nacl-in {}", vpc.subnet_name(s)),
    }
}

fn send(at_s: u64, from: &'static str, t: Tuple, flags: u8, expect: Expect) -> Step {
    Step::Send { at_s, from, t, flags, expect }
}

use Expect::{Blocked, Delivered};

#[test]
fn fifty_packet_decisions_in_a_three_tier_vpc() {
    let mut vpc = three_tier();
    let (web0, web1, open0, log0, tiny0) =
        ("10.0.1.10", "10.0.1.11", "10.0.1.20", "10.0.1.30", "10.0.1.40");
    let (app0, app1, db0, db1) = ("10.0.2.10", "10.0.2.11", "10.0.3.10", "10.0.3.11");
    let echo = |from: &str, to: &str, ty: u8, id: u16| Tuple::icmp(ip(from), ip(to), ty, 0, id);
    let steps = vec![
        // 1-3: web to app through both NACLs and an SG-to-SG rule; the reply on the client's
        // Linux ephemeral port passes acl-app outbound rule 110 and the tracked connection.
        send(0, "web-0", tcp(web0, 40_000, app0, 8080), SYN, Delivered),
        send(0, "app-0", tcp(app0, 8080, web0, 40_000), SYN | ACK, Delivered),
        send(0, "web-0", tcp(web0, 40_000, app0, 8080), ACK, Delivered),
        // 4: a port acl-app has no rule for: the * rule.
        send(0, "web-0", tcp(web0, 40_001, app0, 9090), SYN, Blocked("nacl-in app", "the * rule")),
        // 5-6: a client on port 2,000 (below Linux's range): the request passes, the reply
        // does not leave the app subnet (stateless NACLs need their own rule for replies).
        send(0, "web-0", tcp(web0, 2_000, app0, 8080), SYN, Delivered),
        send(
            0,
            "app-0",
            tcp(app0, 8080, web0, 2_000),
            SYN | ACK,
            Blocked("nacl-out app", "no rule matches"),
        ),
        // 7-8: a Windows client on 50,000 is inside 32,768-60,999, one on 61,000 is not.
        send(0, "web-1", tcp(web1, 50_000, app0, 8080), SYN, Delivered),
        send(0, "app-0", tcp(app0, 8080, web1, 50_000), SYN | ACK, Delivered),
        send(0, "web-1", tcp(web1, 61_000, app0, 8080), SYN, Delivered),
        send(0, "app-0", tcp(app0, 8080, web1, 61_000), SYN | ACK, Blocked("nacl-out app", "*")),
        // 11-12: app to db; db's group has no outbound rule for app: the reply passes only as
        // a tracked connection.
        send(0, "app-0", tcp(app0, 33_000, db0, 5432), SYN, Delivered),
        send(0, "db-0", tcp(db0, 5432, app0, 33_000), SYN | ACK, Delivered),
        // 13: NACL rule order: acl-db inbound rule 100 denies app-1 before 110 allows its subnet.
        send(
            0,
            "app-1",
            tcp(app1, 33_001, db0, 5432),
            SYN,
            Blocked("nacl-in db", "rule 100 denies"),
        ),
        // 14: db cannot open anything towards app: sg-db outbound has no rule for it.
        send(
            0,
            "db-0",
            tcp(db0, 40_000, app0, 8080),
            SYN,
            Blocked("sg-out db-0", "sg-db outbound has no rule for tcp/8080"),
        ),
        // 15: inside one subnet no NACL applies (acl-db would deny tcp/22): self-reference.
        send(0, "db-0", tcp(db0, 40_000, db1, 22), SYN, Delivered),
        // 16: web to db: acl-db allows 5432 only from the app subnet.
        send(0, "web-0", tcp(web0, 40_002, db0, 5432), SYN, Blocked("nacl-in db", "the * rule")),
        // 17: web to web: sg-web allows everything from itself, UDP included.
        send(0, "web-0", udp(web0, 5000, web1, 53), 0, Delivered),
        // 18: SG-to-SG: open-0 is not in sg-web, so sg-app refuses it on 8080.
        send(
            0,
            "open-0",
            tcp(open0, 40_000, app0, 8080),
            SYN,
            Blocked("sg-in app-0", "sg-app inbound has no rule for tcp/8080 from 10.0.1.20"),
        ),
        // 19-20: outside the VPC: web may go anywhere; app only to sg-db on 5432.
        send(0, "web-0", tcp(web0, 40_003, "198.51.100.7", 443), SYN, Delivered),
        send(
            0,
            "app-0",
            tcp(app0, 40_003, "198.51.100.7", 443),
            SYN,
            Blocked("sg-out app-0", "no rule for tcp/443"),
        ),
        // 21-23: ICMP: echo allowed by type; its reply tracked by identifier; timestamp refused.
        send(0, "web-0", echo(web0, app0, ICMP_ECHO_REQUEST, 7), 0, Delivered),
        send(0, "app-0", echo(app0, web0, ICMP_ECHO_REPLY, 7), 0, Delivered),
        send(0, "web-0", echo(web0, app0, 13, 8), 0, Blocked("sg-in app-0", "icmp type 13")),
        // 24-25: CIDR overlap in sg-log: 8150 only from web-0 (10.0.1.10/32), 8075 from both.
        send(0, "web-0", tcp(web0, 40_004, log0, 8150), SYN, Delivered),
        send(0, "web-1", tcp(web1, 40_004, log0, 8150), SYN, Blocked("sg-in log-0", "tcp/8150")),
        send(0, "web-1", tcp(web1, 40_005, log0, 8075), SYN, Delivered),
        // 27-29: untracked: sg-open allows all from 0.0.0.0/0 and all out, so TCP to open-0
        // is untracked; when the inbound rule goes, the same connection stops at once.
        send(0, "web-1", tcp(web1, 41_000, open0, 8443), SYN, Delivered),
        Step::Revoke {
            group: "sg-open",
            dir: Direction::Inbound,
            rule: SgRule::all(net("0.0.0.0/0")),
        },
        send(
            1,
            "web-1",
            tcp(web1, 41_000, open0, 8443),
            ACK,
            Blocked("sg-in open-0", "sg-open inbound has no rule"),
        ),
        // 30-31: a tracked connection outlives its rule; a new one does not.
        Step::Revoke {
            group: "sg-app",
            dir: Direction::Inbound,
            rule: rule("tcp", Ports::port(8080), group("sg-web")),
        },
        send(1, "web-0", tcp(web0, 40_000, app0, 8080), ACK, Delivered),
        send(
            1,
            "web-0",
            tcp(web0, 40_006, app0, 8080),
            SYN,
            Blocked("sg-in app-0", "no rule for tcp/8080"),
        ),
        Step::Authorize {
            group: "sg-app",
            dir: Direction::Inbound,
            rule: rule("tcp", Ports::port(8080), group("sg-web")),
        },
        send(1, "web-0", tcp(web0, 40_006, app0, 8080), SYN, Delivered),
        // 33-35: UDP, one request and its response: 30 s idle and it is gone, and log-0 (no
        // outbound rule) can no longer answer.
        send(10, "web-0", udp(web0, 45_000, log0, 514), 0, Delivered),
        send(11, "log-0", udp(log0, 514, web0, 45_000), 0, Delivered),
        send(40, "log-0", udp(log0, 514, web0, 45_000), 0, Delivered),
        send(
            71,
            "log-0",
            udp(log0, 514, web0, 45_000),
            0,
            Blocked("sg-out log-0", "sg-log outbound has no rule"),
        ),
        // 37-41: UDP with a second exchange is a stream: 180 s.
        send(100, "web-0", udp(web0, 45_001, log0, 514), 0, Delivered),
        send(101, "log-0", udp(log0, 514, web0, 45_001), 0, Delivered),
        send(102, "web-0", udp(web0, 45_001, log0, 514), 0, Delivered),
        send(103, "log-0", udp(log0, 514, web0, 45_001), 0, Delivered),
        send(263, "log-0", udp(log0, 514, web0, 45_001), 0, Delivered),
        send(444, "log-0", udp(log0, 514, web0, 45_001), 0, Blocked("sg-out log-0", "no rule")),
        // 43-44: a TCP connection that never got its reply lasts 120 s (SYN sent).
        send(500, "app-0", tcp(app0, 34_000, db0, 5432), SYN, Delivered),
        send(619, "db-0", tcp(db0, 5432, app0, 34_000), SYN | ACK, Delivered),
        send(1000, "app-0", tcp(app0, 34_001, db0, 5432), SYN, Delivered),
        send(
            1121,
            "db-0",
            tcp(db0, 5432, app0, 34_001),
            SYN | ACK,
            Blocked("sg-out db-0", "sg-db outbound has no rule"),
        ),
        // 47-49: db-1's established connections time out after 60 s idle (set per ENI).
        send(2000, "app-0", tcp(app0, 35_000, db1, 5432), SYN, Delivered),
        send(2000, "db-1", tcp(db1, 5432, app0, 35_000), SYN | ACK, Delivered),
        send(2059, "db-1", tcp(db1, 5432, app0, 35_000), ACK, Delivered),
        send(2120, "db-1", tcp(db1, 5432, app0, 35_000), ACK, Blocked("sg-out db-1", "no rule")),
        // 51-54: tiny-0 tracks at most two connections: the third is refused until one
        // expires (SYN only: 120 s).
        send(3000, "web-0", tcp(web0, 1, tiny0, 443), SYN, Delivered),
        send(3000, "web-0", tcp(web0, 2, tiny0, 443), SYN, Delivered),
        send(
            3000,
            "web-0",
            tcp(web0, 3, tiny0, 443),
            SYN,
            Blocked("sg-in tiny-0", "conntrack allowance is spent"),
        ),
        send(3121, "web-0", tcp(web0, 3, tiny0, 443), SYN, Delivered),
        // 55-56: a reset ends a tracked connection: app-0's reply after it finds none.
        send(4000, "app-0", tcp(app0, 36_000, db0, 5432), SYN, Delivered),
        send(4000, "app-0", tcp(app0, 36_000, db0, 5432), RST, Delivered),
        send(4000, "db-0", tcp(db0, 5432, app0, 36_000), ACK, Blocked("sg-out db-0", "no rule")),
    ];
    let mut decided = 0;
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Revoke { group, dir, rule } => assert!(vpc.revoke(group, dir, &rule).unwrap()),
            Step::Authorize { group, dir, rule } => vpc.authorize(group, dir, rule).unwrap(),
            Step::Send { at_s, from, t, flags, expect } => {
                decided += 1;
                let from_eni = vpc.eni_at(t.src).unwrap_or_else(|| panic!("step {i}: {from}?"));
                assert_eq!(vpc.eni_name(from_eni), from, "step {i}");
                let p = vpc.send(at_s * S, from_eni, &t, flags).unwrap();
                let hops: Vec<String> = p
                    .hops
                    .iter()
                    .map(|h| format!("{} ({})", hop_name(&vpc, h.hop), h.why))
                    .collect();
                match expect {
                    Delivered => assert!(p.delivered(), "step {i} {t}: {hops:#?}"),
                    Blocked(at, words) => {
                        let b = p
                            .blocked_at()
                            .unwrap_or_else(|| panic!("step {i} {t} delivered: {hops:#?}"));
                        assert_eq!(hop_name(&vpc, b.hop), at, "step {i} {t}: {hops:#?}");
                        assert!(b.why.contains(words), "step {i} {t}: `{}` lacks `{words}`", b.why);
                    }
                }
            }
        }
    }
    assert!(decided >= 50, "{decided} decisions");
}

/// The conntrack allowance is counted and reported as the device's counters are.
#[test]
fn the_allowance_counts_what_it_refused() {
    let mut vpc = three_tier();
    let tiny = vpc.eni_at(ip("10.0.1.40")).unwrap();
    let web0 = vpc.eni_at(ip("10.0.1.10")).unwrap();
    for port in 1..=5 {
        vpc.send(0, web0, &tcp("10.0.1.10", port, "10.0.1.40", 443), SYN).unwrap();
    }
    let ct = vpc.filter(tiny).unwrap().conntrack();
    assert_eq!((ct.len(), ct.available(), ct.exceeded()), (2, 0, 3));
}

/// Quotas with EC2's error codes.
#[test]
fn quotas_are_ec2s() {
    let q = Quotas::default();
    let mut g = SecurityGroup::empty("sg-big", "vpc-1");
    for p in 0..60 {
        g.authorize(Direction::Inbound, rule("tcp", Ports::port(p), net("0.0.0.0/0")), &q).unwrap();
    }
    let e = g.authorize(Direction::Inbound, rule("tcp", Ports::port(60), net("0.0.0.0/0")), &q);
    assert!(e.unwrap_err().to_string().starts_with("RulesPerSecurityGroupLimitExceeded"));
    // The same rule twice is one rule.
    g.authorize(Direction::Inbound, rule("tcp", Ports::port(0), net("0.0.0.0/0")), &q).unwrap();
    let mut vpc = Vpc::new("vpc-1", cidr("10.0.0.0/16"), q).unwrap();
    let s = vpc.add_subnet("a", cidr("10.0.1.0/24"), vpc::DEFAULT_NACL).unwrap();
    let six: Vec<String> = (0..6).map(|i| format!("sg-{i}")).collect();
    for id in &six {
        vpc.put_group(SecurityGroup::new(id.as_str(), "vpc-1")).unwrap();
    }
    let names: Vec<&str> = six.iter().map(String::as_str).collect();
    let e = vpc.add_eni("e", ip("10.0.1.5"), s, &names, 10, Timeouts::default()).unwrap_err();
    let unknown = vpc.add_eni("e", ip("10.0.1.5"), s, &["sg-none"], 10, Timeouts::default());
    assert!(unknown.unwrap_err().to_string().starts_with("InvalidGroup.NotFound"));
    assert!(e.to_string().starts_with("SecurityGroupsPerInterfaceLimitExceeded"), "{e}");
    vpc.add_eni("e", ip("10.0.1.5"), s, &names[..5], 10, Timeouts::default()).unwrap();
    let mut acl = Nacl::new("acl");
    for n in 1..=20 {
        acl.add(Direction::Inbound, nacl_rule(n, "-1", Ports::All, "0.0.0.0/0", Action::Allow), &q)
            .unwrap();
    }
    let e = acl.add(
        Direction::Inbound,
        nacl_rule(21, "-1", Ports::All, "0.0.0.0/0", Action::Allow),
        &q,
    );
    assert!(e.unwrap_err().to_string().starts_with("NetworkAclEntryLimitExceeded"));
    let e = acl.add(
        Direction::Outbound,
        nacl_rule(32_767, "-1", Ports::All, "0.0.0.0/0", Action::Allow),
        &q,
    );
    assert!(e.unwrap_err().to_string().contains("not 1 to 32766"));
    assert!(Quotas { groups_per_eni: 17, ..q }.check().is_err());
    assert!(Quotas { groups_per_eni: 16, nacl_rules: 40, ..q }.check().is_ok());
    assert!(Timeouts { udp_s: 61, ..Timeouts::default() }.check().is_err());
}

fn any_rule() -> impl Strategy<Value = SgRule> {
    let ports = prop_oneof![
        Just(Ports::All),
        (0u16..2000, 0u16..200).prop_map(|(a, w)| Ports::Range(a, a.saturating_add(w))),
    ];
    let proto = prop_oneof![
        Just(Protocol::All),
        Just(Protocol::Number(PROTO_TCP)),
        Just(Protocol::Number(PROTO_UDP))
    ];
    let peer = (any::<u32>(), 8u8..=32)
        .prop_map(|(a, l)| Peer::Cidr(Cidr::new(Ipv4Addr::from(a & 0x0aff_ffff), l).unwrap()));
    (proto, ports, peer).prop_map(|(p, ports, peer)| SgRule::new(p, ports, peer))
}

fn any_tuple() -> impl Strategy<Value = Tuple> {
    (any::<u32>(), 0u16..2200, prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)]).prop_map(
        |(a, port, proto)| {
            Tuple::new(proto, Ipv4Addr::from(a & 0x0aff_ffff), 40_000, ip("10.0.0.1"), port)
        },
    )
}

fn compile(rules: &[SgRule]) -> sg::CompiledGroups {
    let q = Quotas { rules_per_group: MAX_RULES_PER_GROUP, ..Quotas::default() };
    let mut g = SecurityGroup::empty("sg", "vpc");
    for r in rules {
        g.authorize(Direction::Inbound, r.clone(), &q).unwrap();
    }
    sg::CompiledGroups::compile(&[&g], &std::collections::BTreeMap::new(), &q).unwrap()
}

proptest! {
    /// Adding an allow rule never blocks a packet that was allowed.
    #[test]
    fn an_added_rule_never_blocks(rules in prop::collection::vec(any_rule(), 0..20), extra in any_rule(), t in any_tuple()) {
        let before = compile(&rules).allows(Direction::Inbound, &t);
        let mut more = rules.clone();
        more.push(extra);
        let after = compile(&more).allows(Direction::Inbound, &t);
        prop_assert!(!before || after);
    }

    /// The compiled index decides as a scan of every rule does.
    #[test]
    fn the_index_agrees_with_a_scan(rules in prop::collection::vec(any_rule(), 0..30), t in any_tuple()) {
        let scan = rules.iter().any(|r| r.protocol.matches(t.proto)
            && (r.protocol == Protocol::All || r.ports.matches(&t))
            && matches!(&r.peer, Peer::Cidr(c) if c.contains(t.src)));
        prop_assert_eq!(compile(&rules).allows(Direction::Inbound, &t), scan);
    }

    /// A NACL's decision is its first matching rule's: rules after it, whatever they say,
    /// change nothing.
    #[test]
    fn a_nacl_decides_by_its_first_match(
        rules in prop::collection::vec((any_rule(), any::<bool>()), 1..15),
        later in prop::collection::vec((any_rule(), any::<bool>()), 0..5),
        t in any_tuple(),
    ) {
        let q = Quotas { nacl_rules: MAX_NACL_RULES, ..Quotas::default() };
        let to_nacl = |rs: &[(SgRule, bool)], first: u16| {
            rs.iter().enumerate().map(|(i, (r, allow))| NaclRule {
                number: first + i as u16,
                protocol: r.protocol,
                ports: r.ports,
                cidr: match &r.peer { Peer::Cidr(c) => *c, Peer::Group(_) => Cidr::ANY },
                action: if *allow { Action::Allow } else { Action::Deny },
            }).collect::<Vec<_>>()
        };
        let mut a = Nacl::new("a");
        for r in to_nacl(&rules, 1) { a.add(Direction::Inbound, r, &q).unwrap(); }
        let first = a.decide(Direction::Inbound, &t);
        let mut b = a.clone();
        for r in to_nacl(&later, 100) { b.add(Direction::Inbound, r, &q).unwrap(); }
        if let nacl::NaclMatch::Rule(r) = first {
            prop_assert_eq!(b.decide(Direction::Inbound, &t), nacl::NaclMatch::Rule(r));
        }
    }
}

/// A flow log of a short scripted run, byte for byte: the lines are written out here from the
/// format (version 2, fourteen fields), the 60 s interval and the epoch.
#[test]
fn a_flow_log_is_awss_default_format_to_the_byte() {
    use vnic::policy::flowlog::{FlowLog, LogAction};
    const EPOCH: u64 = 1_700_000_000;
    let mut log = FlowLog::new(
        "123456789012",
        "eni-web0",
        60,
        EPOCH,
        cidr("10.0.0.0/16"),
        cidr("10.0.1.0/24"),
    );
    let ms = 1_000_000;
    let web = "10.0.1.10";
    log.record(1_500 * ms, &tcp(web, 40_000, "10.0.2.10", 8080), 100, LogAction::Accept);
    log.record(2_000 * ms, &tcp(web, 40_000, "10.0.2.10", 8080), 200, LogAction::Accept);
    log.record(2_500 * ms, &tcp("10.0.2.10", 8080, web, 40_000), 60, LogAction::Accept);
    log.record(3_000 * ms, &tcp(web, 40_001, "10.0.3.10", 5432), 60, LogAction::Reject);
    // Not logged: Amazon DNS (VPC base + 2 and link-local), metadata, Time Sync, the router
    // (subnet base + 1), DHCP.
    log.record(4_000 * ms, &udp(web, 50_000, "10.0.0.2", 53), 70, LogAction::Accept);
    log.record(4_000 * ms, &udp(web, 50_001, "169.254.169.253", 53), 70, LogAction::Accept);
    log.record(4_000 * ms, &tcp(web, 50_002, "169.254.169.254", 80), 70, LogAction::Accept);
    log.record(4_000 * ms, &udp(web, 123, "169.254.169.123", 123), 70, LogAction::Accept);
    log.record(4_000 * ms, &udp(web, 50_003, "10.0.1.1", 9), 70, LogAction::Accept);
    log.record(4_000 * ms, &udp("0.0.0.0", 68, "255.255.255.255", 67), 300, LogAction::Accept);
    let ping = Tuple::icmp(ip(web), ip("10.0.2.10"), ICMP_ECHO_REQUEST, 0, 7);
    log.record(59_999 * ms, &ping, 84, LogAction::Accept);
    // Nothing from 60 s to 120 s; one UDP datagram at 130 s; the run ends at 150 s.
    log.record(130_000 * ms, &udp(web, 45_000, "10.0.1.30", 514), 120, LogAction::Accept);
    let lines = log.finish(150_000 * ms);
    let p = "2 123456789012 eni-web0";
    let expected = [
        format!("{p} 10.0.1.10 10.0.2.10 40000 8080 6 2 300 1700000001 1700000002 ACCEPT OK"),
        format!("{p} 10.0.2.10 10.0.1.10 8080 40000 6 1 60 1700000002 1700000002 ACCEPT OK"),
        format!("{p} 10.0.1.10 10.0.3.10 40001 5432 6 1 60 1700000003 1700000003 REJECT OK"),
        format!("{p} 10.0.1.10 10.0.2.10 0 0 1 1 84 1700000059 1700000059 ACCEPT OK"),
        format!("{p} - - - - - - - 1700000060 1700000120 - NODATA"),
        format!("{p} 10.0.1.10 10.0.1.30 45000 514 17 1 120 1700000130 1700000130 ACCEPT OK"),
    ];
    assert_eq!(lines, expected);
    assert_eq!(flowlog::HEADER.split(' ').count(), 14);
    assert!(lines.iter().all(|l| l.split(' ').count() == 14));
}

/// An interval with more flows than the log holds ends with one SKIPDATA record.
#[test]
fn a_full_interval_ends_in_skipdata() {
    use vnic::policy::flowlog::{FlowLog, LogAction};
    let mut log = FlowLog::new("1", "eni-a", 60, 0, cidr("10.0.0.0/16"), cidr("10.0.1.0/24"))
        .with_max_records(2);
    for port in 1..=3 {
        log.record(S, &tcp("10.0.1.10", port, "10.0.1.11", 80), 60, LogAction::Accept);
    }
    let lines = log.finish(60 * S);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[2], "2 1 eni-a - - - - - - - 0 60 - SKIPDATA");
}

/// `put` creates a rule or replaces the one of its number; one past the quota is refused and
/// leaves the NACL as it was.
#[test]
fn a_nacl_rule_put_creates_or_replaces_and_a_refusal_changes_nothing() {
    let q = Quotas { nacl_rules: 2, ..Quotas::default() };
    let mut n = Nacl::new("acl-a");
    let allow = |number| nacl_rule(number, "tcp", Ports::port(443), "10.0.0.0/8", Action::Allow);
    assert!(!n.put(Direction::Inbound, allow(100), &q).unwrap(), "created");
    assert!(!n.put(Direction::Inbound, allow(200), &q).unwrap());
    let deny = nacl_rule(100, "-1", Ports::All, "0.0.0.0/0", Action::Deny);
    assert!(n.put(Direction::Inbound, deny, &q).unwrap(), "replaced");
    assert_eq!(n.rules(Direction::Inbound), &[deny, allow(200)]);
    let before = n.clone();
    assert!(n.put(Direction::Inbound, allow(300), &q).is_err(), "a third rule is over the quota");
    assert_eq!(n, before);
}
