//! `sweep.svg`: two panels over the sweep's first numeric key (else the variant number) — the
//! total planned Gbps, and the VMs the worst rack failure takes down — one line per
//! combination of the other keys. A failed variant leaves a gap.

use std::collections::BTreeMap;

use plotters::prelude::*;

use super::table::{Row, SweepTable};
use crate::report::plots::plot_err;

/// The x axis: the first key whose every value is a number, else the variant number.
fn x_axis(table: &SweepTable) -> (Option<usize>, String) {
    let numeric = |k: usize| {
        table.rows.iter().all(|r| r.values.get(k).is_some_and(|v| v.parse::<f64>().is_ok()))
    };
    match (0..table.keys.len()).find(|&k| numeric(k)) {
        Some(k) => (Some(k), table.keys[k].clone()),
        None => (None, "variant".into()),
    }
}

/// Each line: its label, and its (x, row) points in x order.
fn lines(table: &SweepTable, x: Option<usize>) -> Vec<(String, Vec<(f64, &Row)>)> {
    let mut by: BTreeMap<Vec<String>, Vec<(f64, &Row)>> = BTreeMap::new();
    for row in &table.rows {
        let (label, at) = match x {
            Some(k) => {
                let label: Vec<String> = table
                    .keys
                    .iter()
                    .zip(&row.values)
                    .enumerate()
                    .filter(|&(j, _)| j != k)
                    .map(|(_, (key, v))| format!("{key}={v}"))
                    .collect();
                let at = row.values.get(k).and_then(|v| v.parse::<f64>().ok());
                (label, at.unwrap_or(0.0))
            }
            None => (Vec::new(), row.variant as f64),
        };
        by.entry(label).or_default().push((at, row));
    }
    by.into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.variant.cmp(&b.1.variant)));
            let label = if label.is_empty() { "all variants".into() } else { label.join(", ") };
            (label, points)
        })
        .collect()
}

/// A panel: its caption, its y axis, and what it plots of a row (nothing: the row failed).
type Panel = (&'static str, &'static str, fn(&Row) -> Option<f64>);

/// The plot.
pub fn svg(table: &SweepTable) -> Result<String, String> {
    let (x, x_desc) = x_axis(table);
    let lines = lines(table, x);
    let panels: [Panel; 2] = [
        ("planned Gbps", "Gbps", |r| r.plan.as_ref().map(|h| h.total_gbps)),
        ("VMs lost to the worst rack failure", "VMs", |r| {
            r.plan.as_ref().map(|h| h.worst_rack.as_ref().map_or(0.0, |w| w.vms_lost as f64))
        }),
    ];
    let xs = lines.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| (l.min(x), h.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo, hi.max(lo + 1.0)) } else { (0.0, 1.0) };
    let pad = (hi - lo) * 0.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root
            .titled(
                &format!("sweep of {} over {}", table.scenario, table.keys.join(" × ")),
                ("sans-serif", 20),
            )
            .map_err(plot_err)?;
        for (area, (caption, y_desc, value)) in root.split_evenly((1, 2)).iter().zip(panels) {
            let top = lines
                .iter()
                .flat_map(|(_, p)| p.iter().filter_map(|(_, r)| value(r)))
                .fold(0.0f64, f64::max);
            let top = if top > 0.0 { top * 1.1 } else { 1.0 };
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(lo - pad..hi + pad, 0f64..top)
                .map_err(plot_err)?;
            chart.configure_mesh().x_desc(&x_desc).y_desc(y_desc).draw().map_err(plot_err)?;
            for (i, (label, points)) in lines.iter().enumerate() {
                let style = Palette99::pick(i).to_rgba().stroke_width(2);
                // A failed variant breaks the line.
                let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
                for (x, row) in points {
                    match value(row) {
                        Some(y) => runs.last_mut().map_or((), |r| r.push((*x, y))),
                        None => runs.push(Vec::new()),
                    }
                }
                for (k, run) in runs.into_iter().filter(|r| !r.is_empty()).enumerate() {
                    chart
                        .draw_series(run.iter().map(|&p| Circle::new(p, 3, style.filled())))
                        .map_err(plot_err)?;
                    let drawn = chart.draw_series(LineSeries::new(run, style)).map_err(plot_err)?;
                    if k == 0 {
                        drawn.label(label.clone()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], style)
                        });
                    }
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
