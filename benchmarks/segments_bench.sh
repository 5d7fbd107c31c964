#!/usr/bin/env bash
# The segments benchmark: 100 segments over 1M profiles and 10M event_stats rows, tidemark
# (embedded DataFusion) against DuckDB on the same Parquet files and SQL, 2 threads each.
# Usage: benchmarks/segments_bench.sh [USERS] [EVENT_STATS]. Writes benchmarks/results/segments.json.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-1000000}
STATS=${2:-10000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q duckdb==1.4.2
cargo build --release -p tidemark-benchmarks -p tidemark --bins
BIN="$CARGO_TARGET_DIR/release/segments-bench"
WORK=$(mktemp -d /var/tmp/tidemark-segments-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BIN" generate --dir "$WORK" --users "$USERS" --stats "$STATS"
# alternate twice on a warm page cache; the best of each counts
"$BIN" run --dir "$WORK" > "$WORK/t1.json"
python3 benchmarks/segments_duckdb.py "$WORK" > "$WORK/d1.json"
"$BIN" run --dir "$WORK" > "$WORK/t2.json"
python3 benchmarks/segments_duckdb.py "$WORK" > "$WORK/d2.json"
mkdir -p benchmarks/results
python3 - "$WORK" "$USERS" "$STATS" <<'PY'
import json, os, sys
w, users, stats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load = lambda n: json.load(open(os.path.join(w, n + ".json")))
t, d = [load("t1"), load("t2")], [load("d1"), load("d2")]
assert t[0]["members"] == d[0]["members"], "tidemark and DuckDB disagree on membership"
bt, bd = min(x["seconds"] for x in t), min(x["seconds"] for x in d)
r = {"profiles": users, "event_stats": stats, "segments": t[0]["segments"], "threads": 2,
     "tidemark_seconds": [x["seconds"] for x in t], "duckdb_seconds": [x["seconds"] for x in d],
     "tidemark_over_duckdb": bt / bd, "tidemark_peak_rss_mb": max(x["peak_rss_mb"] for x in t),
     "duckdb_peak_rss_mb": max(x["peak_rss_mb"] for x in d), "members_total": sum(t[0]["members"]),
     "duckdb_version": d[0]["duckdb_version"]}
json.dump(r, open("benchmarks/results/segments.json", "w"), indent=2)
print(json.dumps(r, indent=2))
print(f"tidemark / DuckDB = {r['tidemark_over_duckdb']:.2f} (target <= 1.0)")
PY
