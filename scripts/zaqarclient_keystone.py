#!/usr/bin/env python3
"""python-zaqarclient with Keystone auth, unchanged, against marconi in `auth.mode = keystone`.

Usage: zaqarclient_keystone.py MARCONI_BINARY   (needs python-zaqarclient and keystoneauth1;
conformance/run.py runs it from its venv).
       zaqarclient_keystone.py --keystone-only   only the fake Keystone (plain python3): prints its
                                                 URL, serves until killed (scripts/bench-auth.sh). It starts a minimal fake Keystone v3 on a free loopback
port (password login and token validation), then marconi in keystone mode pointed at it, runs a
job-queue and a pub-sub round trip through zaqarclient's `keystone` auth backend, checks that the
client's requests landed in its token's project and that another project's token sees nothing,
and stops both. Exits non-zero with the failing step on any mismatch.
"""
import json
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SERVICE_TOKEN = 'marconi-service-token'
EXPIRES = '2099-01-01T00:00:00.000000Z'
# user name -> (password, project id)
USERS = {'alice': ('alice-pw', 'proj-alice'), 'bob': ('bob-pw', 'proj-bob'), 'bench': ('bench-pw', 'loadgen-0')}


class FakeKeystone(BaseHTTPRequestHandler):
    tokens = {}  # token -> (user, project)

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def token_body(self, user, project):
        return {'token': {'methods': ['password'], 'expires_at': EXPIRES, 'issued_at': '2020-01-01T00:00:00.000000Z',
                          'user': {'id': 'id-' + user, 'name': user, 'domain': {'id': 'default', 'name': 'Default'}},
                          'project': {'id': project, 'name': project, 'domain': {'id': 'default', 'name': 'Default'}},
                          'roles': [{'id': 'r', 'name': 'member'}], 'catalog': []}}

    def do_POST(self):
        if not self.path.startswith('/v3/auth/tokens'):
            return self.answer(404, {})
        doc = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))) or b'{}')
        user = doc.get('auth', {}).get('identity', {}).get('password', {}).get('user', {})
        name, password = user.get('name'), user.get('password')
        if name not in USERS or USERS[name][0] != password:
            return self.answer(401, {'error': {'code': 401}})
        token = uuid.uuid4().hex
        self.tokens[token] = (name, USERS[name][1])
        self.answer(201, self.token_body(name, USERS[name][1]), [('X-Subject-Token', token)])

    def do_GET(self):
        if not self.path.startswith('/v3/auth/tokens'):
            return self.answer(404, {})
        if self.headers.get('X-Auth-Token') != SERVICE_TOKEN:
            return self.answer(401, {'error': {'code': 401}})
        subject = self.headers.get('X-Subject-Token', '')
        if subject not in self.tokens:
            return self.answer(404, {'error': {'code': 404}})
        user, project = self.tokens[subject]
        self.answer(200, self.token_body(user, project), [('X-Subject-Token', subject)])


def zaqar(url, keystone, user):
    from zaqarclient.queues import client
    conf = {'auth_opts': {'backend': 'keystone', 'options': {
        'os_auth_url': keystone + '/v3', 'os_username': user, 'os_password': USERS[user][0],
        'os_project_id': USERS[user][1], 'os_user_domain_name': 'Default', 'os_project_domain_name': 'Default'}}}
    return client.Client(url, version=2, conf=conf)


def round_trip(url, keystone):
    alice = zaqar(url, keystone, 'alice')
    # Job queue: post, claim, acknowledge.
    jobs = alice.queue('jobs', force_create=True)
    assert jobs.exists(), 'queue exists after create'
    jobs.post([{'body': {'n': i}, 'ttl': 300} for i in range(4)])
    claimed = list(jobs.claim(ttl=60, grace=60, limit=2))
    assert [m.body for m in claimed] == [{'n': 0}, {'n': 1}], 'claim takes the oldest'
    for m in claimed:
        m.delete()
    assert jobs.stats['messages']['total'] == 2, 'acknowledged messages are gone'
    # Pub-sub: one publisher, two subscribers reading the same messages with their own markers.
    feed = alice.queue('feed', force_create=True)
    feed.post([{'body': {'event': e}, 'ttl': 300} for e in ('a', 'b', 'c')])
    for _ in range(2):
        reader = zaqar(url, keystone, 'alice')
        got = [m.body['event'] for m in reader.queue('feed').messages(echo=True)]
        assert got == ['a', 'b', 'c'], 'every subscriber sees every event: %s' % got
    names = sorted(q.name for q in alice.queues(with_count=True)[0])
    assert names == ['feed', 'jobs'], 'listing in the token\'s project: %s' % names
    # Another project's token sees none of it.
    bob = zaqar(url, keystone, 'bob')
    assert list(bob.queues(with_count=True)[0]) == [], 'bob sees no queue of alice'
    assert not bob.queue('jobs', auto_create=False).exists(), 'bob has no queue jobs'
    jobs.delete()
    feed.delete()


def main(binary):
    keystone = ThreadingHTTPServer(('127.0.0.1', 0), FakeKeystone)
    threading.Thread(target=keystone.serve_forever, daemon=True).start()
    keystone_url = 'http://127.0.0.1:%d' % keystone.server_address[1]
    data = tempfile.mkdtemp(prefix='marconi-keystone-smoke.')
    proc = subprocess.Popen(
        [binary, 'serve', '--listen', '127.0.0.1:0', '--shards', '2', '--data-dir', data, '--log', 'warn',
         '--auth', 'keystone', '--set', 'auth.keystone.url=%s/v3' % keystone_url,
         '--set', 'auth.keystone.service_token=%s' % SERVICE_TOKEN],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        words = proc.stdout.readline().split()
        assert len(words) > 3 and words[1:3] == ['listening', 'on'], 'marconi did not start: %s' % words
        round_trip('http://' + words[3], keystone_url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        keystone.shutdown()
        subprocess.run(['rm', '-rf', data], check=False)
    print('python-zaqarclient with Keystone auth: ok')


if __name__ == '__main__':
    if sys.argv[1] == '--keystone-only':
        server = ThreadingHTTPServer(('127.0.0.1', 0), FakeKeystone)
        print('http://127.0.0.1:%d' % server.server_address[1], flush=True)
        server.serve_forever()
    else:
        main(sys.argv[1])
