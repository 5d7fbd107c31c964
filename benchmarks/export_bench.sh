#!/usr/bin/env bash
# The bulk-export benchmark: a scheduled export of 10 million events (one day) to Parquet
# (zstd) on the local store, against DuckDB COPY of the same rows, in the same order, from
# the same Parquet files (both on 2 threads). Runs alternate three times; the best of each
# counts.
# Usage: benchmarks/export_bench.sh [EVENTS]   (default 10,000,000)
# Writes benchmarks/results/export.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q duckdb==1.4.2
cargo build --release -p tidemark-benchmarks --bin jobs-bench --bin export-bench
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d /var/tmp/tidemark-export-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
DATA="$WORK/data"

"$BIN/jobs-bench" generate --data "$DATA" --events "$EVENTS" --users 1000000 --days 1 | tee "$WORK/generate.json"
sync
for i in 1 2 3; do
  rm -rf "$WORK/out$i" "$WORK/duck$i"
  "$BIN/export-bench" --data "$DATA" --out "$WORK/out$i" | tee "$WORK/export$i.json"
  read -r FROM TO < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["from"], r["to"])' "$WORK/export$i.json")
  python3 benchmarks/export_duckdb.py "$DATA" "$WORK/duck$i" "$FROM" "$TO" | tee "$WORK/duckdb$i.json"
done

python3 - "$WORK" "$EVENTS" <<'PY'
import json, sys, os
work, events = sys.argv[1], int(sys.argv[2])
load = lambda n: json.load(open(os.path.join(work, n + ".json")))
ours = [load(f"export{i}") for i in (1, 2, 3)]
duck = [load(f"duckdb{i}") for i in (1, 2, 3)]
assert ours[0]["rows"] == duck[0]["rows"], (ours[0], duck[0])
best_t = min(r["seconds"] for r in ours)
best_d = min(d["seconds"] for d in duck)
result = {
    "events": events,
    "rows": ours[0]["rows"],
    "threads": 2,
    "tidemark_seconds": [r["seconds"] for r in ours],
    "duckdb_seconds": [d["seconds"] for d in duck],
    "tidemark_rows_per_second": ours[0]["rows"] / best_t,
    "duckdb_rows_per_second": duck[0]["rows"] / best_d,
    "tidemark_over_duckdb_time": best_t / best_d,
    "tidemark_bytes": ours[0]["bytes"],
    "tidemark_files": ours[0]["files"],
    "duckdb_bytes": duck[0]["bytes"],
    "tidemark_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
    "duckdb_peak_rss_mb": max(d["peak_rss_mb"] for d in duck),
    "duckdb_version": duck[0]["duckdb_version"],
}
json.dump(result, open("benchmarks/results/export.json", "w"), indent=2)
print(json.dumps(result, indent=2))
print(f"tidemark / DuckDB time = {result['tidemark_over_duckdb_time']:.2f} (target <= 1.0)")
PY
