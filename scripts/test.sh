#!/usr/bin/env bash
# Every test of the workspace: unit, integration, property and cross-process tests, the loom
# model checks of the rings (built with --cfg loom in their own target directory so that ordinary
# builds keep std's atomics and their cache), then the VFIO lab in a QEMU guest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Python's HdrHistogram reads the run's .hlog files back, and Python's jsonschema checks every
# report the tests produce against `vnic-lab schema` (tests/cli.rs).
python3 -m pip install -q --disable-pip-version-check hdrhistogram jsonschema
# A headless Chromium opens report.html (tests/cli.rs): Debian's package, installed if missing.
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "test.sh: FAIL: chromium is missing and not root to install it" >&2
        exit 1
    fi
    echo "test.sh: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
VNIC_LAB_REQUIRE_HDRH=1 VNIC_LAB_REQUIRE_JSONSCHEMA=1 VNIC_LAB_REQUIRE_CHROMIUM=1 \
  cargo test --workspace --locked
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p vnic --test loom --release --locked
# The VFIO lab against a real kernel: a QEMU guest with an emulated IOMMU and an SR-IOV NVMe
# device (installs qemu-system-x86, a Debian kernel and busybox-static if they are missing).
bash scripts/vfio-lab-test.sh
# `sweep --slurm` submitted to a one-node Slurm cluster (installs slurm-wlm and munge if missing).
bash scripts/slurm-sweep-test.sh
