"""pytest plugin: Zaqar's own v2 API tests against a server that is already running.

run.py loads it with `-p zaqar_over_http` and configures it through the environment:

MARCONI_TARGET_URL  the server under test, http://HOST:PORT.
MARCONI_ZAQAR_ETC   an empty folder. Zaqar's test configs (zaqar/tests/etc) are copied there and
                    rewritten: the test-side Zaqar gets the "faulty" storage driver (so this side
                    needs no database) and pooling off, and functional-tests.conf points at the
                    server. ZAQAR_TESTS_CONFIGS_DIR is set to the folder.
MARCONI_DESELECT    the list of tests not to run, one per line with its reason (deselect.txt).
MARCONI_RESULTS     a file that gets one JSON line per test: its id, outcome and failure.

The WSGI tests (zaqar/tests/unit/transport/wsgi) build a local Zaqar app and call it in-process
through `self.app(environ, start_response)`. After their own setUp, `self.app` is replaced by
HttpForwarder, which sends every request as a real HTTP/1.1 request to the server and hands the
answer back unchanged. Where a test would drop its database, the queues and topics of the projects
it used are deleted through the API instead. The functional tests (zaqar/tests/functional) already
speak HTTP: they are told the server is running, and their class clean-up, which drops local
databases, is skipped.

Test ids are node ids relative to the zaqar/tests package, for example
`unit/transport/wsgi/v2_0/test_claims.py::TestClaimsMongoDB::test_lifecycle`.
"""
import configparser
import http.client
import json
import os
import re
import shutil
import urllib.parse
import uuid

import falcon
import zaqar.tests

from selection import covered, read_list

ZAQAR_TESTS = os.path.dirname(zaqar.tests.__file__)
TARGET = urllib.parse.urlsplit(os.environ['MARCONI_TARGET_URL'])
# Hop-by-hop and per-connection headers are not the test's business.
HOP_HEADERS = {'connection', 'keep-alive', 'transfer-encoding', 'date', 'server'}
# Characters kept as they are when a decoded WSGI path or query goes back on the wire.
PATH_SAFE = "/:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + '?%'


def short_id(item):
    """The test's id relative to zaqar/tests, whatever pytest's rootdir is (with --pyargs, pytest's
    own node ids are relative to each package given, so they are ambiguous)."""
    path = os.path.relpath(str(item.path), ZAQAR_TESTS).replace(os.sep, '/')
    return path + '::' + item.nodeid.split('::', 1)[1]


# -- 1. configs --------------------------------------------------------------------------------

def write_configs(folder, base_url):
    shutil.copytree(os.path.join(ZAQAR_TESTS, 'etc'), folder, dirs_exist_ok=True)
    for name in sorted(os.listdir(folder)):
        if not name.endswith('.conf') or name == 'functional-tests.conf':
            continue
        conf = configparser.RawConfigParser(strict=False, interpolation=None)
        conf.optionxform = str  # keep the keys' case
        path = os.path.join(folder, name)
        conf.read(path)
        if conf.has_section('drivers'):
            conf.set('drivers', 'message_store', 'faulty')
            conf.set('drivers', 'management_store', 'faulty')
        conf.set('DEFAULT', 'pooling', 'False')
        with open(path, 'w') as f:
            conf.write(f)
    with open(os.path.join(folder, 'functional-tests.conf'), 'w') as f:
        f.write('[DEFAULT]\nrun_tests = True\nunreliable = True\n\n'
                '[zaqar]\nurl = %s\nconfig = functional-zaqar.conf\n\n'
                '[headers]\nuser_agent = FunctionalTests\nproject_id = 123456\n' % base_url)
    os.environ['ZAQAR_TESTS_CONFIGS_DIR'] = folder


# -- 2. the WSGI tests over HTTP ---------------------------------------------------------------

class HttpForwarder:
    """A WSGI app that replays each request to the server over one keep-alive connection."""

    def __init__(self, url):
        self.url = url
        self.prefix = url.path.rstrip('/')
        self.conn = None
        self.projects = set()  # X-Project-IDs the current test used

    def send(self, method, target, body, headers):
        # A server that refuses an oversized body may answer and close before the client has sent
        # it all; the reset can swallow the answer. Such a request is sent again on a new
        # connection (its answer is the same refusal), as is one that met a closed idle connection.
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port or 80,
                                                       timeout=60)
            try:
                try:
                    # putrequest/putheader send exactly these headers; request() would add
                    # Content-Length: 0 to body-less PUTs and POSTs, and Accept-Encoding.
                    self.conn.putrequest(method, target, skip_accept_encoding=True)
                    for k, v in headers.items():
                        self.conn.putheader(k, v)
                    self.conn.endheaders(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server may still have answered: read it
                resp = self.conn.getresponse()
                return resp, resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def __call__(self, environ, start_response):
        # WSGI carries the decoded path as latin-1 text; encode it back for the wire.
        path = urllib.parse.quote(environ.get('PATH_INFO', '/').encode('latin-1'), safe=PATH_SAFE)
        query = environ.get('QUERY_STRING', '')
        if query:
            path += '?' + urllib.parse.quote(query, safe=QUERY_SAFE)
        headers = {k[5:].replace('_', '-').title(): v for k, v in environ.items()
                   if k.startswith('HTTP_') and k != 'HTTP_HOST'}
        if environ.get('CONTENT_TYPE'):
            headers['Content-Type'] = environ['CONTENT_TYPE']
        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length) if length else b''
        if 'CONTENT_LENGTH' in environ:
            headers['Content-Length'] = str(len(body))
        if headers.get('X-Project-Id'):
            self.projects.add(headers['X-Project-Id'])
        resp, data = self.send(environ['REQUEST_METHOD'], self.prefix + path, body or None, headers)
        # The tests compare status lines with falcon's constants ('404 Not Found').
        start_response(falcon.code_to_http_status(resp.status),
                       [(k.lower(), v) for k, v in resp.getheaders()
                        if k.lower() not in HOP_HEADERS])
        return [data] if data else []

    def delete_projects(self):
        """What "drop the database" means here: delete every queue and topic of every project the
        test used, through the API, page by page."""
        for project in sorted(self.projects):
            headers = {'X-Project-ID': project, 'Client-ID': str(uuid.uuid4())}
            for kind in ('queues', 'topics'):
                seen = set()
                while True:
                    resp, data = self.send('GET', '%s/v2/%s?limit=20' % (self.prefix, kind),
                                           None, headers)
                    if resp.status != 200:
                        break  # e.g. a server without topics
                    names = {q['name'] for q in json.loads(data).get(kind, [])} - seen
                    if not names:
                        break  # empty, or only what would not go away
                    seen |= names
                    for name in sorted(names):
                        self.send('DELETE', '%s/v2/%s/%s' % (
                            self.prefix, kind, urllib.parse.quote(name, safe='')), None, headers)
        self.projects.clear()


def forward_wsgi_tests(forwarder):
    from zaqar.tests import faulty_storage
    from zaqar.tests.unit.transport.wsgi import base

    local_setup = base.TestBase.setUp

    def setUp(self):
        forwarder.projects.clear()
        local_setup(self)
        self.app = forwarder  # from here on, every simulate_* call goes over the wire

    base.TestBase.setUp = setUp

    # Some tearDowns drop MongoDB databases: `storage.connection.drop_database(db)` for the
    # control driver's queues/topics database and each of `storage.message_databases`.
    class DropOverHttp:
        def drop_database(self, name):
            forwarder.delete_projects()

    faulty_storage.DataDriver.connection = DropOverHttp()
    faulty_storage.DataDriver.message_databases = ()
    faulty_storage.ControlDriver.queues_database = 'queues'
    faulty_storage.ControlDriver.topics_database = 'topics'


# -- 3. the functional tests -------------------------------------------------------------------

def use_running_server():
    from zaqar.tests.functional import base

    class Running:
        def is_alive(self):
            return True

    base.FunctionalTestBase.server = Running()
    base.FunctionalTestBase.tearDownClass = classmethod(lambda cls: None)


# -- 4. deselection, 5. results ----------------------------------------------------------------

OUTCOMES = {}  # test id -> the worst outcome of its phases so far
IDS = {}  # pytest's node id -> test id
RANK = {'passed': 0, 'skipped': 1, 'failed': 2}


def pytest_configure(config):
    write_configs(os.environ['MARCONI_ZAQAR_ETC'], os.environ['MARCONI_TARGET_URL'].rstrip('/'))
    forward_wsgi_tests(HttpForwarder(TARGET))
    use_running_server()


def pytest_collection_modifyitems(config, items):
    path = os.environ['MARCONI_DESELECT']
    entries = read_list(path)
    keep, drop, used = [], [], set()
    for item in items:
        tid = IDS[item.nodeid] = short_id(item)
        hit = covered(entries, tid)
        used.update(hit)
        (drop if hit else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if os.environ.get('MARCONI_CHECK_STALE') == '1':
        # An entry that names no test of this suite's folders is a typo or a renamed test.
        tops = {tid.split('/')[0] + '/' for tid in IDS.values()}
        for entry in sorted(entries):
            if entry not in used and entry.startswith(tuple(tops)):
                record({'id': '%s: %s' % (os.path.basename(path), entry), 'outcome': 'failed',
                        'reason': 'this entry matches no test'})


DESELECTED = []


def pytest_deselected(items):
    DESELECTED.extend(items)  # by deselect.txt and by -k


def pytest_collection_finish(session):
    record({'deselected': len(DESELECTED)})


def pytest_collectreport(report):
    if report.failed:
        record({'id': report.nodeid or '<collection>', 'outcome': 'failed',
                'reason': 'collection error: ' + last_line(str(report.longrepr))})


def pytest_runtest_logreport(report):
    tid = IDS.get(report.nodeid, report.nodeid)
    old = OUTCOMES.setdefault(tid, {'outcome': 'passed'})
    if RANK[report.outcome] > RANK[old['outcome']]:
        OUTCOMES[tid] = {'outcome': report.outcome}
        if report.failed:
            OUTCOMES[tid]['reason'] = '%s: %s' % (report.when, reason(report))


def pytest_runtest_logfinish(nodeid, location):
    tid = IDS.get(nodeid, nodeid)
    record(dict(id=tid, **OUTCOMES.pop(tid, {'outcome': 'passed'})))


def reason(report):
    """The test's line that failed and the final error, on one line. Zaqar's tests are testtools
    cases, whose failures pytest only has as traceback text."""
    lines = [ln.strip() for ln in report.longreprtext.splitlines() if ln.strip()]
    where = ''
    for i, line in enumerate(lines):
        m = re.search(r'File "[^"]*/zaqar/tests/[^"]*?([^/"]+)", line (\d+)', line)
        if m and i + 1 < len(lines):
            where = '%s:%s %s -> ' % (m.group(1), m.group(2), lines[i + 1])
    errors = [ln for ln in lines if re.match(r'[\w.]+: ', ln)]
    error = re.sub(r'^(\w+\.)+', '', errors[-1]) if errors else last_line(report.longreprtext)
    return (where + error)[:300]


def last_line(text):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else ''


def record(entry):
    """Appends at once, so a suite stopped by its time limit still leaves what it finished."""
    with open(os.environ['MARCONI_RESULTS'], 'a') as f:
        f.write(json.dumps(entry) + '\n')
