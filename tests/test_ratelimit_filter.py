"""
Tests for L{gatelayer.filters.ratelimit}: keys, headers, 429 answers, shadow
mode and the store-failure policies, with in-memory exchanges and a Clock.
"""

import json

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, IFilter, Reply
from gatelayer.config.filter_ratelimit import RateLimitSettings, parse_store_url
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices
from gatelayer.filters.ratelimit import RateLimitFilter, build_filter
from gatelayer.process.control import ControlProtocol
from gatelayer.ratelimit.breaker import GuardedStore, StoreBreaker
from gatelayer.ratelimit.control import register_master_responders
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.master_store import MasterStore
from gatelayer.ratelimit.memory_store import MemoryStore
from gatelayer.ratelimit.registry import StoreRegistry
from gatelayer.testing.exchange import raw_headers


def exchange(ip="10.0.0.1", headers=(), route="api", context=None):
    """
    An exchange for C{GET /api/x} from C{ip}.
    """
    h = raw_headers(headers)
    return Exchange(method=b"GET", path=b"/api/x", query=b"", headers=h, client_ip=ip,
                    route=route, context=dict(context or {}))


@implementer(IRateLimitStore)
class RecordingStore:
    """
    Wraps a store and records the keys taken.
    """

    def __init__(self, store):
        self.store = store
        self.keys = []

    def take(self, key, quota):
        self.keys.append(key)
        return self.store.take(key, quota)

    def close(self):
        return succeed(None)


@implementer(IRateLimitStore)
class BrokenStore:
    """
    A store that hangs (C{hang=True}) or fails every take.
    """

    def __init__(self, hang):
        self.hang = hang
        self.calls = 0

    def take(self, key, quota):
        self.calls += 1
        if self.hang:
            return Deferred()
        return fail(ConnectionRefusedError("connection refused"))

    def close(self):
        return succeed(None)


class FilterTestMixin:
    """
    Builds filters over a memory store on a Clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.memory = MemoryStore(self.clock)
        self.addCleanup(self.memory.close)
        self.events = []

    def make(self, name="per-client", store=None, fallback=None, **kw):
        kw.setdefault("rate", 3)
        kw.setdefault("period", 60.0)
        settings = RateLimitSettings(**kw)
        if store is None:
            store = self.memory
        guarded = GuardedStore(store, self.clock, settings.store_timeout, StoreBreaker(self.clock, 3, 2.0))
        f = RateLimitFilter(name, settings, guarded, self.clock, fallback=fallback)
        f.log = Logger(namespace="test", observer=self.events.append)
        return f


class KeyTests(FilterTestMixin, SynchronousTestCase):
    """
    Which key a request counts against.
    """

    def key(self, key, ex):
        return self.make(key=key).key_for(ex)

    def test_sources(self):
        """
        Each source reads its part of the exchange.
        """
        ex = exchange(ip="192.0.2.7", headers=[(b"X-Api-Key", b"k-123")], route="users",
                      context={"consumer": "alice", "jwt.claims": {"sub": "u1", "org": {"id": 42}}})
        for key, expected in [
            (("ip",), "ip=192.0.2.7"),
            (("header:x-api-key",), "header:x-api-key=k-123"),
            (("jwt.sub",), "jwt.sub=u1"),
            (("jwt.org.id",), "jwt.org.id=42"),
            (("consumer",), "consumer=alice"),
            (("route",), "route=users"),
            (("global",), "global=*"),
            (("route", "jwt.sub"), "route=users|jwt.sub=u1"),
        ]:
            self.assertEqual(self.key(key, ex), expected, key)

    def test_missing_falls_back_to_ip(self):
        """
        A request lacking its key source counts against its address.
        """
        ex = exchange(ip="192.0.2.9")
        for key in [("header:x-api-key",), ("jwt.sub",), ("consumer",)]:
            self.assertEqual(self.key(key, ex), "ip=192.0.2.9")
        self.assertEqual(self.key(("route", "jwt.sub"), ex), "route=api|ip=192.0.2.9")
        self.assertEqual(self.key(("ip", "jwt.sub"), ex), "ip=192.0.2.9")
        self.assertEqual(self.key(("jwt.sub",), exchange(context={"jwt.claims": {"sub": ""}})), "ip=10.0.0.1")

    def test_long_values_hashed(self):
        """
        Values too long or unprintable for a key are replaced by a digest.
        """
        ex = exchange(headers=[(b"X-Token", b"t" * 500)])
        key = self.key(("header:x-token",), ex)
        self.assertTrue(key.startswith("header:x-token=sha1:"), key)
        self.assertLess(len(key), 80)

    def test_namespaced(self):
        """
        The store sees C{gatelayer:rl:<filter>:<key>}, so two filters never
        share a counter.
        """
        recording = RecordingStore(self.memory)
        self.make("a", store=recording).on_request(exchange())
        self.make("b", store=recording).on_request(exchange())
        self.assertEqual(recording.keys, ["gatelayer:rl:a:ip=10.0.0.1", "gatelayer:rl:b:ip=10.0.0.1"])


class DecisionTests(FilterTestMixin, SynchronousTestCase):
    """
    Passing, rejecting and the headers.
    """

    def test_interface(self):
        """
        The filter is an L{IFilter}.
        """
        self.assertTrue(verifyObject(IFilter, self.make()))

    def test_allowed_headers(self):
        """
        An allowed request passes synchronously with RateLimit and
        RateLimit-Policy response headers.
        """
        f = self.make(rate=100, burst=20)
        ex = exchange()
        self.assertIsNone(f.on_request(ex))
        self.assertEqual(ex.response_headers, [
            (b"RateLimit-Policy", b'"per-client";q=100;w=60'),
            (b"RateLimit", b'"per-client";r=119;t=1'),
        ])

    def test_legacy_headers(self):
        """
        With legacy_headers the X-RateLimit-* headers are added too.
        """
        ex = exchange()
        self.make(rate=10, period=1.0, legacy_headers=True).on_request(ex)
        self.assertEqual(ex.response_headers[2:], [
            (b"X-RateLimit-Limit", b"10"), (b"X-RateLimit-Remaining", b"9"), (b"X-RateLimit-Reset", b"1"),
        ])

    def test_exact_then_429(self):
        """
        Exactly rate + burst pass; the next gets 429 with Retry-After,
        RateLimit-Policy, RateLimit and a problem+json body.
        """
        f = self.make(rate=3, burst=1)
        results = [f.on_request(exchange()) for _ in range(5)]
        self.assertEqual(results[:4], [None] * 4)
        reply = results[4]
        self.assertIsInstance(reply, Reply)
        self.assertEqual(reply.status, 429)
        headers = dict(reply.headers)
        self.assertEqual(headers[b"content-type"], b"application/problem+json")
        self.assertEqual(headers[b"Retry-After"], b"20")
        self.assertEqual(headers[b"RateLimit-Policy"], b'"per-client";q=3;w=60')
        self.assertEqual(headers[b"RateLimit"], b'"per-client";r=0;t=20')
        body = json.loads(reply.body)
        self.assertEqual((body["status"], body["title"]), (429, "Too Many Requests"))
        self.assertIn("per-client", body["detail"])
        self.assertEqual(f.stats()["rejected"], 1)
        self.assertEqual(f.stats()["allowed"], 4)

    def test_other_clients_unaffected(self):
        """
        Another address has its own quota.
        """
        f = self.make(rate=1)
        f.on_request(exchange(ip="10.0.0.1"))
        self.assertIsInstance(f.on_request(exchange(ip="10.0.0.1")), Reply)
        self.assertIsNone(f.on_request(exchange(ip="10.0.0.2")))

    def test_retry_after_at_least_one(self):
        """
        Retry-After is whole seconds, rounded up, never 0.
        """
        f = self.make(rate=10, period=1.0)
        for _ in range(10):
            f.on_request(exchange())
        reply = f.on_request(exchange())
        self.assertEqual(dict(reply.headers)[b"Retry-After"], b"1")
        self.clock.advance(0.1)
        self.assertIsNone(f.on_request(exchange()))

    def test_shadow_never_rejects(self):
        """
        In shadow mode requests over the limit pass, without headers, and are
        counted and logged (at a bounded rate).
        """
        f = self.make(rate=2, mode="shadow")
        results = [f.on_request(exchange()) for _ in range(10)]
        self.assertEqual(results, [None] * 10)
        self.assertEqual(f.stats()["shadow_rejected"], 8)
        self.assertEqual(f.stats()["rejected"], 0)
        self.assertEqual(len(self.events), 1)
        self.assertIn("would have rejected", self.events[0]["log_format"])
        self.assertEqual(self.events[0]["key"], "gatelayer:rl:per-client:ip=10.0.0.1")
        self.clock.advance(10)
        f.on_request(exchange())
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["suppressed"], 7)

    def test_async_store(self):
        """
        With a store answering later, on_request returns a Deferred firing
        with the answer.
        """
        master, worker, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        register_master_responders(master, self.memory)
        f = self.make(rate=1, store=MasterStore(worker))
        first = f.on_request(exchange())
        second = f.on_request(exchange())
        pump.flush()
        self.assertIsNone(self.successResultOf(first))
        self.assertEqual(self.successResultOf(second).status, 429)


class OutcomeTests(FilterTestMixin, SynchronousTestCase):
    """
    The outcome the access log shows, left in the exchange's context.
    """

    def test_outcomes(self):
        """
        allowed, rejected, shadow_rejected, and the store-error policies
        each leave their name under C{context["ratelimit"]}.
        """
        cases = [
            (self.make("enforced", rate=1), ["allowed", "rejected"]),
            (self.make("shadowed", rate=1, mode="shadow"), ["allowed", "shadow_rejected"]),
            (self.make(store=BrokenStore(hang=False), on_store_error="closed"), ["store_error_closed"]),
            (self.make(store=BrokenStore(hang=False), on_store_error="open"), ["store_error_open"]),
        ]
        for f, outcomes in cases:
            seen = []
            for _ in outcomes:
                ex = exchange()
                f.on_request(ex)
                seen.append(ex.context.get("ratelimit"))
            self.assertEqual(seen, outcomes)


class StoreFailureTests(FilterTestMixin, SynchronousTestCase):
    """
    on_store_error = open | closed | local, with a store that hangs or fails.
    """

    def test_open_after_timeout(self):
        """
        With a hanging store the request waits exactly store_timeout and
        then passes (open), without RateLimit headers.
        """
        f = self.make(store=BrokenStore(hang=True), on_store_error="open", store_timeout=0.1)
        ex = exchange()
        d = f.on_request(ex)
        self.clock.advance(0.099)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(ex.response_headers, [])
        self.assertEqual(f.stats()["fallback_open"], 1)
        self.assertEqual(f.stats()["store_timeouts"], 1)

    def test_closed(self):
        """
        closed answers 503 with a problem+json body.
        """
        f = self.make(store=BrokenStore(hang=False), on_store_error="closed")
        reply = f.on_request(exchange())
        self.assertEqual(reply.status, 503)
        self.assertEqual(dict(reply.headers)[b"content-type"], b"application/problem+json")
        self.assertEqual(json.loads(reply.body)["status"], 503)
        self.assertEqual(f.stats()["fallback_closed"], 1)
        self.assertEqual(f.stats()["store_errors"], 1)

    def test_closed_in_shadow_mode_passes(self):
        """
        Shadow mode never rejects, not even for a dead store.
        """
        f = self.make(store=BrokenStore(hang=False), on_store_error="closed", mode="shadow")
        self.assertIsNone(f.on_request(exchange()))

    def test_local(self):
        """
        local decides with the fallback store, exactly.
        """
        fallback = GuardedStore(self.memory, self.clock, 0.1)
        f = self.make(store=BrokenStore(hang=False), on_store_error="local", fallback=fallback, rate=2)
        results = [f.on_request(exchange()) for _ in range(3)]
        self.assertEqual(results[:2], [None, None])
        self.assertEqual(results[2].status, 429)
        self.assertEqual(f.stats()["fallback_local"], 3)

    def test_local_fallback_failing_opens(self):
        """
        When the fallback store fails too, the request passes.
        """
        fallback = GuardedStore(BrokenStore(hang=False), self.clock, 0.1)
        f = self.make(store=BrokenStore(hang=False), on_store_error="local", fallback=fallback)
        self.assertIsNone(f.on_request(exchange()))
        self.assertEqual(f.stats()["fallback_open"], 1)

    def test_local_without_fallback_opens(self):
        """
        local with nothing to fall back to lets the request through.
        """
        f = self.make(store=BrokenStore(hang=False), on_store_error="local")
        self.assertIsNone(f.on_request(exchange()))

    def test_breaker_answers_at_once(self):
        """
        After three timeouts the store is skipped: requests are answered at
        once, without waiting for the store, until the cool-down ends.
        """
        store = BrokenStore(hang=True)
        f = self.make(store=store, on_store_error="closed", store_timeout=0.1)
        for _ in range(3):
            d = f.on_request(exchange())
            self.clock.advance(0.1)
            self.assertEqual(self.successResultOf(d).status, 503)
        for _ in range(50):
            self.assertEqual(f.on_request(exchange()).status, 503)
        self.assertEqual(store.calls, 3)
        # no take is waiting: the only timer left is the memory store's sweeper
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        stats = f.stats()
        self.assertEqual((stats["store_skipped"], stats["store_breaker_opened"], stats["store_breaker"]),
                         (50, 1, "open"))

    def test_fallbacks_logged_at_bounded_rate(self):
        """
        A thousand fallbacks make one log event per ten seconds.
        """
        f = self.make(store=BrokenStore(hang=False), on_store_error="open")
        for _ in range(1000):
            f.on_request(exchange())
        self.assertEqual(len(self.events), 1)
        self.assertEqual(self.events[0]["kind"], "open")
        self.clock.advance(10)
        f.on_request(exchange())
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["suppressed"], 999)
        self.assertEqual(f.stats()["fallback_open"], 1001)


class FakeRedisStore:
    """
    Stands in for L{RedisStore} in L{StoreRegistry}.
    """

    def __init__(self, reactor, address):
        self.reactor = reactor
        self.address = address

    def take(self, key, quota):
        return fail(ConnectionRefusedError())

    def close(self):
        return succeed(None)


class BuildFilterTests(SynchronousTestCase):
    """
    L{build_filter}: which stores a filter gets.
    """

    def setUp(self):
        self.clock = Clock()
        self.registry = StoreRegistry(redis_factory=FakeRedisStore)
        self.addCleanup(self.registry.close)

    def build(self, master=None, **kw):
        kw.setdefault("rate", 2)
        spec = FilterSpec(name="rl", type="rate_limit", settings=RateLimitSettings(**kw))
        return build_filter(spec, FilterServices(reactor=self.clock, master=master, config=None), self.registry)

    def test_without_master(self):
        """
        Without a master the filter uses a process-local memory store.
        """
        f = self.build()
        self.assertEqual([f.on_request(exchange()) is None for _ in range(3)], [True, True, False])
        self.assertIsInstance(f._store.store, MemoryStore)

    def test_with_master(self):
        """
        With a master the filter asks the master's embedded store.
        """
        master_memory = MemoryStore(self.clock)
        self.addCleanup(master_memory.close)
        master, worker, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        register_master_responders(master, master_memory)
        f = self.build(master=worker)
        d = f.on_request(exchange())
        self.clock.advance(0)  # takes of one reactor turn go out as one batch
        pump.flush()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(master_memory.stats()["takes"], 1)

    def test_redis_with_local_fallback(self):
        """
        With a Redis store the filter shares one store per address and
        falls back to the embedded store.
        """
        url = parse_store_url("redis://127.0.0.1:6390/0")
        f = self.build(store=url, on_store_error="local")
        g = self.build(store=url)
        self.assertIs(f._store.store, g._store.store)
        self.assertEqual(f._store.store.address, url)
        results = [f.on_request(exchange()) for _ in range(3)]
        self.assertEqual([r is None for r in results], [True, True, False])
        self.assertEqual(f.stats()["fallback_local"], 3)
