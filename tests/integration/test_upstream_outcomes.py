"""
Integration tests of what a client gets when an upstream fails or answers
badly, through a real gatelayer master and worker in front of upstream
servers running as processes of their own: a timeout on the only server
is a 504, an upstream's own 503 is relayed whole when no other server is
left to retry on, and a response head with bytes no client should see is a
502 after which the worker goes on serving.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstream_process import RAW_RESPONSES
from tests.integration import test_balancing_gateway as balancing
from tests.integration.test_balancing_gateway import gate_config, request, sleep

# One worker, so "the next request is served" is about the worker that
# met the bad response.
ONE_WORKER = ("workers = 2", "workers = 1")


class UpstreamOutcomeTests(TestCase):
    """
    Upstream timeouts, retryable statuses and invalid responses through real
    gateway and upstream processes.
    """

    timeout = 60

    # The same helpers as the balancing tests (not their tests).
    upstreams = balancing.BalancingGatewayTests.upstreams
    servers = balancing.BalancingGatewayTests.servers
    url = balancing.BalancingGatewayTests.url

    @inlineCallbacks
    def start_gateway(self, config_text):
        """
        Start a one-worker gateway (stopped again at cleanup, before the
        upstreams).
        """
        self.gate = yield start_gateway(self, reactor, config_text.replace(*ONE_WORKER))

    @inlineCallbacks
    def wait_log(self, text, timeout=10.0):
        """
        Poll the gateway's log (bounded) until it holds C{text}; returns the
        log.
        """
        deadline = reactor.seconds() + timeout
        while True:
            log = self.gate.log()
            if text in log:
                return log
            if reactor.seconds() > deadline:
                self.fail(f"{text!r} not logged within {timeout:g}s:\n{log[-3000:]}")
            yield sleep(reactor, 0.05)

    @inlineCallbacks
    def test_single_server_timeout_is_504(self):
        """
        The only server does not answer within read_timeout: with retries
        left but no other server to try, the client gets 504 "did not
        answer in time" after about read_timeout, and the server saw the
        request once.
        """
        (a,) = yield self.upstreams("a")
        yield self.start_gateway(gate_config(
            {"app": f"servers = {a.address}\nread_timeout = 500ms\nretries = 2\n"},
            [("/", "app", "")]))
        outcome = yield request(self.url("/slow?delay=5"))
        self.assertEqual(outcome.status, 504, outcome.body)
        self.assertIn(b"upstream server did not answer in time", outcome.body)
        self.assertGreater(outcome.ended - outcome.started, 0.4)
        self.assertLess(outcome.ended - outcome.started, 3.0)
        rows = yield self.servers("app")
        self.assertEqual(rows[a.address]["requests"], 1)
        yield self.wait_log(f"upstream app server {a.address} timed out")

    @inlineCallbacks
    def test_retry_on_status_relayed_when_no_server_is_left(self):
        """
        retry_on lists 503: with one server, its 503 reaches the client as
        it is (Retry-After, its own JSON body); with two, both are tried and
        the second one's 503 is relayed whole.
        """
        a, b = yield self.upstreams("a", "b")
        retry = "retry_on = connect_error, timeout, 503\nmax_fails = 0\n"
        yield self.start_gateway(gate_config(
            {"one": f"servers = {a.address}\n{retry}",
             "two": f"servers = {a.address}, {b.address}\nretries = 3\n{retry}"},
            [("/one/", "one", ""), ("/two/", "two", "")]))
        outcome = yield request(self.url("/one/unavailable?retry_after=9"))
        self.assertEqual((outcome.status, outcome.retry_after, outcome.server), (503, b"9", "a"))
        echo = json.loads(outcome.body)
        self.assertEqual((echo["server"], echo["uri"]), ("a", "/unavailable?retry_after=9"))

        before = yield self.servers("two")
        outcome = yield request(self.url("/two/unavailable?retry_after=4"))
        self.assertEqual((outcome.status, outcome.retry_after), (503, b"4"))
        self.assertIn(outcome.server, ("a", "b"))
        self.assertEqual(json.loads(outcome.body)["server"], outcome.server)
        after = yield self.servers("two")
        self.assertEqual(
            sum(after[k]["requests"] - before[k]["requests"] for k in after), 2,
            "each server tried once")

    @inlineCallbacks
    def test_invalid_response_is_502_and_worker_serves_on(self):
        """
        Every hostile response head (a NUL in a value, a space in a name, a
        bare LF, obs-fold, a bad status code, ambiguous framing) is a 502
        "sent an invalid response", logged as a warning naming the upstream,
        the server and the fault, with no traceback; the same client
        connection's next request is served and the worker never restarts.
        """
        (a,) = yield self.upstreams("a")
        yield self.start_gateway(gate_config(
            {"raw": f"servers = {a.address}\n"}, [("/", "raw", "")]))
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self.addCleanup(pool.closeCachedConnections)
        for name in RAW_RESPONSES:
            response = yield fetch(reactor, self.url(f"/raw/{name}"), pool=pool)
            self.assertEqual(response.status, 502, name)
            document = response.json()
            self.assertEqual(document.pop("request_id").encode("ascii"), response.header(b"x-request-id"))
            self.assertEqual(document, {
                "error": "upstream server sent an invalid response", "status": 502}, name)
            self.assertIsNone(response.header(b"x-evil"), name)
            response = yield fetch(reactor, self.url("/x"), pool=pool)
            self.assertEqual((response.status, response.header(b"x-upstream")), (200, b"a"), name)
        log = yield self.wait_log(
            f"upstream raw server {a.address} sent an invalid response: "
            "invalid byte 0x00 in the value of header b'X-Evil'")
        log = yield self.wait_log(
            f"upstream raw server {a.address} sent an invalid response: "
            "invalid header name b'X Evil'")
        self.assertNotIn("Traceback", log)
        self.assertNotIn("exited", log)
