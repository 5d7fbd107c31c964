#!/usr/bin/env bash
# The webhook fan-out benchmark: 100 local endpoints in a separate receiver process that
# verifies every signature. Usage: benchmarks/webhooks_bench.sh [extra webhooks-bench run flags].
# Writes benchmarks/results/webhooks.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark-benchmarks -p tidemark --bins
"$CARGO_TARGET_DIR/release/webhooks-bench" run "$@"
