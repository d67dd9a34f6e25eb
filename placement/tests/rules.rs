//! EC2's placement rules, one test each.

use std::collections::{BTreeMap, BTreeSet};

use placement::*;

fn fleet(n_az: u32, racks: u32, hosts: u32) -> Fleet {
    Fleet::new(
        GeneratedTopology::simple(n_az, racks, hosts).build().unwrap(),
        InstanceType::catalog(),
    )
}

fn launch(
    f: &mut Fleet,
    ty: &str,
    count: u32,
    group: Option<&str>,
) -> Result<Vec<InstanceId>, PlacementError> {
    f.launch(&LaunchRequest {
        instance_type: ty.into(),
        count,
        group: group.map(Into::into),
        ..Default::default()
    })
}

fn total_free(f: &Fleet) -> u64 {
    (0..f.topology().hosts.len()).map(|h| u64::from(f.free_vcpus(HostId(h as u32)))).sum()
}

fn racks_of(f: &Fleet, ids: &[InstanceId]) -> Vec<RackId> {
    ids.iter().map(|&i| f.topology().rack_of(f.instance(i).unwrap().host)).collect()
}

#[test]
fn cluster_packs_into_one_az_and_few_hosts() {
    let mut f = fleet(3, 16, 8);
    f.create_group("hpc", None, PlacementStrategy::Cluster).unwrap();
    // 48 m5.large (2 vCPUs) fill exactly one 96-vCPU host.
    let small = launch(&mut f, "m5.large", 48, Some("hpc")).unwrap();
    let hosts: BTreeSet<HostId> = small.iter().map(|&i| f.instance(i).unwrap().host).collect();
    assert_eq!(hosts.len(), 1);
    // 8 c5n.18xlarge (72 vCPUs) take one host each, all on the group's rack.
    let big = launch(&mut f, "c5n.18xlarge", 8, Some("hpc")).unwrap();
    let all: Vec<InstanceId> = small.iter().chain(&big).copied().collect();
    let azs: BTreeSet<AzId> =
        all.iter().map(|&i| f.topology().az_of(f.instance(i).unwrap().host)).collect();
    assert_eq!(azs.len(), 1, "a cluster group lives in one AZ");
    let racks: BTreeSet<RackId> = racks_of(&f, &all).into_iter().collect();
    assert_eq!(racks.len(), 2, "one rack of 8 hosts is full after 7 more big ones: {racks:?}");
}

#[test]
fn cluster_that_cannot_fit_is_insufficient_instance_capacity_and_changes_nothing() {
    let mut f = fleet(1, 8, 4); // one segment of 8 racks × 4 hosts = 32 hosts
    f.create_group("hpc", None, PlacementStrategy::Cluster).unwrap();
    let before = total_free(&f);
    let err = launch(&mut f, "c5n.18xlarge", 33, Some("hpc")).unwrap_err();
    assert!(matches!(err, PlacementError::InsufficientInstanceCapacity { count: 33, .. }));
    let text = err.to_string();
    assert!(text.starts_with("InsufficientInstanceCapacity"), "{text}");
    assert!(text.contains("in one request"), "{text}");
    assert_eq!(total_free(&f), before, "a failed launch places nothing");
    launch(&mut f, "c5n.18xlarge", 32, Some("hpc")).unwrap();
}

#[test]
fn a_later_cluster_launch_can_fail_where_the_first_would_have_fitted() {
    // Two segments of one rack of two hosts each.
    let mut g = GeneratedTopology::simple(1, 2, 2);
    g.cluster_segment_racks = 1;
    let mut f = Fleet::new(g.build().unwrap(), InstanceType::catalog());
    f.create_group("late", None, PlacementStrategy::Cluster).unwrap();
    f.create_group("once", None, PlacementStrategy::Cluster).unwrap();
    launch(&mut f, "c5n.18xlarge", 1, Some("late")).unwrap();
    // "late" is tied to its segment, which has one host left...
    let err = launch(&mut f, "c5n.18xlarge", 2, Some("late")).unwrap_err();
    assert!(err.to_string().contains("network segment"), "{err}");
    // ...while a group launched in one request fits in the other segment.
    let ids = launch(&mut f, "c5n.18xlarge", 2, Some("once")).unwrap();
    assert_eq!(racks_of(&f, &ids), vec![RackId(1), RackId(1)]);
}

#[test]
fn a_cluster_group_stays_in_its_az() {
    let mut f = fleet(2, 2, 2);
    f.create_group("hpc", None, PlacementStrategy::Cluster).unwrap();
    let req = |az: &str| LaunchRequest {
        instance_type: "m5.large".into(),
        count: 1,
        group: Some("hpc".into()),
        az: Some(az.into()),
        ..Default::default()
    };
    f.launch(&req("us-east-1b")).unwrap();
    let err = f.launch(&req("us-east-1a")).unwrap_err();
    assert!(matches!(err, PlacementError::ClusterAz { .. }), "{err}");
    assert!(matches!(f.launch(&req("nowhere-1a")), Err(PlacementError::UnknownAz(_))));
}

#[test]
fn spread_puts_each_instance_on_its_own_rack_and_at_most_seven_per_az() {
    let mut f = fleet(3, 10, 2);
    f.create_group("web", None, PlacementStrategy::Spread { level: SpreadLevel::Rack }).unwrap();
    let in_a = LaunchRequest {
        instance_type: "m5.large".into(),
        count: 7,
        group: Some("web".into()),
        az: Some("us-east-1a".into()),
        ..Default::default()
    };
    let ids = f.launch(&in_a).unwrap();
    let racks: BTreeSet<RackId> = racks_of(&f, &ids).into_iter().collect();
    assert_eq!(racks.len(), 7);
    // The 8th in the same AZ fails, naming the rule.
    let err = f.launch(&LaunchRequest { count: 1, ..in_a.clone() }).unwrap_err();
    assert!(matches!(err, PlacementError::SpreadLimit { running: 7, requested: 1, .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("InsufficientInstanceCapacity:"), "{text}");
    assert!(text.contains("at most 7 running instances per Availability Zone"), "{text}");
    assert!(text.contains("it had 7 running in us-east-1a"), "{text}");
    // Eight at once into an empty group: it had none running, eight were asked for.
    let mut g = fleet(3, 10, 2);
    g.create_group("db", None, PlacementStrategy::Spread { level: SpreadLevel::Rack }).unwrap();
    let err = g.launch(&LaunchRequest { count: 8, group: Some("db".into()), ..in_a.clone() });
    assert!(
        matches!(err, Err(PlacementError::SpreadLimit { running: 0, requested: 8, .. })),
        "{err:?}"
    );
    // Without an AZ, the group spans the others: 14 more fit, the 22nd does not.
    let rest = launch(&mut f, "m5.large", 14, Some("web")).unwrap();
    let per_az: BTreeMap<AzId, usize> = rest.iter().fold(BTreeMap::new(), |mut m, &i| {
        *m.entry(f.topology().az_of(f.instance(i).unwrap().host)).or_default() += 1;
        m
    });
    assert_eq!(per_az.values().copied().collect::<Vec<_>>(), vec![7, 7]);
    assert!(matches!(
        launch(&mut f, "m5.large", 1, Some("web")),
        Err(PlacementError::SpreadLimit { .. })
    ));
    // Terminating one frees its place.
    f.terminate(ids[3]).unwrap();
    let again = f.launch(&LaunchRequest { count: 1, ..in_a }).unwrap();
    let all: Vec<InstanceId> = ids
        .iter()
        .chain(&rest)
        .chain(&again)
        .copied()
        .filter(|&i| f.instance(i).unwrap().running)
        .collect();
    let racks: BTreeSet<RackId> = racks_of(&f, &all).into_iter().collect();
    assert_eq!(racks.len(), 21, "still one rack per running instance");
}

#[test]
fn spread_runs_out_of_distinct_racks() {
    let mut f = fleet(1, 3, 4);
    f.create_group("web", None, PlacementStrategy::Spread { level: SpreadLevel::Rack }).unwrap();
    let err = launch(&mut f, "m5.large", 4, Some("web")).unwrap_err();
    assert!(matches!(err, PlacementError::InsufficientInstanceCapacity { .. }), "{err}");
    assert_eq!(f.instances().len(), 0);
}

#[test]
fn host_level_spread_uses_distinct_hosts_without_the_rack_limit() {
    let mut f = fleet(1, 2, 6);
    f.create_group("h", None, PlacementStrategy::Spread { level: SpreadLevel::Host }).unwrap();
    let ids = launch(&mut f, "m5.large", 12, Some("h")).unwrap();
    let hosts: BTreeSet<HostId> = ids.iter().map(|&i| f.instance(i).unwrap().host).collect();
    assert_eq!(hosts.len(), 12);
    assert!(launch(&mut f, "m5.large", 1, Some("h")).is_err());
}

#[test]
fn partition_counts_are_one_to_seven() {
    let mut f = fleet(1, 10, 2);
    for bad in [0, 8] {
        let err = f
            .create_group("p", None, PlacementStrategy::Partition { partitions: bad })
            .unwrap_err();
        assert!(err.to_string().contains("1 to 7 partitions per availability zone"), "{err}");
    }
    f.create_group("p", None, PlacementStrategy::Partition { partitions: 7 }).unwrap();
}

#[test]
fn partitions_spread_evenly_and_report_their_number() {
    let mut f = fleet(1, 14, 4);
    f.create_group("kafka", None, PlacementStrategy::Partition { partitions: 7 }).unwrap();
    let ids = launch(&mut f, "c5.4xlarge", 21, Some("kafka")).unwrap();
    let mut per: BTreeMap<u8, u32> = BTreeMap::new();
    for &i in &ids {
        *per.entry(f.instance(i).unwrap().partition.unwrap()).or_default() += 1;
    }
    assert_eq!(per, (1..=7).map(|p| (p, 3)).collect());
    let named = f
        .launch(&LaunchRequest {
            instance_type: "c5.4xlarge".into(),
            count: 2,
            group: Some("kafka".into()),
            partition: Some(4),
            ..Default::default()
        })
        .unwrap();
    assert!(named.iter().all(|&i| f.instance(i).unwrap().partition == Some(4)));
    let err = f
        .launch(&LaunchRequest {
            instance_type: "c5.4xlarge".into(),
            count: 1,
            group: Some("kafka".into()),
            partition: Some(8),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, PlacementError::PartitionOutOfRange { partition: 8, partitions: 7, .. }));
}

#[test]
fn partitions_never_share_a_rack_across_many_seeds() {
    for seed in 0..60u64 {
        let mut f = fleet(2, 12, 3);
        f.fragment(seed, 0.4);
        let mut rng = SplitMix64::new(seed);
        f.create_group(
            "p",
            None,
            PlacementStrategy::Partition { partitions: 1 + (seed % 7) as u8 },
        )
        .unwrap();
        f.create_group("q", None, PlacementStrategy::Partition { partitions: 7 }).unwrap();
        for _ in 0..12 {
            let group = if rng.next_u64().is_multiple_of(2) { "p" } else { "q" };
            let ty = ["m5.large", "c5.4xlarge", "c5n.9xlarge"][(rng.next_u64() % 3) as usize];
            let count = 1 + (rng.next_u64() % 6) as u32;
            let _ = launch(&mut f, ty, count, Some(group)); // capacity errors are fine here
        }
        assert!(f.instances().len() >= 12, "seed {seed}: too few placed to prove anything");
        for g in f.groups() {
            let gid = f.group_by_name(g.region, &g.name).unwrap();
            let mut owner: BTreeMap<RackId, u8> = BTreeMap::new();
            for inst in f.instances().iter().filter(|i| i.group == Some(gid)) {
                let rack = f.topology().rack_of(inst.host);
                let p = inst.partition.unwrap();
                assert_eq!(
                    *owner.entry(rack).or_insert(p),
                    p,
                    "seed {seed}: group {} shares rack {rack:?}",
                    g.name
                );
            }
        }
    }
}

#[test]
fn group_names_are_unique_per_region_and_must_exist() {
    let spec = TopologySpec {
        regions: ["r1", "r2"]
            .iter()
            .map(|r| RegionSpec {
                name: r.to_string(),
                azs: vec![AzSpec {
                    name: format!("{r}a"),
                    uplink_gbps: 100.0,
                    racks: vec![RackSpec {
                        uplink_gbps: 100.0,
                        hosts: vec![HostCapacity { vcpus: 8, memory_gib: 32, slots: vec![] }],
                    }],
                }],
            })
            .collect(),
        cluster_segment_racks: 8,
    };
    let mut f = Fleet::new(Topology::from_spec(&spec).unwrap(), InstanceType::catalog());
    f.create_group("g", Some("r1"), PlacementStrategy::Cluster).unwrap();
    assert!(matches!(
        f.create_group("g", Some("r1"), PlacementStrategy::Cluster),
        Err(PlacementError::DuplicateGroup { .. })
    ));
    f.create_group("g", Some("r2"), PlacementStrategy::Cluster).unwrap();
    assert!(matches!(
        launch(&mut f, "m5.large", 1, Some("nope")),
        Err(PlacementError::UnknownGroup(_))
    ));
    assert!(matches!(
        launch(&mut f, "m9.huge", 1, None),
        Err(PlacementError::UnknownInstanceType(_))
    ));
    assert!(matches!(launch(&mut f, "m5.large", 0, None), Err(PlacementError::ZeroCount)));
    let err = launch(&mut f, "m5.large", 1, Some("nope")).unwrap_err();
    assert!(err.to_string().starts_with("InvalidPlacementGroup.Unknown"), "{err}");
}

#[test]
fn placement_is_deterministic_for_a_seed() {
    let run = |seed: u64| {
        let mut f = fleet(2, 6, 4);
        f.fragment(seed, 0.3);
        f.create_group("s", None, PlacementStrategy::Spread { level: SpreadLevel::Rack }).unwrap();
        f.create_group("c", None, PlacementStrategy::Cluster).unwrap();
        let mut hosts = Vec::new();
        for (ty, n, g) in
            [("c5.4xlarge", 5, Some("s")), ("m5.large", 30, Some("c")), ("c5n.9xlarge", 6, None)]
        {
            hosts.extend(
                launch(&mut f, ty, n, g).unwrap().into_iter().map(|i| f.instance(i).unwrap().host),
            );
        }
        hosts
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "fragmentation changes where instances land");
}

#[test]
fn host_slots_limit_an_instance_type() {
    let mut g = GeneratedTopology::simple(1, 1, 1);
    g.host.slots = vec![TypeSlots { instance_type: "c5.4xlarge".into(), max: 2 }];
    let mut f = Fleet::new(g.build().unwrap(), InstanceType::catalog());
    launch(&mut f, "c5.4xlarge", 2, None).unwrap();
    assert!(launch(&mut f, "c5.4xlarge", 1, None).is_err());
    launch(&mut f, "m5.large", 10, None).unwrap();
}

#[test]
fn network_classes_and_flow_caps() {
    let mut f = fleet(2, 2, 2);
    f.create_group("c", None, PlacementStrategy::Cluster).unwrap();
    let c = launch(&mut f, "c5n.18xlarge", 3, Some("c")).unwrap();
    let other = f
        .launch(&LaunchRequest {
            instance_type: "c5n.18xlarge".into(),
            count: 1,
            az: Some("us-east-1b".into()),
            ..Default::default()
        })
        .unwrap()[0];
    let m = NetworkModel::default();
    assert_eq!(f.network_class(c[0], c[1]).unwrap(), NetworkClass::SameRack);
    assert_eq!(f.network_class(c[0], c[0]).unwrap(), NetworkClass::SameHost);
    assert_eq!(f.network_class(c[0], other).unwrap(), NetworkClass::OtherAz);
    assert_eq!(m.flow_cap_gbps(&f, c[0], c[1], false).unwrap(), 10.0);
    assert_eq!(m.flow_cap_gbps(&f, c[0], other, false).unwrap(), 5.0);
    assert_eq!(m.flow_cap_gbps(&f, c[0], c[1], true).unwrap(), 25.0);
    assert_eq!(m.flow_cap_gbps(&f, c[0], other, true).unwrap(), 5.0, "ENA Express stays in an AZ");
    assert!(m.latency_us(NetworkClass::SameRack) < m.latency_us(NetworkClass::OtherAz));
    assert_eq!(m.region_egress_gbps(&f, c[0]).unwrap(), 50.0, "72 vCPUs: half of 100 Gbps");
}
