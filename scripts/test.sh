#!/usr/bin/env bash
# Every test of the workspace: unit, integration, property and cross-process tests, then the loom
# model checks of the rings (built with --cfg loom in their own target directory so that ordinary
# builds keep std's atomics and their cache).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p vnic --test loom --release --locked
