#!/usr/bin/env python3
"""Time from an apply call returning to the patch being in force on an open keep-alive connection.

Usage: bench/apply_latency.py GATEWAY_PORT ADMIN_PORT TOKEN_FILE [ROUNDS]
Each round un-applies SG-2015-1635, then applies it, then sends the MS15-034 request on a
connection that has been open all along, until the gateway refuses it. Prints median and worst.
Not a test: a measurement.
"""
import http.client
import json
import statistics
import sys
import time

gw_port, admin_port, token_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 100
token = open(token_file).read().strip()
admin = http.client.HTTPConnection("127.0.0.1", admin_port)
conn = http.client.HTTPConnection("127.0.0.1", gw_port)


def call(verb):
    body = json.dumps({"ids": ["SG-2015-1635"]})
    admin.request("POST", f"/v1/patches/{verb}", body,
                  {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = admin.getresponse()
    r.read()
    assert r.status == 200, r.status


def exploit():
    conn.request("GET", "/index.html", headers={"Range": "bytes=0-18446744073709551615"})
    r = conn.getresponse()
    r.read()
    return r.status


calls, in_force, late = [], [], 0
for _ in range(rounds):
    call("unapply")
    assert exploit() != 400
    t0 = time.perf_counter()
    call("apply")
    t1 = time.perf_counter()
    tries = 0
    while exploit() != 400:
        tries += 1
    t2 = time.perf_counter()
    late += tries
    calls.append((t1 - t0) * 1000)
    in_force.append((t2 - t1) * 1000)


def show(name, xs):
    print(f"{name:<44} median {statistics.median(xs):7.3f} ms   worst {max(xs):7.3f} ms")


print(f"{rounds} apply calls on SG-2015-1635 (state persisted with fsync, audit flushed):")
show("apply call (request sent -> answer read)", calls)
show("answer read -> next request refused", in_force)
print(f"requests that still passed after the call returned: {late}")
