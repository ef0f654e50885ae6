#!/usr/bin/env python3
"""Soak driver for bench/soak.sh: sustained keep-alive load through a running-for-the-occasion
stopgap with faults injected, for a given duration. Not a test: it prints a report and exits
non-zero when the gateway stopped answering or its RSS kept growing.

Load: WORKERS keep-alive connections, each sending small GETs, with every 20th request an
exploit (refused with 400, connection kept: every patch is pinned on) and every 25th a 16 KiB POST.
Faults, all at once and throughout:
  - the upstream (nginx) is stopped for 1 s every --restart-every seconds;
  - clients reset mid-request (half a body, then RST) every 50 ms;
  - slow clients (one header byte a second) held open, 20 at a time; the gateway's client
    timeout must answer them 408;
  - a patch reload through the admin API every 2 s, and a patch toggled (monitor/applied)
    every second.
"""
import argparse
import collections
import json
import select
import socket
import struct
import subprocess
import threading
import time
import urllib.request

stats = collections.Counter()
lock = threading.Lock()
stop = threading.Event()


def count(key, n=1):
    with lock:
        stats[key] += n


def read_response(sock, buf):
    """Reads one response from `sock` (leftover bytes in `buf`); returns status, close, buf."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed before a response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            close = True
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("closed inside a body")
        rest += chunk
    return status, close, rest[length:]


def cause(exc):
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError):
        return "reset_by_gateway"
    if isinstance(exc, ConnectionAbortedError):
        return "closed_by_gateway"
    return type(exc).__name__


def worker(port, n):
    get = b"GET /index.html HTTP/1.1\r\nHost: soak\r\n\r\n"
    exploit = b"GET / HTTP/1.1\r\nHost: soak\r\nRange: bytes=0-18446744073709551615\r\n\r\n"
    post = b"POST /index.html HTTP/1.1\r\nHost: soak\r\nContent-Length: 16384\r\n\r\n" + b"a" * 16384
    sock, buf, i = None, b"", n
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                buf = b""
            i += 1
            req = exploit if i % 20 == 0 else post if i % 25 == 0 else get
            sock.sendall(req)
            status, close, buf = read_response(sock, buf)
            kind = "exploit" if req is exploit else "post" if req is post else "get"
            count(f"{kind} {status}")
            if close:
                sock.close()
                sock = None
        except OSError as e:
            count(f"error {cause(e)}")
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.05)


def resetter(port):
    while not stop.wait(0.05):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            count("fault client_reset")
        except OSError as e:
            count(f"fault client_reset_failed {cause(e)}")


def slow_client(port):
    """One header byte a second until the gateway answers (it should: 408) or closes."""
    while not stop.is_set():
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            count("fault slow_client")
            answer = None
            for b in b"GET / HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"z" * 100:
                readable, _, _ = select.select([s], [], [], 1)
                if readable:
                    answer = s.recv(4096)
                    break
                if stop.is_set():
                    return
                s.sendall(bytes([b]))
            if answer is None:
                count("slow_client not_timed_out")
            elif answer.startswith(b"HTTP/1.1 "):
                count("slow_client answered " + answer[9:12].decode())
            else:
                count("slow_client closed without an answer")
        except OSError as e:
            count(f"slow_client {cause(e)}")
        finally:
            if s is not None:
                s.close()


def admin_call(admin, token, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None and path == "/v1/health" else "POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def reloader(admin, token):
    tick = 0
    while not stop.wait(1):
        tick += 1
        try:
            mode = "monitor" if tick % 2 else "apply"
            admin_call(admin, token, f"/v1/patches/{mode}", {"ids": ["SG-2021-41773"]})
            count("fault patch_toggle")
            if tick % 2 == 0:
                admin_call(admin, token, "/v1/reload", {})
                count("fault patch_reload")
        except OSError as e:
            count(f"fault admin_failed {cause(e)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, required=True)
    ap.add_argument("--restart-every", type=int, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--slow", type=int, default=20)
    ap.add_argument("--gateway-port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--gateway-cmd", required=True)
    ap.add_argument("--upstream-cmd", required=True)
    a = ap.parse_args()

    gateway = subprocess.Popen(a.gateway_cmd, shell=True, stderr=subprocess.DEVNULL)
    upstream = subprocess.Popen(a.upstream_cmd, shell=True)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", a.gateway_port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or gateway.poll() is not None:
                raise SystemExit("soak: the gateway did not start")
            time.sleep(0.1)
    token = open(a.token_file).read().strip()
    pid = gateway.pid  # the commands start with `exec`: no shell in between

    threads = [threading.Thread(target=worker, args=(a.gateway_port, i)) for i in range(a.workers)]
    threads += [threading.Thread(target=resetter, args=(a.gateway_port,))]
    threads += [threading.Thread(target=slow_client, args=(a.gateway_port,)) for _ in range(a.slow)]
    threads += [threading.Thread(target=reloader, args=(a.admin_port, token))]
    for t in threads:
        t.daemon = True
        t.start()

    start = time.time()
    samples, probe_failures, worst_streak, streak = [], 0, 0, 0
    next_restart = start + a.restart_every
    served_by_quarter = [0, 0, 0, 0]
    last_served = 0
    while time.time() - start < a.duration:
        time.sleep(2)
        now = time.time() - start
        if gateway.poll() is not None:
            print(f"soak: FAIL: the gateway exited (status {gateway.returncode}) at {now:.0f}s")
            stop.set()
            return 1
        rss = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1])
        samples.append((now, rss))
        try:
            admin_call(a.admin_port, token, "/v1/health")
            streak = 0
        except OSError:
            probe_failures += 1
            streak += 1
            worst_streak = max(worst_streak, streak)
        with lock:
            served = sum(v for k, v in stats.items() if k.split()[0] in ("get", "post", "exploit"))
        quarter = min(3, int(4 * now / a.duration))
        served_by_quarter[quarter] += served - last_served
        last_served = served
        if time.time() >= next_restart:
            upstream.terminate()
            upstream.wait()
            count("fault upstream_restart")
            time.sleep(1)
            upstream = subprocess.Popen(a.upstream_cmd, shell=True)
            next_restart = time.time() + a.restart_every
    stop.set()
    time.sleep(1)
    upstream.terminate()
    gateway.terminate()
    gateway.wait(timeout=15)

    elapsed = time.time() - start
    print(f"soak: {elapsed:.0f}s, {a.workers} load connections, {a.slow} slow clients")
    print("\nrequests served (kind status: count)")
    for k in sorted(k for k in stats if k.split()[0] in ("get", "post", "exploit")):
        print(f"  {k:<28} {stats[k]:>10}")
    print(f"  {'total':<28} {last_served:>10}  ({last_served / elapsed:.0f}/s)")
    print("\nerrors by cause (load connections)")
    for k in sorted(k for k in stats if k.startswith("error")):
        print(f"  {k[6:]:<28} {stats[k]:>10}")
    print("\nfaults injected and what they got")
    for k in sorted(k for k in stats if k.startswith(("fault", "slow_client"))):
        print(f"  {k:<44} {stats[k]:>8}")
    print(f"  health probe failures: {probe_failures} (longest streak {worst_streak})")
    print("\nRSS over time (KiB)")
    step = max(1, len(samples) // 12)
    shown = sorted(set(range(0, len(samples), step)) | {len(samples) - 1})
    for t, rss in (samples[i] for i in shown):
        print(f"  {t:6.0f}s {rss:>10}")

    failures = []
    if worst_streak >= 3:
        failures.append(f"the admin API did not answer {worst_streak} probes in a row")
    if 0 in served_by_quarter:
        failures.append(f"no requests served in some quarter of the run: {served_by_quarter}")
    quarter = [rss for t, rss in samples if t >= elapsed / 4]
    half = [rss for t, rss in samples if elapsed / 4 <= t < elapsed / 2]
    last = [rss for t, rss in samples if t >= 3 * elapsed / 4]
    passed = {k: v for k, v in stats.items() if k.startswith("exploit") and k.split()[1] not in ("400", "502")}
    if passed:
        failures.append(f"exploit requests were not refused: {passed}")
    if half and last and max(last) > 1.5 * max(half) + 16 * 1024:
        failures.append(
            f"RSS kept growing: peak {max(half)} KiB in the second quarter, {max(last)} KiB in the last"
        )
    if quarter:
        print(f"\nRSS after warm-up: min {min(quarter)} KiB, max {max(quarter)} KiB")
    if failures:
        for f in failures:
            print(f"soak: FAIL: {f}")
        return 1
    print("soak: PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
