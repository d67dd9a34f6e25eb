//! The discrete-event simulation over the real device: known answers computed here from the cost
//! table, the network model and the shaper's arithmetic, and the same bytes on every run.

use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::{EniId, Subnet, VmId};
use hypervisor_sim::guest::IoPath;
use hypervisor_sim::placement::{InstanceType, NetworkClass, NetworkModel};
use hypervisor_sim::sim::traffic::{
    Arrivals, COMPONENTS, EfaFlowSpec, FlowSpec, NoObserver, Pattern, SimOutcome, TrafficSpec,
    simulate,
};
use hypervisor_sim::sim::{CostModel, VirtualClock};
use hypervisor_sim::traffic::{Endpoint, FlowFrame};
use hypervisor_sim::vnic::device::Notification;

const MS: u64 = 1_000_000;

fn instance(name: &str) -> InstanceType {
    InstanceType::catalog().into_iter().find(|t| t.name == name).unwrap()
}

/// Host 0 and 1 on racks 0 and 1 of one AZ.
fn cloud() -> Cloud {
    let spec = CloudSpec {
        hosts: vec![HostSpec::new("h0", "az-a", 0, 128, 8), HostSpec::new("h1", "az-a", 1, 128, 8)],
        subnets: vec![Subnet {
            name: "a".into(),
            az: "az-a".into(),
            network: [10, 0, 0, 0].into(),
            prefix: 24,
        }],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    };
    Cloud::new_virtual(spec, VirtualClock::new()).unwrap()
}

fn launch(c: &mut Cloud, name: &str, host: usize, path: IoPath, irq: bool) -> (VmId, EniId) {
    let mut spec = VmSpec::new(name, host, instance("c5n.9xlarge"), "a");
    spec.path = path;
    spec.rx_notification = if irq { Notification::ENA_RX } else { Notification::BusyPoll };
    let vm = c.launch(spec).unwrap();
    (vm, c.enis().enis_of(vm)[0].id)
}

fn flow(c: &Cloud, from: (VmId, EniId), to: (VmId, EniId), len: usize, gbps: f64) -> FlowSpec {
    let end = |id: EniId, port| {
        let e = c.enis().eni(id).unwrap();
        Endpoint { mac: e.mac, ip: e.primary_ip, port }
    };
    FlowSpec {
        from: from.0,
        to: to.0,
        src_eni: from.1,
        dst_eni: to.1,
        frame: FlowFrame::new(end(from.1, 20_000), end(to.1, 9_000), len),
        interval_ns: (len as f64 * 8.0 / gbps) as u64,
        start_ns: 0,
        stop_ns: u64::MAX,
        arrivals: Arrivals::Periodic,
        pattern: Pattern::Stream,
        path: 0,
        tcp: None,
    }
}

/// `flows`, each sending until `end_ns`, with 5 ms to drain, seed 1.
fn traffic(flows: Vec<FlowSpec>, end_ns: u64, costs: CostModel) -> TrafficSpec {
    TrafficSpec {
        flows: flows.into_iter().map(|f| FlowSpec { stop_ns: end_ns, ..f }).collect(),
        failures: vec![],
        end_ns,
        drain_ns: 5 * MS,
        sample_ns: 100 * MS,
        paths: 1,
        seed: 1,
        costs,
        efa_flows: Vec::new(),
        efa_loss: 0.0,
        rule_changes: Vec::new(),
    }
}

fn run(c: &mut Cloud, flows: Vec<FlowSpec>, end_ns: u64, costs: CostModel) -> SimOutcome {
    simulate(c, &traffic(flows, end_ns, costs), &mut NoObserver).unwrap()
}

/// One frame every 100 µs: far apart enough that nothing queues.
const IDLE_GBPS: f64 = 1500.0 * 8.0 / 100_000.0;

/// The one-way latency of an idle SR-IOV frame on one PF, from the cost table.
fn same_pf_latency(c: &CostModel, len: usize, irq: bool) -> u64 {
    let moderation = if irq { 20_000 + c.interrupt_ns } else { 0 };
    c.guest_tx_ns(len)
        + c.doorbell_ns
        + c.device_tx_ns(1, len as u64)
        + c.dma_write_ns
        + moderation
        + c.guest_rx_ns(len)
}

#[test]
fn an_idle_frame_costs_the_sum_of_its_components_to_the_nanosecond() {
    let costs = CostModel::default();
    for irq in [false, true] {
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
        let b = launch(&mut c, "b", 0, IoPath::SrIov, irq);
        let f = flow(&c, a, b, 1500, IDLE_GBPS);
        let out = run(&mut c, vec![f], 20 * MS, costs);
        let expected = same_pf_latency(&costs, 1500, irq);
        let h = &out.latency[0];
        assert_eq!(out.flows[0].recv_frames, 200, "one frame per 100 µs for 20 ms");
        assert_eq!(out.flows[0].gaps, 0);
        // HdrHistogram at 3 digits: min and max are exact to its resolution; the mean is exact.
        let mean = out.flows[0].latency_sum_ns / out.flows[0].recv_frames;
        assert_eq!(mean, expected, "irq {irq}: every frame takes exactly the modelled sum");
        assert!(h.equivalent(h.min(), expected) && h.equivalent(h.max(), expected));
        let b = &out.breakdown[0];
        let named: f64 = b.mean_parts_ns[..COMPONENTS.len() - 1].iter().sum();
        assert!((named + b.mean_parts_ns[COMPONENTS.len() - 1] - b.mean_ns).abs() < 1e-6);
        let part =
            |name: &str| b.mean_parts_ns[COMPONENTS.iter().position(|c| *c == name).unwrap()];
        let moderation = if irq { 20_000.0 } else { 0.0 };
        assert!((part("moderation") - moderation).abs() < 1e-6, "ENA's 20 µs, from the device");
        assert!(part("queueing").abs() < 1e-6, "nothing unattributed: {:?}", b.mean_parts_ns);
        let fixed = part("guest_tx_stack") + part("doorbell_or_vm_exit") + part("device");
        let rx = part("interrupt") + part("guest_rx_stack");
        assert_eq!((fixed + rx + moderation) as u64, expected);
    }
}

#[test]
fn another_rack_adds_the_wire_of_its_class_exactly() {
    let costs = CostModel::default();
    let mut latency = Vec::new();
    for host in [0, 1] {
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
        let b = launch(&mut c, "b", host, IoPath::SrIov, false);
        let f = flow(&c, a, b, 1500, IDLE_GBPS);
        let out = run(&mut c, vec![f], 10 * MS, costs);
        assert_eq!(out.flows[0].recv_frames, 100);
        latency.push(out.flows[0].latency_sum_ns / 100);
    }
    let model = NetworkModel::default();
    // One way is half the class's round trip; 1500 bytes at 100 Gbps serialise in 120 ns.
    let one_way = (model.latency_us(NetworkClass::SameAz) * 500.0) as u64;
    let serialisation = (1500u64 * 8).div_ceil(100);
    assert_eq!(latency[0], same_pf_latency(&costs, 1500, false));
    assert_eq!(latency[1] - latency[0], one_way + serialisation);
}

#[test]
fn a_flow_offered_twice_its_cap_gets_five_gbps_in_every_window() {
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
    let b = launch(&mut c, "b", 1, IoPath::SrIov, false);
    let f = flow(&c, a, b, 1500, 10.0);
    let out = run(&mut c, vec![f], 500 * MS, CostModel::default());
    let samples = &out.flows[0].samples;
    // Windows 1..4 are whole windows of steady state (window 0 holds the shaper's first burst).
    for (w, bytes) in samples.iter().enumerate().take(5).skip(1) {
        let gbps = *bytes as f64 * 8.0 / 0.1 / 1e9;
        assert!((gbps - 5.0).abs() <= 0.025, "window {w}: {gbps} Gbps");
    }
    let counters = c.eni_counters(a.1).unwrap();
    assert!(counters.allowance.flow_cap_exceeded > 0, "the cap is what held it");
}

#[test]
fn the_emulated_path_costs_more_than_sr_iov_in_latency_and_cpu() {
    let costs = CostModel::default();
    let mut results = Vec::new();
    for path in [IoPath::SrIov, IoPath::Emulated] {
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, path, true);
        let b = launch(&mut c, "b", 1, path, true);
        let f = flow(&c, a, b, 1500, 1.0);
        let out = run(&mut c, vec![f], 50 * MS, costs);
        assert!(out.flows[0].recv_frames > 4000, "{path}: {:?}", out.flows[0]);
        assert_eq!(out.flows[0].gaps, 0, "{path}");
        let mean = out.flows[0].latency_sum_ns / out.flows[0].recv_frames;
        let hv: u64 = out.hypervisor_cpu_ns.iter().sum();
        results.push((mean, hv));
    }
    let (sriov, emulated) = (results[0], results[1]);
    assert!(emulated.0 > sriov.0 + costs.vm_exit_ns, "{results:?}");
    assert_eq!(sriov.1, 0, "no hypervisor work on the SR-IOV path");
    assert!(emulated.1 > 0);
}

#[test]
fn the_same_scenario_gives_the_same_outcome_twice() {
    let once = || {
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, true);
        let b = launch(&mut c, "b", 1, IoPath::Emulated, true);
        let d = launch(&mut c, "d", 0, IoPath::SrIov, false);
        let mut f1 = flow(&c, a, b, 1500, 3.0);
        f1.arrivals = Arrivals::Poisson;
        let f2 = FlowSpec { path: 0, ..flow(&c, d, a, 256, 2.0) };
        let out = run(&mut c, vec![f1, f2], 30 * MS, CostModel::default());
        let hist: Vec<(u64, u64)> = out.latency[0]
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        (out.flows.clone(), hist, out.events, out.vm_cpu.clone())
    };
    let first = once();
    assert!(first.0.iter().all(|f| f.recv_frames > 1000), "{:?}", first.0);
    assert_eq!(first, once());
}

#[test]
fn an_up_to_instance_runs_out_of_burst_credits_when_its_arithmetic_says() {
    let mut c = cloud();
    let ty = instance("m5.large");
    let (baseline, burst) = (ty.baseline_gbps, ty.burst_gbps);
    let mut spec = VmSpec::new("small", 0, ty, "a");
    spec.burst_duration = std::time::Duration::from_millis(200);
    let small = c.launch(spec).unwrap();
    let a = (small, c.enis().enis_of(small)[0].id);
    let b = launch(&mut c, "b", 1, IoPath::SrIov, false);
    let offered = 2.0;
    let f = flow(&c, a, b, 1500, offered);
    let out = run(&mut c, vec![f], 3_000 * MS, CostModel::default());
    // Credits hold (burst − baseline) × 0.2 s and drain at (offered − baseline) while the
    // offer is under the burst rate: 9.25 Gb·s⁻¹ × 0.2 s / 1.25 Gb·s⁻¹ = 1.48 s.
    let runs_out_s = (burst - baseline) * 0.2 / (offered - baseline);
    let gbps: Vec<f64> = out.flows[0].samples.iter().map(|&b| b as f64 * 8.0 / 0.1 / 1e9).collect();
    let first_low = gbps.iter().position(|&g| g < (offered + baseline) / 2.0).unwrap();
    let expected = (runs_out_s / 0.1) as usize;
    assert!(
        first_low == expected || first_low == expected + 1,
        "credits ran out in window {first_low}, the arithmetic says {runs_out_s} s: {gbps:?}"
    );
    for (w, g) in gbps.iter().enumerate().take(expected).skip(1) {
        assert!((g - offered).abs() < offered * 0.01, "window {w} bursting: {g}");
    }
    for (w, g) in gbps.iter().enumerate().take(30).skip(expected + 2) {
        assert!((g - baseline).abs() < baseline * 0.01, "window {w} at baseline: {g}");
    }
    assert!(c.eni_counters(a.1).unwrap().allowance.bw_out_allowance_exceeded > 0);
}

fn efa_flow(from: VmId, to: VmId, bytes: usize, interval_ns: u64, pattern: Pattern) -> EfaFlowSpec {
    EfaFlowSpec { from, to, bytes, interval_ns, start_ns: 0, stop_ns: u64::MAX, pattern, path: 0 }
}

fn run_efa(c: &mut Cloud, flows: Vec<EfaFlowSpec>, end_ns: u64, loss: f64) -> SimOutcome {
    let spec = TrafficSpec {
        flows: vec![],
        failures: vec![],
        end_ns,
        drain_ns: 20 * MS,
        sample_ns: 100 * MS,
        paths: 1,
        seed: 5,
        costs: CostModel::default(),
        efa_flows: flows.into_iter().map(|f| EfaFlowSpec { stop_ns: end_ns, ..f }).collect(),
        efa_loss: loss,
        rule_changes: Vec::new(),
    };
    simulate(c, &spec, &mut NoObserver).unwrap()
}

/// The one-way latency of an idle EFA message on one PF, from the cost table: posted from user
/// space, one doorbell, the device's fetch, the completion written, polled from user space.
fn efa_same_pf_latency(c: &CostModel, bytes: usize) -> u64 {
    c.efa_post_ns + c.doorbell_ns + c.device_tx_ns(1, bytes as u64) + c.dma_write_ns + c.efa_poll_ns
}

#[test]
fn efa_bypass_beats_the_kernel_path_by_the_stack_and_the_interrupt() {
    let costs = CostModel::default();
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::Efa, true);
    let b = launch(&mut c, "b", 0, IoPath::Efa, true);
    let out =
        run_efa(&mut c, vec![efa_flow(a.0, b.0, 1500, 100_000, Pattern::PingPong)], 20 * MS, 0.0);
    let f = &out.efa_flows[0];
    assert_eq!((f.flow.recv_frames, f.replies), (200, 200), "{f:?}");
    let efa_one_way = efa_same_pf_latency(&costs, 1500);
    assert_eq!(f.flow.latency_sum_ns / 200, efa_one_way, "every request takes the modelled sum");
    // The reply takes the same way back, after the responder's own post: twice the one way.
    let rtt = &out.rtt[0];
    assert_eq!(rtt.len(), 200);
    assert!(
        rtt.equivalent(rtt.min(), 2 * efa_one_way) && rtt.equivalent(rtt.max(), 2 * efa_one_way)
    );
    // The same message over ENA (the receiver on ENA's moderated interrupt): the difference is
    // exactly the kernel's send and receive paths against user-space verbs, plus the interrupt.
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
    let b = launch(&mut c, "b", 0, IoPath::SrIov, true);
    let f = flow(&c, a, b, 1500, IDLE_GBPS);
    let ena = run(&mut c, vec![f], 20 * MS, costs);
    let ena_one_way = ena.flows[0].latency_sum_ns / ena.flows[0].recv_frames;
    let stack =
        costs.guest_tx_ns(1500) - costs.efa_post_ns + costs.guest_rx_ns(1500) - costs.efa_poll_ns;
    let interrupt = 20_000 + costs.interrupt_ns;
    assert_eq!(ena_one_way - efa_one_way, stack + interrupt);
}

#[test]
fn at_ten_percent_loss_every_efa_message_arrives_exactly_once() {
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::Efa, false);
    let b = launch(&mut c, "b", 1, IoPath::Efa, false);
    // 8 KiB messages at 10 Gbps across racks for 50 ms: about 7,600 of them.
    let out = run_efa(&mut c, vec![efa_flow(a.0, b.0, 8192, 6_554, Pattern::Stream)], 50 * MS, 0.1);
    let f = &out.efa_flows[0];
    assert!(f.flow.sent_frames > 7_000, "{f:?}");
    assert_eq!(f.flow.sender_drops, 0);
    assert_eq!(f.flow.recv_frames, f.flow.sent_frames, "every message arrives");
    assert_eq!(f.duplicates, 0, "and only once");
    assert_eq!(f.failed, 0);
    assert!(f.reordered > 0, "retransmitted messages arrive after later ones: {f:?}");
    // The lost ones waited for SRD's 200 µs retransmission timer at least once.
    let h = &out.latency[0];
    assert!(h.max() > 200_000, "max {} ns", h.max());
    // Lossless, the same flow is never reordered and never waits for a timer.
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::Efa, false);
    let b = launch(&mut c, "b", 1, IoPath::Efa, false);
    let clean =
        run_efa(&mut c, vec![efa_flow(a.0, b.0, 8192, 6_554, Pattern::Stream)], 50 * MS, 0.0);
    assert_eq!(clean.efa_flows[0].reordered, 0);
    assert!(clean.latency[0].max() < 200_000);
}

#[test]
fn a_kernel_path_ping_pong_takes_two_one_ways_and_efa_saves_the_stack_both_ways() {
    let costs = CostModel::default();
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
    let b = launch(&mut c, "b", 0, IoPath::SrIov, false);
    let f = FlowSpec { pattern: Pattern::PingPong, ..flow(&c, a, b, 1500, IDLE_GBPS) };
    let out = run(&mut c, vec![f], 20 * MS, costs);
    let rtt = &out.rtt[0];
    assert_eq!(rtt.len(), 200, "every request answered");
    let ena_rtt = 2 * same_pf_latency(&costs, 1500, false);
    assert!(rtt.equivalent(rtt.min(), ena_rtt) && rtt.equivalent(rtt.max(), ena_rtt));
    assert_eq!(out.flows[0].recv_frames, 200, "replies are not counted as the flow's frames");
    let efa_rtt = 2 * efa_same_pf_latency(&costs, 1500);
    let stack =
        costs.guest_tx_ns(1500) - costs.efa_post_ns + costs.guest_rx_ns(1500) - costs.efa_poll_ns;
    assert_eq!(ena_rtt - efa_rtt, 2 * stack, "the bypass saves the kernel both ways");
}

#[test]
fn a_receivers_vcpu_is_a_resource_one_queue_takes_what_its_receive_path_costs() {
    let costs = CostModel::default();
    let mut c = cloud();
    let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
    let b = launch(&mut c, "b", 0, IoPath::SrIov, false);
    // 2 Mpps of 64-byte frames over 8 flows into one receive queue (so one vCPU).
    let flows: Vec<FlowSpec> = (0..8)
        .map(|i| {
            let mut f = flow(&c, a, b, 64, 64.0 * 8.0 * 250_000.0 / 1e9);
            let e = c.enis().eni(a.1).unwrap();
            let src = Endpoint { mac: e.mac, ip: e.primary_ip, port: 21_000 + i };
            let d = c.enis().eni(b.1).unwrap();
            let dst = Endpoint { mac: d.mac, ip: d.primary_ip, port: 9_000 };
            f.frame = FlowFrame::new(src, dst, 64);
            f
        })
        .collect();
    let out = run(&mut c, flows, 300 * MS, costs);
    // One vCPU running the receive path back to back: 1 s / guest_rx_ns(64) frames a second.
    let per_window = (100 * MS) as f64 / costs.guest_rx_ns(64) as f64;
    for w in 1..3 {
        let frames: u64 = out.flows.iter().map(|f| f.samples[w] / 64).sum();
        assert!(
            (frames as f64 - per_window).abs() <= 64.0,
            "window {w}: {frames} frames, the receive path allows {per_window:.0}"
        );
    }
    let rx = c.eni_counters(b.1).unwrap();
    assert!(rx.queues.rx_drops > 300_000, "the ring overflowed: {:?}", rx.queues);
}

mod tcp {
    //! TCP connections over the real device: the handshake's time from the cost table, a closed
    //! port's RST, SYNs a security group drops timing out after the client's retries, and a
    //! revoked rule that leaves the tracked connection it allowed alone.

    use std::sync::Arc;

    use super::*;
    use hypervisor_sim::sim::traffic::{
        Connect, INITIAL_RTO_NS, RuleUpdate, SEGMENTS_PER_ACK, TcpSpec, give_up_after_ns,
    };
    use vnic::device::VfPolicy;
    use vnic::policy::conntrack::{EniFilter, Timeouts};
    use vnic::policy::nacl::Nacl;
    use vnic::policy::sg::{CompiledGroups, Peer, SecurityGroup, SgRule};
    use vnic::policy::{Direction, Ports, Protocol, Quotas};

    /// Header-only segments (SYN, SYN-ACK, RST, ACK, FIN) are padded to 60 bytes.
    const CONTROL: usize = 60;

    /// A TCP flow of 1500-byte segments from `ports.0` to `ports.1`, one every 100 µs.
    fn tcp_flow(
        c: &Cloud,
        from: (VmId, EniId),
        to: (VmId, EniId),
        ports: (u16, u16),
        tcp: TcpSpec,
    ) -> FlowSpec {
        let end = |id: EniId, port| {
            let e = c.enis().eni(id).unwrap();
            Endpoint { mac: e.mac, ip: e.primary_ip, port }
        };
        let frame = FlowFrame::tcp(end(from.1, ports.0), end(to.1, ports.1), 1500);
        FlowSpec { frame, tcp: Some(tcp), ..flow(c, from, to, 1500, IDLE_GBPS) }
    }

    fn spec(
        flows: Vec<FlowSpec>,
        end_ns: u64,
        rule_changes: Vec<(u64, Vec<RuleUpdate>)>,
    ) -> TrafficSpec {
        TrafficSpec { rule_changes, ..traffic(flows, end_ns, CostModel::default()) }
    }

    const LISTENING: TcpSpec = TcpSpec { listening: true, syn_retries: 6 };

    /// SYN out and SYN-ACK back, each the idle one-way trip of a 60-byte segment on one PF; then
    /// data every 100 µs from the handshake to the end, every frame delivered at the idle
    /// latency of its 1500 bytes, one ACK per two, and the FIN exchange.
    #[test]
    fn a_handshake_takes_two_idle_trips_of_a_60_byte_segment() {
        let costs = CostModel::default();
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
        let b = launch(&mut c, "b", 0, IoPath::SrIov, false);
        let f = tcp_flow(&c, a, b, (40_000, 5432), LISTENING);
        let interval = f.interval_ns;
        let out = simulate(&mut c, &spec(vec![f], 20 * MS, vec![]), &mut NoObserver).unwrap();
        let flow = &out.flows[0];
        let tcp = flow.tcp.unwrap();
        let handshake = 2 * same_pf_latency(&costs, CONTROL, false);
        assert_eq!(tcp.connect, Connect::Connected);
        assert_eq!((tcp.syns, tcp.answer_ns), (1, Some(handshake)));
        let expected = (20 * MS - handshake).div_ceil(interval);
        assert_eq!((flow.sent_frames, flow.recv_frames), (expected, expected));
        // Every segment takes the idle one-way latency of its 1500 bytes but the first: the
        // handshake's last ACK reaches the server just before it, and the server's vCPU is
        // still receiving the ACK when the segment lands.
        let one_way = same_pf_latency(&costs, 1500, false);
        let arrives = |len: usize| costs.guest_tx_ns(len) + costs.device_tx_ns(1, len as u64);
        let ack_done = arrives(CONTROL) + costs.guest_rx_ns(CONTROL);
        let first_waits = ack_done.saturating_sub(arrives(1500));
        assert!(first_waits > 0, "the cost table puts the ACK's receive work past the segment");
        assert_eq!(flow.latency_sum_ns, flow.recv_frames * one_way + first_waits);
        assert_eq!(flow.gaps, 0);
        assert_eq!(tcp.acks, expected / SEGMENTS_PER_ACK);
        assert!(tcp.closed, "FIN, FIN-ACK, ACK within the drain");
    }

    #[test]
    fn a_closed_port_refuses_at_once_and_sends_no_data() {
        let costs = CostModel::default();
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
        let b = launch(&mut c, "b", 1, IoPath::SrIov, false);
        let closed = TcpSpec { listening: false, syn_retries: 6 };
        let f = tcp_flow(&c, a, b, (40_000, 5432), closed);
        let out = simulate(&mut c, &spec(vec![f], 20 * MS, vec![]), &mut NoObserver).unwrap();
        let tcp = out.flows[0].tcp.unwrap();
        assert_eq!((tcp.connect, tcp.syns), (Connect::Refused, 1));
        // Across hosts: more than two same-PF trips (the wire both ways), far less than an RTO.
        let answer = tcp.answer_ns.unwrap();
        assert!(answer > 2 * same_pf_latency(&costs, CONTROL, false) && answer < MS, "{answer}");
        assert_eq!((out.flows[0].sent_frames, out.flows[0].recv_frames), (0, 0));
    }

    /// b's group allows tcp/5432 from a only. The connection to 6000 is dropped in b's device,
    /// SYN after SYN: with one retry the client gives up 1 + 2 = 3 s after its first. The 5432
    /// rule is revoked at 1 s: the connection it allowed is tracked and keeps every segment;
    /// a connection opened after the revocation is dropped like the one to 6000.
    #[test]
    fn dropped_syns_time_out_and_a_revoked_rule_spares_the_tracked_connection() {
        let mut c = cloud();
        let a = launch(&mut c, "a", 0, IoPath::SrIov, false);
        let b = launch(&mut c, "b", 1, IoPath::SrIov, false);
        let ip_a = c.enis().eni(a.1).unwrap().primary_ip;
        let q = Quotas::default();
        let rule = SgRule::new(
            Protocol::Number(6),
            Ports::port(5432),
            Peer::Cidr(format!("{ip_a}/32").parse().unwrap()),
        );
        let mut server = SecurityGroup::empty("sg-server", "vpc");
        server.authorize(Direction::Inbound, rule.clone(), &q).unwrap();
        let compile = |g: &SecurityGroup| {
            CompiledGroups::compile(&[g], &std::collections::BTreeMap::new(), &q).unwrap()
        };
        let nacl = Arc::new(Nacl::vpc_default("acl"));
        let policy = |g: &SecurityGroup| VfPolicy {
            filter: EniFilter::new(compile(g), 1000, Timeouts::default()),
            subnet: "10.0.0.0/24".parse().unwrap(),
            nacl: nacl.clone(),
            flow_log: None,
        };
        c.set_eni_policy(b.1, Some(policy(&server))).unwrap();
        c.set_eni_policy(a.1, Some(policy(&SecurityGroup::new("sg-client", "vpc")))).unwrap();
        let mut revoked = server.clone();
        assert!(revoked.revoke(Direction::Inbound, &rule));
        let change = RuleUpdate { eni: b.1, groups: compile(&revoked), nacl: nacl.clone() };
        let impatient = TcpSpec { listening: true, syn_retries: 1 };
        let tracked = tcp_flow(&c, a, b, (40_000, 5432), impatient);
        let blocked = tcp_flow(&c, a, b, (40_001, 6000), impatient);
        let late =
            FlowSpec { start_ns: 1500 * MS, ..tcp_flow(&c, a, b, (40_002, 5432), impatient) };
        let end = 4000 * MS;
        let spec = spec(vec![tracked, blocked, late], end, vec![(1000 * MS, vec![change])]);
        let out = simulate(&mut c, &spec, &mut NoObserver).unwrap();
        let (kept, dropped, after) = (&out.flows[0], &out.flows[1], &out.flows[2]);
        assert_eq!(kept.tcp.unwrap().connect, Connect::Connected);
        assert!(kept.sent_frames > 35_000, "4 s at one per 100 µs: {kept:?}");
        assert_eq!(kept.recv_frames, kept.sent_frames, "tracked: the revocation does not cut it");
        let d = dropped.tcp.unwrap();
        assert_eq!((d.connect, d.syns), (Connect::TimedOut, 2));
        assert_eq!(d.answer_ns, Some(give_up_after_ns(1)));
        assert_eq!(give_up_after_ns(1), 3 * INITIAL_RTO_NS);
        let l = after.tcp.unwrap();
        assert_eq!(
            (l.connect, l.syns),
            (Connect::Connecting, 2),
            "SYNs at 1.5 and 2.5 s, unanswered at 4 s"
        );
        let drops = c.eni_counters(b.1).unwrap().port.rx_security_group_drops;
        assert_eq!(drops, 4, "two SYNs to 6000, two after the revocation");
    }
}
