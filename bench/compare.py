#!/usr/bin/env python3
"""The benchmark matrix behind bench/compare.sh: direct, stopgap, nginx as a plain reverse
proxy, haproxy (http mode) and nginx + ModSecurity + OWASP CRS, all in one run on this machine,
on every workload; then stopgap alone with 0, 10, 100 and 1,000 applied patches. Not a test: it
prints tables (and writes them as JSON next to the work directory when asked).

Servers and proxies run on CPU 0, the load generator (wrk, or this script for the idle
connections) on CPU 1. Loopback only. Each figure is the median of --runs runs; the runs of a
workload are interleaved between the peers (see `interleaved`).
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

BACKEND, NGINX_PROXY, HAPROXY, MODSEC, STOPGAP = 18301, 18302, 18303, 18304, 18305
# The four stopgap processes of the applied-patch scaling runs.
SCALING = 18310

WORKLOADS = [
    # name, path, connections, wrk lua script (None: GET)
    ("small GET", "/index.html", 50, None),
    ("64 KiB GET", "/big.bin", 50, None),
    ("16 KiB POST", "/post", 50, "post16k.lua"),
    ("10 MiB upload", "/post", 4, "upload10m.lua"),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def wait_port(port, proc, name):
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited at start (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{name} did not listen on {port}")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peak:
    """Samples a process's RSS every 50 ms while running; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, rss_kib(pid), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def ms(text):
    value = float(re.match(r"[\d.]+", text).group())
    if text.endswith("us"):
        return value / 1000
    if text.endswith("ms"):
        return value
    return value * 1000  # seconds


def cpu_seconds(pid):
    """User plus system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, path, conns, script, secs, work):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency"]
    if script:
        cmd += ["-s", os.path.join(work, script)]
    out = subprocess.run(
        cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if non2xx or errors:
        print(f"    note: port {port} {path}: {non2xx.group(0) if non2xx else ''} "
              f"{errors.group(0) if errors else ''}".rstrip())
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, p50, p99, requests


def idle_connections(port, pid, count):
    """Opens `count` keep-alive connections, one request each, and holds them: RSS per
    connection is (RSS with them open - RSS before) / count."""
    os.sched_setaffinity(0, {1})
    before = rss_kib(pid)
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed")
                got += chunk
            socks.append(s)
        time.sleep(1)
        after = rss_kib(pid)
    finally:
        for s in socks:
            s.close()
        os.sched_setaffinity(0, {0, 1})
    return (after - before) / count, len(socks)


def setup(work, ports):
    www = os.path.join(work, "www")
    os.makedirs(www, exist_ok=True)
    write(os.path.join(www, "index.html"), "hello, benchmark\n")
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(b"b" * 65536)
    write(os.path.join(work, "post16k.lua"),
          'wrk.method = "POST"\nwrk.body = "data=" .. string.rep("a", 16379)\n'
          'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
    write(os.path.join(work, "upload10m.lua"),
          'wrk.method = "POST"\n'
          'wrk.body = "--b0undary\\r\\nContent-Disposition: form-data; name=\\"file\\"; filename=\\"up.bin\\"\\r\\n'
          'Content-Type: application/octet-stream\\r\\n\\r\\n" .. string.rep("u", 10485760) .. "\\r\\n--b0undary--\\r\\n"\n'
          'wrk.headers["Content-Type"] = "multipart/form-data; boundary=b0undary"\n')
    temp = "".join(f"{k}_temp_path {work}/{k}; " for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    common = f"daemon off; master_process off; worker_rlimit_nofile 20000;\nevents {{ worker_connections 19000; }}\n"
    proxy_loc = (f"location / {{ proxy_pass http://backend; proxy_http_version 1.1; "
                 f"proxy_set_header Connection \"\"; }}")
    upstream = f"upstream backend {{ server 127.0.0.1:{BACKEND}; keepalive 64; }}"
    http = (f"access_log off; {temp} keepalive_requests 1000000; keepalive_timeout 300s; "
            f"client_max_body_size 20m; client_body_buffer_size 64k;")
    write(os.path.join(work, "backend.conf"), "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;\n" + common + f"pid {work}/backend.pid; error_log {work}/backend.log;\n"
          f"http {{ {http} server {{ listen 127.0.0.1:{BACKEND}; root {www}; "
          f"location = /post {{ client_body_buffer_size 11m; echo_read_request_body; echo ok; }} }} }}\n")
    write(os.path.join(work, "nginx-proxy.conf"), common + f"pid {work}/proxy.pid; error_log {work}/proxy.log;\n"
          f"http {{ {http} {upstream} server {{ listen 127.0.0.1:{NGINX_PROXY}; {proxy_loc} }} }}\n")
    write(os.path.join(work, "modsec-rules.conf"),
          "Include /etc/nginx/modsecurity.conf\nSecRuleEngine On\nSecRequestBodyAccess On\n"
          "SecAuditEngine Off\nSecDebugLogLevel 0\n"
          "Include /etc/modsecurity/crs/crs-setup.conf\nInclude /usr/share/modsecurity-crs/rules/*.conf\n")
    write(os.path.join(work, "modsec.conf"),
          "load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;\n" + common +
          f"pid {work}/modsec.pid; error_log {work}/modsec.log;\n"
          f"http {{ {http} {upstream} modsecurity on; modsecurity_rules_file {work}/modsec-rules.conf; "
          f"server {{ listen 127.0.0.1:{MODSEC}; {proxy_loc} }} }}\n")
    write(os.path.join(work, "haproxy.cfg"),
          f"global\n  maxconn 9900\n  nbthread 1\ndefaults\n  mode http\n  option http-keep-alive\n"
          f"  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n"
          f"  timeout http-keep-alive 300s\n"
          f"frontend f\n  bind 127.0.0.1:{HAPROXY}\n  default_backend b\n"
          f"backend b\n  http-reuse always\n  server s1 127.0.0.1:{BACKEND}\n")


def stopgap_conf(work, name, patches, port=STOPGAP):
    conf = os.path.join(work, f"{name}.toml")
    write(os.path.join(work, f"{name}-assets.toml"),
          '[[asset]]\nlistener = "web"\nproduct = "nginx:nginx"\npin = ["*"]\n')
    write(conf, f'[patches]\ndir = "{patches}"\n[audit]\nlog = "{work}/{name}-audit.jsonl"\n'
          f'[admin]\nlisten = "off"\n[state]\ndir = "{work}/{name}-state"\n'
          f'[assets]\nfile = "{work}/{name}-assets.toml"\n'
          f'[limits]\nmax_connections_per_source = 20000\nidle_timeout_ms = 300000\n'
          f'[[listener]]\nname = "web"\nlisten = "127.0.0.1:{port}"\nupstream = "127.0.0.1:{BACKEND}"\n')
    return conf


STARTED = []


def stop_all(*_):
    for p in STARTED:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def stop(proc):
    if proc:
        proc.terminate()
        proc.wait()
        STARTED.remove(proc)


def start(cmd, port, name):
    p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    STARTED.append(p)
    wait_port(port, p, name)
    return p


def synthetic_patches(library, out, total):
    """`total` applied HTTP patches: the real library's HTTP patches first, then synthetic ones
    (a path prefix, then a parameter or a header condition). The synthetic path test is on the
    raw path, so the prefilter can skip them; patches on decoded fields are evaluated on every
    request (docs/patches.md, Prefilter) and cost what inspect_rate --per-patch shows."""
    os.makedirs(out, exist_ok=True)
    real = sorted(f for f in os.listdir(library) if f.endswith(".toml")
                  and 'protocol = "http"' in open(os.path.join(library, f)).read())
    for f in real[:total]:
        shutil.copy(os.path.join(library, f), out)
    for i in range(max(0, total - len(real))):
        write(os.path.join(out, f"SG-2099-{i + 10001}.toml"),
              f'id = "SG-2099-{i + 10001}"\ntitle = "synthetic benchmark patch {i}"\n'
              f'cve = ["CVE-2099-{i + 10001}"]\nseverity = "high"\nprotocol = "http"\n'
              f'[applies]\nproduct = "nginx:nginx"\nversions = "*"\n'
              f'[rule]\nwhen = \'\'\'\nhttp.request.raw_path starts_with "/synthetic/app{i}/" and '
              f'(http.request.arg("cmd{i}") contains ";" or '
              f'http.request.header("x-synthetic-{i}") ~ r"\\$\\{{")\n\'\'\'\n'
              f'action = "reject"\nstatus = 403\nmode = "enforce"\n')


def run_once(port, workload, secs, work, pid):
    """One wrk run: (req/s, p50 ms, p99 ms, the peer's own CPU microseconds per request)."""
    name, path, conns, script = workload
    before = cpu_seconds(pid)
    rps, p50, p99, requests = wrk(port, path, conns, script, secs, work)
    # The peer's own CPU per request: what proxying costs, apart from the backend's share of
    # the same core (req/s moves with both).
    cpu_us = (cpu_seconds(pid) - before) * 1e6 / max(requests, 1)
    return rps, p50, p99, cpu_us


def interleaved(targets, workload, secs, runs, work):
    """Measures every target (name -> (port, pid)) `runs` times on one workload, run r of all
    of them before run r + 1 of any, in an order rotated each run: a drift in the machine's
    speed during the measurement (frequency, another tenant, the page cache) then falls on
    every peer alike instead of on whichever happened to run last. Medians per target."""
    names = list(targets)
    samples = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        peaks = {n: stack.enter_context(Peak(pid)) for n, (_, pid) in targets.items()}
        for r in range(runs):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                port, pid = targets[n]
                samples[n].append(run_once(port, workload, secs, work, pid))
    out = {}
    for n in names:
        rs = samples[n]
        out[n] = {
            "rps": statistics.median(r[0] for r in rs),
            "p50": statistics.median(r[1] for r in rs),
            "p99": statistics.median(r[2] for r in rs),
            "cpu_us": statistics.median(r[3] for r in rs),
            "peak_rss_kib": peaks[n].peak,
            "runs_rps": [round(r[0]) for r in rs],
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--stopgap", required=True)
    ap.add_argument("--library", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="", help="comma-separated peers to run (default: all)")
    ap.add_argument("--workloads", default="",
                    help="comma-separated workloads to run, by name (default: all), e.g. '16 KiB POST'")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    work = a.work
    setup(work, None)
    backend = start(["/usr/sbin/nginx", "-c", f"{work}/backend.conf", "-p", work], BACKEND, "backend")
    peers = {
        "direct": (None, BACKEND),
        "stopgap": ([a.stopgap, "serve", "--config", stopgap_conf(work, "stopgap", a.library)], STOPGAP),
        "nginx proxy": (["/usr/sbin/nginx", "-c", f"{work}/nginx-proxy.conf", "-p", work], NGINX_PROXY),
        "haproxy": (["/usr/sbin/haproxy", "-f", f"{work}/haproxy.cfg"], HAPROXY),
        "nginx+modsec+crs": (["/usr/sbin/nginx", "-c", f"{work}/modsec.conf", "-p", work], MODSEC),
    }
    only = [p for p in a.only.split(",") if p] or list(peers)
    chosen = [w.strip() for w in a.workloads.split(",") if w.strip()]
    workloads = [w for w in WORKLOADS if not chosen or w[0] in chosen]
    results = {peer: {} for peer in only}
    # Idle connections first, each peer alone on a fresh process: later workloads leave freed
    # memory behind that would hide the cost of the connections.
    for peer in only if a.idle > 0 else ():
        cmd, port = peers[peer]
        proc = start(cmd, port, peer) if cmd else None
        per_conn, n = idle_connections(port, proc.pid if proc else backend.pid, a.idle)
        results[peer]["idle"] = {"kib_per_conn": per_conn, "connections": n}
        print(f"== {peer}: {n} idle keep-alive connections, {per_conn:.1f} KiB RSS each", flush=True)
        stop(proc)

    # Then every peer at once (each on its own port; an idle one costs nothing), the runs of
    # each workload interleaved between them.
    targets, procs = {}, []
    for peer in only:
        cmd, port = peers[peer]
        proc = start(cmd, port, peer) if cmd else None
        procs.append(proc)
        targets[peer] = (port, proc.pid if proc else backend.pid)
    for w in workloads:
        print(f"== {w[0]}", flush=True)
        for peer, r in interleaved(targets, w, a.secs, a.runs, work).items():
            results[peer][w[0]] = r
            print(f"  {peer:<18} {r['rps']:>10.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                  f"CPU {r['cpu_us']:.1f} us/req  peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB  "
                  f"runs {r['runs_rps']}", flush=True)
    for proc in procs:
        stop(proc)

    scaling = {}
    if "stopgap" in only and not chosen:
        print("== stopgap, applied patch count scaling (small GET)", flush=True)
        counts = (0, 10, 100, 1000)
        targets, procs = {}, []
        for i, n in enumerate(counts):
            d = os.path.join(work, f"patches-{n}")
            synthetic_patches(a.library, d, n)
            port = SCALING + i
            cmd = [a.stopgap, "serve", "--config", stopgap_conf(work, f"scale{n}", d, port)]
            procs.append(start(cmd, port, f"stopgap ({n} patches)"))
            targets[n] = (port, procs[-1].pid)
        scaling = interleaved(targets, WORKLOADS[0], a.secs, a.runs, work)
        for n, r in scaling.items():
            print(f"  {n:>5} patches {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms  CPU {r['cpu_us']:.1f} us/req  "
                  f"runs {r['runs_rps']}", flush=True)
        for proc in procs:
            stop(proc)

    print(f"\nResults ({a.runs} runs of {a.secs}s each, median; wrk on CPU 1, servers on CPU 0)")
    base = "nginx proxy" if "nginx proxy" in results else None
    for w in [w[0] for w in workloads]:
        print(f"\n{w}")
        print(f"  {'peer':<18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'peak MiB':>9} {'vs nginx':>9} {'vs direct':>9}")
        for peer, r in results.items():
            x = r[w]
            vs_n = x["rps"] / results[base][w]["rps"] if base else float("nan")
            vs_d = x["rps"] / results["direct"][w]["rps"] if "direct" in results else float("nan")
            print(f"  {peer:<18} {x['rps']:>10.0f} {x['p50']:>8.2f} {x['p99']:>8.2f} {x['cpu_us']:>10.1f} "
                  f"{x['peak_rss_kib'] / 1024:>9.1f} {vs_n:>8.2f}x {vs_d:>8.2f}x")
    if a.idle > 0:
        print(f"\nidle keep-alive connections: RSS per connection (KiB)")
    for peer, r in results.items() if a.idle > 0 else ():
        print(f"  {peer:<18} {r['idle']['kib_per_conn']:>8.1f}  ({r['idle']['connections']} connections)")
    if scaling:
        print("\napplied patches (stopgap, small GET)")
        for n, r in scaling.items():
            print(f"  {n:>5} {r['rps']:>10.0f} req/s  p99 {r['p99']:.2f} ms  {r['rps'] / scaling[10]['rps']:.2f}x of 10  CPU {r['cpu_us']:.1f} us/req")
    if a.json:
        write(a.json, json.dumps({"results": results, "scaling": scaling}, indent=1))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    try:
        main()
    finally:
        stop_all()
