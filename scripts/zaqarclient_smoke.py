#!/usr/bin/env python3
"""python-zaqarclient against a running marconi: the flows a newcomer would try first.

Usage: zaqarclient_smoke.py BASE_URL   (needs python-zaqarclient; conformance/run.py runs it from
its venv against the server it tests). Exits non-zero with the failing step on any mismatch.
"""
import sys
import uuid

from zaqarclient.queues import client
from zaqarclient.transport import errors


def main(url):
    project = "smoke-" + uuid.uuid4().hex[:8]
    c = client.Client(url, version=2, conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}})
    q = c.queue("jobs", force_create=True)
    assert q.exists(), "queue exists after create"
    q.metadata(new_meta={"owner": "ops"})
    assert q.metadata(force_reload=True).get("owner") == "ops", "metadata round trip"
    q.post([{"body": {"n": i}, "ttl": 300} for i in range(5)])
    assert [m.body for m in q.messages(echo=True)] == [{"n": i} for i in range(5)], "listing in order"
    claimed = list(q.claim(ttl=60, grace=60, limit=2))
    assert [m.body for m in claimed] == [{"n": 0}, {"n": 1}], "claim takes the oldest"
    for m in claimed:
        m.delete()
    assert q.stats["messages"]["total"] == 3, "acknowledged messages are gone"
    assert len(list(q.pop(count=2))) == 2, "pop"
    # marconi forwards no notifications: listing gives Zaqar's empty page, creating one raises.
    assert list(q.subscriptions()) == [], "no subscriptions"
    try:
        c.subscription("jobs", subscriber="http://example.com/hook", ttl=3600)
        raise AssertionError("creating a subscription must raise")
    except errors.MalformedRequest as e:
        assert "not supported" in str(e), f"subscription refusal says why: {e}"
    names = [x.name for x in c.queues(with_count=True)[0]]
    assert names == ["jobs"], f"queue listing: {names}"
    assert c.health(), "health"
    q.delete()
    assert not q.exists(), "queue gone after delete"
    print("python-zaqarclient smoke test: ok")


if __name__ == "__main__":
    main(sys.argv[1])
