#!/usr/bin/env bash
# Starts a local Ballista cluster of tidemark roles: one scheduler and N executors, on
# loopback, in the foreground (Ctrl-C stops them all). Then, in another shell:
#   tidemark jobs rebuild --engine ballista://127.0.0.1:50050
#   tidemark sql --engine ballista://127.0.0.1:50050 "SELECT count(*) FROM events"
# Usage: deploy/ballista/local-cluster.sh [EXECUTORS] [TASKS_PER_EXECUTOR]
# TIDEMARK (the binary) defaults to `tidemark` on PATH. Executors read the store with the
# [storage] options of ./tidemark.toml (or TIDEMARK_CONFIG), like every other command.
set -euo pipefail
TIDEMARK=${TIDEMARK:-tidemark}
EXECUTORS=${1:-2}
TASKS=${2:-2}
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait' EXIT INT TERM
"$TIDEMARK" ballista scheduler --bind 127.0.0.1:50050 & PIDS+=($!)
sleep 1
for i in $(seq 1 "$EXECUTORS"); do
  port=$((50050 + 10 * i + 1))
  "$TIDEMARK" ballista executor --scheduler 127.0.0.1:50050 --bind "127.0.0.1:$port" \
    --concurrent-tasks "$TASKS" & PIDS+=($!)
done
echo "ballista cluster: scheduler 127.0.0.1:50050, $EXECUTORS executor(s); use --engine ballista://127.0.0.1:50050"
wait
