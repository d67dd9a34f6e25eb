//! The planner: known answers computed by hand, and the max-min fairness property.

use placement::*;
use proptest::prelude::*;

fn ty(name: &str, vcpus: u32, gbps: f64) -> InstanceType {
    InstanceType { name: name.into(), vcpus, memory_gib: 4, baseline_gbps: gbps, burst_gbps: gbps }
}

fn types() -> Vec<InstanceType> {
    vec![ty("s10", 4, 10.0), ty("r2", 2, 2.0), ty("big", 8, 100.0), ty("x36", 36, 50.0)]
}

/// One AZ, `racks` racks of `hosts` hosts, rack uplinks as given.
fn fleet(uplinks: &[f64], hosts: usize) -> Fleet {
    let spec = TopologySpec {
        regions: vec![RegionSpec {
            name: "r".into(),
            azs: vec![AzSpec {
                name: "ra".into(),
                uplink_gbps: 1000.0,
                racks: uplinks
                    .iter()
                    .map(|&u| RackSpec {
                        uplink_gbps: u,
                        hosts: vec![
                            HostCapacity { vcpus: 64, memory_gib: 512, slots: vec![] };
                            hosts
                        ],
                    })
                    .collect(),
            }],
        }],
        cluster_segment_racks: 8,
    };
    Fleet::new(Topology::from_spec(&spec).unwrap(), types())
}

fn put(f: &mut Fleet, ty: &str, az: Option<&str>) -> InstanceId {
    f.launch(&LaunchRequest {
        instance_type: ty.into(),
        count: 1,
        az: az.map(Into::into),
        ..Default::default()
    })
    .unwrap()[0]
}

fn flow(src: InstanceId, dst: InstanceId, demand: f64) -> FlowDemand {
    FlowDemand { src, dst, demand_gbps: demand, srd: false }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn three_flows_share_a_sender_and_one_is_limited_at_its_receiver() {
    let mut f = fleet(&[1000.0], 4);
    let s = put(&mut f, "s10", None);
    let r1 = put(&mut f, "big", None);
    let r2 = put(&mut f, "big", None);
    let r3 = put(&mut f, "r2", None);
    let flows =
        [flow(s, r1, f64::INFINITY), flow(s, r2, f64::INFINITY), flow(s, r3, f64::INFINITY)];
    let p = plan(&f, &NetworkModel::default(), &flows).unwrap();
    // r3 can only take 2 Gbps; the sender's 10 Gbps leaves 8 for the other two: 4 each.
    assert!(close(p.flows[2].rate_gbps, 2.0));
    assert_eq!(p.flows[2].bottleneck, Bottleneck::Link(Link::ReceiverIn(r3)));
    for i in 0..2 {
        assert!(close(p.flows[i].rate_gbps, 4.0), "{:?}", p.flows[i]);
        assert_eq!(p.flows[i].bottleneck, Bottleneck::Link(Link::SenderOut(s)));
    }
    assert!(close(p.total_gbps, 10.0));
    assert!(close(p.link(Link::SenderOut(s)).unwrap().utilisation(), 1.0));
    assert!(close(p.link(Link::ReceiverIn(r1)).unwrap().utilisation(), 0.04));
}

#[test]
fn single_flows_meet_their_caps_and_demands() {
    let mut f = fleet(&[1000.0], 4);
    f.create_group("c", None, PlacementStrategy::Cluster).unwrap();
    let c: Vec<InstanceId> = f
        .launch(&LaunchRequest {
            instance_type: "big".into(),
            count: 2,
            group: Some("c".into()),
            ..Default::default()
        })
        .unwrap();
    let a = put(&mut f, "big", None);
    let b = put(&mut f, "big", None);
    let flows = [
        flow(a, b, f64::INFINITY),
        flow(c[0], c[1], f64::INFINITY),
        flow(b, a, 1.5),
        flow(c[1], c[0], 20.0),
        FlowDemand { src: a, dst: c[0], demand_gbps: f64::INFINITY, srd: true },
    ];
    let p = plan(&f, &NetworkModel::default(), &flows).unwrap();
    let got: Vec<(f64, Bottleneck)> = p.flows.iter().map(|f| (f.rate_gbps, f.bottleneck)).collect();
    assert_eq!(
        got,
        vec![
            (5.0, Bottleneck::FlowCap),
            (10.0, Bottleneck::FlowCap),
            (1.5, Bottleneck::Demand),
            (10.0, Bottleneck::FlowCap),
            (25.0, Bottleneck::FlowCap),
        ]
    );
    assert!(close(p.unmet_demand_gbps, 10.0), "only the 20 Gbps demand is short, by 10");
}

#[test]
fn a_rack_uplink_is_shared_fairly() {
    let mut f = fleet(&[10.0, 100.0], 1);
    // A cluster group packs the four senders onto one host of rack 0 (the first of two equally
    // free racks); the receiver then lands on the emptier rack 1.
    f.create_group("c", None, PlacementStrategy::Cluster).unwrap();
    let src = f
        .launch(&LaunchRequest {
            instance_type: "s10".into(),
            count: 4,
            group: Some("c".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(src.iter().all(|&s| f.topology().rack_of(f.instance(s).unwrap().host) == RackId(0)));
    let dst = put(&mut f, "big", None);
    assert_eq!(f.topology().rack_of(f.instance(dst).unwrap().host), RackId(1));
    let flows: Vec<FlowDemand> = src.iter().map(|&s| flow(s, dst, f64::INFINITY)).collect();
    let p = plan(&f, &NetworkModel::default(), &flows).unwrap();
    for fp in &p.flows {
        assert!(close(fp.rate_gbps, 2.5), "{fp:?}");
        assert_eq!(fp.bottleneck, Bottleneck::Link(Link::RackUplinkOut(RackId(0))));
        assert_eq!(fp.class, NetworkClass::SameAz);
    }
}

#[test]
fn traffic_leaving_the_region_is_capped_per_instance() {
    let spec = TopologySpec {
        regions: ["us", "eu"]
            .iter()
            .map(|r| RegionSpec {
                name: r.to_string(),
                azs: vec![AzSpec {
                    name: format!("{r}-a"),
                    uplink_gbps: 10_000.0,
                    racks: vec![RackSpec {
                        uplink_gbps: 10_000.0,
                        hosts: vec![HostCapacity { vcpus: 128, memory_gib: 512, slots: vec![] }; 8],
                    }],
                }],
            })
            .collect(),
        cluster_segment_racks: 8,
    };
    let mut f = Fleet::new(Topology::from_spec(&spec).unwrap(), types());
    let large = put(&mut f, "x36", Some("us-a"));
    let small = put(&mut f, "s10", Some("us-a"));
    let far: Vec<InstanceId> = (0..6).map(|_| put(&mut f, "big", Some("eu-a"))).collect();
    let mut flows: Vec<FlowDemand> = far.iter().map(|&d| flow(large, d, f64::INFINITY)).collect();
    flows.extend(far.iter().take(3).map(|&d| flow(small, d, f64::INFINITY)));
    let p = plan(&f, &NetworkModel::default(), &flows).unwrap();
    // Large (36 vCPUs, 50 Gbps): 25 Gbps out of the region over 6 flows.
    for fp in &p.flows[..6] {
        assert!(close(fp.rate_gbps, 25.0 / 6.0), "{fp:?}");
        assert_eq!(fp.bottleneck, Bottleneck::Link(Link::RegionEgress(large)));
        assert_eq!(fp.class, NetworkClass::OtherRegion);
    }
    // Small: 5 Gbps over 3 flows.
    for fp in &p.flows[6..] {
        assert!(close(fp.rate_gbps, 5.0 / 3.0), "{fp:?}");
    }
}

#[test]
fn bad_flows_are_refused_with_their_index() {
    let mut f = fleet(&[100.0], 2);
    let a = put(&mut f, "big", None);
    let b = put(&mut f, "big", None);
    let m = NetworkModel::default();
    let err = plan(&f, &m, &[flow(a, b, 1.0), flow(a, a, 1.0)]).unwrap_err();
    assert_eq!(err.to_string(), "flow 1: sender and receiver are the same instance");
    assert!(plan(&f, &m, &[flow(a, b, -1.0)]).is_err());
    assert!(plan(&f, &m, &[flow(a, InstanceId(99), 1.0)]).is_err());
    f.terminate(b).unwrap();
    assert!(plan(&f, &m, &[flow(a, b, 1.0)]).unwrap_err().to_string().contains("not running"));
}

#[test]
fn a_rack_failure_takes_down_one_partition_and_its_flows() {
    let mut f =
        Fleet::new(GeneratedTopology::simple(1, 8, 2).build().unwrap(), InstanceType::catalog());
    f.create_group("db", None, PlacementStrategy::Partition { partitions: 4 }).unwrap();
    let ids = f
        .launch(&LaunchRequest {
            instance_type: "c5.4xlarge".into(),
            count: 8,
            group: Some("db".into()),
            ..Default::default()
        })
        .unwrap();
    let flows: Vec<FlowDemand> =
        (0..8).map(|i| flow(ids[i], ids[(i + 1) % 8], f64::INFINITY)).collect();
    let m = NetworkModel::default();
    let before = plan(&f, &m, &flows).unwrap();
    let rack = f.topology().rack_of(f.instance(ids[0]).unwrap().host);
    let b = blast_radius(&f, &m, &flows, Some(&before), FailureDomain::Rack(rack)).unwrap();
    assert_eq!(b.partitions.len(), 1, "{:?}", b.partitions);
    assert_eq!(b.partitions[0].lost, b.partitions[0].total);
    assert_eq!(b.groups[0].lost as usize, b.failed.len());
    assert!(close(b.groups[0].fraction(), b.failed.len() as f64 / 8.0));
    assert!(!b.flows_lost.is_empty());
    assert!(b.throughput_after_gbps < b.throughput_before_gbps);
    assert_eq!(b.after.as_ref().map(|p| p.flows.len()), Some(8 - b.flows_lost.len()));
    let az = blast_radius(&f, &m, &flows, None, FailureDomain::Az(AzId(0))).unwrap();
    assert_eq!(az.failed.len(), 8);
    assert_eq!(az.throughput_after_gbps, 0.0);
    assert_eq!(
        FailureDomain::occupied(&f).iter().filter(|d| matches!(d, FailureDomain::Az(_))).count(),
        1
    );
    // Every domain at once, on one thread or several: the same radii, one by one, in order.
    let domains = FailureDomain::occupied(&f);
    let one_by_one: Vec<(Vec<InstanceId>, f64)> = domains
        .iter()
        .map(|&d| {
            let r = blast_radius(&f, &m, &flows, Some(&before), d).unwrap();
            (r.failed.clone(), r.throughput_after_gbps)
        })
        .collect();
    for threads in [1, 3, 64] {
        let summary = |r: &BlastRadius| (r.failed.clone(), r.throughput_after_gbps);
        let all = blast_radii(&f, &m, &flows, &before, &domains, threads, summary).unwrap();
        assert_eq!(all, one_by_one, "{threads} threads");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A feasible allocation is max-min fair exactly when every flow is at its bound or crosses a
    /// saturated link on which no flow gets more than it does.
    #[test]
    fn rates_are_feasible_and_max_min_fair(
        uplinks in proptest::collection::vec(1.0f64..40.0, 1..4),
        placements in proptest::collection::vec(0usize..4, 2..12),
        pairs in proptest::collection::vec((0usize..100, 0usize..100, 0.0f64..30.0, any::<bool>()), 1..40),
    ) {
        let mut f = fleet(&uplinks, 3);
        let names = ["s10", "r2", "big", "x36"];
        let ids: Vec<InstanceId> = placements
            .iter()
            .filter_map(|&t| {
                f.launch(&LaunchRequest { instance_type: names[t].into(), count: 1, ..Default::default() })
                    .ok()
                    .map(|ids| ids[0])
            })
            .collect();
        prop_assume!(ids.len() >= 2);
        let flows: Vec<FlowDemand> = pairs
            .iter()
            .filter_map(|&(a, b, d, elastic)| {
                let (a, b) = (ids[a % ids.len()], ids[b % ids.len()]);
                (a != b).then(|| flow(a, b, if elastic { f64::INFINITY } else { d }))
            })
            .collect();
        let p = plan(&f, &NetworkModel::default(), &flows).unwrap();
        let eps = 1e-6;
        for l in &p.links {
            prop_assert!(l.used_gbps <= l.capacity_gbps + eps, "{l:?} over capacity");
        }
        // Which links each flow crosses, from the plan's own link list.
        let crosses = |fd: &FlowDemand, link: Link| -> bool {
            let t = f.topology();
            let (hs, hd) = (f.instance(fd.src).unwrap().host, f.instance(fd.dst).unwrap().host);
            match link {
                Link::SenderOut(i) => i == fd.src,
                Link::ReceiverIn(i) => i == fd.dst,
                Link::RackUplinkOut(r) => t.rack_of(hs) == r && t.rack_of(hd) != r,
                Link::RackUplinkIn(r) => t.rack_of(hd) == r && t.rack_of(hs) != r,
                _ => false,
            }
        };
        for (i, (fd, fp)) in flows.iter().zip(&p.flows).enumerate() {
            let bound = fp.cap_gbps.min(fd.demand_gbps);
            prop_assert!(fp.rate_gbps <= bound + eps, "flow {i} above its bound");
            if fp.rate_gbps >= bound - eps {
                continue;
            }
            let has_bottleneck = p.links.iter().any(|l| {
                crosses(fd, l.link)
                    && l.used_gbps >= l.capacity_gbps - eps
                    && flows.iter().zip(&p.flows).all(|(g, gp)| !crosses(g, l.link) || gp.rate_gbps <= fp.rate_gbps + eps)
            });
            prop_assert!(has_bottleneck, "flow {i} ({fp:?}) has no bottleneck");
            prop_assert!(matches!(fp.bottleneck, Bottleneck::Link(_)));
        }
    }
}

/// A failure that ends no flow leaves the plan as it was: the same flows over the same links
/// (taken without planning again), compared field by field with a plan made afresh.
#[test]
fn a_failure_that_ends_no_flow_leaves_the_plan_as_it_was() {
    let mut f = fleet(&[10.0, 10.0, 10.0], 1);
    let ids: Vec<InstanceId> = (0..3).map(|_| put(&mut f, "big", None)).collect();
    let rack = |id: InstanceId| f.topology().rack_of(f.instance(id).unwrap().host);
    assert!(rack(ids[0]) != rack(ids[2]) && rack(ids[1]) != rack(ids[2]), "one per rack");
    let flows = [flow(ids[0], ids[1], f64::INFINITY)];
    let m = NetworkModel::default();
    let before = plan(&f, &m, &flows).unwrap();
    let idle = FailureDomain::Rack(rack(ids[2]));
    let b = blast_radius(&f, &m, &flows, Some(&before), idle).unwrap();
    assert_eq!((b.failed.clone(), b.flows_lost.clone()), (vec![ids[2]], vec![]));
    assert_eq!(b.after, Some(plan(&f, &m, &flows).unwrap()));
    let busy = FailureDomain::Rack(rack(ids[0]));
    let b = blast_radius(&f, &m, &flows, Some(&before), busy).unwrap();
    assert_eq!((b.flows_lost.clone(), b.throughput_after_gbps), (vec![0], 0.0));
}
