#!/usr/bin/env bash
# The jobs benchmark: `jobs rebuild` of profiles + event_stats against DuckDB on the same
# Parquet files (both on 2 threads), and an incremental run and a publish pass after
# appending 1% more events.
# Usage: benchmarks/jobs_bench.sh [EVENTS] [USERS]   (default 10,000,000 events, 1,000,000 users)
# Writes benchmarks/results/jobs.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
USERS=${2:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q -U duckdb
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
"$BIN" publish --data "$DATA" | tee "$WORK/publish.json"

python3 - "$WORK" "$EVENTS" "$USERS" <<'PY'
import json, sys, os, statistics
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from deltalake import DeltaTable
work, events, users = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def layout(name):
    """The published table as an outside reader finds it: files, sizes, sort order."""
    t = DeltaTable(os.path.join(work, "data", name))
    adds = pa.table(t.get_add_actions(flatten=True)).to_pydict()
    sizes = sorted(adds["size_bytes"])
    unsorted = 0
    for uri in t.file_uris():
        ids = pq.read_table(uri, columns=["user_id"])["user_id"]
        if len(ids) > 1 and not pc.all(pc.greater_equal(ids[1:], ids[:-1])).as_py():
            unsorted += 1
    rows = t.to_pyarrow_table(columns=["user_id"]).num_rows
    return {"files": len(sizes), "rows": rows, "partitions": t.metadata().partition_columns,
            "file_mb_min": sizes[0] / 2**20, "file_mb_median": statistics.median(sizes) / 2**20,
            "file_mb_max": sizes[-1] / 2**20, "files_not_sorted_by_user_id": unsorted}
load = lambda n: json.load(open(os.path.join(work, n + ".json")))
rebuild = [load("rebuild1"), load("rebuild2")]
duck = [load("duckdb1"), load("duckdb2")]
inc = load("incremental")
pub = load("publish")
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
    "publish_seconds": pub["seconds"],
    "publish_reports": pub["reports"],
    "publish_over_rebuild": pub["seconds"] / best_r,
    "incremental_and_publish_over_rebuild": (inc["seconds"] + pub["seconds"]) / best_r,
    "publish_peak_rss_mb": pub["peak_rss_mb"],
    "duckdb_version": duck[0]["duckdb_version"],
    "published_profiles": layout("profiles"),
    "published_event_stats": layout("event_stats"),
}
json.dump(result, open("benchmarks/results/jobs.json", "w"), indent=2)
print(json.dumps(result, indent=2))
print(f"rebuild / DuckDB = {result['rebuild_over_duckdb']:.2f} (target <= 1.0); "
      f"incremental 1% / rebuild = {result['incremental_over_rebuild']:.3f}; "
      f"publish / rebuild = {result['publish_over_rebuild']:.3f}; "
      f"incremental + publish / rebuild = {result['incremental_and_publish_over_rebuild']:.3f} (target < 0.05)")
PY
