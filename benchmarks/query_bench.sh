#!/usr/bin/env bash
# The SQL doors benchmark: a per-user rollup, a top-events query and a 10M-row scan of the
# generated 10M-event store through the embedded engine, HTTP (Arrow), Flight SQL (ADBC)
# and Postgres (psycopg), against DuckDB (newest from PyPI) on the same Parquet files.
# Usage: benchmarks/query_bench.sh [EVENTS] [USERS]   (default 10,000,000 events, 1,000,000 users)
# Writes benchmarks/results/query_doors.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-10000000}
USERS=${2:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
python3 -m pip install -q -U duckdb "psycopg[binary]" adbc-driver-manager adbc-driver-flightsql pyarrow
cargo build --release -p tidemark -p tidemark-benchmarks --bin tidemark --bin jobs-bench
BIN="$CARGO_TARGET_DIR/release/tidemark"
WORK=$(mktemp -d /var/tmp/tidemark-query-bench.XXXXXX)
DATA="$WORK/data"
SERVE_PID=
trap '[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

"$CARGO_TARGET_DIR/release/jobs-bench" generate --data "$DATA" --events "$EVENTS" --users "$USERS"
KEY=$("$BIN" keys create --data "$DATA" --env production --role read | tail -1)

# Nothing else runs in the server: no jobs, segments, sinks, compaction or retention.
export TIDEMARK_JOBS__ENABLED=false TIDEMARK_SEGMENTS__INTERVAL=0s TIDEMARK_WEBHOOKS__ENABLED=false \
    TIDEMARK_EXPORTS__ENABLED=false TIDEMARK_OPTIMIZE_INTERVAL=0s TIDEMARK_RETENTION__INTERVAL=0s \
    TIDEMARK_QUERY__TIMEOUT=600s TIDEMARK_QUERY__MAX_MEMORY_BYTES=8589934592 \
    TIDEMARK_QUERY__PG_LISTEN=127.0.0.1:55433 TIDEMARK_QUERY__FLIGHT_LISTEN=127.0.0.1:55052
"$BIN" serve --data "$DATA" --listen 127.0.0.1:58420 --wal-dir "$WORK/wal" > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do grep -q "tidemark: ready" "$WORK/serve.log" && break; sleep 0.2; done
grep -q "tidemark: ready" "$WORK/serve.log" || { cat "$WORK/serve.log"; exit 1; }

python3 benchmarks/query_doors.py "$BIN" "$DATA" http://127.0.0.1:58420 55433 \
    grpc://127.0.0.1:55052 "$KEY" production | tee benchmarks/results/query_doors.json
