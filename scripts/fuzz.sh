#!/usr/bin/env bash
# Runs every coverage-guided fuzz target in pipeline/fuzz for SECONDS each (default 60)
# and prints executions, coverage and crashes per target.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer runs on the stable toolchain
# with `--sanitizer none` (Rust's own checks still panic on a bug; no ASan).
# Each run starts from the seed corpus in pipeline/fuzz/corpus/<target> (found inputs go
# to a scratch copy, not the repository); a crash leaves its input in
# pipeline/fuzz/artifacts/<target>/ — turn it into a regression test in the normal suite.
# A target with a dictionary (pipeline/fuzz/dict/<target>.dict: the tokens of its format)
# runs with it. The targets that read request bodies or files (ingest_body, json_check,
# segment_def, csv_import) run with -max_len of 1 MiB, so inputs can nest past every
# depth limit (each has a seed `deep` that does; libFuzzer's default of 4096 bytes cannot
# express 10,000 levels); the others keep libFuzzer's default. The targets that call tidemark's crates need an instrumented build of
# them: ~40 minutes the first time on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../pipeline/fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/tidemark-fuzz-target}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
printf '%-14s %12s %10s %8s %8s %9s\n' target executions exec/s cov crashes max_len
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  cp -r "corpus/$t/." "$work/"
  log="$work.log"
  dict=()
  [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  maxlen=4096
  case "$t" in
    ingest_body|json_check|segment_def|csv_import) maxlen=1048576 ;;
  esac
  cargo fuzz run --sanitizer none --target-dir "$target_dir" --fuzz-dir . "$t" "$work" -- \
    -max_total_time="$seconds" -print_final_stats=1 -max_len="$maxlen" "${dict[@]}" >"$log" 2>&1 || true
  runs=$(grep -oE '^Done [0-9]+ runs' "$log" | awk '{print $2}' | tail -1 || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | awk '{print $2}' || true)
  rate=$(echo "$last" | grep -oE 'exec/s: [0-9]+' | awk '{print $2}' || true)
  crashes=$(ls "artifacts/$t" 2>/dev/null | grep -c '^crash-' || true)
  printf '%-14s %12s %10s %8s %8s %9s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$crashes" "$maxlen"
  if grep -q 'panicked\|deadly signal\|^error' "$log"; then
    grep -m1 -A3 'panicked\|^error' "$log" | sed 's/^/    /' || true
  fi
  rm -rf "$work" "$log"
done
