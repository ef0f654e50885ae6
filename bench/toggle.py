#!/usr/bin/env python3
"""Flip SG-2015-1635 between applied and unapplied every INTERVAL seconds, over one keep-alive
admin connection, until killed. Usage: bench/toggle.py ADMIN_PORT TOKEN_FILE [INTERVAL]"""
import http.client
import json
import sys
import time

port, token = int(sys.argv[1]), open(sys.argv[2]).read().strip()
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
admin = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"ids": ["SG-2015-1635"]})
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
verb = "unapply"
while True:
    admin.request("POST", f"/v1/patches/{verb}", body, headers)
    r = admin.getresponse()
    r.read()
    assert r.status == 200, r.status
    verb = "apply" if verb == "unapply" else "unapply"
    time.sleep(interval)
