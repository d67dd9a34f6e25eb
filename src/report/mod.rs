//! Rendering a run's report: text for the terminal, and `--out DIR` files: `report.json`,
//! `report.html` (one self-contained page: [`html`]), HdrHistogram's files per path
//! (`latency-<path>.hgrm` and `.hlog`: [`hdr`]) and SVG plots (`throughput.svg`,
//! `latency.svg`: [`plots`]). `plan --out DIR` writes `plan.json` and its `report.html`.

use std::fmt;
use std::path::Path;

use crate::plan::PlanReport;
use crate::run::{FlowReport, RunReport};

pub mod hdr;
pub mod html;
pub mod plots;

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vnic-lab run: {} — {} VMs on {} host(s), {} flows, {:.1} s of traffic",
            self.scenario,
            self.vms.len(),
            self.hosts,
            self.flows.len(),
            self.duration_s
        )?;
        let sim = &self.simulation;
        if sim.mode == "virtual" {
            writeln!(
                f,
                "mode: virtual time (deterministic: seed {}, the cost model's time; --live runs \
                 on this machine's threads)",
                sim.seed
            )?;
        } else {
            writeln!(
                f,
                "mode: live (threads on this machine's wall clock: results vary with the machine)"
            )?;
        }
        writeln!(f, "\nplacement:")?;
        for vm in &self.vms {
            let at = &vm.placement;
            let paths: Vec<&str> = vm.enis.iter().map(|e| e.path.as_str()).collect();
            writeln!(
                f,
                "  {:<12} {:<14} {} rack {:>3} host {:>4}  {}{}",
                at.name,
                at.instance_type,
                at.az,
                at.rack,
                at.host,
                paths.join("+"),
                at.group_label()
            )?;
        }
        writeln!(f, "\nflows (achieved vs offered and the single-flow cap):")?;
        writeln!(
            f,
            "  {:<12} {:<12} {:<8} {:>6} {:>9} {:>9} {:>6} {:>8} {:>10} {:>9}",
            "from",
            "to",
            "path",
            "frame",
            "offered",
            "achieved",
            "cap",
            "Mpps",
            "lost",
            "sndr drop"
        )?;
        const SHOWN: usize = 16;
        for fl in self.flows.iter().take(SHOWN) {
            writeln!(
                f,
                "  {:<12} {:<12} {:<8} {:>6} {:>9.3} {:>9.3} {:>6.1} {:>8.4} {:>10} {:>9}",
                fl.from,
                fl.to,
                fl.path.as_str(),
                fl.frame_bytes,
                fl.offered_gbps,
                fl.achieved_gbps,
                fl.cap_gbps,
                fl.achieved_mpps,
                fl.lost_frames,
                fl.sender_drops
            )?;
        }
        if self.flows.len() > SHOWN {
            writeln!(f, "  ... {} more (--json for all)", self.flows.len() - SHOWN)?;
        }
        let sum =
            |g: fn(&crate::run::FlowReport) -> f64| placement::total(self.flows.iter().map(g));
        writeln!(
            f,
            "  in all: offered {:.3} Gbps, achieved {:.3} Gbps, {:.4} Mpps",
            sum(|f| f.offered_gbps),
            sum(|f| f.achieved_gbps),
            sum(|f| f.achieved_mpps)
        )?;
        let tcp: Vec<&crate::run::ConnectionReport> =
            self.flows.iter().filter_map(|fl| fl.connection.as_ref()).collect();
        if !tcp.is_empty() {
            use crate::run::ConnectOutcome as O;
            let count = |o: O| tcp.iter().filter(|c| c.outcome == o).count();
            writeln!(
                f,
                "  TCP connections: {} connected, {} refused, {} timed out, {} still trying",
                count(O::Connected),
                count(O::Refused),
                count(O::TimedOut),
                count(O::Connecting)
            )?;
        }
        // Flows that did not get through: what the client saw, then why.
        let troubled = self.flows.iter().filter(|fl| {
            fl.blocked.is_some()
                || fl
                    .connection
                    .as_ref()
                    .is_some_and(|c| c.outcome != crate::run::ConnectOutcome::Connected)
        });
        for (k, fl) in troubled.enumerate() {
            if k == SHOWN {
                writeln!(f, "  ... more (--json for all)")?;
                break;
            }
            match (&fl.connection, &fl.blocked) {
                (Some(c), Some(why)) => {
                    writeln!(f, "  {} -> {}: {}\n      {why}", fl.from, fl.to, c.says)?
                }
                (Some(c), None) => writeln!(f, "  {} -> {}: {}", fl.from, fl.to, c.says)?,
                (None, Some(why)) => writeln!(f, "  {} -> {} {why}", fl.from, fl.to)?,
                (None, None) => {}
            }
        }
        writeln!(f, "\nlatency, one way:")?;
        for l in &self.latency {
            percentiles(f, l, "frames ")?;
        }
        if !self.rtt.is_empty() {
            writeln!(f, "\nround trips (ping-pong flows):")?;
            for l in &self.rtt {
                percentiles(f, l, "replies")?;
            }
        }
        for b in &self.breakdown {
            writeln!(f, "\nwhere the {} path's mean {:.2} µs went:", b.path.as_str(), b.mean_us)?;
            for (name, us) in b.components_us.iter().filter(|(_, us)| *us >= 0.005) {
                let share = 100.0 * us / b.mean_us.max(1e-9);
                writeln!(f, "  {name:<20} {us:>10.2} µs  {share:>5.1}%")?;
            }
        }
        if !self.cpu.is_empty() {
            writeln!(f, "\nCPU (modelled kernel work; busy polling not counted):")?;
            for c in &self.cpu {
                writeln!(
                    f,
                    "  {:<12} {:>3} vCPUs  {:>8.4} vCPU-s  {:>6.2}%",
                    c.vm,
                    c.vcpus,
                    c.busy_vcpu_s,
                    100.0 * c.utilisation
                )?;
            }
            for h in &self.hypervisor_cpu {
                writeln!(
                    f,
                    "  {:<12} hypervisor worker {:>8.4} CPU-s  {:>6.2}% of one host CPU",
                    h.host,
                    h.busy_s,
                    100.0 * h.utilisation
                )?;
            }
        }
        writeln!(f, "\nENIs (ENA allowance counters; queue counters):")?;
        for vm in &self.vms {
            for e in &vm.enis {
                writeln!(
                    f,
                    "  {:<16} {} {:<12} bw_out {} bw_in {} pps {} conntrack {} linklocal {} \
                     flow_cap {} shaper_drops {} | tx {} rx {} rx_drops {} src_dst {} \
                     sg_drops {} nacl_drops {} engine_share_exhausted {}",
                    e.name,
                    e.mac,
                    e.ip,
                    e.bw_out_allowance_exceeded,
                    e.bw_in_allowance_exceeded,
                    e.pps_allowance_exceeded,
                    e.conntrack_allowance_exceeded,
                    e.linklocal_allowance_exceeded,
                    e.flow_cap_exceeded,
                    e.shaper_drops,
                    e.tx_packets,
                    e.rx_packets,
                    e.rx_drops,
                    e.src_dst_check_drops,
                    e.security_group_drops,
                    e.nacl_drops,
                    e.engine_share_exhausted
                )?;
            }
        }
        if !self.rule_changes.is_empty() {
            writeln!(f, "\nrule changes (the devices took them at these times):")?;
            for c in &self.rule_changes {
                writeln!(f, "  {:>8.3} s  {}", c.at_s, c.says)?;
            }
        }
        for x in &self.failures {
            writeln!(
                f,
                "\nfailure at {:.2} s: rack {} lost {} VM(s): {}",
                x.at_s,
                x.rack,
                x.vms.len(),
                x.vms.join(", ")
            )?;
        }
        writeln!(
            f,
            "\nfabric: {} frames between hosts, {} dropped; emulated NIC traps: {}",
            self.fabric_frames, self.fabric_drops, self.emulated_traps
        )?;
        for l in &self.flow_logs {
            writeln!(
                f,
                "flow log of {} ({}): {} records (--out writes {})",
                l.eni, l.interface_id, l.records, l.file
            )?;
        }
        for c in &self.captures {
            write!(f, "capture of {} into {}: {} frames", c.vm, c.file, c.frames)?;
            if c.not_captured > 0 {
                write!(
                    f,
                    "; warning: {} frames not captured (the writer fell behind; the run was not \
                     slowed for it)",
                    c.not_captured
                )?;
            }
            writeln!(f)?;
        }
        if sim.mode == "virtual" {
            writeln!(
                f,
                "simulated {:.2} s in {:.2} s of wall time ({:.2}x real time), {} events \
                 ({:.2} M events/s)",
                sim.simulated_s,
                sim.wall_s,
                sim.simulated_s / sim.wall_s.max(1e-9),
                sim.events,
                sim.events as f64 / sim.wall_s.max(1e-9) / 1e6
            )?;
        } else {
            writeln!(f, "ran {:.2} s of wall time", sim.wall_s)?;
        }
        Ok(())
    }
}

/// One path's percentiles on a line; `what` names what was counted.
fn percentiles(f: &mut fmt::Formatter<'_>, l: &crate::run::PathLatency, what: &str) -> fmt::Result {
    writeln!(
        f,
        "  {:<8} {:>9} {what} p50 {:>8.1} µs  p90 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs",
        l.path.as_str(),
        l.frames,
        l.p50_us,
        l.p90_us,
        l.p99_us,
        l.p999_us,
        l.max_us
    )
}

/// The `n` flows that achieved the smallest share of their offer, worst first (ties in report
/// order).
pub(crate) fn furthest_below_offer(flows: &[FlowReport], n: usize) -> Vec<&FlowReport> {
    let share = |f: &FlowReport| f.achieved_gbps / f.offered_gbps.max(1e-12);
    let mut worst: Vec<&FlowReport> = flows.iter().collect();
    worst.sort_by(|a, b| share(a).total_cmp(&share(b)));
    worst.truncate(n);
    worst
}

/// Writes `body` as `dir/name`, noting the path in `written`.
fn put(dir: &Path, name: &str, body: &[u8], written: &mut Vec<String>) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    written.push(path.display().to_string());
    Ok(())
}

/// Writes `report.json`, `report.html`, the `.hgrm` and `.hlog` files and the plots into `dir`
/// (created if missing); returns the paths written.
pub fn write_out(dir: &Path, report: &RunReport) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    put(dir, "report.json", json.as_bytes(), &mut written)?;
    let run_s = report.simulation.simulated_s;
    for l in &report.latency {
        let path = l.path.as_str();
        put(
            dir,
            &format!("latency-{path}.hgrm"),
            hdr::hgrm(&l.histogram).as_bytes(),
            &mut written,
        )?;
        if let Some(log) = &l.log {
            put(dir, &format!("latency-{path}.hlog"), &hdr::hlog(log, path, run_s)?, &mut written)?;
        }
    }
    let throughput = plots::throughput_svg(report)?;
    let latency = plots::latency_svg(report)?;
    put(dir, "throughput.svg", throughput.as_bytes(), &mut written)?;
    put(dir, "latency.svg", latency.as_bytes(), &mut written)?;
    let page = html::run_page(report, &throughput, &latency);
    put(dir, "report.html", page.as_bytes(), &mut written)?;
    for log in &report.flow_logs {
        let mut text = String::from(vnic::policy::flowlog::HEADER);
        text.push('\n');
        for line in &log.lines {
            text.push_str(line);
            text.push('\n');
        }
        put(dir, &log.file, text.as_bytes(), &mut written)?;
    }
    Ok(written)
}

/// Writes `plan.json` and `report.html` of the plan of scenario `name` into `dir`.
pub fn write_plan_out(dir: &Path, name: &str, plan: &PlanReport) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(plan).map_err(|e| e.to_string())?;
    put(dir, "plan.json", json.as_bytes(), &mut written)?;
    put(dir, "report.html", html::plan_page(name, plan).as_bytes(), &mut written)?;
    Ok(written)
}
