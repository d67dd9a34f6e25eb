#!/usr/bin/env bash
# `vnic-lab sweep --slurm` on a real Slurm: brings up a one-node cluster (slurm-one-node.sh),
# writes the job array of scenarios/sweep-hpc.toml in 4 tasks, submits it with `sbatch --wait`,
# merges the parts and checks the merged table and plot equal a local sweep's byte for byte.
# Uses the debug binary `cargo test` built.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug/vnic-lab
[ -x "$bin" ] || cargo build --locked
bash scripts/slurm-one-node.sh
work=$(mktemp -d /tmp/vnic-lab-slurm.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" sweep scenarios/sweep-hpc.toml --out "$work/local" > /dev/null
"$bin" sweep scenarios/sweep-hpc.toml --slurm "$work/job" --tasks 4
sbatch --wait "$work/job/sweep.sbatch"
"$bin" sweep --merge "$work/job" > /dev/null
for f in sweep.csv sweep.json sweep.svg; do
    if ! cmp "$work/local/$f" "$work/job/$f"; then
        echo "slurm-sweep-test.sh: FAIL: the merged $f differs from the local sweep's" >&2
        tail -5 "$work"/job/slurm-*.out >&2 || true
        exit 1
    fi
done
parts=$(ls -d "$work"/job/part-* | wc -l)
echo "slurm-sweep-test.sh: ok: 4 array tasks ($parts parts) merged equal the local sweep"
