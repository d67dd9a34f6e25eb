//! SVG plots of a run: `throughput.svg`, each flow's received Gbps per sample window with its
//! offer (dashed) and single-flow cap (dotted) in its colour; `latency.svg`, each path's
//! one-way latency by percentile on a log scale, the x axis in nines (90 %, 99 %, 99.9 %, ...).

use plotters::prelude::*;

use crate::run::RunReport;

/// A plotting error, as the commands report it.
pub fn plot_err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// A flow's line: its colour, and a width that shrinks with its index so that a flow drawn over
/// an identical one leaves the earlier visible around it.
fn series_style(i: usize, n: usize) -> ShapeStyle {
    Palette99::pick(i).to_rgba().stroke_width(2 + 2 * (n.saturating_sub(i + 1) as u32).min(4))
}

/// Most flows drawn one line each; a run with more draws its total and the flows furthest
/// below their offer instead (2,000 lines are a 40 MB plot no one can read).
pub const MAX_FLOW_LINES: usize = 16;
/// Flows drawn beside the total when a run has more than [`MAX_FLOW_LINES`].
const WORST_FLOWS_DRAWN: usize = 8;

/// One line of the throughput plot: Gbps per sample window, with its offer and cap.
struct Series {
    label: String,
    gbps: Vec<f64>,
    offered: f64,
    cap: Option<f64>,
}

/// What the throughput plot draws, and its caption: every flow, or (more than
/// [`MAX_FLOW_LINES`]) the total against the total offer and the flows that achieved the least
/// of their offer.
fn throughput_series(report: &RunReport) -> (Vec<Series>, String) {
    let line = |f: &crate::run::FlowReport| Series {
        label: format!("{} -> {} ({})", f.from, f.to, f.path.as_str()),
        gbps: f.throughput_gbps.clone(),
        offered: f.offered_gbps,
        cap: Some(f.cap_gbps),
    };
    let flows = &report.flows;
    if flows.len() <= MAX_FLOW_LINES {
        return (flows.iter().map(line).collect(), "received Gbps per flow".into());
    }
    let windows = flows.iter().map(|f| f.throughput_gbps.len()).max().unwrap_or(0);
    let total = Series {
        label: format!("all {} flows", flows.len()),
        gbps: (0..windows)
            .map(|k| flows.iter().filter_map(|f| f.throughput_gbps.get(k)).sum())
            .collect(),
        offered: placement::total(flows.iter().map(|f| f.offered_gbps)),
        cap: None,
    };
    let mut series = vec![total];
    series.extend(super::furthest_below_offer(flows, WORST_FLOWS_DRAWN).into_iter().map(line));
    let caption = format!(
        "received Gbps: all {} flows, and the {WORST_FLOWS_DRAWN} furthest below their offer",
        flows.len()
    );
    (series, caption)
}

/// Received Gbps over time of every flow (or, for many flows, their total and the worst),
/// each line's offer dashed and single-flow cap dotted in its colour.
pub fn throughput_svg(report: &RunReport) -> Result<String, String> {
    let (series, caption) = throughput_series(report);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_t = report.duration_s.max(report.sample_s);
        let max_g = series
            .iter()
            .flat_map(|s| s.gbps.iter().copied().chain([s.offered]).chain(s.cap))
            .filter(|g| g.is_finite())
            .fold(0.1f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: {caption}", report.scenario), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..max_t, 0f64..max_g)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc("seconds").y_desc("Gbps").draw().map_err(plot_err)?;
        let n = series.len();
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = series_style(i, n);
            let points: Vec<(f64, f64)> = s
                .gbps
                .iter()
                .enumerate()
                .map(|(k, &g)| ((k as f64 + 0.5) * report.sample_s, g))
                .collect();
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(plot_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            for (gbps, dash, gap) in [(Some(s.offered), 10, 6), (s.cap, 2, 4)] {
                if let Some(gbps) = gbps.filter(|g| g.is_finite() && *g > 0.0) {
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
pub fn latency_svg(report: &RunReport) -> Result<String, String> {
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
    fn the_latency_axis_reads_as_percentiles() {
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0].map(percentile_label).to_vec();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }
}
