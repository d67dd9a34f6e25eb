//! Security-group and NACL cost per packet: `cargo bench --bench policy`.
//!
//! The ENI has 5 security groups of 60 inbound rules each (TCP port ranges from CIDRs and from
//! other groups of 64 members, all different) and its subnet a NACL of 20 inbound rules. Four
//! costs, each per packet:
//!
//! * `established`: a packet of one of 10,000 tracked connections, visited in a shuffled order
//!   (the connection table lookup; the rules are not consulted).
//! * `new_connection`: the first packet of a connection: the compiled rules (a port segment,
//!   then an address range), then the connection's insertion in the table.
//! * `denied`: a packet no rule allows (the same lookup, nothing inserted).
//! * `nacl_20`: the NACL deciding a packet only its last rule matches (the longest scan).
//!
//! The targets (DESIGN.md): ≤ 30 ns added per packet of a tracked connection, ≤ 300 ns for a
//! new one.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vnic::policy::conntrack::{EniFilter, SgVerdict, Timeouts, tcp_flags};
use vnic::policy::nacl::{Action, Nacl, NaclRule};
use vnic::policy::sg::{CompiledGroups, Peer, SecurityGroup, SgRule};
use vnic::policy::{Cidr, Direction, PROTO_TCP, Ports, Protocol, Quotas, Tuple};

const GROUPS: usize = 5;
const RULES: usize = 60;
const CONNECTIONS: usize = 10_000;
/// Packets per criterion iteration.
const PER_ITER: usize = 4096;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A rule as the packet generator takes it: its ports and an address it allows.
struct Opening {
    ports: (u16, u16),
    peers: Vec<Ipv4Addr>,
}

/// The ENI's rules: 300 inbound rules in 5 groups, and the members of the groups they name;
/// with what each rule opens, to make packets it allows.
fn groups() -> (CompiledGroups, Vec<Opening>) {
    let q = Quotas::default();
    let mut rng = Rng(7);
    let mut members: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut gs = Vec::new();
    let mut openings = Vec::new();
    for g in 0..GROUPS {
        let peer_group = format!("sg-peer-{g}");
        let peer_members: Vec<Ipv4Addr> =
            (0..64).map(|k| Ipv4Addr::new(10, 100 + g as u8, 0, k)).collect();
        members.insert(peer_group.clone(), peer_members.clone());
        let mut sg = SecurityGroup::new(format!("sg-{g}"), "vpc");
        for r in 0..RULES {
            let port = 1_000 + (rng.next() % 30_000) as u16;
            let width = (rng.next() % 50) as u16;
            let (peer, peers) = if r % 4 == 0 {
                (Peer::Group(peer_group.clone()), peer_members.clone())
            } else {
                let net = Ipv4Addr::new(10, (rng.next() % 90) as u8, (rng.next() % 256) as u8, 0);
                let hosts = (1..=254).map(|h| Ipv4Addr::from(u32::from(net) | h)).collect();
                (Peer::Cidr(Cidr::new(net, 24).expect("a /24")), hosts)
            };
            let rule =
                SgRule::new(Protocol::Number(PROTO_TCP), Ports::Range(port, port + width), peer);
            sg.authorize(Direction::Inbound, rule, &q).expect("within the quota");
            openings.push(Opening { ports: (port, port + width), peers });
        }
        members.insert(sg.id.clone(), vec![Ipv4Addr::new(10, 200, 0, g as u8)]);
        gs.push(sg);
    }
    let refs: Vec<&SecurityGroup> = gs.iter().collect();
    (CompiledGroups::compile(&refs, &members, &q).expect("compiles"), openings)
}

/// `n` different packets the rules allow (each opens a connection), from random rules.
fn allowed(openings: &[Opening], n: usize) -> Vec<Tuple> {
    let mut rng = Rng(11);
    let me = Ipv4Addr::new(10, 200, 0, 1);
    (0..n)
        .map(|i| {
            let o = &openings[(rng.next() % openings.len() as u64) as usize];
            let src = o.peers[(rng.next() % o.peers.len() as u64) as usize];
            let span = u64::from(o.ports.1 - o.ports.0) + 1;
            let port = o.ports.0 + (rng.next() % span) as u16;
            // Source ports walk 1024..=65535 and the addresses repeat: every tuple differs.
            Tuple::new(PROTO_TCP, src, 1024 + (i % 64_512) as u16, me, port)
        })
        .collect()
}

fn bench_policy(c: &mut Criterion) {
    let (compiled, openings) = groups();
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(PER_ITER as u64));

    let conns = allowed(&openings, CONNECTIONS);
    assert!(conns.iter().all(|t| compiled.allows(Direction::Inbound, t)));
    let mut filter = EniFilter::new(compiled.clone(), 2 * CONNECTIONS, Timeouts::default());
    for t in &conns {
        assert_eq!(filter.decide(0, Direction::Inbound, t, tcp_flags::SYN), SgVerdict::Opened);
    }
    let mut order: Vec<usize> = (0..CONNECTIONS).collect();
    let mut rng = Rng(3);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut at = 0;
    g.bench_function("established", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER {
                let t = &conns[order[at]];
                at = (at + 1) % CONNECTIONS;
                black_box(filter.decide(1, Direction::Inbound, black_box(t), tcp_flags::ACK));
            }
        })
    });

    // Fresh tables, filled PER_ITER connections at a time and timed only while deciding.
    let fresh = allowed(&openings, 64 * PER_ITER);
    g.bench_function("new_connection", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut next = 0;
            let mut filter = EniFilter::new(compiled.clone(), fresh.len(), Timeouts::default());
            for _ in 0..iters {
                if next + PER_ITER > fresh.len() {
                    filter = EniFilter::new(compiled.clone(), fresh.len(), Timeouts::default());
                    next = 0;
                }
                let batch = &fresh[next..next + PER_ITER];
                next += PER_ITER;
                let start = Instant::now();
                for t in batch {
                    black_box(filter.decide(0, Direction::Inbound, black_box(t), tcp_flags::SYN));
                }
                spent += start.elapsed();
            }
            spent
        })
    });

    let me = Ipv4Addr::new(10, 200, 0, 1);
    let denied: Vec<Tuple> = (0..PER_ITER)
        .map(|i| {
            Tuple::new(PROTO_TCP, Ipv4Addr::new(192, 168, (i >> 8) as u8, i as u8), 40_000, me, 443)
        })
        .collect();
    let mut filter = EniFilter::new(compiled.clone(), 16, Timeouts::default());
    g.bench_function("denied", |b| {
        b.iter(|| {
            for t in &denied {
                black_box(filter.decide(0, Direction::Inbound, black_box(t), tcp_flags::SYN));
            }
        })
    });

    let q = Quotas::default();
    let mut nacl = Nacl::new("acl");
    for n in 1..=20u16 {
        let cidr = if n == 20 {
            Cidr::ANY
        } else {
            Cidr::new(Ipv4Addr::new(172, 16, n as u8, 0), 24).expect("a /24")
        };
        let rule = NaclRule {
            number: n * 10,
            protocol: Protocol::Number(PROTO_TCP),
            ports: Ports::Range(1, 65_535),
            cidr,
            action: Action::Allow,
        };
        nacl.add(Direction::Inbound, rule, &q).expect("within the quota");
    }
    g.bench_function("nacl_20", |b| {
        b.iter(|| {
            for t in &conns[..PER_ITER] {
                black_box(nacl.decide(Direction::Inbound, black_box(t)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
