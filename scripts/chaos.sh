#!/usr/bin/env bash
# The long versions of the chaos tests (issue 16), each printing a summary table:
#   scripts/chaos.sh faults [SECONDS]   the full pipeline at 10% storage faults (default 300 s)
#   scripts/chaos.sh kills [N]          SIGKILL `serve` at random moments N times (default 50)
#   scripts/chaos.sh all
# The README's test command runs the short ones (30 s, 3 kills) as part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tidemark-target}"

run() {
  cargo test --workspace --test it -- --nocapture --test-threads 1 "$1" 2>&1 |
    grep -v '^\[tidemark\]' | sed -n '/^\(fault run\|crash loop\)/,/^$/p;/test result/p;/panicked/,+3p'
}

case "${1:-all}" in
  faults) CHAOS_FAULT_SECONDS="${2:-300}" run chaos::under_storage_faults ;;
  kills) CHAOS_KILLS="${2:-50}" run chaos::sigkill_loop ;;
  all)
    CHAOS_FAULT_SECONDS="${FAULT_SECONDS:-300}" run chaos::under_storage_faults
    CHAOS_KILLS="${KILLS:-50}" run chaos::sigkill_loop
    ;;
  *) echo "usage: $0 faults [SECONDS] | kills [N] | all" >&2; exit 2 ;;
esac
