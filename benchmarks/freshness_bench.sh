#!/usr/bin/env bash
# Freshness end to end: ingest acknowledgement of an event that makes a user enter a
# segment -> receipt of the signed `segment-entered` webhook, at a steady background
# ingest rate with 100 segments (segments.interval = 1h, so only the evaluation after each
# profile change counts). Usage: benchmarks/freshness_bench.sh [freshness-bench flags].
# Writes benchmarks/results/freshness.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark-benchmarks -p tidemark --bins
"$CARGO_TARGET_DIR/release/freshness-bench" "$@"
