"""
Tests for L{gatelayer.auth.fetch}: keeping a JWKS current without blocking,
driven by a L{Clock} and an in-memory agent.
"""

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent, IResponse
from zope.interface.verify import verifyObject

from gatelayer.auth import testing as t
from gatelayer.auth.fetch import JwksFetcher

URL = "https://idp.example.com/.well-known/jwks.json"


def _document(*kids):
    return t.jwks(*(t.public_jwk(t.private_key("RSA"), kid) for kid in kids))


class FakesTests(SynchronousTestCase):
    """
    The fakes provide the interfaces they stand in for.
    """

    def test_interfaces(self):
        """
        FakeAgent is an IAgent, FakeResponse an IResponse.
        """
        verifyObject(IAgent, t.FakeAgent())
        verifyObject(IResponse, t.FakeResponse())


class FetcherTests(SynchronousTestCase):
    """
    Fetching, refreshing, failing and waiting.
    """

    def setUp(self):
        self.clock = Clock()
        self.agent = t.FakeAgent()
        self.fetched = []
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.fetcher = JwksFetcher(self.clock, URL, {"RS256"}, refresh=600, timeout=5, agent=self.agent,
                                   on_keys=self.fetched.append)
        self.addCleanup(self.fetcher.stop)

    def test_fetch_and_refresh(self):
        """
        Starting fetches at once with a GET of the URL; the keys arrive and
        the next fetch is due after the refresh interval.
        """
        self.fetcher.start()
        self.assertEqual(len(self.agent.requests), 1)
        method, uri, headers, _ = self.agent.requests[0]
        self.assertEqual((method, uri), (b"GET", URL.encode()))
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"application/json"])
        self.agent.respond(t.FakeResponse(200, _document("k1")))
        self.assertEqual(self.fetcher.keys.kids, {"k1"})
        self.assertEqual([k.kids for k in self.fetched], [{"k1"}])
        self.assertFalse(self.fetcher.fetching)
        self.clock.advance(599)
        self.assertEqual(len(self.agent.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.agent.requests), 2)
        self.agent.respond(t.FakeResponse(200, _document("k2")))
        self.assertEqual(self.fetcher.keys.kids, {"k2"})

    def test_failures_keep_keys(self):
        """
        A bad status, a non-JWKS body or an oversized body keeps the previous
        keys, is logged, and is retried with a doubling delay.
        """
        self.fetcher.max_size = 100000
        self.fetcher.start()
        self.agent.respond(t.FakeResponse(200, _document("k1")))
        self.clock.advance(600)
        self.agent.respond(t.FakeResponse(500, b"oops"))
        self.assertEqual(self.fetcher.keys.kids, {"k1"})
        self.assertTrue(any("status 500" in str(e.get("reason")) for e in self.events))
        self.clock.advance(5)
        self.agent.respond(t.FakeResponse(200, b"<html>"))
        self.assertEqual(self.fetcher.keys.kids, {"k1"})
        self.clock.advance(9)
        self.assertEqual(self.agent.pending, 0)
        self.clock.advance(1)
        huge = t.FakeResponse(200, b" " * 200000)
        self.agent.respond(huge)
        self.assertEqual(huge.transport.producerState, "stopped")
        self.assertEqual(self.fetcher.keys.kids, {"k1"})
        self.assertEqual(len(self.fetched), 1)
        self.clock.advance(20)
        self.agent.respond(t.FakeResponse(200, _document("k3")))
        self.assertEqual(self.fetcher.keys.kids, {"k3"})
        self.clock.advance(599)
        self.assertEqual(self.agent.pending, 0)

    def test_connection_failure(self):
        """
        A connection failure is logged by its cause and retried.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseNeverReceived

        self.fetcher.start()
        self.agent.requests[0][3].errback(ResponseNeverReceived([Failure(ConnectionRefusedError())]))
        self.assertIn("Connection was refused by other side.",
                      [e.get("reason") for e in self.events])
        self.clock.advance(5)
        self.assertEqual(self.agent.pending, 1)

    def test_oversized_body_stops_transfer(self):
        """
        A body over the limit stops the transfer instead of reading on.
        """
        self.fetcher.max_size = 10
        self.fetcher.start()
        response = t.FakeResponse(200, b"x" * 11)
        self.agent.respond(response)
        self.assertEqual(response.transport.producerState, "stopped")
        self.assertEqual(len(self.fetcher.keys), 0)

    def test_skips_unusable_keys(self):
        """
        Keys for algorithms not allowed, shared secrets and private keys in a
        fetched JWKS are skipped (and logged); the others are used.
        """
        secret = {"kty": "oct", "k": t.b64(t.HMAC_SECRET).decode(), "alg": "HS256", "kid": "s"}
        private = t.public_jwk(t.private_key("RSA"), "p")
        private["d"] = "AQAB"
        body = t.jwks(t.public_jwk(t.private_key("RSA"), "good"), t.public_jwk(t.private_key("P-256"), "ec"),
                      secret, private)
        self.fetcher.start()
        self.agent.respond(t.FakeResponse(200, body))
        self.assertEqual(self.fetcher.keys.kids, {"good"})
        self.assertEqual(sum(1 for e in self.events if "skipping" in e.get("log_format", "")), 3)

    def test_timeout(self):
        """
        A fetch that hangs is abandoned after the timeout, keeping the keys.
        """
        self.fetcher.start()
        self.assertTrue(self.fetcher.fetching)
        self.clock.advance(5)
        self.assertFalse(self.fetcher.fetching)
        self.assertTrue(self.agent.requests[0][3].called)
        self.assertEqual(len(self.fetcher.keys), 0)
        self.assertIn("no complete answer within 5s", [e.get("reason") for e in self.events])

    def test_hanging_body(self):
        """
        A response whose body never ends is abandoned after the timeout too,
        and its transfer stopped.
        """
        self.fetcher.start()
        response = t.FakeResponse(200, _document("k1"), hang=True)
        self.agent.respond(response)
        self.assertTrue(self.fetcher.fetching)
        self.clock.advance(5)
        self.assertFalse(self.fetcher.fetching)
        self.assertEqual(response.transport.producerState, "stopped")

    def test_unknown_key_waits_for_fetch(self):
        """
        An unknown kid starts a fetch and waits for it; a second within the
        minute is answered at once (no fetch), and after the minute fetches
        again.
        """
        self.fetcher.start()
        self.agent.respond(t.FakeResponse(200, _document("k1")))
        waiting = self.fetcher.refetch_for_unknown_key()
        self.assertNoResult(waiting)
        self.assertEqual(self.agent.pending, 1)
        self.agent.respond(t.FakeResponse(200, _document("k1", "k2")))
        self.assertIsNone(self.successResultOf(waiting))
        self.assertEqual(self.fetcher.keys.kids, {"k1", "k2"})
        self.clock.advance(59)
        self.assertIsNone(self.fetcher.refetch_for_unknown_key())
        self.assertEqual(self.agent.pending, 0)
        self.clock.advance(1)
        again = self.fetcher.refetch_for_unknown_key()
        self.assertEqual(self.agent.pending, 1)
        self.agent.respond(t.FakeResponse(200, _document("k3")))
        self.successResultOf(again)

    def test_unknown_key_joins_fetch(self):
        """
        While any fetch is under way, unknown kids wait for it (even within
        the minute), and no more than the timeout.
        """
        self.fetcher.start()
        first = self.fetcher.refetch_for_unknown_key()
        second = self.fetcher.refetch_for_unknown_key()
        self.assertEqual(len(self.agent.requests), 1)
        self.clock.advance(4.9)
        self.assertNoResult(first)
        self.clock.advance(0.1)
        self.successResultOf(first)
        self.successResultOf(second)

    def test_synchronous_agent(self):
        """
        An agent answering at once (a cached response) is handled.
        """
        self.agent.queued.append(t.FakeResponse(200, _document("k1")))
        self.fetcher.start()
        self.assertEqual(self.fetcher.keys.kids, {"k1"})
        self.agent.queued.append(t.FakeResponse(200, _document("k2")))
        self.successResultOf(self.fetcher.refetch_for_unknown_key())
        self.assertEqual(self.fetcher.keys.kids, {"k2"})

    def test_stop(self):
        """
        Stopping abandons the fetch under way, releases waiters and leaves
        no timer behind.
        """
        self.fetcher.start()
        waiting = self.fetcher.refetch_for_unknown_key()
        self.fetcher.stop()
        self.successResultOf(waiting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.fetcher.start()
        self.agent.respond(t.FakeResponse(200, _document("k1")))
        self.fetcher.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_default_agent(self):
        """
        Without an agent, a plain Agent on the reactor connects to the URL's
        host (in memory here).
        """
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        fetcher = JwksFetcher(reactor, "http://127.0.0.1:8999/jwks.json", {"RS256"})
        fetcher.start()
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 8999))
        fetcher.stop()
