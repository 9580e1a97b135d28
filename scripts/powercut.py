#!/usr/bin/env python3
"""Power cuts against marconi (../shared/powercut): boot the guest with marconi on a data disk,
run a produce/claim/delete load, cut the power at a random moment, boot again on the same disk
and check what survived. Repeat.

  python3 -B scripts/powercut.py --mode sync|interval|none [--cuts 5] [--seed N] [--hold 1]

Checks after every cut: every message acknowledged (201) and not deleted is there once with its
body; no message acknowledged as deleted (204) is back; nothing is listed twice. Exit status 0
when all held, 1 when something acknowledged was lost or undone (expected with --mode none:
nothing is flushed before a segment fills, and with --hold 1 the guest never writes back), 2 on
a setup or boot failure. Run it through scripts/powercut.sh, which builds the payload.
"""
import argparse, http.client, json, os, random, subprocess, sys, tempfile, threading, time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.environ.get("MARCONI_POWERCUT", os.path.join(HERE, "..", "..", "shared", "powercut"))
RUN = os.path.join(HARNESS, "run.sh")
CUT = os.path.join(HARNESS, "cut.sh")
HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-ID": "powercut",
           "Content-Type": "application/json"}
QUEUE = "pc"

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--mode", required=True, choices=["sync", "interval", "none"])
ap.add_argument("--payload", required=True, help="folder with marconi and start.sh")
ap.add_argument("--cuts", type=int, default=5)
ap.add_argument("--port", type=int, default=18889)
ap.add_argument("--seed", type=int, default=None)
ap.add_argument("--min-delay", type=float, default=1.0)
ap.add_argument("--max-delay", type=float, default=4.0)
ap.add_argument("--hold", default="1", choices=["0", "1"])
ap.add_argument("--segment-bytes", type=int, default=1 << 20)
ap.add_argument("--keep", action="store_true")
a = ap.parse_args()
seed = a.seed if a.seed is not None else random.randrange(1 << 30)
rng = random.Random(seed)
work = tempfile.mkdtemp(prefix="marconi-powercut.", dir="/var/tmp")
data = os.path.join(work, "data.img")
log = os.path.join(work, "console.log")


def out(*x):
    print(*x, flush=True)


def fail(msg):
    print("powercut.py: " + msg, file=sys.stderr, flush=True)
    raise SystemExit(2)


def boot():
    t0 = time.time()
    r = subprocess.run([RUN, "--payload", a.payload, "--data", data, "--log", log, "--port", str(a.port),
                        "--hold", a.hold, "--boot-timeout", "240", "--", "./start.sh", a.mode, str(a.segment_bytes)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=400)
    if r.returncode != 0:
        fail("boot failed (run.sh exit %d):\n%s" % (r.returncode, r.stderr))
    return int(r.stdout.split()[-1]), time.time() - t0


def cut(pid):
    if subprocess.run([CUT, str(pid), data], timeout=60).returncode != 0:
        fail("cut.sh %d failed" % pid)


def request(conn, method, path, body=None):
    conn.request(method, path, body=body, headers=HEADERS)
    r = conn.getresponse()
    payload = r.read()
    return r.status, (json.loads(payload) if payload else None)


def id_of(href):
    return href.split("?")[0].rsplit("/", 1)[-1]


def producer(round_no, ledger, stop):
    n = 0
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        while not stop.is_set():
            tags = ["r%d-%d-%d" % (round_no, n, i) for i in range(2)]
            body = json.dumps({"messages": [{"ttl": 86400, "body": {"tag": t}} for t in tags]})
            n += 1
            status, doc = request(c, "POST", "/v2/queues/%s/messages" % QUEUE, body)
            if status == 201:
                with ledger["lock"]:
                    for href, tag in zip(doc["resources"], tags):
                        ledger["posted"][id_of(href)] = tag
    except Exception:
        pass


def consumer(ledger, stop):
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        while not stop.is_set():
            status, doc = request(c, "POST", "/v2/queues/%s/claims?limit=3" % QUEUE, '{"ttl": 60, "grace": 60}')
            if status != 201:
                time.sleep(0.05)
                continue
            for m in doc["messages"]:
                mid = id_of(m["href"])
                with ledger["lock"]:
                    ledger["maybe"].add(mid)
                status, _ = request(c, "DELETE", m["href"])
                if status == 204:
                    with ledger["lock"]:
                        ledger["maybe"].discard(mid)
                        ledger["deleted"].add(mid)
    except Exception:
        pass


def listing():
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    path = "/v2/queues/%s/messages?echo=true&include_claimed=true&include_delayed=true&limit=20" % QUEUE
    seen, dups = {}, 0
    while True:
        status, doc = request(c, "GET", path)
        if status != 200:
            fail("listing answered %d" % status)
        msgs = doc["messages"] if doc else []
        if not msgs:
            return seen, dups
        for m in msgs:
            dups += m["id"] in seen
            seen[m["id"]] = m["body"].get("tag") if isinstance(m["body"], dict) else None
        path = doc["links"][0]["href"]


pid, status = None, 2
ledger = {"lock": threading.Lock(), "posted": {}, "deleted": set(), "maybe": set()}
try:
    out("# marconi power cuts: mode=%s hold=%s cuts=%d seed=%d segment=%d bytes; data %s"
        % (a.mode, a.hold, a.cuts, seed, a.segment_bytes, data))
    pid, bt = boot()
    out("# first boot %.1f s" % bt)
    out("cut  delay_s  posted  deleted  present  lost  undone  dups  reboot_s")
    bad = 0
    for i in range(1, a.cuts + 1):
        stop = threading.Event()
        threads = [threading.Thread(target=producer, args=(i, ledger, stop)),
                   threading.Thread(target=producer, args=(i + 1000, ledger, stop)),
                   threading.Thread(target=consumer, args=(ledger, stop))]
        for t in threads:
            t.start()
        delay = rng.uniform(a.min_delay, a.max_delay)
        time.sleep(delay)
        cut(pid)
        pid = None
        stop.set()
        for t in threads:
            t.join(30)
        pid, bt = boot()
        seen, dups = listing()
        with ledger["lock"]:
            must = {k: v for k, v in ledger["posted"].items() if k not in ledger["deleted"] and k not in ledger["maybe"]}
            lost = [k for k, v in must.items() if seen.get(k) != v]
            undone = [k for k in ledger["deleted"] if k in seen]
            out("%3d  %7.2f  %6d  %7d  %7d  %4d  %6d  %4d  %8.1f" % (i, delay, len(ledger["posted"]),
                len(ledger["deleted"]), len(seen), len(lost), len(undone), dups, bt))
            bad += len(lost) + len(undone) + dups
            # What is gone is gone: later rounds check only what is still there.
            for k in lost:
                ledger["posted"].pop(k, None)
            for k in undone:
                ledger["deleted"].discard(k)
    status = 1 if bad else 0
    out("# %s" % ("LOST OR UNDONE: %d acknowledged changes" % bad if bad else "no acknowledged change lost or undone"))
finally:
    if pid:
        cut(pid)
    if a.keep:
        out("# kept %s" % work)
    else:
        for f in os.listdir(work):
            os.remove(os.path.join(work, f))
        os.rmdir(work)
raise SystemExit(status)
