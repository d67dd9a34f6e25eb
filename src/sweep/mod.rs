//! `vnic-lab sweep FILE --vary KEY=V1,V2,...`: the cartesian product of a scenario's variants,
//! each planned as `plan` would (placement, max-min rates, every rack and AZ failed in turn)
//! and, with `--simulate`, run as `run` would in virtual time (deterministic: the same on every
//! machine), merged into one table (CSV, JSON, text) and one plot.
//!
//! The keys come from `--vary` and from the scenario's `[sweep]` table (`--vary` replaces a key
//! the table also names); see [`axes`] for the key syntax. Locally the variants are planned on
//! every core (`--jobs`). Where one machine is not enough, the sweep splits into shards —
//! `--shard K/N` plans the variants `i` with `i % N == K` — that a cluster scheduler the user
//! already has runs as an array: `--slurm DIR` writes a Slurm job-array script, `--k8s DIR` a
//! Kubernetes Indexed Job, and `--merge DIR` joins their parts into the table the local sweep
//! writes, byte for byte (the outputs hold no times, hosts or paths).

mod axes;
mod cluster;
mod plot;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use toml_edit::DocumentMut;

use crate::scenario::{self, Limits};
use axes::{Axis, Variants};
pub use table::{Headline, Row, Shard, SweepTable};

/// Options of `sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The scenario (TOML) whose variants are planned.
    #[arg(required_unless_present = "merge")]
    file: Option<PathBuf>,
    /// A key and the values it takes, e.g. `vms[hpc].count=8,16,32` or
    /// `groups[hpc].strategy=cluster,partition` (repeatable; the first is outermost).
    #[arg(long, value_name = "KEY=V1,V2,...")]
    vary: Vec<String>,
    /// Print the table as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the table as CSV.
    #[arg(long)]
    csv: bool,
    /// Write sweep.csv, sweep.json and sweep.svg into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Simulate each planned variant too (`run`, in virtual time: deterministic, so shards
    /// merge byte for byte) and add its headline: Gbps received, frames lost, worst p99.
    #[arg(long)]
    simulate: bool,
    /// Variants planned at once (default: one per core).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Plan only shard K of N: the variants i with i % N == K.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Join the parts that the shards wrote under DIR (DIR/*/sweep.json) into the whole sweep.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["file", "vary", "shard", "slurm", "k8s", "simulate"]
    )]
    merge: Option<PathBuf>,
    /// Write a Slurm job-array script (DIR/sweep.sbatch) that runs the shards, instead of
    /// planning here.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["shard", "k8s"])]
    slurm: Option<PathBuf>,
    /// Write a Kubernetes Indexed Job (DIR/sweep-job.yaml) that runs the shards, instead of
    /// planning here.
    #[arg(long, value_name = "DIR", conflicts_with = "shard")]
    k8s: Option<PathBuf>,
    /// Shards for --slurm or --k8s (default: one per variant, at most 1000).
    #[arg(long, value_name = "N")]
    tasks: Option<usize>,
    /// The container image (with vnic-lab on its PATH) the Kubernetes Job runs.
    #[arg(long, value_name = "IMAGE", default_value = "vnic-lab:latest")]
    image: String,
    /// The PersistentVolumeClaim the Kubernetes Job writes its parts to.
    #[arg(long, value_name = "NAME", default_value = "vnic-lab-sweep")]
    claim: String,
    #[command(flatten)]
    limits: crate::LimitArgs,
}

/// Most shards `--slurm` and `--k8s` make by default (Slurm's default MaxArraySize is 1001).
const DEFAULT_MAX_TASKS: usize = 1000;

/// A scenario and the variants a sweep makes of it.
#[derive(Debug)]
pub struct Sweep {
    /// The file's name (no directory), which its variants' errors give.
    file_name: String,
    /// The file's text.
    text: String,
    base: DocumentMut,
    scenario: String,
    variants: Variants,
    limits: Limits,
    /// The `--vary` arguments as given, which the shards are given too.
    vary_args: Vec<String>,
    /// Each variant simulated as well as planned.
    simulate: bool,
}

/// FNV-1a, 64 bits: the same on every machine and every build, as a merge needs.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Sweep {
    /// The sweep of the scenario at `path` over its `[sweep]` keys and `vary` (each
    /// `KEY=V1,V2,...`). A key that leads nowhere is an error here, before anything is planned.
    pub fn load(
        path: &Path,
        vary: &[String],
        limits: Limits,
        simulate: bool,
    ) -> Result<Self, String> {
        let text = scenario::read_text(path).map_err(|e| e.to_string())?;
        let file = path.display().to_string();
        let file_name =
            path.file_name().map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
        let (name, declared) = scenario::sweep_keys(&file, &text).map_err(|e| e.to_string())?;
        let base: DocumentMut = text.parse().map_err(|e| format!("{file}: {e}"))?;
        let mut keyed: Vec<(Axis, String)> = Vec::new();
        for k in &declared {
            let at = format!("{file}:{}:{}: [sweep] ", k.at.0, k.at.1);
            let axis = Axis::from_decl(&k.key, &k.values).map_err(|e| format!("{at}{e}"))?;
            keyed.push((axis, at));
        }
        for arg in vary {
            let axis = Axis::from_arg(arg)?;
            let at = format!("--vary {arg}: ");
            match keyed.iter_mut().find(|(a, _)| a.key == axis.key) {
                Some(slot) => *slot = (axis, at),
                None => keyed.push((axis, at)),
            }
        }
        for (axis, at) in &keyed {
            let mut doc = base.clone();
            axis.set(&mut doc, &axis.values[0]).map_err(|e| format!("{at}{e}"))?;
        }
        let variants = Variants::new(keyed.into_iter().map(|(a, _)| a).collect())
            .map_err(|e| format!("{file}: {e}"))?;
        Ok(Sweep {
            file_name,
            text,
            base,
            scenario: name,
            variants,
            limits,
            vary_args: vary.to_vec(),
            simulate,
        })
    }

    /// How many variants.
    pub fn count(&self) -> usize {
        self.variants.count()
    }

    /// A hash of what the sweep plans: the text, the keys and values, the limits.
    fn fingerprint(&self) -> String {
        let mut parts: Vec<Vec<u8>> = vec![self.text.as_bytes().to_vec()];
        for a in self.variants.axes() {
            parts.push(a.key.as_bytes().to_vec());
            parts.extend(a.values.iter().map(|v| v.to_string().trim().as_bytes().to_vec()));
        }
        parts.push(self.limits.max_flows.to_le_bytes().to_vec());
        parts.push(self.limits.max_instances.to_le_bytes().to_vec());
        if self.simulate {
            parts.push(b"simulate".to_vec());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        format!("{:016x}", fnv1a(&refs))
    }

    /// Variant `i`, planned with `threads` for its blast radius (and simulated if the sweep
    /// simulates).
    fn row(&self, i: usize, threads: usize) -> Row {
        let values = self.variants.values(i).into_iter().map(axes::label).collect();
        let planned = self.variants.text(&self.base, i).and_then(|text| {
            let placed = scenario::load_with(&self.file_name, &text, &self.limits)
                .map_err(|e| e.to_string())?;
            let plan = crate::plan::plan_placed_on(&placed, threads)?;
            Ok((placed, plan))
        });
        let (placed, report) = match planned {
            Ok(done) => done,
            Err(e) => {
                return Row { variant: i, values, plan: None, simulated: None, error: Some(e) };
            }
        };
        let mut row = Row {
            variant: i,
            values,
            plan: Some(Headline::of(&report)),
            simulated: None,
            error: None,
        };
        if self.simulate {
            let options = crate::run::RunOptions { progress: false, pcap: Vec::new(), live: false };
            match crate::run::run(&self.file_name, &placed, &options) {
                Ok(run) => row.simulated = Some(table::Simulated::of(&run)),
                Err(e) => row.error = Some(format!("simulation: {e}")),
            }
        }
        row
    }

    /// Plans the variants (all, or `shard`'s), `jobs` at a time.
    pub fn plan(&self, shard: Option<Shard>, jobs: usize) -> SweepTable {
        let mine: Vec<usize> =
            (0..self.count()).filter(|&i| shard.is_none_or(|s| s.holds(i))).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = jobs.clamp(1, mine.len().max(1));
        let threads_per_plan = (cores / jobs).max(1);
        let progress = indicatif::ProgressBar::new(mine.len() as u64);
        let next = AtomicUsize::new(0);
        let rows: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; mine.len()]);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = mine.get(k) else { break };
                        let row = self.row(i, threads_per_plan);
                        rows.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(row);
                        progress.inc(1);
                    }
                });
            }
        });
        progress.finish_and_clear();
        let rows = rows.into_inner().unwrap_or_else(|e| e.into_inner());
        SweepTable {
            scenario: self.scenario.clone(),
            keys: self.variants.axes().iter().map(|a| a.key.clone()).collect(),
            variants: self.count(),
            fingerprint: self.fingerprint(),
            shard,
            simulate: self.simulate,
            rows: rows.into_iter().flatten().collect(),
        }
    }
}

/// Writes sweep.csv, sweep.json and sweep.svg into `dir`; returns their paths.
pub fn write_out(dir: &Path, table: &SweepTable) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = [
        ("sweep.csv", table.to_csv()?),
        (table::TABLE_JSON, table.to_json()?),
        ("sweep.svg", plot::svg(table)?),
    ];
    let mut written = Vec::new();
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// The table as the options ask: JSON, CSV or text.
fn render(table: &SweepTable, args: &SweepArgs) -> Result<String, String> {
    if args.json {
        table.to_json()
    } else if args.csv {
        table.to_csv()
    } else {
        Ok(table.to_string())
    }
}

/// `vnic-lab sweep`.
pub fn run(args: &SweepArgs) -> Result<String, String> {
    if let Some(dir) = &args.merge {
        let table = table::merge(dir)?;
        let out = args.out.as_deref().unwrap_or(dir);
        let written = write_out(out, &table)?;
        let mut text = render(&table, args)?;
        if !args.json && !args.csv {
            text.push_str(&format!("\nwrote {}\n", written.join(", ")));
        }
        return Ok(text);
    }
    let Some(file) = &args.file else {
        return Err("sweep: give a scenario FILE, or --merge DIR".into());
    };
    let sweep = Sweep::load(file, &args.vary, args.limits.limits(), args.simulate)?;
    let tasks = args.tasks.unwrap_or(sweep.count().min(DEFAULT_MAX_TASKS));
    if tasks == 0 {
        return Err("--tasks 0: a sweep needs at least one task".into());
    }
    if let Some(dir) = &args.slurm {
        return cluster::write_slurm(dir, &sweep, tasks);
    }
    if let Some(dir) = &args.k8s {
        return cluster::write_k8s(dir, &sweep, tasks, &args.image, &args.claim);
    }
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err("--jobs 0: give at least 1".into());
    }
    let table = sweep.plan(args.shard, jobs);
    let mut text = render(&table, args)?;
    if let Some(dir) = &args.out {
        let written = write_out(dir, &table)?;
        if !args.json && !args.csv {
            text.push_str(&format!("\nwrote {}\n", written.join(", ")));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the reference test vectors); our separator
        // byte 0xff then goes through one more round.
        let mut h: u64 = 0xaf63_dc4c_8601_ec8c;
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
        assert_eq!(fnv1a(&[b"a"]), h);
    }
}
