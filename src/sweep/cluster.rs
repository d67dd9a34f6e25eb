//! A sweep on a cluster scheduler the user already has: a Slurm job array or a Kubernetes
//! Indexed Job, each task one shard (`--shard K/N --out DIR/part-K`), joined afterwards by
//! `vnic-lab sweep --merge DIR`.
//!
//! Slurm: `DIR/sweep.sbatch` (`#SBATCH --array=0-<N-1>`) runs this binary on a copy of the
//! scenario in DIR, so the job plans what was asked even if the file changes meanwhile; DIR
//! must be on storage every node sees. Kubernetes: `DIR/sweep-job.yaml` holds a ConfigMap with
//! the scenario and a Job with `completionMode: Indexed`, the shard taken from the pod's
//! completion index; parts go to a PersistentVolumeClaim.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Sweep;

/// `s` quoted for a POSIX shell: inside single quotes, a quote written as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `dir` as an absolute path (a job runs elsewhere than here).
fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The arguments every shard is given besides its shard and output.
fn shard_args(sweep: &Sweep, scenario: &str) -> Vec<String> {
    let mut args = vec!["sweep".to_string(), scenario.to_string()];
    for v in &sweep.vary_args {
        args.extend(["--vary".to_string(), v.clone()]);
    }
    args.extend([
        "--max-flows".to_string(),
        sweep.limits.max_flows.to_string(),
        "--max-instances".to_string(),
        sweep.limits.max_instances.to_string(),
    ]);
    if sweep.simulate {
        args.push("--simulate".to_string());
    }
    args
}

/// Copies the scenario into `dir` under its own name; returns the copy's path.
fn copy_scenario(dir: &Path, sweep: &Sweep) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join(&sweep.file_name);
    std::fs::write(&copy, &sweep.text).map_err(|e| format!("{}: {e}", copy.display()))?;
    Ok(copy)
}

/// The Slurm job-array script of `sweep` in `tasks` shards, its parts under `dir`.
pub fn slurm_script(
    exe: &Path,
    dir: &Path,
    scenario: &Path,
    sweep: &Sweep,
    tasks: usize,
) -> String {
    let dir_s = dir.display().to_string();
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(
        s,
        "# vnic-lab sweep of {} ({} variants in {tasks} shards).",
        sweep.scenario,
        sweep.count()
    );
    let _ =
        writeln!(s, "# Submit: sbatch --wait {}", shell_quote(&format!("{dir_s}/sweep.sbatch")));
    let _ = writeln!(s, "# Then:   vnic-lab sweep --merge {}", shell_quote(&dir_s));
    let _ = writeln!(s, "#SBATCH --job-name=vnic-lab-sweep");
    let _ = writeln!(s, "#SBATCH --array=0-{}", tasks - 1);
    let _ = writeln!(s, "#SBATCH --cpus-per-task=1");
    let _ = writeln!(s, "#SBATCH --output={dir_s}/slurm-%A_%a.out");
    s.push_str("set -euo pipefail\n");
    let mut cmd = vec![shell_quote(&exe.display().to_string())];
    cmd.extend(shard_args(sweep, &scenario.display().to_string()).iter().map(|a| shell_quote(a)));
    cmd.push("--jobs".into());
    cmd.push("\"${SLURM_CPUS_PER_TASK:-1}\"".into());
    cmd.push("--shard".into());
    cmd.push(format!("\"$SLURM_ARRAY_TASK_ID/{tasks}\""));
    cmd.push("--out".into());
    cmd.push(format!("{}\"/part-$SLURM_ARRAY_TASK_ID\"", shell_quote(&dir_s)));
    let _ = writeln!(s, "exec {}", cmd.join(" "));
    s
}

/// `sweep --slurm DIR`: writes the scenario's copy and `DIR/sweep.sbatch`.
pub fn write_slurm(dir: &Path, sweep: &Sweep, tasks: usize) -> Result<String, String> {
    let dir = absolute(dir)?;
    let copy = copy_scenario(&dir, sweep)?;
    let exe = std::env::current_exe().map_err(|e| format!("where is this binary? {e}"))?;
    let script = dir.join("sweep.sbatch");
    std::fs::write(&script, slurm_script(&exe, &dir, &copy, sweep, tasks))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    Ok(format!(
        "wrote {} ({} variants in {tasks} array tasks) and {}\nsubmit:  sbatch --wait {}\nthen:    vnic-lab sweep --merge {}\n",
        script.display(),
        sweep.count(),
        copy.display(),
        shell_quote(&script.display().to_string()),
        shell_quote(&dir.display().to_string()),
    ))
}

/// `s` as a YAML scalar: JSON's double-quoted string is YAML's too.
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A Kubernetes object name from `s`: lowercase letters, digits and `-`, at most 63.
fn k8s_name(s: &str) -> String {
    let mut name: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// The Kubernetes manifest of `sweep` in `tasks` shards: a ConfigMap holding the scenario, and
/// an Indexed Job whose pod `K` plans shard `K` into the claim's `part-K`.
pub fn k8s_manifest(sweep: &Sweep, tasks: usize, image: &str, claim: &str) -> String {
    let name =
        k8s_name(&format!("vnic-lab-sweep-{}-{}", sweep.scenario, &sweep.fingerprint()[..8]));
    let key: String = sweep
        .file_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' })
        .collect();
    let mut args = shard_args(sweep, &format!("/scenario/{key}"));
    args.extend([
        "--jobs".into(),
        "1".into(),
        "--shard".into(),
        format!("$(VNIC_LAB_SHARD)/{tasks}"),
        "--out".into(),
        "/results/part-$(VNIC_LAB_SHARD)".into(),
    ]);
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# vnic-lab sweep of {} ({} variants in {tasks} shards).",
        sweep.scenario,
        sweep.count()
    );
    let _ = writeln!(
        y,
        "# kubectl apply -f sweep-job.yaml; kubectl wait --for=condition=complete job/{name}"
    );
    let _ = writeln!(
        y,
        "# then copy the claim's part-* directories here and run: vnic-lab sweep --merge DIR"
    );
    y.push_str("apiVersion: v1\nkind: ConfigMap\nmetadata:\n");
    let _ = writeln!(y, "  name: {}", yaml_str(&name));
    y.push_str("data:\n");
    let _ = writeln!(y, "  {}: {}", yaml_str(&key), yaml_str(&sweep.text));
    y.push_str("---\napiVersion: batch/v1\nkind: Job\nmetadata:\n");
    let _ = writeln!(y, "  name: {}", yaml_str(&name));
    y.push_str("spec:\n  completionMode: Indexed\n");
    let _ = writeln!(y, "  completions: {tasks}");
    let _ = writeln!(y, "  parallelism: {tasks}");
    y.push_str("  backoffLimitPerIndex: 2\n");
    y.push_str("  template:\n    spec:\n      restartPolicy: Never\n      containers:\n");
    y.push_str("        - name: sweep\n");
    let _ = writeln!(y, "          image: {}", yaml_str(image));
    let _ = writeln!(y, "          command: [{}]", yaml_str("vnic-lab"));
    y.push_str("          args:\n");
    for a in &args {
        let _ = writeln!(y, "            - {}", yaml_str(a));
    }
    y.push_str("          env:\n            - name: VNIC_LAB_SHARD\n              valueFrom:\n");
    y.push_str("                fieldRef:\n");
    let _ = writeln!(
        y,
        "                  fieldPath: {}",
        yaml_str("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    y.push_str("          volumeMounts:\n");
    y.push_str("            - name: scenario\n              mountPath: /scenario\n              readOnly: true\n");
    y.push_str("            - name: results\n              mountPath: /results\n");
    y.push_str("      volumes:\n        - name: scenario\n          configMap:\n");
    let _ = writeln!(y, "            name: {}", yaml_str(&name));
    y.push_str("        - name: results\n          persistentVolumeClaim:\n");
    let _ = writeln!(y, "            claimName: {}", yaml_str(claim));
    y
}

/// `sweep --k8s DIR`: writes `DIR/sweep-job.yaml`.
pub fn write_k8s(
    dir: &Path,
    sweep: &Sweep,
    tasks: usize,
    image: &str,
    claim: &str,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("sweep-job.yaml");
    std::fs::write(&path, k8s_manifest(sweep, tasks, image, claim))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "wrote {} ({} variants in {tasks} indexed completions)\napply:   kubectl apply -f {}\n",
        path.display(),
        sweep.count(),
        shell_quote(&path.display().to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn kubernetes_names_are_dns_labels() {
        assert_eq!(k8s_name("vnic-lab-sweep-HPC_job-0a1b2c3d"), "vnic-lab-sweep-hpc-job-0a1b2c3d");
        assert!(k8s_name(&"x".repeat(100)).len() <= 63);
    }
}
