#!/usr/bin/env bash
# Runs every check and test of stopgap. Installs the Debian test peers it needs (nginx, curl,
# vsftpd, lftp, postfix, swaks, nmap) when they are missing, and the local account the FTP tests log
# in with. Every test starts its own private instance of each server on loopback.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/sbin/vsftpd ] || missing+=(vsftpd)
command -v lftp >/dev/null 2>&1 || missing+=(lftp)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v nmap >/dev/null 2>&1 || missing+=(nmap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  # Postfix without a system configuration: the tests write their own.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system nginx on port 80; the tests start their own.
  $sudo systemctl stop nginx >/dev/null 2>&1 || $sudo service nginx stop >/dev/null 2>&1 || true
  $sudo systemctl stop vsftpd >/dev/null 2>&1 || $sudo service vsftpd stop >/dev/null 2>&1 || true
  $sudo systemctl stop postfix >/dev/null 2>&1 || $sudo service postfix stop >/dev/null 2>&1 || true
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
# The FTP end-to-end tests log in to their own vsftpd as this local account (no home, no
# login shell on the machine's services: vsftpd's check_shell is off in the test config).
if id sgftp >/dev/null 2>&1; then
  $sudo usermod --home /tmp --shell /usr/sbin/nologin sgftp
else
  $sudo useradd --no-create-home --home-dir /tmp --shell /usr/sbin/nologin sgftp
fi
echo 'sgftp:sgftp-test-pass' | $sudo chpasswd
# Its own PAM service: password check only (Debian's vsftpd service also wants a login shell).
if [ ! -f /etc/pam.d/stopgap-ftp-test ]; then
  printf 'auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_permit.so\n' |
    $sudo tee /etc/pam.d/stopgap-ftp-test >/dev/null
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

echo "== fuzz smoke run (each target a few seconds; fuzz/run.sh runs them for longer)"
fuzz/run.sh "${FUZZ_SECONDS:-5}"
