//! A sweep's results: one row per variant with the variant's values and the headline of its
//! plan, written as CSV, JSON and a text table; and the merge of a sharded sweep's parts.
//!
//! Every output is a function of the rows alone (no times, hosts or paths), so that a sweep
//! run as shards anywhere and merged writes the same bytes as the sweep run here.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::{FailureLevel, FailureResult, PlanReport};

/// The results of a sweep, or of one shard of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepTable {
    /// The scenario's name.
    pub scenario: String,
    /// The varied keys, outermost first.
    pub keys: Vec<String>,
    /// How many variants the whole sweep has.
    pub variants: usize,
    /// A hash of the scenario's text and the keys and values: parts of different sweeps do not
    /// merge.
    pub fingerprint: String,
    /// Which shard this is (absent: the whole sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Whether each variant was simulated too (`--simulate`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulate: bool,
    /// One row per variant, in variant order.
    pub rows: Vec<Row>,
}

/// Shard `index` of `of`: the variants `i` with `i % of == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards.
    pub of: usize,
}

impl Shard {
    /// `K/N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard `{s}` is not K/N with 0 <= K < N (for example 3/8)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let of: usize = n.trim().parse().map_err(|_| bad())?;
        if of == 0 || index >= of {
            return Err(bad());
        }
        Ok(Shard { index, of })
    }

    /// Whether variant `i` is this shard's.
    pub fn holds(self, i: usize) -> bool {
        i % self.of == self.index
    }
}

/// One variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Row {
    /// Its number, from 0 (the first key outermost).
    pub variant: usize,
    /// The value of each key, as the table shows it.
    pub values: Vec<String>,
    /// Its plan's headline (absent if it failed).
    pub plan: Option<Headline>,
    /// Its simulation's headline (`--simulate`; absent if it was not simulated or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<Simulated>,
    /// Why it could not be planned (a value the scenario refuses, a placement EC2 would refuse
    /// with InsufficientInstanceCapacity, ...), or, planned, not simulated.
    pub error: Option<String>,
}

/// What a variant's simulation (`run` in virtual time, deterministic: the same on every
/// machine) comes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Simulated {
    /// Gbps the receivers got, all flows together.
    pub achieved_gbps: f64,
    /// Frames (or EFA messages) the senders sent.
    pub sent_frames: u64,
    /// Of those, lost on the way, plus those the senders dropped.
    pub lost_frames: u64,
    /// The highest 99th-percentile one-way latency of any path, µs (absent: none measured).
    pub worst_p99_us: Option<f64>,
    /// Events simulated.
    pub events: u64,
}

impl Simulated {
    /// The headline of a run's report.
    pub fn of(run: &crate::run::RunReport) -> Self {
        Simulated {
            achieved_gbps: run.flows.iter().map(|f| f.achieved_gbps).sum(),
            sent_frames: run.flows.iter().map(|f| f.sent_frames).sum(),
            lost_frames: run.flows.iter().map(|f| f.lost_frames + f.sender_drops).sum(),
            worst_p99_us: run.latency.iter().map(|l| l.p99_us).reduce(f64::max),
            events: run.simulation.events,
        }
    }
}

/// What a plan comes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Headline {
    /// Instances placed.
    pub instances: usize,
    /// Hosts they landed on.
    pub hosts: usize,
    /// Racks they landed on.
    pub racks: usize,
    /// Flows.
    pub flows: usize,
    /// Flows a security group or NACL blocks.
    pub blocked_flows: usize,
    /// Total planned Gbps.
    pub total_gbps: f64,
    /// Demand not met, Gbps.
    pub unmet_demand_gbps: f64,
    /// The rack whose failure costs most (absent: no VM).
    pub worst_rack: Option<Worst>,
    /// The AZ whose failure costs most.
    pub worst_az: Option<Worst>,
}

/// The failure of one domain that costs most: the most VMs lost, then the least throughput
/// left, then the first in the plan's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Worst {
    /// The domain (`rack 3`, `AZ us-east-1a`).
    pub domain: String,
    /// VMs it takes down.
    pub vms_lost: usize,
    /// The largest share of one placement group it takes down, percent (0 without groups).
    pub group_lost_pct: f64,
    /// Total planned Gbps after it.
    pub gbps_after: f64,
}

fn worst(failures: &[FailureResult], level: FailureLevel) -> Option<Worst> {
    let group_pct = |f: &FailureResult| {
        f.groups
            .values()
            .filter(|(_, total)| *total > 0)
            .map(|&(lost, total)| 100.0 * f64::from(lost) / f64::from(total))
            .fold(0.0, f64::max)
    };
    failures
        .iter()
        .filter(|f| f.level == level)
        .reduce(|best, f| {
            let more = f.vms_lost.len() > best.vms_lost.len()
                || (f.vms_lost.len() == best.vms_lost.len() && f.gbps_after < best.gbps_after);
            if more { f } else { best }
        })
        .map(|f| Worst {
            domain: f.domain.clone(),
            vms_lost: f.vms_lost.len(),
            group_lost_pct: group_pct(f),
            gbps_after: f.gbps_after,
        })
}

impl Headline {
    /// The headline of `plan`.
    pub fn of(plan: &PlanReport) -> Self {
        let hosts: BTreeSet<u32> = plan.vms.iter().map(|v| v.host).collect();
        let racks: BTreeSet<u32> = plan.vms.iter().map(|v| v.rack).collect();
        Headline {
            instances: plan.vms.len(),
            hosts: hosts.len(),
            racks: racks.len(),
            flows: plan.flows.len(),
            blocked_flows: plan.flows.iter().filter(|f| !f.allowed).count(),
            total_gbps: plan.total_gbps,
            unmet_demand_gbps: plan.unmet_demand_gbps,
            worst_rack: worst(&plan.failures, FailureLevel::Rack),
            worst_az: worst(&plan.failures, FailureLevel::Az),
        }
    }
}

/// The CSV columns after the keys.
const HEADLINE_COLUMNS: [&str; 16] = [
    "instances",
    "hosts",
    "racks",
    "flows",
    "blocked_flows",
    "total_gbps",
    "unmet_demand_gbps",
    "worst_rack",
    "worst_rack_vms_lost",
    "worst_rack_group_lost_pct",
    "worst_rack_gbps_after",
    "worst_az",
    "worst_az_vms_lost",
    "worst_az_group_lost_pct",
    "worst_az_gbps_after",
    "error",
];

/// The CSV columns of a simulated sweep, before `error`.
const SIMULATED_COLUMNS: [&str; 5] =
    ["sim_achieved_gbps", "sim_sent_frames", "sim_lost_frames", "sim_worst_p99_us", "sim_events"];

fn gbps(x: f64) -> String {
    format!("{x:.3}")
}

fn simulated_cells(s: Option<&Simulated>) -> [String; 5] {
    match s {
        Some(s) => [
            gbps(s.achieved_gbps),
            s.sent_frames.to_string(),
            s.lost_frames.to_string(),
            s.worst_p99_us.map(|us| format!("{us:.2}")).unwrap_or_default(),
            s.events.to_string(),
        ],
        None => Default::default(),
    }
}

fn worst_cells(w: Option<&Worst>) -> [String; 4] {
    match w {
        Some(w) => [
            w.domain.clone(),
            w.vms_lost.to_string(),
            format!("{:.1}", w.group_lost_pct),
            gbps(w.gbps_after),
        ],
        None => Default::default(),
    }
}

impl Row {
    /// Its CSV cells after the keys, in [`HEADLINE_COLUMNS`]' order (with
    /// [`SIMULATED_COLUMNS`] before `error` if `simulate`).
    fn headline_cells(&self, simulate: bool) -> Vec<String> {
        let mut cells = Vec::with_capacity(HEADLINE_COLUMNS.len() + SIMULATED_COLUMNS.len());
        match &self.plan {
            Some(h) => {
                cells.extend([
                    h.instances.to_string(),
                    h.hosts.to_string(),
                    h.racks.to_string(),
                    h.flows.to_string(),
                    h.blocked_flows.to_string(),
                    gbps(h.total_gbps),
                    gbps(h.unmet_demand_gbps),
                ]);
                cells.extend(worst_cells(h.worst_rack.as_ref()));
                cells.extend(worst_cells(h.worst_az.as_ref()));
            }
            None => cells.resize(HEADLINE_COLUMNS.len() - 1, String::new()),
        }
        if simulate {
            cells.extend(simulated_cells(self.simulated.as_ref()));
        }
        cells.push(self.error.clone().unwrap_or_default());
        cells
    }
}

impl SweepTable {
    /// As CSV: a header (`variant`, the keys, then the headline), one line per variant.
    pub fn to_csv(&self) -> Result<String, String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| format!("CSV: {e}");
        let (plan_columns, error) = HEADLINE_COLUMNS.split_at(HEADLINE_COLUMNS.len() - 1);
        let simulated: &[&str] = if self.simulate { &SIMULATED_COLUMNS } else { &[] };
        let header = std::iter::once("variant")
            .chain(self.keys.iter().map(String::as_str))
            .chain(plan_columns.iter().chain(simulated).chain(error).copied());
        w.write_record(header).map_err(err)?;
        for row in &self.rows {
            let cells = std::iter::once(row.variant.to_string())
                .chain(row.values.iter().cloned())
                .chain(row.headline_cells(self.simulate));
            w.write_record(cells).map_err(err)?;
        }
        let bytes = w.into_inner().map_err(|e| format!("CSV: {e}"))?;
        String::from_utf8(bytes).map_err(|e| format!("CSV: {e}"))
    }

    /// As pretty JSON, newline-terminated.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map(|s| s + "\n").map_err(|e| e.to_string())
    }

    /// How many variants failed (not planned, or planned but not simulated).
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.error.is_some()).count()
    }
}

impl fmt::Display for SweepTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shard = self.shard.map(|s| format!(", shard {}/{}", s.index, s.of)).unwrap_or_default();
        writeln!(
            f,
            "sweep of {} over {} ({} variants{shard}):",
            self.scenario,
            self.keys.join(" × "),
            self.variants
        )?;
        let mut header: Vec<String> = vec!["#".into()];
        header.extend(self.keys.iter().cloned());
        header.extend(
            ["VMs", "racks", "Gbps", "unmet", "worst rack", "lost", "group", "Gbps after"]
                .map(String::from),
        );
        if self.simulate {
            header.extend(["sim Gbps", "lost frames", "p99 µs"].map(String::from));
        }
        let mut lines = vec![header];
        let mut errors = Vec::new();
        for row in &self.rows {
            let mut cells = vec![row.variant.to_string()];
            cells.extend(row.values.iter().cloned());
            match (&row.plan, &row.error) {
                (Some(h), _) => {
                    cells.extend([
                        h.instances.to_string(),
                        h.racks.to_string(),
                        format!("{:.1}", h.total_gbps),
                        format!("{:.1}", h.unmet_demand_gbps),
                    ]);
                    match &h.worst_rack {
                        Some(w) => cells.extend([
                            w.domain.clone(),
                            w.vms_lost.to_string(),
                            format!("{:.0}%", w.group_lost_pct),
                            format!("{:.1}", w.gbps_after),
                        ]),
                        None => cells.extend(["-", "", "", ""].map(String::from)),
                    }
                    match (&row.simulated, &row.error) {
                        _ if !self.simulate => {}
                        (Some(s), _) => cells.extend([
                            format!("{:.2}", s.achieved_gbps),
                            s.lost_frames.to_string(),
                            s.worst_p99_us.map_or_else(|| "-".into(), |us| format!("{us:.1}")),
                        ]),
                        (None, e) => {
                            cells.push(format!("failed (see {})", errors.len() + 1));
                            errors.push((row.variant, e.clone().unwrap_or_default()));
                        }
                    }
                }
                (None, e) => {
                    cells.push(format!("failed (see {})", errors.len() + 1));
                    errors.push((row.variant, e.clone().unwrap_or_default()));
                }
            }
            lines.push(cells);
        }
        let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max())
            .map(|w| w.unwrap_or(0))
            .collect();
        for line in &lines {
            let mut out = String::from(" ");
            for (c, cell) in line.iter().enumerate() {
                let _ = write!(out, " {cell:>w$}", w = widths[c]);
            }
            writeln!(f, "{}", out.trim_end())?;
        }
        if self.failed() > 0 {
            let what = if self.simulate { "planned and simulated" } else { "planned" };
            writeln!(f, "{} of {} variants could not be {what}:", self.failed(), self.rows.len())?;
        }
        for (n, (variant, e)) in errors.iter().enumerate() {
            writeln!(f, "  ({}) variant {variant}: {e}", n + 1)?;
        }
        Ok(())
    }
}

/// The file each part and the merged sweep write their table to.
pub const TABLE_JSON: &str = "sweep.json";

/// Joins the parts under `dir` (each a directory holding [`TABLE_JSON`] with a shard) into the
/// whole sweep: they must be of one sweep (same fingerprint, keys and shard count), every
/// shard once, every variant once.
pub fn merge(dir: &Path) -> Result<SweepTable, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(TABLE_JSON))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut parts = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let part: SweepTable =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        if part.shard.is_none() {
            return Err(format!("{}: is a whole sweep, not a shard of one", file.display()));
        }
        parts.push((file, part));
    }
    let Some((first_file, first)) = parts.first() else {
        return Err(format!(
            "{}: no part-*/{TABLE_JSON} to merge (the shards write them with --out)",
            dir.display()
        ));
    };
    let of = first.shard.map_or(0, |s| s.of);
    let mut shards = BTreeSet::new();
    let mut rows = Vec::new();
    for (file, part) in &parts {
        let same = part.fingerprint == first.fingerprint
            && part.simulate == first.simulate
            && part.keys == first.keys
            && part.variants == first.variants
            && part.shard.map(|s| s.of) == Some(of);
        if !same {
            return Err(format!(
                "{} and {} are parts of different sweeps (fingerprint {} vs {}, {} vs {} \
                 shards)",
                first_file.display(),
                file.display(),
                first.fingerprint,
                part.fingerprint,
                of,
                part.shard.map_or(0, |s| s.of),
            ));
        }
        if let Some(row) = part.rows.iter().find(|r| r.values.len() != part.keys.len()) {
            return Err(format!(
                "{}: variant {} has {} values for {} keys",
                file.display(),
                row.variant,
                row.values.len(),
                part.keys.len()
            ));
        }
        let index = part.shard.map_or(0, |s| s.index);
        if !shards.insert(index) {
            return Err(format!("{}: shard {index}/{of} is there twice", file.display()));
        }
        rows.extend(part.rows.iter().cloned());
    }
    let missing: Vec<String> =
        (0..of).filter(|k| !shards.contains(k)).map(|k| k.to_string()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: shards {} of {of} are missing (did their tasks fail? see their logs)",
            dir.display(),
            missing.join(", ")
        ));
    }
    rows.sort_by_key(|r| r.variant);
    let numbered = rows.iter().enumerate().all(|(i, r)| r.variant == i);
    if rows.len() != first.variants || !numbered {
        return Err(format!(
            "{}: the parts hold {} rows for {} variants",
            dir.display(),
            rows.len(),
            first.variants
        ));
    }
    Ok(SweepTable {
        scenario: first.scenario.clone(),
        keys: first.keys.clone(),
        variants: first.variants,
        fingerprint: first.fingerprint.clone(),
        shard: None,
        simulate: first.simulate,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(domain: &str, level: FailureLevel, lost: usize, after: f64) -> FailureResult {
        FailureResult {
            domain: domain.into(),
            level,
            vms_lost: (0..lost).map(|i| format!("vm-{i}")).collect(),
            groups: [("g".to_string(), (lost as u32, 8))].into_iter().collect(),
            gbps_after: after,
        }
    }

    #[test]
    fn the_worst_failure_loses_most_vms_then_leaves_least() {
        let failures = [
            failure("rack 0", FailureLevel::Rack, 2, 50.0),
            failure("rack 1", FailureLevel::Rack, 4, 40.0),
            failure("rack 2", FailureLevel::Rack, 4, 30.0),
            failure("rack 3", FailureLevel::Rack, 4, 30.0),
            failure("AZ a", FailureLevel::Az, 8, 0.0),
        ];
        let w = worst(&failures, FailureLevel::Rack).unwrap();
        assert_eq!(w.domain, "rack 2");
        assert_eq!(w.vms_lost, 4);
        assert_eq!(w.group_lost_pct, 50.0, "4 of the group's 8");
        assert_eq!(worst(&failures, FailureLevel::Az).unwrap().domain, "AZ a");
        assert_eq!(worst(&failures[..0], FailureLevel::Az), None);
    }

    #[test]
    fn shards_split_the_variants_round_robin() {
        let s = Shard::parse("1/3").unwrap();
        let mine: Vec<usize> = (0..8).filter(|&i| s.holds(i)).collect();
        assert_eq!(mine, [1, 4, 7]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_what_needs_it_and_leaves_failed_rows_empty() {
        let table = SweepTable {
            scenario: "s".into(),
            keys: vec!["groups[hpc].strategy".into()],
            variants: 1,
            fingerprint: "0".into(),
            shard: None,
            simulate: false,
            rows: vec![Row {
                variant: 0,
                values: vec!["cluster".into()],
                plan: None,
                simulated: None,
                error: Some("hpc-3: InsufficientInstanceCapacity, \"cluster\"".into()),
            }],
        };
        let csv = table.to_csv().unwrap();
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("variant,groups[hpc].strategy,instances,"));
        assert_eq!(header.split(',').count(), 2 + HEADLINE_COLUMNS.len());
        let row = lines.next().unwrap();
        let empties = ",".repeat(HEADLINE_COLUMNS.len() - 1);
        assert_eq!(
            row,
            format!("0,cluster{empties},\"hpc-3: InsufficientInstanceCapacity, \"\"cluster\"\"\"")
        );
    }
}
