#!/usr/bin/env bash
# Rings against DPDK's rte_ring, measured the same way in the same run (issue 18):
# DPDK's ring_perf_autotest (two physical cores, SP/SC, bulk 32, 16-byte elements, cycles per
# element of the enqueuer plus the dequeuer) and benches/ring_cycles.rs (the submission ring,
# the same loop), interleaved over ROUNDS rounds (default 5), then one table: both raw
# figures per round, their medians, the ratio, and the command lines.
#
#   bash scripts/bench-peers.sh [ROUNDS]
#
# Installs Debian's dpdk and dpdk-dev (which holds dpdk-test) if dpdk-test is missing. Not run by CI: it takes minutes and
# measures nothing CI can judge. A shared 2-vCPU VM is noisy: only ratios within one run mean
# anything.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"

if ! command -v dpdk-test >/dev/null; then
    echo "bench-peers: installing dpdk" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq dpdk dpdk-dev >/dev/null
fi

dpdk_cmd=(dpdk-test --no-huge -m 512 -l 0-1 --no-pci --log-level=lib.eal:error)
cargo bench --locked --bench ring_cycles --no-run
ours_bin=$(cargo bench --locked --bench ring_cycles --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ring_cycles" and m.get("executable"):
        print(m["executable"])')

# DPDK's figure: in the "two physical cores" section of the 16-byte element run, the SP/SC bulk
# line of size 32 (its last number).
dpdk_round() {
    echo ring_perf_autotest | "${dpdk_cmd[@]}" 2>/dev/null | awk '
        /###/ { two = ($0 ~ /two physical cores/) }
        two && /16B/ && /SP\/SC/ && /bulk/ && /size: 32\)/ { v = $NF }
        END { if (v == "") exit 1; print v }'
}
ours_round() {
    "$ours_bin" 1 | awk '/cycles per element/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "cycles") v = $i } END { if (v == "") exit 1; print v }'
}

tsc_mhz=$("$ours_bin" 1 | awk '/^tsc:/ { print $2 }')
dpdk=() ours=()
for r in $(seq 1 "$rounds"); do
    d=$(dpdk_round) || { echo "bench-peers: no SP/SC bulk 32 16B figure from dpdk-test" >&2; exit 1; }
    o=$(ours_round) || { echo "bench-peers: no figure from $ours_bin" >&2; exit 1; }
    dpdk+=("$d") ours+=("$o")
    echo "round $r: rte_ring $d, vnic $o cycles per element" >&2
done

python3 - "$tsc_mhz" "${dpdk[*]}" "${ours[*]}" "${dpdk_cmd[*]}" "$ours_bin" <<'PY'
import statistics, sys
mhz = float(sys.argv[1])
dpdk = [float(x) for x in sys.argv[2].split()]
ours = [float(x) for x in sys.argv[3].split()]
ns = lambda c: c / mhz * 1e3
print(f"Rings, SP/SC, bulk 32, 16-byte elements, two threads on two cores; cycles per element "
      f"(enqueuer + dequeuer), TSC {mhz:.0f} MHz; {len(dpdk)} interleaved rounds\n")
print("| round | DPDK rte_ring | vnic SubmissionRing | rte_ring / vnic |")
print("| ---: | ---: | ---: | ---: |")
for i, (d, o) in enumerate(zip(dpdk, ours), 1):
    print(f"| {i} | {d:.2f} ({ns(d):.2f} ns) | {o:.2f} ({ns(o):.2f} ns) | {d / o:.2f}× |")
md, mo = statistics.median(dpdk), statistics.median(ours)
ratios = [d / o for d, o in zip(dpdk, ours)]
print(f"| median | {md:.2f} ({ns(md):.2f} ns) | {mo:.2f} ({ns(mo):.2f} ns) | "
      f"{statistics.median(ratios):.2f}× (median of rounds) |")
print(f"\nDPDK: echo ring_perf_autotest | {sys.argv[4]}")
print(f"vnic: {sys.argv[5]} 1   (benches/ring_cycles.rs)")
PY
