//! `run` in virtual time: the scenario's flows handed to `hypervisor_sim::sim` over a cloud
//! built with `Cloud::new_virtual`, failures at their virtual times, captures with virtual
//! timestamps that cannot change what they watch.

use std::collections::BTreeMap;

use hypervisor_sim::cloud::Cloud;
use hypervisor_sim::eni::VmId;
use hypervisor_sim::sim::traffic::{
    COMPONENTS, EfaFlowSpec, FlowSpec, Observer, TrafficSpec, simulate,
};

use super::{
    Capture, CaptureReport, DRAIN, FailureReport, FlowMeasure, HostCpuReport, Measured, PATHS,
    PathBreakdown, RunError, Simulation, VmCpuReport, Wired, path_index, progress_bar,
};

/// Captures by VM, and the progress bar.
struct Watch {
    captures: BTreeMap<VmId, Capture>,
    bar: Option<indicatif::ProgressBar>,
}

impl Observer for Watch {
    fn captures(&self, vm: VmId) -> bool {
        self.captures.contains_key(&vm)
    }

    fn frame(&mut self, vm: VmId, t_ns: u64, frame: &[u8]) {
        if let Some(c) = self.captures.get_mut(&vm) {
            c.write(t_ns, frame);
        }
    }

    fn progress(&mut self, now_ns: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(now_ns / 100_000_000);
        }
    }
}

/// Simulates the flows and failures in virtual time.
pub(super) fn drive(
    wired: &Wired<'_>,
    cloud: &mut Cloud,
    captures: BTreeMap<usize, Capture>,
    progress: bool,
) -> Result<Measured, RunError> {
    let Wired { file, placed, launched, flows, host_names, rule_changes } = *wired;
    let end_ns = (placed.duration_s * 1e9) as u64;
    let drain_ns = DRAIN.as_nanos() as u64;
    let spec = TrafficSpec {
        flows: flows
            .iter()
            .filter(|f| !f.efa)
            .map(|f| FlowSpec {
                from: launched.vm_ids[f.from],
                to: launched.vm_ids[f.to],
                src_eni: f.src_eni,
                dst_eni: f.dst_eni,
                frame: f.frame.clone(),
                interval_ns: f.interval_ns,
                start_ns: f.start_ns,
                stop_ns: f.stop_ns,
                arrivals: f.arrivals,
                pattern: f.pattern,
                path: path_index(f.path),
                tcp: f.tcp,
            })
            .collect(),
        failures: placed
            .failures
            .iter()
            .map(|f| ((f.at_s * 1e9) as u64, f.vms.iter().map(|&v| launched.vm_ids[v]).collect()))
            .collect(),
        end_ns,
        drain_ns,
        sample_ns: placed.run.sample_ms * 1_000_000,
        paths: PATHS.len(),
        seed: placed.seed,
        costs: placed.costs,
        efa_flows: flows
            .iter()
            .filter(|f| f.efa)
            .map(|f| EfaFlowSpec {
                from: launched.vm_ids[f.from],
                to: launched.vm_ids[f.to],
                bytes: f.frame.bytes().len(),
                interval_ns: f.interval_ns,
                start_ns: f.start_ns,
                stop_ns: f.stop_ns,
                pattern: f.pattern,
                path: path_index(f.path),
            })
            .collect(),
        efa_loss: placed.run.efa_loss,
        rule_changes: rule_changes.to_vec(),
    };
    let total_s = (end_ns + drain_ns) as f64 / 1e9;
    let mut watch = Watch {
        captures: captures.into_iter().map(|(i, c)| (launched.vm_ids[i], c)).collect(),
        bar: progress.then(|| progress_bar(total_s, "simulating (virtual time)")),
    };
    let out = simulate(cloud, &spec, &mut watch)
        .map_err(|source| RunError::Sim { file: file.into(), source })?;
    if let Some(bar) = watch.bar.take() {
        bar.finish_and_clear();
    }
    let captures: Vec<CaptureReport> =
        std::mem::take(&mut watch.captures).into_values().map(Capture::finish).collect();
    let name_of = |id: VmId| {
        launched.vm_ids.iter().position(|&v| v == id).map(|i| placed.vms[i].name.clone())
    };
    let failures = placed
        .failures
        .iter()
        .zip(&out.failures)
        .map(|(plan, (_, stopped))| FailureReport {
            at_s: plan.at_s,
            rack: plan.rack,
            vms: stopped.iter().filter_map(|&id| name_of(id)).collect(),
        })
        .collect();
    let simulated_s = out.simulated_ns as f64 / 1e9;
    let breakdown = PATHS
        .iter()
        .zip(&out.breakdown)
        .filter(|(_, b)| b.frames > 0)
        .map(|(&path, b)| PathBreakdown {
            path,
            frames: b.frames,
            mean_us: b.mean_ns / 1e3,
            components_us: COMPONENTS
                .iter()
                .zip(b.mean_parts_ns)
                .map(|(name, ns)| (name.to_string(), ns / 1e3))
                .collect(),
        })
        .collect();
    let cpu = out
        .vm_cpu
        .iter()
        .filter_map(|c| {
            Some(VmCpuReport {
                vm: name_of(c.vm)?,
                vcpus: c.vcpus,
                busy_vcpu_s: c.busy_ns as f64 / 1e9,
                utilisation: c.busy_ns as f64 / (f64::from(c.vcpus) * out.simulated_ns as f64),
            })
        })
        .collect();
    let hypervisor_cpu = out
        .hypervisor_cpu_ns
        .iter()
        .enumerate()
        .filter(|(h, _)| cloud.emulated(*h).is_some())
        .map(|(h, &ns)| HostCpuReport {
            host: host_names.get(h).cloned().unwrap_or_else(|| format!("host #{h}")),
            busy_s: ns as f64 / 1e9,
            utilisation: ns as f64 / out.simulated_ns as f64,
        })
        .collect();
    // Back into the scenario's order: UDP and EFA flows were simulated apart.
    let (mut udp, mut efa) = (out.flows.iter(), out.efa_flows.iter());
    let measures = flows
        .iter()
        .filter_map(|f| match f.efa {
            false => udp.next().map(|u| FlowMeasure {
                sent_frames: u.sent_frames,
                sender_drops: u.sender_drops,
                recv_frames: u.recv_frames,
                recv_bytes: u.recv_bytes,
                gaps: u.gaps,
                duplicates: 0,
                samples: u.samples.clone(),
                tcp: u.tcp,
            }),
            true => efa.next().map(|e| FlowMeasure {
                sent_frames: e.flow.sent_frames,
                sender_drops: e.flow.sender_drops,
                recv_frames: e.flow.recv_frames,
                recv_bytes: e.flow.recv_bytes,
                gaps: e.reordered,
                duplicates: e.duplicates,
                samples: e.flow.samples.clone(),
                tcp: None,
            }),
        })
        .collect();
    Ok(Measured {
        flows: measures,
        latency: out.latency_log,
        rtt: out.rtt,
        failures,
        breakdown,
        cpu,
        hypervisor_cpu,
        captures,
        simulation: Simulation {
            mode: "virtual",
            seed: placed.seed,
            events: out.events,
            simulated_s,
            costs: placed.costs.fields().iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            wall_s: out.wall.as_secs_f64(),
        },
    })
}
