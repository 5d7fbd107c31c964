#!/usr/bin/env bash
# The CSV import benchmark (issue: users API): `tidemark import` of 1,000,000 rows x 20
# columns, against DuckDB loading the same CSV into Parquet. Writes benchmarks/results/import.json.
# Usage: benchmarks/import_bench.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q duckdb==1.4.2
cargo build --release -p tidemark-benchmarks -p tidemark --bins
WORK=$(mktemp -d /var/tmp/tidemark-import-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p benchmarks/results
python3 benchmarks/import_bench.py "$CARGO_TARGET_DIR/release/tidemark" "$WORK" "$ROWS" | tee benchmarks/results/import.json
