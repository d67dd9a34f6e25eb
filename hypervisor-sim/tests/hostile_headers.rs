//! A guest that writes anything at all into its rings' headers — forged end claims (pid 1, a
//! live process forever), bad magic, absurd indices — never stops its VM from being stopped,
//! started again with working rings, or terminated, and never touches a neighbour.

use std::net::Ipv4Addr;
use std::time::Duration;

use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::{Subnet, VmId};
use hypervisor_sim::guest::GuestCtx;
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::workload::{PairConfig, run_pair};
use proptest::prelude::*;

/// Bytes of a ring's control block (header, producer and consumer lines).
const CONTROL_BYTES: usize = 384;

fn cloud() -> Cloud {
    Cloud::new(CloudSpec {
        hosts: vec![HostSpec::new("h0", "az-a", 0, 64, 8)],
        subnets: vec![Subnet {
            name: "a".into(),
            az: "az-a".into(),
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 24,
        }],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    })
    .unwrap()
}

fn launch(c: &mut Cloud, name: &str) -> VmId {
    let ty = InstanceType::catalog().into_iter().find(|t| t.name == "c5n.large").unwrap();
    let mut spec = VmSpec::new(name, 0, ty, "a");
    spec.ring_depth = 256;
    c.launch(spec).unwrap()
}

/// Where the header's end claims are: the producer's and the consumer's pid, after the magic
/// (8 bytes) and five 4-byte words (version, kind, depth, entry size, generation).
const CLAIMS_AT: usize = 28;

/// The guest's workload: scribble `bytes` over the control block of every ring it has (all of
/// it, or all but the magic, so that the header still looks like a ring's), then forge both end
/// claims with pid 1 (init, alive as long as the machine is).
fn scribble(ctx: &mut GuestCtx, bytes: &[u8], keep_magic: bool) {
    let from = if keep_magic { 8 } else { 0 };
    for nic in &ctx.nics {
        for q in nic.queues() {
            let (l, w) = (q.layout(), q.window());
            for off in [l.tx_sq, l.tx_cq, l.rx_sq, l.rx_cq] {
                let _ = w.write(w.iova(off + from).0, &bytes[from..]);
                let _ = w.write(w.iova(off + CLAIMS_AT).0, &[1, 0, 0, 0, 1, 0, 0, 0]);
            }
        }
    }
}

fn short() -> PairConfig {
    PairConfig { frame_len: 256, duration: Duration::from_millis(40), ..Default::default() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn whatever_a_guest_writes_into_its_ring_headers_its_vm_restarts_and_neighbours_carry_on(
        bytes in proptest::collection::vec(any::<u8>(), CONTROL_BYTES),
        keep_magic in any::<bool>(),
    ) {
        let mut c = cloud();
        let hostile = launch(&mut c, "hostile");
        let (b, d) = (launch(&mut c, "b"), launch(&mut c, "d"));
        let scribbled = bytes.clone();
        c.run(hostile, move |ctx| scribble(ctx, &scribbled, keep_magic)).unwrap();
        while c.is_running(hostile) {
            c.reap();
            std::thread::sleep(Duration::from_millis(1));
        }
        // Its neighbours are untouched.
        let r = run_pair(&mut c, b, d, short()).unwrap();
        prop_assert!(r.received > 0 && r.reordered == 0);
        // Stop and start lay its rings out again, whatever it wrote, and they carry traffic.
        c.stop(hostile).unwrap();
        c.start(hostile).unwrap();
        let r = run_pair(&mut c, hostile, b, short()).unwrap();
        prop_assert!(r.received > 0, "the restarted VM's rings work: {r:?}");
        // And the hostile VM can always be terminated, its VF back in the pool.
        c.terminate(hostile).unwrap();
        prop_assert_eq!(c.free_vfs(0).unwrap(), 8 - 2);
    }
}
