//! VMs exchanging traffic over the emulated and SR-IOV paths, on one host and across the fabric.

use std::time::Duration;

use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::Subnet;
use hypervisor_sim::guest::IoPath;
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::workload::{PairConfig, run_pair};

fn instance(name: &str) -> InstanceType {
    InstanceType::catalog().into_iter().find(|t| t.name == name).unwrap()
}

fn cloud(hosts: Vec<HostSpec>) -> Cloud {
    Cloud::new(CloudSpec {
        hosts,
        subnets: vec![
            Subnet {
                name: "a".into(),
                az: "az-a".into(),
                network: [10, 0, 0, 0].into(),
                prefix: 24,
            },
            Subnet {
                name: "b".into(),
                az: "az-b".into(),
                network: [10, 0, 1, 0].into(),
                prefix: 24,
            },
        ],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    })
    .unwrap()
}

fn vm(cloud: &mut Cloud, name: &str, host: usize, path: IoPath) -> hypervisor_sim::eni::VmId {
    let mut spec = VmSpec::new(name, host, instance("c5n.9xlarge"), "a");
    spec.path = path;
    spec.ring_depth = 512;
    cloud.launch(spec).unwrap()
}

fn short(frame_len: usize) -> PairConfig {
    PairConfig { frame_len, duration: Duration::from_millis(200), ..Default::default() }
}

#[test]
fn both_paths_carry_traffic_between_vms_on_one_host() {
    let mut c = cloud(vec![HostSpec::new("h0", "az-a", 0, 128, 8)]);
    for path in [IoPath::SrIov, IoPath::Emulated] {
        let a = vm(&mut c, "a", 0, path);
        let b = vm(&mut c, "b", 0, path);
        let r = run_pair(&mut c, a, b, short(256)).unwrap();
        assert!(r.received > 1000, "{path}: {} frames", r.received);
        assert!(r.received <= r.sent);
        assert_eq!(r.reordered, 0, "{path}: one flow stays in order");
        assert!(r.latency_ns.len() == r.received);
        let counters = c.eni_counters(c.enis().enis_of(a)[0].id).unwrap();
        assert!(counters.queues.tx_packets >= r.received, "{path}: {counters:?}");
        c.terminate(a).unwrap();
        c.terminate(b).unwrap();
    }
    assert!(c.emulated_traps(0).unwrap() > 0, "the emulated path trapped");
    assert_eq!(c.free_vfs(0).unwrap(), 7, "every VF but the hypervisor's backend is back");
}

#[test]
fn the_fabric_carries_traffic_between_hosts_with_the_pair_latency() {
    // Two racks of one AZ: 60 µs round trip, 30 µs one way.
    let mut c =
        cloud(vec![HostSpec::new("h0", "az-a", 0, 128, 4), HostSpec::new("h1", "az-a", 1, 128, 4)]);
    for path in [IoPath::SrIov, IoPath::Emulated] {
        let a = vm(&mut c, "a", 0, path);
        let b = vm(&mut c, "b", 1, path);
        let config = PairConfig { offered_pps: Some(20_000), ..short(1500) };
        let r = run_pair(&mut c, a, b, config).unwrap();
        assert!(r.received > 1000, "{path}: {} frames", r.received);
        assert!(r.latency_us(50.0) >= 30.0, "{path}: p50 {} µs", r.latency_us(50.0));
        c.terminate(a).unwrap();
        c.terminate(b).unwrap();
    }
}
