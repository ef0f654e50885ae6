#!/usr/bin/env bash
# Small keep-alive GETs: direct nginx vs stopgap (whole shipped library) vs nginx as a plain
# reverse proxy, measured in one run on this machine. Not a test: prints a table.
#
# Usage: bench/http.sh [seconds per run, default 5] [runs, default 3]
# Load generator (wrk) on CPU 1; backend and proxies on CPU 0. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
conns=50

source bench/common.sh
install_missing wrk=wrk /usr/sbin/nginx=nginx-light bc=bc
cargo build --release -q

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
backend=18101 nginxproxy=18102 gateway=18103
mkdir -p "$work/www"
printf 'hello, benchmark\n' > "$work/www/index.html"
write_backend_conf "$work" "$backend" "" "  upstream backend { server 127.0.0.1:$backend; keepalive 64; }
  server { listen 127.0.0.1:$nginxproxy;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
taskset -c 0 /usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
write_gateway_conf "$work" "$gateway" "$backend" off
taskset -c 0 ./target/release/stopgap serve --config "$work/stopgap.toml" 2>/dev/null &
sleep 1

measure() { # port -> "req/s p99_ms"
  taskset -c 1 wrk -t1 -c$conns -d"${secs}s" --latency "http://127.0.0.1:$1/index.html" |
    awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v} END {printf "%s %s\n", rps, p99}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-22s %12s %12s %10s %10s\n' peer "req/s" "p99 (ms)" "vs direct" "vs nginx"
declare -A RPS P99
for peer in direct:$backend nginx-proxy:$nginxproxy stopgap:$gateway; do
  name=${peer%%:*} port=${peer##*:}
  : > "$work/$name"
  for _ in $(seq "$runs"); do measure "$port" >> "$work/$name"; done
  RPS[$name]=$(cut -d' ' -f1 "$work/$name" | median)
  P99[$name]=$(cut -d' ' -f2 "$work/$name" | median)
done
for name in direct nginx-proxy stopgap; do
  printf '%-22s %12.0f %12.2f %9.2fx %9.2fx\n' "$name" "${RPS[$name]}" "${P99[$name]}" \
    "$(echo "${RPS[$name]} / ${RPS[direct]}" | bc -l)" "$(echo "${RPS[$name]} / ${RPS[nginx-proxy]}" | bc -l)"
done
echo "($runs runs of ${secs}s each, median; $conns keep-alive connections; wrk on CPU 1, servers on CPU 0; $(nproc) cores)"
