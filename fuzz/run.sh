#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), starting from the committed seed corpus
# (fuzz/corpus/TARGET, rebuilt by fuzz/seed.py from the public-corpus records, the codec tests
# and the shipped patch files). New inputs go to
# a scratch folder; crashes to fuzz/artifacts/TARGET. Stable toolchain: no sanitizer (-s none).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http1 line_protocols patch_file engine)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -s none >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== $t: ${secs}s"
  status=0
  cargo fuzz run -s none "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 >"$scratch/$t.log" 2>&1 || status=$?
  grep -E "^Done|SUMMARY|panicked|crash-" "$scratch/$t.log" || true
  if [ "$status" != 0 ]; then
    echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t" >&2
    tail -30 "$scratch/$t.log" >&2
    exit 1
  fi
done
