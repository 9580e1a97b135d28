#!/usr/bin/env python3
"""Holds N connections to a marconi server and reports what the server's memory did, for
docs/perf.md ("Memory per connection and per parked poll").

  scripts/hold_connections.py --url http://127.0.0.1:PORT --pid SERVER_PID -n 15000 [--poll]

Each connection sends one request (a ping, or with --poll a long poll `GET .../messages?wait=20`
on an empty queue, which parks), reads the answer of a ping, and then stays open and idle (a poll
stays parked). Once all N are held, the server's RSS, the kernel's TCP memory
(/proc/net/sockstat) and the slab memory are sampled; then every connection closes and they are
sampled again. Prints one JSON line: the figures before, while held and after closing, and the
slopes per connection.
"""
import argparse, json, os, socket, sys, time
from urllib.parse import urlparse

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("-n", type=int, default=1000)
ap.add_argument("--poll", action="store_true", help="park a long poll on each connection")
ap.add_argument("--settle-s", type=float, default=1.0, help="pause before each sample")
a = ap.parse_args()
u = urlparse(a.url)
addr = (u.hostname, u.port)
HEAD = "Host: x\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\nX-Project-ID: hold\r\n"


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sockstat_pages():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("mem") + 1])
    return 0


def slab_kb():
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def sample():
    time.sleep(a.settle_s)
    return {"rss_kb": rss_kb(a.pid), "tcp_mem_pages": sockstat_pages(), "slab_kb": slab_kb()}


def read_answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("server closed a connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += s.recv(4096)


before = sample()
conns = []
req_ping = f"GET /v2/ping HTTP/1.1\r\n{HEAD}\r\n".encode()
req_poll = f"GET /v2/queues/hold-empty/messages?wait=20 HTTP/1.1\r\n{HEAD}\r\n".encode()
if a.poll:
    s = socket.create_connection(addr)
    s.sendall(f"PUT /v2/queues/hold-empty HTTP/1.1\r\n{HEAD}Content-Length: 0\r\n\r\n".encode())
    read_answer(s)
    s.close()
started = time.time()
for i in range(a.n):
    s = socket.create_connection(addr)
    if a.poll:
        s.sendall(req_poll)
    else:
        s.sendall(req_ping)
        read_answer(s)
    conns.append(s)
held = sample()
held["seconds_to_open"] = round(time.time() - started, 2)
if a.poll and held["seconds_to_open"] + a.settle_s > 19:
    print("warning: some polls may have timed out before the sample", file=sys.stderr)
for s in conns:
    s.close()
conns = []
after = sample()
n = a.n
out = {
    "connections": n,
    "poll": a.poll,
    "before": before,
    "held": held,
    "after_close": after,
    "server_bytes_per_connection": round((held["rss_kb"] - before["rss_kb"]) * 1024 / n),
    "server_bytes_kept_per_closed_connection": round((after["rss_kb"] - before["rss_kb"]) * 1024 / n),
    "kernel_tcp_bytes_per_connection": round((held["tcp_mem_pages"] - before["tcp_mem_pages"]) * 4096 / n),
    "kernel_slab_bytes_per_connection": round((held["slab_kb"] - before["slab_kb"]) * 1024 / n),
}
print(json.dumps(out))
