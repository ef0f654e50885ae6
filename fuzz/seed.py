#!/usr/bin/env python3
"""Rebuilds the committed seed corpus (fuzz/corpus/TARGET) from the project's own inputs: the
public-corpus records in tests/corpus, the byte strings of the HTTP codec's conversation tests
(crates/stopgap-proto/src/http1/tests.rs) and the shipped patch files in patches/. Deterministic:
each seed is named by the SHA-1 of its bytes, as libFuzzer names inputs.

Usage: fuzz/seed.py   (run from anywhere; rebuilds fuzz/corpus, keeping regression-* inputs)
"""
import base64
import hashlib
import json
import pathlib
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"

# A few server streams the records do not carry: the framings a response can have.
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: nginx/1.22.1\r\n\r\nuntil close",
]


def records():
    for path in sorted((ROOT / "tests" / "corpus").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def conversation_literals():
    """The `b"..."` literals of the codec's conversation tests, Rust escapes decoded."""
    text = (ROOT / "crates" / "stopgap-proto" / "src" / "http1" / "tests.rs").read_text()
    escapes = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", '"': b'"', "\\": b"\\"}
    for body in re.findall(r'b"((?:[^"\\]|\\.)*)"', text):
        out, i = bytearray(), 0
        while i < len(body):
            if body[i] == "\\":
                if body[i + 1] == "x":
                    out.append(int(body[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out += escapes[body[i + 1]]
                i += 2
            else:
                out += body[i].encode()
                i += 1
        yield bytes(out)


def side_bytes(record, direction):
    return b"".join(base64.b64decode(d["b64"]) for d in record["dialogue"] if d["dir"] == direction)


def engine_input(record):
    """The engine target's framing: per chunk a control byte (high bit: server side; low seven
    bits: length), then the bytes."""
    out = bytearray()
    for d in record["dialogue"]:
        data = base64.b64decode(d["b64"])
        side = 0x80 if d["dir"] == "s2c" else 0
        for i in range(0, len(data), 127):
            chunk = data[i : i + 127]
            out.append(side | len(chunk))
            out += chunk
    return bytes(out)


def main():
    seeds = {t: set() for t in ("http1", "line_protocols", "patch_file", "engine")}
    for r in records():
        c2s, s2c = side_bytes(r, "c2s"), side_bytes(r, "s2c")
        if r["protocol"] == "http":
            seeds["http1"].add(b"\x00" + c2s)
            if s2c:
                seeds["http1"].add(b"\x01" + s2c)
            seeds["engine"].add(engine_input(r))
        else:
            for stream in (c2s, s2c):
                if stream:
                    seeds["line_protocols"].add(stream)
    for resp in RESPONSES:
        seeds["http1"].add(b"\x01" + resp)
    for literal in conversation_literals():
        seeds["http1"].add((b"\x01" if literal.startswith(b"HTTP/") else b"\x00") + literal)
    for path in sorted((ROOT / "patches").glob("*.toml")):
        seeds["patch_file"].add(path.read_bytes())
    # Inputs that once crashed a target are kept as they are (regression-*), seeds are rebuilt.
    kept = {p: p.read_bytes() for p in OUT.glob("*/regression-*")}
    shutil.rmtree(OUT, ignore_errors=True)
    for target, inputs in seeds.items():
        folder = OUT / target
        folder.mkdir(parents=True)
        for data in inputs:
            if data:
                (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(inputs)} seeds")
    for path, data in kept.items():
        path.write_bytes(data)


if __name__ == "__main__":
    main()
