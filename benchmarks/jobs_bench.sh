#!/usr/bin/env bash
# The jobs benchmark: `jobs rebuild` of profiles + event_stats against DuckDB on the same
# Parquet files (both on 2 threads), and an incremental run after appending 1% more events.
# Usage: benchmarks/jobs_bench.sh [EVENTS] [USERS]   (default 10,000,000 events, 1,000,000 users)
# Writes benchmarks/results/jobs.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
USERS=${2:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q duckdb==1.4.2
cargo build --release -p tidemark-benchmarks --bin jobs-bench
BIN="$CARGO_TARGET_DIR/release/jobs-bench"
WORK=$(mktemp -d /var/tmp/tidemark-jobs-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
DATA="$WORK/data"

"$BIN" generate --data "$DATA" --events "$EVENTS" --users "$USERS" | tee "$WORK/generate.json"
# Alternate the two engines twice, so both see a warm page cache; the best of each counts.
"$BIN" rebuild --data "$DATA" | tee "$WORK/rebuild1.json"
python3 benchmarks/jobs_duckdb.py "$DATA" "$WORK/duck1" | tee "$WORK/duckdb1.json"
"$BIN" rebuild --data "$DATA" | tee "$WORK/rebuild2.json"
python3 benchmarks/jobs_duckdb.py "$DATA" "$WORK/duck2" | tee "$WORK/duckdb2.json"
"$BIN" append --data "$DATA" --fraction 0.01 --users "$USERS" | tee "$WORK/append.json"
"$BIN" incremental --data "$DATA" | tee "$WORK/incremental.json"

python3 - "$WORK" "$EVENTS" "$USERS" <<'PY'
import json, sys, os
work, events, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load = lambda n: json.load(open(os.path.join(work, n + ".json")))
rebuild = [load("rebuild1"), load("rebuild2")]
duck = [load("duckdb1"), load("duckdb2")]
inc = load("incremental")
best_r = min(r["seconds"] for r in rebuild)
best_d = min(d["seconds"] for d in duck)
rows = {r["job"]: r["rows_written"] for r in rebuild[0]["reports"]}
assert rows["profiles"] == duck[0]["profiles_rows"], (rows, duck[0])
assert rows["event_stats"] == duck[0]["event_stats_rows"], (rows, duck[0])
result = {
    "events": events,
    "users": users,
    "threads": 2,
    "rebuild_seconds": [r["seconds"] for r in rebuild],
    "duckdb_seconds": [d["seconds"] for d in duck],
    "rebuild_over_duckdb": best_r / best_d,
    "rebuild_peak_rss_mb": max(r["peak_rss_mb"] for r in rebuild),
    "duckdb_peak_rss_mb": max(d["peak_rss_mb"] for d in duck),
    "profiles_rows": rows["profiles"],
    "event_stats_rows": rows["event_stats"],
    "incremental_events": load("append")["events"],
    "incremental_seconds": inc["seconds"],
    "incremental_over_rebuild": inc["seconds"] / best_r,
    "incremental_peak_rss_mb": inc["peak_rss_mb"],
    "duckdb_version": duck[0]["duckdb_version"],
}
json.dump(result, open("benchmarks/results/jobs.json", "w"), indent=2)
print(json.dumps(result, indent=2))
print(f"rebuild / DuckDB = {result['rebuild_over_duckdb']:.2f} (target <= 1.0); "
      f"incremental 1% / rebuild = {result['incremental_over_rebuild']:.3f} (target < 0.05)")
PY
