#!/usr/bin/env bash
# Live patch control: (1) time from an apply call returning to the change being in force, over
# 100 rounds; (2) keep-alive GET throughput while a patch is toggled every 100 ms vs not.
# Not a test: prints measurements.
#
# Usage: bench/control.sh [seconds per throughput run, default 10] [runs, default 3]
# Load generator (wrk) on CPU 1; nginx and stopgap on CPU 0. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
runs=${2:-3}
conns=50

source bench/common.sh
install_missing wrk=wrk /usr/sbin/nginx=nginx-light curl=curl bc=bc
cargo build --release -q

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
backend=18111 gateway=18113 admin=18114
mkdir -p "$work/www"
printf 'hello, benchmark\n' > "$work/www/index.html"
write_backend_conf "$work" "$backend"
taskset -c 0 /usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
write_gateway_conf "$work" "$gateway" "$backend" "127.0.0.1:$admin"
taskset -c 0 ./target/release/stopgap serve --config "$work/stopgap.toml" 2>/dev/null &
sleep 1

echo "== apply -> in force"
taskset -c 1 python3 bench/apply_latency.py $gateway $admin "$work/state/admin.token" 100

rps() {
  taskset -c 1 wrk -t1 -c$conns -d"${secs}s" "http://127.0.0.1:$gateway/index.html" |
    awk '/Requests\/sec/ {print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== throughput, $conns keep-alive connections, ${secs}s runs"
: > "$work/steady"; : > "$work/toggled"
for _ in $(seq "$runs"); do
  rps >> "$work/steady"
  taskset -c 1 python3 bench/toggle.py $admin "$work/state/admin.token" 0.1 &
  tpid=$!
  rps >> "$work/toggled"
  kill $tpid; wait $tpid 2>/dev/null || true
done
gen=$(curl -s "http://127.0.0.1:$admin/v1/health")
steady=$(median < "$work/steady")
toggled=$(median < "$work/toggled")
printf '%-34s %12.0f req/s\n' "no toggling" "$steady"
printf '%-34s %12.0f req/s  (%.1f%% of no toggling)\n' "SG-2015-1635 toggled every 100 ms" \
  "$toggled" "$(echo "100 * $toggled / $steady" | bc -l)"
echo "(median of $runs; health after the runs: $gen)"
