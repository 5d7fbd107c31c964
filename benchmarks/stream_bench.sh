#!/usr/bin/env bash
# SSE throughput (GET /v1/{env}/events/stream, one consumer) against the ingest rate of
# the same run, and ingest with and without a stream open.
# Usage: benchmarks/stream_bench.sh [EVENTS]   (default 1,000,000). Writes
# benchmarks/results/stream.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark
python3 benchmarks/stream_bench.py "$CARGO_TARGET_DIR/release/tidemark" "${1:-1000000}" benchmarks/results/stream.json
