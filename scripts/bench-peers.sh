#!/usr/bin/env bash
# vnic against DPDK, measured the same way in the same run, interleaved over ROUNDS rounds
# (default 5), each part one table of both raw figures per round, their medians, the ratio and
# the command lines (issue 18):
#
# * rings: DPDK's ring_perf_autotest (two physical cores, SP/SC, bulk 32, 16-byte elements,
#   cycles per element of the enqueuer plus the dequeuer) against benches/ring_cycles.rs (the
#   submission ring, the same loop);
# * vf: DPDK memif between two testpmd processes (a client sending with `txonly`, a server
#   receiving with `rxonly`, each forwarding on its own CPU: two CPUs) against `vnic-lab
#   vf-demo` (VF 0 -> embedded switch -> VF 1: a guest thread driving both VFs on CPU 0 and the
#   device engine's thread on CPU 1, pinned: two CPUs), 64-byte and 1500-byte frames, burst 32,
#   frames per second received.
#
#   bash scripts/bench-peers.sh [ROUNDS] [rings|vf|all]
#
# Installs Debian's dpdk and dpdk-dev (which holds dpdk-test) if dpdk-test is missing. Not run by CI: it takes minutes and
# measures nothing CI can judge. A shared 2-vCPU VM is noisy: only ratios within one run mean
# anything.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
part="${2:-all}"
case "$part" in rings|vf|all) ;; *) echo "bench-peers: part is rings, vf or all, not $part" >&2; exit 2 ;; esac

if ! command -v dpdk-test >/dev/null || ! command -v dpdk-testpmd >/dev/null; then
    echo "bench-peers: installing dpdk" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq dpdk dpdk-dev >/dev/null
fi

# The VF path. DPDK: a memif server (rxonly, CPU 1) and client (txonly, CPU 0), each process's
# main lcore sharing its forwarding CPU (it only prints statistics); the figure is the median of
# the server's Rx-pps over the last seconds of a run.
memif_sock=/tmp/vnic-lab-memif.sock
testpmd_base=(dpdk-testpmd --no-huge -m 1024 --no-pci --log-level=lib.eal:error)
memif_round() {
    local len=$1 log
    log=$(mktemp)
    rm -f "$memif_sock"
    timeout -s INT 16 "${testpmd_base[@]}" --lcores=0@1,1@1 --file-prefix=vnic-rx \
        --vdev="net_memif0,role=server,socket=$memif_sock" -- \
        --forward-mode=rxonly --burst=32 --total-num-mbufs=16384 --stats-period=1 \
        > "$log" 2>&1 &
    local rx=$!
    sleep 2
    timeout -s INT 12 "${testpmd_base[@]}" --lcores=0@0,1@0 --file-prefix=vnic-tx \
        --vdev="net_memif0,role=client,socket=$memif_sock" -- \
        --forward-mode=txonly --txpkts="$len" --burst=32 --total-num-mbufs=16384 \
        --stats-period=1 > /dev/null 2>&1 || true
    wait "$rx" || true
    # Rx-pps once a second; the seconds before the client came and the partial ones at either
    # end of its run are left out, the median of the rest is the figure.
    grep -o 'Rx-pps: *[0-9]*' "$log" | awk '$2 > 0 { print $2 }' | sed '1d;$d' | sort -n \
        | awk '{ v[n++] = $1 } END { if (n < 1) exit 1; print v[int(n / 2)] }'
    local rc=$?
    rm -f "$log"
    return $rc
}
# The guest thread on CPU 0 and the engine on CPU 1, pinned as testpmd pins its lcores; about
# three seconds of frames (memif's figure is the median of about ten one-second readings).
vf_round() {
    local len=$1 frames=40000000
    [ "$len" -gt 256 ] && frames=12000000
    target/release/vnic-lab vf-demo --frames "$frames" --frame "$len" --burst 32 --cpus 0,1 \
        | awk '/received/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "Mpps,") print $i * 1e6 }'
}
vf_part() {
    command -v dpdk-testpmd >/dev/null || { echo "bench-peers: no dpdk-testpmd" >&2; exit 1; }
    cargo build --release --locked --bin vnic-lab -q
    local results=()
    for len in 64 1500; do
        for r in $(seq 1 "$rounds"); do
            d=$(memif_round "$len") || { echo "bench-peers: no Rx-pps from testpmd (memif, $len B)" >&2; exit 1; }
            o=$(vf_round "$len") || { echo "bench-peers: no Mpps from vf-demo" >&2; exit 1; }
            echo "round $r, $len B: memif $d, vnic $o frames/s" >&2
            results+=("$len $r $d $o")
        done
    done
    python3 - "${results[@]}" <<'PY'
import statistics, sys
rows = [x.split() for x in sys.argv[1:]]
print("VF -> VF against DPDK memif, burst 32, two CPUs on each side, frames per second received; "
      f"{len(rows) // 2} interleaved rounds per size\n")
print("| frame | round | DPDK memif (txonly -> rxonly) | vnic VF -> VF | vnic / memif |")
print("| ---: | ---: | ---: | ---: | ---: |")
for size in ("64", "1500"):
    these = [r for r in rows if r[0] == size]
    for _, r, d, o in these:
        print(f"| {size} B | {r} | {float(d) / 1e6:.2f} Mpps | {float(o) / 1e6:.2f} Mpps | {float(o) / float(d):.2f}× |")
    md = statistics.median(float(r[2]) for r in these)
    mo = statistics.median(float(r[3]) for r in these)
    ratio = statistics.median(float(r[3]) / float(r[2]) for r in these)
    print(f"| {size} B | median | {md / 1e6:.2f} Mpps | {mo / 1e6:.2f} Mpps | {ratio:.2f}× (median of rounds) |")
print("\nDPDK: dpdk-testpmd --no-huge -m 1024 --no-pci --lcores=0@1,1@1 --vdev=net_memif0,role=server,... "
      "-- --forward-mode=rxonly --burst=32 --stats-period=1; and --lcores=0@0,1@0 "
      "--vdev=net_memif0,role=client,... -- --forward-mode=txonly --txpkts=LEN --burst=32")
print("vnic: target/release/vnic-lab vf-demo --frames 40000000 (1500 B: 12000000) --frame LEN --burst 32 --cpus 0,1")
PY
}

if [ "$part" != rings ]; then
    vf_part
    [ "$part" = vf ] && exit 0
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
