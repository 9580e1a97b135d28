#!/usr/bin/env python3
"""Zaqar's own v2 API tests and the python-zaqarclient smoke test, against marconi.

    conformance/run.py [--server BINARY]      start a fresh marconi and test it (the default
                                              binary is target/debug/marconi)
    conformance/run.py --url http://HOST:PORT test a server that is already running, e.g. real
                                              Zaqar when the baseline is taken again
    conformance/run.py --redis-cluster        start a local Redis Cluster (3 masters, 3 replicas)
                                              and two marconi nodes on it, and test them through
                                              a proxy that sends each request to the other node
    conformance/run.py --setup                only make sure the venv is ready

It needs Python 3.11 or newer with venv (Debian: python3-venv) and access to PyPI the first time:
it installs the pinned Zaqar 23.0.1 test sources, pytest and python-zaqarclient into a venv at
$MARCONI_ZAQAR_VENV (default ~/.cache/marconi/zaqar-tests-venv), once. With --server it starts the
binary on a free loopback port with a new, empty data directory, runs the suites and the smoke
test, and stops that process (SIGTERM; it must exit 0). README.md in this folder explains the
suites, deselect.txt and baseline-zaqar-23.0.1.txt.

Exit status: 0 when every selected test that passes on real Zaqar 23.0.1 passes here, the smoke
test passes and the server stopped cleanly; 1 otherwise; 2 when the run could not be set up.
"""
import argparse
import contextlib
import http.client
import http.server
import itertools
import socket
import threading
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selection import covered, read_list

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DESELECT = HERE / 'deselect.txt'
BASELINE = HERE / 'baseline-zaqar-23.0.1.txt'
SMOKE = ROOT / 'scripts' / 'zaqarclient_smoke.py'
# python-zaqarclient with Keystone auth: starts its own fake Keystone and keystone-mode marconi.
KEYSTONE_SMOKE = ROOT / 'scripts' / 'zaqarclient_keystone.py'
# suite -> (packages given to pytest --pyargs, environment the tests need)
SUITES = {
    # The v2 test classes are named *MongoDB, after the store upstream runs them on; this flag
    # enables them. Here the storage is whatever the server under test uses.
    'zaqar-api-v2': (['zaqar.tests.unit.transport.wsgi.v2_0',
                      'zaqar.tests.unit.transport.wsgi.test_version'],
                     {'ZAQAR_TEST_MONGODB': '1'}),
    # Tests that speak HTTP already; this flag makes them talk to a server instead of in-process.
    'zaqar-functional': (['zaqar.tests.functional'], {'ZAQAR_TEST_INTEGRATION': '1'}),
}
PROXY_VARS = ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY')


class SetupError(Exception):
    """The run could not start: exit status 2."""


def log(text=''):
    print(text, flush=True)


# -- the venv ------------------------------------------------------------------------------------

def default_venv():
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(os.environ.get('MARCONI_ZAQAR_VENV') or os.path.join(cache, 'marconi',
                                                                     'zaqar-tests-venv'))


def ensure_venv(venv):
    """Creates or updates the venv unless it already holds exactly what the pins say. Returns its
    python. The stamp is a hash of the pins and of the interpreter's version, so editing
    requirements.txt or constraints.txt, or a new Python, leads to an install; nothing else does."""
    python = venv / 'bin' / 'python'
    pins = (HERE / 'requirements.txt').read_bytes() + (HERE / 'constraints.txt').read_bytes()
    want = hashlib.sha256(pins + sys.version.encode()).hexdigest()
    stamp = venv / 'marconi-stamp'
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once install once
        if stamp.exists() and stamp.read_text().strip() == want and python.exists():
            return python
        if venv.exists():
            if not (venv / 'pyvenv.cfg').exists() and any(venv.iterdir()):
                raise SetupError('%s is not a venv; set MARCONI_ZAQAR_VENV elsewhere' % venv)
            if (venv / 'pyvenv.cfg').exists() and not python_works(python):
                if not stamp.exists():
                    raise SetupError('%s is a venv of another Python; remove it' % venv)
                shutil.rmtree(venv)  # ours, made by another Python or half-made
        log('== setting up %s (pinned by conformance/constraints.txt; once)' % venv)
        t0 = time.monotonic()
        if not python.exists():
            made = subprocess.run([sys.executable, '-m', 'venv', str(venv)],
                                  capture_output=True, text=True)
            if made.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise SetupError('could not create a venv with %s:\n%s\n(on Debian: apt-get install '
                                 'python3-venv)' % (sys.executable, made.stderr.strip()))
            stamp.write_text('incomplete\n')  # marks the venv as this script's to replace
        installed = subprocess.run(
            [str(python), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
             '--only-binary=:all:', '-r', str(HERE / 'requirements.txt'),
             '-c', str(HERE / 'constraints.txt')])
        if installed.returncode != 0:
            raise SetupError('pip could not install conformance/requirements.txt into %s' % venv)
        stamp.write_text(want + '\n')
        log('   ready in %.0f s' % (time.monotonic() - t0))
    return python


def python_works(python):
    return python.exists() and subprocess.run(
        [str(python), '-c', 'import sys; sys.exit(sys.version != %r)' % sys.version],
        capture_output=True).returncode == 0


# -- the server ----------------------------------------------------------------------------------

class Marconi:
    """One marconi process on a free loopback port with its own, new data directory."""

    def __init__(self, binary, out, name='server', backend=()):
        self.binary = binary
        self.data = Path(tempfile.mkdtemp(prefix='marconi-conformance-data.'))
        self.log_path = out / (name + '.log')
        ready_path = out / (name + '.stdout')
        with open(ready_path, 'w') as ready, open(self.log_path, 'w') as err:
            self.proc = subprocess.Popen(
                [str(binary), 'serve', '--listen', '127.0.0.1:0', '--shards', '2',
                 '--signed-url-secret-key', 'conformance-secret', '--data-dir', str(self.data),
                 '--log', 'warn', *backend],
                stdin=subprocess.DEVNULL, stdout=ready, stderr=err)
        # The first line on stdout: "marconi listening on 127.0.0.1:PORT with ...".
        deadline = time.monotonic() + 60
        while True:
            words = ready_path.read_text().split()
            if len(words) > 3 and words[1:3] == ['listening', 'on']:
                self.url = 'http://' + words[3]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SetupError('marconi did not start; its log:\n' + self.log_path.read_text())
            time.sleep(0.05)

    def stop(self):
        """SIGTERM, then the exit status must be 0. Returns what went wrong, if anything."""
        problem = None
        if self.proc.poll() is not None:
            problem = 'marconi exited during the run with status %s' % self.proc.returncode
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=30)
                if status != 0:
                    problem = 'marconi exited with status %s on SIGTERM' % status
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = 'marconi did not exit within 30 s of SIGTERM; killed'
        shutil.rmtree(self.data, ignore_errors=True)
        return problem


def free_port_block(count):
    """A base port with `count` free ports above it and their cluster-bus twins (+10000)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            base = probe.getsockname()[1]
        if base + count + 10000 > 65535:
            continue
        try:
            for port in itertools.chain(range(base, base + count), range(base + 10000, base + 10000 + count)):
                with socket.socket() as s:
                    s.bind(('127.0.0.1', port))
            return base
        except OSError:
            continue
    raise SetupError('no block of %d free loopback ports' % count)


class RedisCluster:
    """A local Redis Cluster from scripts/redis-cluster.sh, stopped with exactly its processes."""

    def __init__(self, out):
        self.dir = Path(tempfile.mkdtemp(prefix='marconi-conformance-redis.'))
        self.env = dict(os.environ, BASE_PORT=str(free_port_block(6)))
        script = ROOT / 'scripts' / 'redis-cluster.sh'
        done = subprocess.run([str(script), 'start', str(self.dir)], env=self.env, capture_output=True,
                              text=True, timeout=120)
        (out / 'redis-cluster.log').write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            self.stop()
            raise SetupError('the Redis Cluster did not start:\n' + done.stdout + done.stderr)
        ports = range(int(self.env['BASE_PORT']), int(self.env['BASE_PORT']) + 3)
        self.nodes = ','.join('127.0.0.1:%d' % p for p in ports)

    def stop(self):
        subprocess.run([str(ROOT / 'scripts' / 'redis-cluster.sh'), 'stop', str(self.dir)], env=self.env,
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Alternating:
    """An HTTP proxy on a free loopback port that sends each request to the next of `targets`, so
    that consecutive requests of one client (one keep-alive connection included) go to different
    marconi nodes: whatever one node wrote, the other must read."""

    def __init__(self, targets):
        turn = itertools.cycle(range(len(targets)))
        lock = threading.Lock()
        hosts = [t.split('//', 1)[1] for t in targets]

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *_):
                pass

            def forward(self):
                with lock:
                    host = hosts[next(turn)]
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(host, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ('connection', 'host')}
                headers['Host'] = host
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                except OSError:
                    pass  # marconi may answer from the head (413) and close before the body is in
                answer = conn.getresponse()
                data = answer.read()
                self.send_response_only(answer.status, answer.reason)
                for k, v in answer.getheaders():
                    if k.lower() not in ('connection', 'transfer-encoding', 'content-length'):
                        self.send_header(k, v)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(url):
    try:
        urllib.request.urlopen(url + '/', timeout=5)
    except urllib.error.HTTPError:
        pass  # any HTTP answer will do
    except OSError as e:
        raise SetupError('no server at %s (%s)' % (url, e))


# -- the suites ----------------------------------------------------------------------------------

def run_suite(python, suite, url, out, args):
    """Runs one suite with pytest; returns ({test id: (outcome, reason)}, deselected count)."""
    packages, flags = SUITES[suite]
    results = out / (suite + '.results.jsonl')
    etc = out / ('etc-' + suite)
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(flags, PYTHONPATH=str(HERE), PYTHONDONTWRITEBYTECODE='1',
               MARCONI_TARGET_URL=url, MARCONI_ZAQAR_ETC=str(etc), MARCONI_RESULTS=str(results),
               MARCONI_DESELECT=str(DESELECT), MARCONI_CHECK_STALE='0' if args.k else '1')
    cmd = [str(python), '-m', 'pytest', '-p', 'zaqar_over_http', '-p', 'no:cacheprovider',
           '-q', '-rfEs', '--timeout', str(args.test_timeout)]
    if args.k:
        cmd += ['-k', args.k]
    cmd += ['--pyargs'] + packages
    results.unlink(missing_ok=True)  # the plugin appends
    t0 = time.monotonic()
    with open(out / (suite + '.log'), 'w') as f:
        try:
            # cwd holds an empty pytest.ini, so no configuration around the checkout applies.
            code = subprocess.run(cmd, cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=args.suite_timeout).returncode
        except subprocess.TimeoutExpired:
            code = 'timeout'
    outcomes, deselected = {}, 0
    if results.exists():
        for line in results.read_text().splitlines():
            entry = json.loads(line)
            if 'deselected' in entry:
                deselected = entry['deselected']
            else:
                outcomes[entry['id']] = (entry['outcome'], entry.get('reason', ''))
    # pytest: 0 all passed, 1 some failed, 5 nothing collected (fine with -k); else it broke.
    if code == 'timeout':
        outcomes['<%s stopped after %d s>' % (suite, args.suite_timeout)] = ('failed', '')
    elif code not in (0, 1, 5) or code == 5 and not args.k:
        outcomes['<%s: pytest exited with %s>' % (suite, code)] = (
            'failed', 'see %s' % (out / (suite + '.log')))
    log('== %s: %d tests in %.0f s' % (suite, len(outcomes), time.monotonic() - t0))
    return outcomes, deselected


def smoke(python, script, target, out, name='smoke'):
    with open(out / (name + '.log'), 'w') as f:
        try:
            code = subprocess.run([str(python), str(script), str(target)], stdout=f, stderr=subprocess.STDOUT,
                                  timeout=120).returncode
        except subprocess.TimeoutExpired:
            code = 'timeout'
    text = (out / (name + '.log')).read_text().strip()
    return code == 0, text


# -- the report ----------------------------------------------------------------------------------

def report(per_suite, out):
    """Prints the counts and every failure; returns the failures real Zaqar does not share."""
    baseline = read_list(BASELINE)
    log()
    log('%-18s %7s %7s %7s %11s' % ('suite', 'passed', 'failed', 'skipped', 'deselected'))
    failures, passed, skipped = [], 0, 0
    for suite, (outcomes, deselected) in per_suite.items():
        counts = {k: sum(1 for o, _ in outcomes.values() if o == k)
                  for k in ('passed', 'failed', 'skipped')}
        log('%-18s %7d %7d %7d %11d' % (suite, counts['passed'], counts['failed'],
                                        counts['skipped'], deselected))
        passed += counts['passed']
        skipped += counts['skipped']
        failures += [(tid, why) for tid, (o, why) in sorted(outcomes.items()) if o == 'failed']
    new = [(tid, why) for tid, why in failures if not covered(baseline, tid)]
    known = len(failures) - len(new)
    fixed = sorted(tid for outcomes, _ in per_suite.values() for tid, (o, _) in outcomes.items()
                   if o == 'passed' and covered(baseline, tid))
    log()
    log('failing tests: %s' % (len(failures) or 'none'))
    for tid, _ in failures:
        log('  %s%s' % (tid, '   [real Zaqar 23.0.1 fails it too]' if covered(baseline, tid) else ''))
    log('failing here but passing on real Zaqar 23.0.1: %s' % (len(new) or 'none'))
    for tid, why in new:
        log('  %s\n      %s' % (tid, why))
    log('passing here but failing on real Zaqar 23.0.1: %s' % (len(fixed) or 'none'))
    for tid in fixed:
        log('  ' + tid)
    with open(out / 'failures.txt', 'w') as f:
        f.writelines(tid + '\n' for tid, _ in failures)
    log()
    log('(the %d failures that real Zaqar 23.0.1 shares count as skipped; logs in %s)' % (known, out))
    log('%d passed, %d failed, %d skipped' % (passed, len(new), skipped + known))
    return new


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--server', type=Path, help='marconi binary to start (default: '
                        'target/debug/marconi)')
    target.add_argument('--url', help='test this running server instead of starting one')
    target.add_argument('--setup', action='store_true', help='only set up the venv')
    parser.add_argument('--redis-cluster', action='store_true',
                        help='two marconi nodes on a new local Redis Cluster, requests alternating')
    parser.add_argument('--suite', action='append', choices=list(SUITES),
                        help='run only this suite (repeatable)')
    parser.add_argument('-k', help='pytest -k expression, to rerun some tests')
    parser.add_argument('--no-smoke', action='store_true', help='skip the python-zaqarclient test')
    parser.add_argument('--out', type=Path, help='folder for the logs (default: a new one in /tmp)')
    parser.add_argument('--suite-timeout', type=int, default=900, help='seconds (default 900)')
    parser.add_argument('--test-timeout', type=int, default=300, help='seconds (default 300)')
    args = parser.parse_args()
    if sys.version_info < (3, 11):
        raise SetupError('Zaqar 23 needs Python 3.11 or newer; this is %s' % sys.version.split()[0])

    t0 = time.monotonic()
    python = ensure_venv(default_venv())
    if args.setup:
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix='marconi-conformance.'))
    out.mkdir(parents=True, exist_ok=True)
    (out / 'pytest.ini').write_text('[pytest]\n')
    server = None
    nodes, cluster, proxy = [], None, None
    problems = []
    try:
        if args.url:
            url = args.url.rstrip('/')
            wait_for(url)
        else:
            binary = args.server or ROOT / 'target' / 'debug' / 'marconi'
            if not os.access(binary, os.X_OK):
                raise SetupError('no marconi binary at %s: cargo build --bin marconi' % binary)
            if args.redis_cluster:
                cluster = RedisCluster(out)
                backend = ('--backend', 'redis-cluster', '--redis-nodes', cluster.nodes)
                nodes = [Marconi(binary, out, 'node-%d' % i, backend) for i in range(2)]
                proxy = Alternating([n.url for n in nodes])
                url = proxy.url
            else:
                server = Marconi(binary, out)
                url = server.url
        log('== testing %s' % url)
        per_suite = {s: run_suite(python, s, url, out, args) for s in args.suite or SUITES}
        if not args.no_smoke:
            ok, text = smoke(python, SMOKE, url, out)
            log(text if ok else 'python-zaqarclient smoke test FAILED:\n' + text)
            if not ok:
                problems.append('the python-zaqarclient smoke test failed')
            if server is not None:
                ok, text = smoke(python, KEYSTONE_SMOKE, server.binary, out, 'keystone-smoke')
                log(text.splitlines()[-1] if ok else 'python-zaqarclient Keystone test FAILED:\n' + text)
                if not ok:
                    problems.append('the python-zaqarclient Keystone test failed')
    finally:
        if proxy is not None:
            proxy.stop()
        for process in [server, *nodes]:
            if process is not None:
                stopped = process.stop()
                if stopped:
                    problems.append(stopped + ' (log: %s)' % process.log_path)
        if cluster is not None:
            cluster.stop()
    new = report(per_suite, out)
    for problem in problems:
        log('FAILED: ' + problem)
    log('conformance run took %.0f s' % (time.monotonic() - t0))
    return 1 if new or problems else 0


if __name__ == '__main__':
    # SIGTERM (a CI time limit) unwinds like ^C, so the server started here is stopped.
    def stopped(*_):
        print('run.py: stopped by SIGTERM', file=sys.stderr)
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    try:
        sys.exit(main())
    except SetupError as e:
        print('run.py: %s' % e, file=sys.stderr)
        sys.exit(2)
