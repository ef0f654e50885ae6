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

need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$work"' EXIT
backend=18111 gateway=18113 admin=18114
mkdir -p "$work/www"
printf 'hello, benchmark\n' > "$work/www/index.html"
cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $work/b; proxy_temp_path $work/p;
  fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$backend; root $work/www; }
}
CONF
taskset -c 0 /usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
taskset -c 0 ./target/release/stopgap serve --listen 127.0.0.1:$gateway --upstream 127.0.0.1:$backend \
  --patches patches --audit-log "$work/audit.jsonl" --state-dir "$work/state" \
  --admin 127.0.0.1:$admin 2>/dev/null &
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
