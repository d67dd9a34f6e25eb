#!/usr/bin/env bash
# Our simulator against ns-3 on the same two-node topology, in the same run: a 100 Gbps
# point-to-point link with 5 us of delay and constant-rate UDP flows (64 B: 2 Mpps over 8 flows;
# 1500 B: 10 Gbps over 8 flows; 9000 B: 1.5 Gbps, one flow), one simulated second each. Rounds
# alternate ns-3 and ours; the table gives both simulated frames per wall second and the median
# of the per-round ratios. Installs Debian's libns3-dev (with libgsl-dev, which its pkg-config
# files link) and g++ when missing (needs root).
#
#   bash scripts/bench-ns3.sh            # ROUNDS=3 SECONDS_SIMULATED=1 by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
SECONDS_SIMULATED="${SECONDS_SIMULATED:-1}"
MODULES="ns3-core ns3-network ns3-internet ns3-point-to-point ns3-applications"

if ! pkg-config --exists $MODULES 2>/dev/null || ! command -v g++ >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "bench-ns3: libns3-dev, libgsl-dev and g++ are missing and this is not root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libns3-dev libgsl-dev g++ pkg-config >/dev/null
fi
mkdir -p target/ns3
# shellcheck disable=SC2046
g++ -O2 -o target/ns3/p2p_udp benches/ns3/p2p_udp.cc $(pkg-config --cflags --libs $MODULES)
cargo bench --bench sim --no-run --locked >/dev/null 2>&1

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
rate() { awk -v f="$1" -v w="$2" 'BEGIN { printf "%.0f", f / w }'; }

echo "| frame | offered | flows | ns-3 frames per wall s | vnic-lab frames per wall s | vnic-lab / ns-3 (median of $ROUNDS rounds) |"
echo "|---:|---:|---:|---:|---:|---:|"
for c in "64 1.024 8" "1500 10 8" "9000 1.5 1"; do
  set -- $c
  ratios=(); ours=(); theirs=()
  for _ in $(seq "$ROUNDS"); do
    n=$(target/ns3/p2p_udp "$1" "$2" "$3" "$SECONDS_SIMULATED")
    v=$(cargo bench --bench sim --locked -q -- --case "$1" "$2" "$3" "$SECONDS_SIMULATED" 2>/dev/null | grep frames=)
    rn=$(rate "$(echo "$n" | field frames)" "$(echo "$n" | field wall_s)")
    rv=$(rate "$(echo "$v" | field frames)" "$(echo "$v" | field wall_s)")
    theirs+=("$rn"); ours+=("$rv")
    ratios+=("$(awk -v a="$rv" -v b="$rn" 'BEGIN { printf "%.2f", a / b }')")
  done
  median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
  echo "| $1 B | $2 Gbps | $3 | $(median "${theirs[@]}") | $(median "${ours[@]}") | $(median "${ratios[@]}")x |"
done
echo
echo "ns-3: target/ns3/p2p_udp FRAME GBPS FLOWS $SECONDS_SIMULATED (benches/ns3/p2p_udp.cc, ns-3 $(pkg-config --modversion ns3-core))"
echo "ours: cargo bench --bench sim -- --case FRAME GBPS FLOWS $SECONDS_SIMULATED"
