"""
Unit tests for L{gatelayer.ratelimit.redis_store} without a Redis server:
endpoints, script arguments, NOSCRIPT reloading and dropping stalled
connections. The scripts themselves run against a real server in
tests/integration/test_ratelimit_redis.py.
"""

import hashlib

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config.filter_ratelimit import parse_store_url
from gatelayer.ratelimit.algorithms import Decision, Quota
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.redis_store import GCRA_SCRIPT, SLIDING_WINDOW_SCRIPT, RedisStore, redis_endpoint


class FakeRedis:
    """
    Stands in for txredisapi's connection handler: records calls and
    answers with what the test scripted.
    """

    def __init__(self):
        self.calls = []
        self.loaded = set()
        self.hang = False

    def evalsha(self, sha, keys, args):
        self.calls.append(("evalsha", sha, tuple(keys), tuple(args)))
        if self.hang:
            return Deferred()
        if sha not in self.loaded:
            return fail(txredisapi.ScriptDoesNotExist("No script matching hash"))
        return succeed([1, 4, 0, 250_000])

    def script_load(self, script):
        self.calls.append(("script_load",))
        sha = hashlib.sha1(script.encode()).hexdigest()
        self.loaded.add(sha)
        return succeed(sha)


class FakeTransport:
    """
    Records whether the connection was aborted.
    """

    aborted = False

    def abortConnection(self):
        self.aborted = True


class FakeConnection:
    """
    A pooled connection with a transport.
    """

    def __init__(self):
        self.transport = FakeTransport()


class EndpointTests(SynchronousTestCase):
    """
    L{redis_endpoint}.
    """

    def test_kinds(self):
        """
        redis:// is TCP, unix:// a Unix socket, rediss:// TLS around TCP.
        """
        reactor = MemoryReactorClock()
        self.assertIsInstance(redis_endpoint(reactor, parse_store_url("redis://h:1/0"), 1.0), HostnameEndpoint)
        self.assertIsInstance(redis_endpoint(reactor, parse_store_url("unix:///r.sock"), 1.0), UNIXClientEndpoint)
        tls = redis_endpoint(reactor, parse_store_url("rediss://h:1/0"), 1.0)
        self.assertNotIsInstance(tls, HostnameEndpoint)
        self.assertIsInstance(tls._wrappedEndpoint, HostnameEndpoint)


class RedisStoreTests(SynchronousTestCase):
    """
    L{RedisStore} with its connection handler replaced by a fake.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.store = RedisStore(self.reactor, "unix:///nonexistent/redis.sock", stall_limit=3)
        self.addCleanup(self.store.close)
        self.redis = self.store._redis = FakeRedis()

    def test_interface(self):
        """
        It is an L{IRateLimitStore}, connecting through the given reactor.
        """
        self.assertTrue(verifyObject(IRateLimitStore, self.store))
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_noscript_loads_then_evalsha(self):
        """
        On NOSCRIPT the script is loaded and EVALSHA sent again; later takes
        go straight to EVALSHA.
        """
        quota = Quota(rate=10, period=1.0, burst=5)
        decision = self.successResultOf(self.store.take("gatelayer:rl:f:k", quota))
        self.assertEqual(decision, Decision(True, 4, 0.0, 0.25))
        sha = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self.assertEqual(self.redis.calls, [
            ("evalsha", sha, ("gatelayer:rl:f:k",), (100_000, 15)),
            ("script_load",),
            ("evalsha", sha, ("gatelayer:rl:f:k",), (100_000, 15)),
        ])
        self.successResultOf(self.store.take("gatelayer:rl:f:k", quota))
        self.assertEqual(len(self.redis.calls), 4)
        self.assertEqual(self.store.stats()["script_loads"], 1)

    def test_sliding_window_args(self):
        """
        The sliding window script gets the window in milliseconds.
        """
        self.redis.loaded.add(hashlib.sha1(SLIDING_WINDOW_SCRIPT.encode()).hexdigest())
        self.store.take("k", Quota(rate=100, period=60.0, burst=20, algorithm="sliding_window"))
        self.assertEqual(self.redis.calls[0][3], (60_000, 120))

    def test_stalled_connections_dropped(self):
        """
        After three takes in a row were abandoned by their callers, the
        pooled connections are aborted so that they are made again.
        """
        self.redis.hang = True
        connections = [FakeConnection(), FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        for _ in range(3):
            d = self.store.take("k", Quota(rate=1, period=1.0))
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertTrue(all(c.transport.aborted for c in connections))
        stats = self.store.stats()
        self.assertEqual((stats["abandoned"], stats["reconnects_forced"]), (3, 1))
