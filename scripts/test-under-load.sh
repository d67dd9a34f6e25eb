#!/usr/bin/env bash
# The README's test command with two CPU-bound processes beside it, as a loaded CI machine
# would be: tests assert behaviour, never speed, so every one must still pass. Run before
# submitting (CI runs the unloaded suite only). Usage: bash scripts/test-under-load.sh [burners]
set -euo pipefail
cd "$(dirname "$0")/.."
burners=${1:-2}
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq "$burners"); do
  sh -c 'while :; do :; done' &
  pids+=($!)
done
echo "test-under-load: $burners CPU burners running (pids ${pids[*]})"
start=$(date +%s)
bash scripts/test.sh
echo "test-under-load: passed beside $burners burners in $(( $(date +%s) - start )) s"
