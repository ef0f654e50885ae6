#!/usr/bin/env bash
# Soak test (not part of the quick suite): stopgap with the whole patch library in front of
# nginx, under sustained load, with faults injected throughout — the upstream restarted, clients
# resetting mid-request, slow clients, patch reloads and toggles. Reports requests served,
# errors by cause and RSS over time; exits non-zero if the gateway stops answering or its RSS
# keeps growing. Driver: bench/soak.py.
#
# Usage: bench/soak.sh [seconds, default 600] [upstream restart period in seconds, default 30]
# nginx and stopgap on CPU 0, the load on CPU 1. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
restart=${2:-30}

source bench/common.sh
install_missing /usr/sbin/nginx=nginx-light
cargo build --release -q

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
backend=18211 gateway=18213 admin=18214
mkdir -p "$work/www"
printf 'hello, soak\n' > "$work/www/index.html"
write_backend_conf "$work" "$backend" " error_page 405 =200 /index.html;"
write_gateway_conf "$work" "$gateway" "$backend" "127.0.0.1:$admin" "message_timeout_ms = 3000
client_timeout_ms = 2000
idle_timeout_ms = 10000
upstream_timeout_ms = 5000
connect_timeout_ms = 1000"

taskset -c 1 python3 bench/soak.py --duration "$secs" --restart-every "$restart" \
  --gateway-port $gateway --admin-port $admin --token-file "$work/state/admin.token" \
  --gateway-cmd "exec taskset -c 0 $PWD/target/release/stopgap serve --config $work/stopgap.toml" \
  --upstream-cmd "exec taskset -c 0 /usr/sbin/nginx -c $work/nginx.conf -p $work"
echo "audit log: $(wc -l < "$work/audit.jsonl") events"
