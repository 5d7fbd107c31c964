#!/usr/bin/env bash
# Console pages over 1M profiles, timed in Debian's Chromium (Playwright): the customers
# table (four filters) and segment previews (three definitions), beside the API call each
# page makes. Usage: benchmarks/console_bench.sh [USERS] (default 1,000,000). Writes
# benchmarks/results/console.json. Needs `apt install chromium` and `pip install playwright`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark
python3 benchmarks/console_bench.py "$CARGO_TARGET_DIR/release/tidemark" "${1:-1000000}" benchmarks/results/console.json
