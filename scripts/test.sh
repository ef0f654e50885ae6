#!/usr/bin/env bash
# Runs every check and test of stopgap. Installs the Debian test peers it needs (nginx, curl)
# when they are missing. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system nginx on port 80; the tests start their own.
  $sudo systemctl stop nginx >/dev/null 2>&1 || $sudo service nginx stop >/dev/null 2>&1 || true
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== the protocol core does no I/O"
if cargo tree -p stopgap-proto -e normal | grep -q tokio || cargo tree -p stopgap-engine -e normal | grep -q tokio; then
  echo "stopgap-proto and stopgap-engine must not depend on tokio" >&2
  exit 1
fi

echo "== tests (unit, codec conversations, engine harness, patch vectors, end-to-end)"
cargo test --workspace --locked
