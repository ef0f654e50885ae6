#!/usr/bin/env bash
# User-space instructions per small keep-alive GET of the running gateway (whole shipped library,
# every patch pinned on), counted by valgrind's callgrind: repeatable where timings are not,
# and hardware counters are not available on these machines. The gateway runs on one core, as in
# the benchmarks (so with the current-thread runtime); wrk sends GETs over 10 connections for
# SECS seconds; only those requests are counted (the count is zeroed after a warm-up request).
# Kernel time is not counted: callgrind sees the process's own instructions only.
#
# Usage: bench/callgrind.sh [SECS, default 5]
# Leaves the profile in target/callgrind.out for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}

source bench/common.sh
install_missing wrk=wrk /usr/sbin/nginx=nginx-light valgrind=valgrind curl=curl
cargo build --release -q

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
backend=18121 gateway=18122
mkdir -p "$work/www"
printf 'hello, benchmark\n' > "$work/www/index.html"
write_backend_conf "$work" "$backend"
taskset -c 1 /usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
write_gateway_conf "$work" "$gateway" "$backend" off
rm -f target/callgrind.out*
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$PWD/target/callgrind.out" \
  ./target/release/stopgap serve --config "$work/stopgap.toml" >/dev/null 2>&1 &
gw=$!
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$gateway/index.html" && break
  sleep 0.3
done
callgrind_control -z "$gw" >/dev/null 2>&1
requests=$(taskset -c 1 wrk -t1 -c10 -d"${secs}s" "http://127.0.0.1:$gateway/index.html" |
  awk '/requests in/ {print $1}')
callgrind_control -d "$gw" >/dev/null 2>&1
kill "$gw"; wait "$gw" 2>/dev/null || true
total=$(callgrind_annotate target/callgrind.out.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "requests: $requests, instructions: $total, per request: $((total / requests))"
echo "profile: target/callgrind.out.1"
