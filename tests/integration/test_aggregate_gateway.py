"""
Request aggregation through a real gatelayer master and worker in front of
upstream servers running as processes of their own (each answers a JSON
echo of the request it got; C{/slow} answers late, C{/code/NNN} with that
status): three parts where one is slow answer within the deadline with
that part null, a dependent part reads an earlier part's document, a
required part failing under C{fail} is a 502 problem+json naming it, the
route's API key filter runs once and the identity it vouches for reaches
every part, the access log has one line with the parts, and C{--check}
refuses a cycle.
"""

import hashlib
import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until

GATE = """
[gateway]
workers = 1
access_log = {access_log}
[listener:web]
bind = 127.0.0.1:0
[upstream:users]
servers = {users}
[upstream:orders]
servers = {orders}
[upstream:recs]
servers = {recs}
[filter:keys]
type = api_key
keys = {keys}
[route:dashboard]
path = /dashboard
methods = GET
filters = keys
aggregate = user:    users    GET /users/$consumer/$query.user
            orders:  orders   GET /orders?owner=$part.user.server&user=$query.user&limit=5
            recs:    recs     GET /slow?delay=5   optional
part_timeout = 800ms
deadline = 1500ms
on_part_error = null
[route:strict]
path = /strict
aggregate = user:    users    GET /code/503
            orders:  orders   GET /orders
on_part_error = fail
"""

KEY = b"k-3f9a1c0e7b2d4f6a8c1e3b5d7f9a0c2e"

CYCLE = """
[listener:web]
bind = 127.0.0.1:0
[upstream:users]
servers = 127.0.0.1:9
[route:loop]
path = /loop
aggregate = a: users GET /a/$part.b.id
            b: users GET /b/$part.a.id
"""


class AggregateGatewayTests(TestCase):
    """
    One real worker fanning out to three real upstream processes.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        names = ("users", "orders", "recs")
        self.upstreams = dict(zip(names, (yield start_upstreams(self, reactor, *names))))
        directory = os.path.abspath(self.mktemp())
        self.access_log = os.path.join(directory, "access.log")
        keys = os.path.join(directory, "keys.ini")
        os.makedirs(directory)
        with open(keys, "w") as f:
            f.write("[consumers]\nalice = %s\n" % (hashlib.sha256(KEY).hexdigest(),))
        self.gate = yield start_gateway(self, reactor, GATE.format(
            access_log=self.access_log, keys=keys, **{n: u.address for n, u in self.upstreams.items()}), directory)

    @inlineCallbacks
    def test_slow_part_null_within_deadline(self):
        """
        The slow optional part is null with C{"errors": {"recs":
        "timeout"}} after its part_timeout, well within the deadline and
        long before it would answer; the others are the upstreams'
        documents; the dependent part's target carries the value read from
        the first part's document; the request id reached every part.
        """
        started = reactor.seconds()
        response = yield fetch(reactor, self.gate.url("web", "/dashboard?user=a%2F..%2Fb"),
                               headers={b"X-Request-Id": [b"req-42"], b"X-Api-Key": [KEY],
                                        b"X-Consumer": [b"mallory"]})
        elapsed = reactor.seconds() - started
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header(b"content-type"), b"application/json")
        self.assertGreater(elapsed, 0.75)
        self.assertLess(elapsed, 1.5)
        document = response.json()
        self.assertEqual(list(document), ["user", "orders", "recs", "errors"])
        self.assertEqual((document["recs"], document["errors"]), (None, {"recs": "timeout"}))
        user, orders = document["user"], document["orders"]
        self.assertEqual((user["server"], user["uri"]), ("users", "/users/alice/a%2F..%2Fb"))
        self.assertEqual((orders["server"], orders["uri"]), ("orders", "/orders?owner=users&user=a%2F..%2Fb&limit=5"))
        for part in (user, orders):
            # The client is no trusted proxy: the gateway's id replaces its own.
            self.assertEqual(part["headers"]["x-request-id"], [response.header(b"x-request-id").decode()])
            self.assertNotEqual(part["headers"]["x-request-id"], ["req-42"])
            self.assertEqual(part["headers"]["x-consumer"], ["alice"])
            self.assertNotIn("x-api-key", part["headers"])
            self.assertEqual(part["headers"]["accept"], ["application/json"])
            self.assertEqual(part["method"], "GET")

        def logged():
            if not os.path.exists(self.access_log):
                return None
            with open(self.access_log, encoding="utf-8") as f:
                return [line for line in f.read().splitlines() if "/dashboard" in line]
        lines = yield wait_until(reactor, logged, timeout=10, what="the access log line")
        self.assertEqual(len(lines), 1, lines)
        line = json.loads(lines[0])
        self.assertEqual((line["request_id"], line["route"]),
                         (response.header(b"x-request-id").decode(), "dashboard"))
        parts = line["parts"].split(",")
        self.assertEqual([p.split(":")[:2] for p in parts],
                         [["user", "200"], ["orders", "200"], ["recs", "timeout"]])
        self.assertTrue(all(p.endswith("ms") for p in parts), parts)

    @inlineCallbacks
    def test_required_part_failing_is_502(self):
        """
        Under C{on_part_error = fail} a required part answering 503 makes
        the answer a 502 problem+json naming the part and the reason, and
        the worker goes on serving.
        """
        response = yield fetch(reactor, self.gate.url("web", "/strict"))
        self.assertEqual(response.status, 502, response.body)
        self.assertEqual(response.header(b"content-type"), b"application/problem+json")
        problem = response.json()
        self.assertEqual((problem["status"], problem["part"], problem["reason"]), (502, "user", "status 503"))
        self.assertIn("user", problem["detail"])
        response = yield fetch(reactor, self.gate.url("web", "/dashboard?user=b"), headers={b"X-Api-Key": [KEY]})
        self.assertEqual(response.status, 200)
        response = yield fetch(reactor, self.gate.url("web", "/dashboard?user=b"))
        self.assertEqual(response.status, 401, "the route's filters run before any part")
        self.assertNotIn("Traceback", self.gate.log())

    @inlineCallbacks
    def test_check_refuses_cycle(self):
        """
        C{twistd gatelayer --check} refuses a dependency cycle between
        parts, naming the route and the parts.
        """
        path = os.path.join(os.path.abspath(self.mktemp()) + ".ini")
        with open(path, "w") as f:
            f.write(CYCLE)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-c", "import sys; from twisted.scripts.twistd import run; sys.argv=['twistd']+sys.argv[1:]; run()",
             "gatelayer", "-c", path, "--check"],
            env=dict(os.environ), reactor=reactor)
        self.assertNotEqual(code, 0)
        text = (out + err).decode("utf-8", "replace")
        self.assertIn("[route:loop] aggregate: has a dependency cycle between parts: a -> b -> a", text)
        self.assertNotIn("Traceback", text)
