//! Rendering a run's report: text for the terminal, and `--out DIR` files: `report.json`, one
//! HdrHistogram percentile-distribution file per path (`latency-<path>.hgrm`, the text format
//! HdrHistogram's `outputPercentileDistribution` writes and its plotter reads, values in µs), and
//! SVG plots (`throughput.svg`: each flow's received Gbps per sample window; `latency.svg`: the
//! latency percentile curve of each path).

use std::fmt::{self, Write as _};
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::run::RunReport;

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
                     engine_share_exhausted {}",
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
                    e.engine_share_exhausted
                )?;
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

/// HdrHistogram's percentile-distribution text, values (ns recorded) in µs.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let scale = 1000.0;
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:>14.2}", 1.0 / (1.0 - q)) } else { String::new() };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            v.value_iterated_to() as f64 / scale,
            q,
            total,
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// HdrHistogram's sub-buckets per bucket for `sigfig` significant digits: the power of two at
/// or above 2 × 10^sigfig (2,048 for 3 digits), what its own percentile output prints.
fn sub_bucket_count(sigfig: u8) -> u32 {
    (2 * 10u32.pow(u32::from(sigfig))).next_power_of_two()
}

/// HdrHistogram's interval log (`.hlog`: what its log tools and the `hdrhistogram` package on
/// PyPI read): one interval covering the run's `run_s` seconds from a start time of 0, values
/// in ns (the max column in µs), histogram compressed (V2 + deflate) and base64-encoded.
pub fn hlog(h: &Histogram<u64>, path: &str, run_s: f64) -> Result<Vec<u8>, String> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!("vnic-lab: one-way latency of the {path} path, values in ns"))
        .with_start_time(std::time::UNIX_EPOCH)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(|e| format!("hlog: {e}"))?;
    let duration = std::time::Duration::from_secs_f64(run_s.max(0.0));
    log.write_histogram(h, std::time::Duration::ZERO, duration, None)
        .map_err(|e| format!("hlog: {e:?}"))?;
    Ok(out)
}

/// Writes `report.json`, the `.hgrm` and `.hlog` files and the plots into `dir` (created if
/// missing).
pub fn write_out(dir: &Path, report: &RunReport) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: &str, body: &[u8]| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
        Ok(())
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    put("report.json", json.as_bytes())?;
    for l in &report.latency {
        put(&format!("latency-{}.hgrm", l.path.as_str()), hgrm(&l.histogram).as_bytes())?;
        let run_s = report.simulation.simulated_s;
        put(
            &format!("latency-{}.hlog", l.path.as_str()),
            &hlog(&l.histogram, l.path.as_str(), run_s)?,
        )?;
    }
    put("throughput.svg", throughput_svg(report)?.as_bytes())?;
    put("latency.svg", latency_svg(report)?.as_bytes())?;
    Ok(written)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// A flow's line: its colour, and a width that shrinks with its index so that a flow drawn over
/// an identical one leaves the earlier visible around it.
fn series_style(i: usize, n: usize) -> ShapeStyle {
    Palette99::pick(i).to_rgba().stroke_width(2 + 2 * (n.saturating_sub(i + 1) as u32).min(4))
}

/// Received Gbps of every flow over time, each flow's offer (dashed) and single-flow cap
/// (dotted) in its colour.
fn throughput_svg(report: &RunReport) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_t = report.duration_s.max(report.sample_s);
        let max_g = report
            .flows
            .iter()
            .flat_map(|f| f.throughput_gbps.iter().copied().chain([f.offered_gbps, f.cap_gbps]))
            .filter(|g| g.is_finite())
            .fold(0.1f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: received Gbps per flow", report.scenario), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_t, 0f64..max_g)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc("seconds").y_desc("Gbps").draw().map_err(plot_err)?;
        let n = report.flows.len();
        for (i, f) in report.flows.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = series_style(i, n);
            let points: Vec<(f64, f64)> = f
                .throughput_gbps
                .iter()
                .enumerate()
                .map(|(k, &g)| ((k as f64 + 0.5) * report.sample_s, g))
                .collect();
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(plot_err)?
                .label(format!("{} -> {} ({})", f.from, f.to, f.path.as_str()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            for (gbps, dash, gap) in [(f.offered_gbps, 10, 6), (f.cap_gbps, 2, 4)] {
                if gbps.is_finite() && gbps > 0.0 {
                    let line = [(0.0, gbps), (max_t, gbps)];
                    chart
                        .draw_series(DashedLineSeries::new(line, dash, gap, color.stroke_width(1)))
                        .map_err(plot_err)?;
                }
            }
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The percentile at `nines` on the latency plot's axis (log10 of 1/(1 − p)): 0 → "0%",
/// 1 → "90%", 2 → "99%", 3 → "99.9%"; between whole nines, the percentile it stands for.
fn percentile_label(nines: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = if nines <= 2.0 { 0 } else { (nines.ceil() as usize).saturating_sub(2) };
    format!("{p:.decimals$}%")
}

/// Latency percentile curves per path: x is the percentile as "nines" (log10 of 1/(1-p)).
fn latency_svg(report: &RunReport) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_us = report.latency.iter().map(|l| l.max_us).fold(1.0f64, f64::max).max(1.0) * 1.2;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: one-way latency by percentile", report.scenario),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..5f64, (1f64..max_us).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|nines| percentile_label(*nines))
            .x_desc("percentile")
            .y_desc("µs")
            .draw()
            .map_err(plot_err)?;
        let n = report.latency.len();
        for (i, l) in report.latency.iter().enumerate() {
            let color = series_style(i, n);
            let points: Vec<(f64, f64)> = l
                .histogram
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 0.99999)
                .map(|v| {
                    let nines = -(1.0 - v.quantile_iterated_to()).log10();
                    (nines, (v.value_iterated_to() as f64 / 1e3).max(1.0))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(l.path.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hlog_reads_back_with_the_same_counts() {
        use hdrhistogram::serialization::Deserializer;
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let log = hlog(&h, "sriov", 3.2).unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.contains("#[StartTime: 0.000"), "{text}");
        let mut intervals = IntervalLogIterator::new(&log).filter_map(|e| match e {
            Ok(LogEntry::Interval(i)) => Some(i),
            _ => None,
        });
        let interval = intervals.next().expect("one interval");
        assert!(intervals.next().is_none());
        assert_eq!(interval.duration(), std::time::Duration::from_secs_f64(3.2));
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            interval.encoded_histogram(),
        )
        .unwrap();
        let back: Histogram<u64> =
            Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(back.len(), 10_000);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn the_latency_axis_reads_as_percentiles() {
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0].map(percentile_label).to_vec();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn the_hgrm_footer_is_hdrhistograms() {
        // 3 significant digits: unit resolution up to 2 × 10³ needs 2¹¹ = 2,048 sub-buckets.
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
        assert!(text.contains("Total count    =            4]"), "{text}");
        let max = text.lines().find(|l| l.starts_with("#[Max")).unwrap();
        assert!(max.contains("1000.") || max.contains("1000.959"), "{max}");
    }
}
