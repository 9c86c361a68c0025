"""
The jwt filter against a real JWKS server on a loopback socket: keys are
fetched, rotated without a restart, and a hanging server neither blocks the
reactor nor holds requests for longer than the fetch timeout.
"""

import os
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gatelayer.auth import testing as t
from gatelayer.chain import Exchange, Reply
from gatelayer.config.filter_jwt import parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.config.reader import SectionReader
from gatelayer.filters import FilterServices, build_filter

DEADLINE = 10.0


class JwksResource(Resource):
    """
    Serves the current JWKS document, or holds requests unanswered while
    C{hang} is set.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.document = b'{"keys": []}'
        self.hang = False
        self.served = 0
        self.held = []

    def render_GET(self, request):
        if self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        self.served += 1
        request.setHeader(b"content-type", b"application/json")
        return self.document


class Pong(Resource):
    """
    Any other request the reactor should keep answering.
    """

    isLeaf = True

    def render_GET(self, request):
        return b"pong"


def _publish(resource, *kids):
    resource.document = t.jwks(*(t.public_jwk(t.private_key("RSA", index), kid) for kid, index in kids))


def _request(jwt, kid, index=0):
    token = t.token({"sub": "alice", "exp": reactor.seconds() + 300}, key=t.private_key("RSA", index), kid=kid)
    exchange = Exchange(method=b"GET", path=b"/", query=b"",
                        headers=Headers({b"authorization": [b"Bearer " + token]}), client_ip="127.0.0.1")
    return jwt.on_request(exchange)


@inlineCallbacks
def _until(predicate, deadline=DEADLINE):
    waited = 0.0
    while not predicate():
        if waited > deadline:
            raise AssertionError("condition not reached in time")
        yield deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class JwksFetchTests(TestCase):
    """
    Fetching, rotating and surviving a hanging identity provider.
    """

    def setUp(self):
        self.jwks = JwksResource()
        root = Resource()
        root.putChild(b"jwks.json", self.jwks)
        root.putChild(b"ping", Pong())
        self.connections = WrappingFactory(Site(root))
        self.port = reactor.listenTCP(0, self.connections, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.addCleanup(self._close)

    @inlineCallbacks
    def _close(self):
        yield self.port.stopListening()
        for connection in list(self.connections.protocols):
            connection.transport.abortConnection()
        yield _until(lambda: not self.connections.protocols)

    def build(self, timeout="1s"):
        problems = []
        reader = SectionReader("gate.ini", "filter:jwt", {
            "jwks_url": self.base + "/jwks.json", "algorithms": "RS256", "jwks_timeout": timeout,
        }, problems, ".")
        settings = parse_filter(reader)
        reader.finish()
        self.assertEqual(problems, [])
        jwt = build_filter(FilterSpec("jwt", "jwt", settings), FilterServices(reactor, None, None))
        self.addCleanup(jwt.stop)
        return jwt

    @inlineCallbacks
    def test_fetch_and_rotate(self):
        """
        The key set is fetched at start; when the provider rotates to a new
        kid, the first token naming it triggers a refetch and passes, and
        tokens of the retired key are refused from then on.
        """
        _publish(self.jwks, ("k1", 0))
        jwt = self.build()
        yield _until(lambda: jwt.fetcher.keys.kids == {"k1"})
        self.assertIsNone(_request(jwt, "k1"))

        _publish(self.jwks, ("k2", 1))
        waiting = _request(jwt, "k2", 1)
        self.assertIsInstance(waiting, Deferred)
        self.assertIsNone((yield waiting))
        self.assertEqual(self.jwks.served, 2)
        self.assertIsNone(_request(jwt, "k2", 1))
        refused = _request(jwt, "k1")
        self.assertIsInstance(refused, Reply)
        self.assertEqual(refused.status, 401)

    @inlineCallbacks
    def test_hanging_provider(self):
        """
        While the JWKS server holds the refetch unanswered, the reactor keeps
        serving other requests, known kids are verified at once, and the
        unknown kid gets 401 once the fetch timeout has passed.
        """
        _publish(self.jwks, ("k1", 0))
        jwt = self.build(timeout="1s")
        yield _until(lambda: jwt.fetcher.keys.kids == {"k1"})

        self.jwks.hang = True
        started = reactor.seconds()
        waiting = _request(jwt, "k9", 1)
        self.assertIsInstance(waiting, Deferred)
        yield _until(lambda: self.jwks.held)

        response = yield Agent(reactor).request(b"GET", (self.base + "/ping").encode())
        self.assertEqual((yield readBody(response)), b"pong")
        self.assertIsNone(_request(jwt, "k1"))
        self.assertFalse(waiting.called)

        refused = yield waiting
        elapsed = reactor.seconds() - started
        self.assertEqual(refused.status, 401)
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 5)
        self.assertEqual(jwt.fetcher.keys.kids, {"k1"})
        self.assertIsNone(_request(jwt, "k1"))


class GatewayAuthTests(TestCase):
    """
    Both filters in a real gateway (master and one worker): refused requests
    never reach the upstream; accepted ones arrive with the identity headers
    and without the client's own.
    """

    timeout = 60

    @inlineCallbacks
    def test_identity_upstream(self):
        """
        A valid token and a registered API key get 200 with X-Consumer (and
        the forwarded claim) upstream; bad ones get 401 with a challenge.
        """
        from gatelayer.auth.apikeys import hash_key
        from gatelayer.testing.gateway import start_gateway
        from gatelayer.testing.http import fetch
        from gatelayer.testing.upstreams import UpstreamServer

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "jwks.json"), "wb") as f:
            f.write(t.jwks(t.public_jwk(t.private_key("RSA"), "k1")))
        with open(os.path.join(directory, "apikeys.ini"), "w") as f:
            f.write(f"[consumers]\nacme-billing = {hash_key(b'glk_test-key')}\n")
        upstream = UpstreamServer(reactor, "app")
        upstream.start()
        self.addCleanup(upstream.stop)
        gate = yield start_gateway(self, reactor, f"""
[gateway]
workers = 1
admin = 127.0.0.1:0
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = {upstream.address}
[route:orders]
path = /orders/
upstream = app
filters = jwt
[route:billing]
path = /billing/
upstream = app
filters = keys
[filter:jwt]
type = jwt
keys = jwks.json
audience = api
forward_claims = tenant:X-Tenant
[filter:keys]
type = api_key
keys = apikeys.ini
""", directory)

        token = t.token({"sub": "alice", "aud": "api", "tenant": "acme", "exp": time.time() + 300}, kid="k1")
        response = yield fetch(reactor, gate.url("web", "/orders/1"), headers={
            b"Authorization": [b"Bearer " + token], b"X-Consumer": [b"admin"], b"X-Tenant": [b"other"]})
        self.assertEqual(response.status, 200)
        seen = response.json()["headers"]
        self.assertEqual(seen["x-consumer"], ["alice"])
        self.assertEqual(seen["x-tenant"], ["acme"])

        before = upstream.requests
        expired = t.token({"sub": "alice", "aud": "api", "exp": time.time() - 60}, kid="k1")
        for headers in ({}, {b"Authorization": [b"Bearer " + expired]}, {b"Authorization": [b"Bearer x.y.z"]}):
            response = yield fetch(reactor, gate.url("web", "/orders/1"), headers=headers)
            self.assertEqual(response.status, 401)
            self.assertTrue(response.headers.getRawHeaders(b"www-authenticate")[0].startswith(
                b'Bearer error="invalid_token"'))
        self.assertEqual(upstream.requests, before)

        response = yield fetch(reactor, gate.url("web", "/billing/x"), headers={
            b"X-Api-Key": [b"glk_test-key"], b"X-Consumer": [b"admin"]})
        self.assertEqual(response.status, 200)
        seen = response.json()["headers"]
        self.assertEqual(seen["x-consumer"], ["acme-billing"])
        self.assertNotIn("x-api-key", seen)
        response = yield fetch(reactor, gate.url("web", "/billing/x"), headers={b"X-Api-Key": [b"glk_wrong"]})
        self.assertEqual(response.status, 401)


class SharedJwksGatewayTests(TestCase):
    """
    In a real gateway with two workers, the master fetches the JWKS once
    for the host and the workers verify with what it sends.
    """

    timeout = 60

    @inlineCallbacks
    def test_one_fetch_for_all_workers(self):
        """
        Requests spread over both workers pass after a single fetch; a key
        the provider rotated in is fetched once more, by the master, when
        the first token naming it arrives.
        """
        from gatelayer.testing.gateway import start_gateway
        from gatelayer.testing.http import fetch

        jwks = JwksResource()
        _publish(jwks, ("k1", 0))
        root = Resource()
        root.putChild(b"jwks.json", jwks)
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        gate = yield start_gateway(self, reactor, f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
[listener:web]
bind = 127.0.0.1:0
[route:hello]
path = /
respond = 200 hello
filters = jwt
[filter:jwt]
type = jwt
jwks_url = http://127.0.0.1:{port.getHost().port}/jwks.json
""")

        def authorized(kid, index):
            token = t.token({"sub": "alice", "exp": time.time() + 300}, key=t.private_key("RSA", index), kid=kid)
            return {b"Authorization": [b"Bearer " + token]}

        for _ in range(20):
            response = yield fetch(reactor, gate.url("web", "/"), headers=authorized("k1", 0))
            self.assertEqual(response.status, 200, response.body)
        self.assertEqual(jwks.served, 1)
        status = (yield fetch(reactor, gate.admin_url("/status"))).json()
        self.assertEqual(status["jwks"]["jwt"]["keys"], 1)

        _publish(jwks, ("k2", 1))
        response = yield fetch(reactor, gate.url("web", "/"), headers=authorized("k2", 1))
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(jwks.served, 2)
        for _ in range(10):
            response = yield fetch(reactor, gate.url("web", "/"), headers=authorized("k2", 1))
            self.assertEqual(response.status, 200)
        refused = yield fetch(reactor, gate.url("web", "/"), headers=authorized("k1", 0))
        self.assertEqual(refused.status, 401)
        self.assertEqual(jwks.served, 2)
