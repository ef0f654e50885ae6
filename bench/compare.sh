#!/usr/bin/env bash
# The benchmark matrix (issue: "as fast as a plain nginx proxy with the whole patch library on"):
# direct nginx, stopgap (whole shipped library applied), nginx as a plain reverse proxy, haproxy
# (http mode) and nginx + ModSecurity + OWASP CRS (paranoia level 1, request body access on),
# measured in one run on this machine: small GET, 64 KiB GET, 16 KiB POST, 10 MiB upload, idle
# keep-alive connections (RSS each), then stopgap with 0/10/100/1,000 applied patches.
# Not a test: prints tables. Driver: bench/compare.py.
#
# Usage: bench/compare.sh [seconds per run, default 5] [runs, default 3] [idle connections,
#        default 9000; 0 skips them] [peers, comma-separated, default all]
#        [workloads, comma-separated names, default all; naming any skips the scaling runs]
# Servers on CPU 0, load generators on CPU 1. Loopback only. The runs of a workload are
# interleaved between the peers (see interleaved() in compare.py).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
runs=${2:-3}
idle=${3:-9000}
only=${4:-}
workloads=${5:-}

need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || need+=(libnginx-mod-http-modsecurity)
[ -d /usr/share/modsecurity-crs/rules ] || need+=(modsecurity-crs)
[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] || need+=(libnginx-mod-http-echo)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 bench/compare.py --secs "$secs" --runs "$runs" --idle "$idle" --only "$only" --workloads "$workloads" \
  --stopgap "$PWD/target/release/stopgap" --library "$PWD/patches" --work "$work"
