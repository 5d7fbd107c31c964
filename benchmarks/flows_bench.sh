#!/usr/bin/env bash
# Flows under load (release build): starts/s over the API next to ingest of events of the
# same size, trigger-event -> signed webhook latency, users entering one segment at once,
# and runs waiting in a delay (RSS and release time).
# Usage: benchmarks/flows_bench.sh [flows-bench flags, e.g. --only starts,latency].
# Writes benchmarks/results/flows.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark-benchmarks -p tidemark --bins
"$CARGO_TARGET_DIR/release/flows-bench" "$@"
