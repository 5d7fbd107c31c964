#!/usr/bin/env bash
# The profile jobs (`jobs rebuild`: profiles, event_stats) on a local Ballista cluster of
# tidemark roles (1 scheduler, 2 executors with 1 task slot each, all on this machine)
# beside the embedded engine on the same store, best of 2 each, and one analytical
# query through `tidemark sql --engine`.
# Usage: benchmarks/ballista_bench.sh [EVENTS] [USERS]   (default 2,000,000 / 200,000)
# Writes benchmarks/results/ballista.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-2000000}
USERS=${2:-200000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}
cargo build --release -p tidemark -p tidemark-benchmarks
TM="$CARGO_TARGET_DIR/release/tidemark"
WORK=$(mktemp -d /var/tmp/tidemark-ballista-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
DATA="$WORK/data"
"$CARGO_TARGET_DIR/release/jobs-bench" generate --data "$DATA" --events "$EVENTS" --users "$USERS" > "$WORK/generate.json"

"$TM" ballista scheduler --bind 127.0.0.1:50350 > "$WORK/scheduler.log" 2>&1 & PIDS+=($!)
sleep 1
for port in 50351 50361; do
  "$TM" ballista executor --scheduler 127.0.0.1:50350 --bind 127.0.0.1:$port \
    --concurrent-tasks 1 --heartbeat 2 > "$WORK/executor-$port.log" 2>&1 & PIDS+=($!)
done
sleep 4
ENGINE=ballista://127.0.0.1:50350

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); python3 -c "print($e - $s)"; }
QUERY="SELECT platform_bucket(platform) AS b, event_name, count(*) AS n, count(DISTINCT user_id) AS users FROM events GROUP BY 1, 2 ORDER BY n DESC LIMIT 20"
declare -A T
for round in 1 2; do
  T[embedded_$round]=$(t "$TM" jobs rebuild --data "$DATA")
  T[ballista_$round]=$(t "$TM" jobs rebuild --data "$DATA" --engine "$ENGINE")
  T[sql_embedded_$round]=$(t "$TM" sql --data "$DATA" --format csv "$QUERY")
  T[sql_ballista_$round]=$(t "$TM" sql --data "$DATA" --format csv --engine "$ENGINE" "$QUERY")
done
# Both engines must have derived the same tables (the test checks it row for row; here a
# digest of the published profiles after each).
"$TM" jobs rebuild --data "$DATA" --engine "$ENGINE" > /dev/null
D1=$("$TM" sql --data "$DATA" --format csv "SELECT count(*), sum(event_count), count(DISTINCT first_seen_at) FROM profiles")
"$TM" jobs rebuild --data "$DATA" > /dev/null
D2=$("$TM" sql --data "$DATA" --format csv "SELECT count(*), sum(event_count), count(DISTINCT first_seen_at) FROM profiles")
[ "$D1" = "$D2" ] || { echo "profiles differ: $D1 vs $D2"; exit 1; }

# Peak resident memory of each executor (sizes the Kubernetes requests in deploy/).
RSS=$(for p in "${PIDS[@]:1}"; do awk '/VmHWM/ {print $2}' /proc/$p/status; done | sort -n | tail -1)
python3 - "$EVENTS" "$USERS" "$(nproc)" "$RSS" <<PY > benchmarks/results/ballista.json
import json, sys
t = {k: float(v) for k, v in {$(for k in "${!T[@]}"; do printf '"%s": "%s", ' "$k" "${T[$k]}"; done)}.items()}
best = lambda k: min(t[k + "_1"], t[k + "_2"])
out = {
  "events": int(sys.argv[1]), "users": int(sys.argv[2]), "cores": int(sys.argv[3]),
  "cluster": "1 scheduler + 2 executors (1 task slot each) on this machine",
  "rebuild_embedded_s": round(best("embedded"), 3),
  "rebuild_ballista_s": round(best("ballista"), 3),
  "query_embedded_s": round(best("sql_embedded"), 3),
  "query_ballista_s": round(best("sql_ballista"), 3),
  "executor_peak_rss_mb": round(int(sys.argv[4]) / 1024),
}
out["rebuild_ballista_vs_embedded"] = round(out["rebuild_ballista_s"] / out["rebuild_embedded_s"], 2)
out["query_ballista_vs_embedded"] = round(out["query_ballista_s"] / out["query_embedded_s"], 2)
print(json.dumps(out, indent=2))
PY
cat benchmarks/results/ballista.json
