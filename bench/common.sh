# Set-up shared by the bench scripts (sourced, not run).

# install_missing CHECK=PACKAGE...: installs PACKAGE from Debian when CHECK is missing. A CHECK
# starting with / is a file that must be executable, anything else a command on the PATH.
install_missing() {
  local need=() spec check
  for spec in "$@"; do
    check=${spec%%=*}
    if [[ $check == /* ]]; then
      [ -x "$check" ] || need+=("${spec#*=}")
    else
      command -v "$check" >/dev/null || need+=("${spec#*=}")
    fi
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# write_backend_conf WORK PORT [SERVER_EXTRA] [HTTP_EXTRA]: writes WORK/nginx.conf, a
# single-process nginx serving WORK/www on PORT (SERVER_EXTRA inside that server block), with
# HTTP_EXTRA lines added to its http block.
write_backend_conf() {
  local work=$1 port=$2 server_extra=${3:-} http_extra=${4:-}
  cat > "$work/nginx.conf" <<CONF
daemon off; master_process off; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $work/b; proxy_temp_path $work/p;
  fastcgi_temp_path $work/f; uwsgi_temp_path $work/u; scgi_temp_path $work/s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$port; root $work/www;$server_extra }
$http_extra
}
CONF
}

# write_gateway_conf WORK GATEWAY_PORT BACKEND_PORT ADMIN [LIMITS]: writes WORK/stopgap.toml, the
# whole shipped library in front of the backend on one listener, with every patch pinned on
# through WORK/assets.toml. The backend is nginx: unpinned, the patches for other products would
# be skipped as not applying to it once its banner is seen (and an IIS exploit would pass).
# ADMIN: the admin API's address, or "off". LIMITS: lines for the [limits] table.
write_gateway_conf() {
  local work=$1 gateway=$2 backend=$3 admin=$4 limits=${5:-}
  cat > "$work/stopgap.toml" <<CONF
[patches]
dir = "$PWD/patches"
[audit]
log = "$work/audit.jsonl"
[admin]
listen = "$admin"
[state]
dir = "$work/state"
[assets]
file = "$work/assets.toml"
[limits]
$limits
[[listener]]
name = "web"
listen = "127.0.0.1:$gateway"
upstream = "127.0.0.1:$backend"
CONF
  cat > "$work/assets.toml" <<CONF
[[asset]]
listener = "web"
product = "nginx:nginx"
pin = ["*"]
CONF
}
