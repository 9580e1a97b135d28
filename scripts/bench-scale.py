#!/usr/bin/env python3
"""Scale figures of one marconi shard: memory per empty queue at QUEUES queues, queue creation
rate with pipelined PUTs in each durability mode, the time to list a page of that project,
memory per stored message at MESSAGES messages, and recovery time of both.

The client writes precomputed requests PIPELINE deep on CONNS sockets from one thread and counts
answers with bytes.count (C speed), so it costs far less per request than the server. Memory is
the server's anonymous RSS (RssAnon: its heap, not the mapped segment files' page cache).

Usage: scripts/bench-scale.py [--queues 1000000] [--messages 10000000] [--modes memory,sync]
       (server pinned to --server-cpu, this client to --client-cpu; release build; loopback only)
"""
import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "marconi")
PROJECT = "scale-0"
HEADERS = f"Host: 127.0.0.1\r\nClient-ID: 3381af92-2b9e-11e3-b191-71861300734c\r\nX-Project-ID: {PROJECT}\r\n"
CREATED = b"HTTP/1.1 201 "


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


class Server:
    def __init__(self, args, mode, data):
        self.port = free_port()
        self.log = open(os.path.join(data, f"server-{mode}.log"), "w")
        cmd = ["taskset", "-c", str(args.server_cpu), BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
               "--shards", "1", "--cpus", str(args.server_cpu), "--durability", mode,
               "--data-dir", os.path.join(data, mode), "--log", "warn"]
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        # The ready line, not the port: the listener may queue connections before recovery ends.
        while "listening on" not in open(self.log.name).read():
            if self.proc.poll() is not None or time.monotonic() - started > 600:
                sys.exit(f"server did not start; see {self.log.name}")
            time.sleep(0.01)
        self.ready_s = time.monotonic() - started

    def metric(self, name):
        head, body = get(self.port, "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + '{shard="0"}'):
                return float(line.split()[-1])
        raise RuntimeError(f"{name} not in /metrics")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\n{HEADERS}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def drive(port, requests, conns, depth):
    """Sends every request, `depth` in flight per connection; returns (seconds, 201s seen)."""
    sel = selectors.DefaultSelector()
    share = [requests[i::conns] for i in range(conns)]
    state = []
    for part in share:
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        st = {"sock": s, "todo": part, "next": 0, "outstanding": 0, "tail": b"", "created": 0, "out": b""}
        state.append(st)
        sel.register(s, selectors.EVENT_READ, st)
    started = time.monotonic()

    def refill(st):
        while st["outstanding"] < depth and st["next"] < len(st["todo"]):
            n = min(depth - st["outstanding"], len(st["todo"]) - st["next"])
            st["out"] += b"".join(st["todo"][st["next"]:st["next"] + n])
            st["next"] += n
            st["outstanding"] += n
        if st["out"]:
            sent = st["sock"].send(st["out"])
            st["out"] = st["out"][sent:]

    for st in state:
        refill(st)
    live = len(state)
    while live:
        for key, _ in sel.select(timeout=60):
            st = key.data
            chunk = st["sock"].recv(1 << 20)
            if not chunk:
                sys.exit("server closed a connection")
            data = st["tail"] + chunk
            answered = data.count(b"HTTP/1.1 ")
            st["created"] += data.count(CREATED)
            st["tail"] = data[-12:]
            answered -= st["tail"].count(b"HTTP/1.1 ")
            st["created"] -= st["tail"].count(CREATED)
            st["outstanding"] -= answered
            refill(st)
            if st["next"] == len(st["todo"]) and st["outstanding"] == 0 and not st["out"]:
                st["created"] += st["tail"].count(CREATED)
                st["tail"] = b""
                sel.unregister(st["sock"])
                live -= 1
        for st in state:
            if st["out"]:
                refill(st)
    elapsed = time.monotonic() - started
    for st in state:
        st["sock"].close()
    return elapsed, sum(st["created"] for st in state)


def put_queue(i):
    return f"PUT /v2/queues/q{i:07d} HTTP/1.1\r\n{HEADERS}Content-Length: 0\r\n\r\n".encode()


def post_messages(queue, per_post, body_bytes):
    msg = '{"ttl":86400,"body":"' + "x" * body_bytes + '"}'
    body = '{"messages":[' + ",".join([msg] * per_post) + "]}"
    return (f"POST /v2/queues/{queue}/messages HTTP/1.1\r\n{HEADERS}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def list_page_ms(port, queues, samples):
    times = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        for k in range(samples):
            marker = f"q{(k * 7919) % queues:07d}"
            req = f"GET /v2/queues?limit=20&marker={marker} HTTP/1.1\r\n{HEADERS}\r\n".encode()
            t = time.perf_counter()
            s.sendall(req)
            data = b""
            while True:
                data += s.recv(1 << 16)
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"Content-Length: (\d+)", head, re.I)
                    if m and len(body) >= int(m.group(1)):
                        break
            times.append((time.perf_counter() - t) * 1000)
            assert head.startswith(b"HTTP/1.1 200"), head
    return statistics.median(times), sorted(times)[int(len(times) * 0.99) - 1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queues", type=int, default=1_000_000)
    p.add_argument("--messages", type=int, default=10_000_000)
    p.add_argument("--modes", default="memory,sync")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--pipeline", type=int, default=64)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args()
    os.sched_setaffinity(0, {args.client_cpu})
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release --locked -p marconi")
    data = tempfile.mkdtemp(prefix="marconi-scale.")
    per_post, body_bytes, message_queues = 100, 64, 1000
    print(f"# scale figures, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(f"- machine: {os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}")
    print(f"- server: one shard on CPU {args.server_cpu}; client (this script) on CPU {args.client_cpu}, "
          f"{args.conns} connections, {args.pipeline} requests in flight on each")
    print(f"- {args.queues:,} empty queues; {args.messages:,} messages of {body_bytes} B, {per_post} per post, "
          f"over {message_queues} other queues")
    print()
    rows = []
    try:
        puts = [put_queue(i) for i in range(args.queues)]
        for mode in args.modes.split(","):
            srv = Server(args, mode, data)
            time.sleep(0.5)
            base = status_kb(srv.proc.pid, "RssAnon")
            secs, created = drive(srv.port, puts, args.conns, args.pipeline)
            assert created == args.queues, f"{created} of {args.queues} queues created"
            time.sleep(0.5)
            anon = status_kb(srv.proc.pid, "RssAnon")
            per_queue = (anon - base) * 1024 / args.queues
            med, p99 = list_page_ms(srv.port, args.queues, 200)
            row = {"mode": mode, "create_per_s": args.queues / secs, "bytes_per_queue": per_queue,
                   "list_ms": med, "list_p99_ms": p99}
            if mode != "memory":
                srv.stop()
                srv = Server(args, mode, data)
                row["recover_queues_s"] = srv.ready_s
                row["recover_queues_metric_s"] = srv.metric("marconi_storage_recovery_seconds")
                if args.messages:
                    posts = [post_messages(f"m{i % message_queues:04d}", per_post, body_bytes)
                             for i in range(args.messages // per_post)]
                    before = status_kb(srv.proc.pid, "RssAnon")
                    secs, accepted = drive(srv.port, posts, args.conns, args.pipeline)
                    assert accepted == len(posts), f"{accepted} of {len(posts)} posts accepted"
                    del posts
                    row["post_msgs_per_s"] = args.messages / secs
                    row["bytes_per_message"] = (status_kb(srv.proc.pid, "RssAnon") - before) * 1024 / args.messages
                    srv.stop()
                    srv = Server(args, mode, data)
                    row["recover_all_s"] = srv.ready_s
                    row["recover_all_metric_s"] = srv.metric("marconi_storage_recovery_seconds")
            srv.stop()
            shutil.rmtree(os.path.join(data, mode), ignore_errors=True)
            rows.append(row)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print("| durability | queues created /s | B per empty queue (RssAnon) | list a page, median / p99 ms | "
          "restart with the queues: ready s (recovery s) | posts: messages/s | B per message | "
          "restart with queues + messages: ready s (recovery s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rq = f"{r['recover_queues_s']:.2f} ({r['recover_queues_metric_s']:.2f})" if "recover_queues_s" in r else "—"
        pm = f"{r['post_msgs_per_s']:,.0f}" if "post_msgs_per_s" in r else "—"
        bm = f"{r['bytes_per_message']:.1f}" if "bytes_per_message" in r else "—"
        ra = f"{r['recover_all_s']:.2f} ({r['recover_all_metric_s']:.2f})" if "recover_all_s" in r else "—"
        print(f"| {r['mode']} | {r['create_per_s']:,.0f} | {r['bytes_per_queue']:.1f} | "
              f"{r['list_ms']:.2f} / {r['list_p99_ms']:.2f} | {rq} | {pm} | {bm} | {ra} |")
    if len(rows) > 1 and rows[0]["create_per_s"]:
        print(f"\n{rows[1]['mode']} / {rows[0]['mode']} queue creation: {rows[1]['create_per_s'] / rows[0]['create_per_s']:.2f}x")


if __name__ == "__main__":
    main()
