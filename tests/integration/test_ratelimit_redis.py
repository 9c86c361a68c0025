"""
Rate limits against a real redis-server started by the test on a free port:
exact admission across two connections, script reloading, key expiry, and
what the filter does when Redis is killed, frozen and restarted.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from gatelayer.chain import Exchange, Reply
from gatelayer.config.filter_ratelimit import RateLimitSettings, parse_store_url
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices
from gatelayer.filters.ratelimit import build_filter
from gatelayer.ratelimit.algorithms import Quota
from gatelayer.ratelimit.redis_store import RedisStore
from gatelayer.ratelimit.registry import StoreRegistry
from gatelayer.testing.redis import RedisServer
from gatelayer.testing.waiting import sleep

# how much later than store_timeout an answer may come on a loaded machine
SLACK = 0.25



def exchange(ip):
    """
    A request from C{ip}.
    """
    return Exchange(method=b"GET", path=b"/", query=b"", headers=Headers(), client_ip=ip, route="api")


class RedisTestCase(TestCase):
    """
    Starts a redis-server for each test and stops it afterwards.
    """

    timeout = 20

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)

    def store(self, url=None):
        """
        A L{RedisStore} on the test's server, closed after the test.
        """
        store = RedisStore(reactor, url or self.redis.url)
        self.addCleanup(store.close)
        return store

    def wait_connected(self, store, deadline=10.0):
        """
        Poll until C{store} has a connection up (bounded).
        """
        @inlineCallbacks
        def poll():
            end = reactor.seconds() + deadline
            while store.stats()["connections"] == 0:
                if reactor.seconds() > end:
                    raise AssertionError("no connection to Redis")
                yield sleep(reactor, 0.02)
        return poll()


class RedisStoreTests(RedisTestCase):
    """
    L{RedisStore} decisions in Redis.
    """

    @inlineCallbacks
    def test_exact_across_two_connections(self):
        """
        Of 300 concurrent takes through two stores (two connection pools),
        exactly rate + burst are allowed, for both algorithms.
        """
        a, b = self.store(), self.store()
        for algorithm in ("gcra", "sliding_window"):
            quota = Quota(rate=50, period=3600.0, burst=10, algorithm=algorithm)
            key = f"gatelayer:rl:test:{algorithm}"
            takes = [(a if i % 2 else b).take(key, quota) for i in range(300)]
            decisions = yield gatherResults(takes)
            self.assertEqual(sum(d.allowed for d in decisions), 60, algorithm)
            rejected = [d for d in decisions if not d.allowed]
            self.assertTrue(all(d.retry_after > 0 and d.remaining == 0 for d in rejected))

    @inlineCallbacks
    def test_retry_after_from_server(self):
        """
        GCRA in Redis: the next unit comes back one interval later, as
        Retry-After says.
        """
        store = self.store()
        quota = Quota(rate=20, period=1.0)
        for _ in range(20):
            yield store.take("gatelayer:rl:test:r", quota)
        rejected = yield store.take("gatelayer:rl:test:r", quota)
        self.assertFalse(rejected.allowed)
        self.assertTrue(0 < rejected.retry_after <= 0.05, rejected)
        yield sleep(reactor, rejected.retry_after + 0.01)
        allowed = yield store.take("gatelayer:rl:test:r", quota)
        self.assertTrue(allowed.allowed)

    @inlineCallbacks
    def test_ttl_set_in_script(self):
        """
        Every key written has an expiry no longer than it matters.
        """
        store = self.store()
        yield store.take("gatelayer:rl:test:g", Quota(rate=1, period=60.0, burst=4))
        yield store.take("gatelayer:rl:test:s", Quota(rate=1, period=60.0, algorithm="sliding_window"))
        gcra_ttl = int(self.redis.command("PTTL", "gatelayer:rl:test:g")[1:].strip())
        sliding_ttl = int(self.redis.command("PTTL", "gatelayer:rl:test:s")[1:].strip())
        self.assertTrue(0 < gcra_ttl <= 60_000, gcra_ttl)
        self.assertTrue(60_000 < sliding_ttl <= 120_000, sliding_ttl)

    @inlineCallbacks
    def test_script_reloaded_on_noscript(self):
        """
        After SCRIPT FLUSH the next take loads the script again and still
        decides.
        """
        store = self.store()
        quota = Quota(rate=5, period=60.0)
        yield store.take("gatelayer:rl:test:n", quota)
        loads = store.stats()["script_loads"]
        self.assertEqual(self.redis.command("SCRIPT", "FLUSH"), b"+OK\r\n")
        decision = yield store.take("gatelayer:rl:test:n", quota)
        self.assertTrue(decision.allowed)
        self.assertEqual(decision.remaining, 3)
        self.assertEqual(store.stats()["script_loads"], loads + 1)

    @inlineCallbacks
    def test_unix_socket_and_db(self):
        """
        unix:// URLs work, and the database number is honoured.
        """
        store = self.store(parse_store_url(self.redis.unix_url + "?db=3"))
        decision = yield store.take("gatelayer:rl:test:u", Quota(rate=1, period=60.0))
        self.assertTrue(decision.allowed)
        self.assertEqual(self.redis.command("DBSIZE"), b":0\r\n")
        self.assertEqual(self.redis.command("SELECT", "3"), b"+OK\r\n")

    @inlineCallbacks
    def test_one_command_per_turn(self):
        """
        The takes of one reactor turn reach Redis as one EVALSHA.
        """
        store = self.store()
        yield store.take("gatelayer:rl:test:warm", Quota(rate=1, period=60.0))
        self.assertEqual(self.redis.command("CONFIG", "RESETSTAT"), b"+OK\r\n")
        quota = Quota(rate=100, period=60.0)
        yield gatherResults([store.take(f"gatelayer:rl:test:t{i % 7}", quota) for i in range(60)])
        stats = self.redis.command("INFO", "commandstats").decode()
        self.assertIn("cmdstat_evalsha:calls=1,", stats)

    @inlineCallbacks
    def test_batch_counts_down_in_order(self):
        """
        In one batch, takes of several keys and both algorithms are decided
        one after the other in the order they were made: each key's
        remaining count goes down by one per take, exactly its limit pass,
        and TTLs are set as for single takes.
        """
        store = self.store()
        quotas = {
            "gatelayer:rl:test:g1": Quota(rate=3, period=3600.0, burst=2),
            "gatelayer:rl:test:g2": Quota(rate=1, period=3600.0),
            "gatelayer:rl:test:s1": Quota(rate=4, period=3600.0, algorithm="sliding_window"),
            "gatelayer:rl:test:s2": Quota(rate=2, period=3600.0, burst=1, algorithm="sliding_window"),
        }
        order = [key for _ in range(7) for key in quotas]
        decisions = yield gatherResults([store.take(key, quotas[key]) for key in order])
        self.assertEqual(store.stats()["batches"], 1)
        for key, quota in quotas.items():
            mine = [d for k, d in zip(order, decisions) if k == key]
            allowed = [d.remaining for d in mine if d.allowed]
            self.assertEqual(allowed, list(range(quota.limit - 1, -1, -1)), key)
            self.assertEqual([d.allowed for d in mine], [True] * quota.limit + [False] * (7 - quota.limit), key)
            self.assertTrue(all(d.retry_after > 0 for d in mine[quota.limit:]), key)
            ttl = int(self.redis.command("PTTL", key)[1:].strip())
            self.assertTrue(0 < ttl <= 2 * 3600_000, (key, ttl))

    @inlineCallbacks
    def test_bounded_batches_exact(self):
        """
        More takes in one turn than a batch holds go as several commands,
        on a pool of several connections, and still exactly the limit
        passes.
        """
        store = RedisStore(reactor, self.redis.url, pool_size=3, max_batch=16)
        self.addCleanup(store.close)
        quota = Quota(rate=37, period=3600.0, burst=3)
        decisions = yield gatherResults([store.take("gatelayer:rl:test:b", quota) for _ in range(200)])
        self.assertEqual(sum(d.allowed for d in decisions), 40)
        self.assertEqual(store.stats()["batches"], 13)


class TlsTests(TestCase):
    """
    rediss:// against a TLS-only redis-server.
    """

    timeout = 30

    def setUp(self):
        self.redis = RedisServer(tls=True).start()
        self.addCleanup(self.redis.stop)

    @inlineCallbacks
    def test_tls_verified(self):
        """
        A store on rediss:// with the server's CA decides over TLS.
        """
        store = RedisStore(reactor, parse_store_url(self.redis.url))
        self.addCleanup(store.close)
        quota = Quota(rate=2, period=60.0)
        decisions = yield gatherResults([store.take("gatelayer:rl:test:tls", quota) for _ in range(3)])
        # concurrent first takes may each load the script: count, not order
        self.assertEqual(sorted(d.allowed for d in decisions), [False, True, True])

    @inlineCallbacks
    def test_untrusted_certificate_refused(self):
        """
        Without the CA the server's certificate is not trusted: the take
        fails (the handshake fails and the connection is dropped), it is
        never answered.
        """
        store = RedisStore(reactor, f"rediss://localhost:{self.redis.port}/0")
        self.addCleanup(store.close)
        d = store.take("gatelayer:rl:test:tls", Quota(rate=2, period=60.0))
        result = yield d.addTimeout(2, reactor).addBoth(lambda r: [r])
        self.assertIsInstance(result[0], Failure)
        self.assertEqual(self.redis.command("DBSIZE"), b":0\r\n")


class FilterOnRedisTests(RedisTestCase):
    """
    The filter with a Redis store that dies, hangs and comes back.
    """

    def build(self, on_store_error, rate=3, timeout=0.2, name="per-client"):
        """
        A filter on the test's Redis, with no master (the local fallback is
        a process-local memory store).
        """
        registry = StoreRegistry()
        self.addCleanup(registry.close)
        settings = RateLimitSettings(
            rate=rate, period=3600.0, store=parse_store_url(self.redis.url),
            store_timeout=timeout, on_store_error=on_store_error)
        spec = FilterSpec(name=name, type="rate_limit", settings=settings)
        f = build_filter(spec, FilterServices(reactor=reactor, master=None, config=None), registry)
        return f

    @inlineCallbacks
    def timed(self, f, ip):
        """
        Run one request through C{f}; return C{(reply, seconds taken)}.
        """
        start = reactor.seconds()
        reply = yield maybeDeferred(f.on_request, exchange(ip))
        return reply, reactor.seconds() - start

    @inlineCallbacks
    def statuses(self, f, ip, count, timeout):
        """
        Send C{count} requests one after the other; check each is answered
        within C{timeout} (plus slack) and return their statuses (200 for
        passed).
        """
        statuses = []
        for _ in range(count):
            reply, took = yield self.timed(f, ip)
            self.assertLess(took, timeout + SLACK)
            statuses.append(reply.status if isinstance(reply, Reply) else 200)
        return statuses

    @inlineCallbacks
    def check_modes_when(self, break_redis):
        filters = {mode: self.build(mode, name=f"per-client-{mode}") for mode in ("open", "closed", "local")}
        for f in filters.values():
            self.assertEqual((yield self.statuses(f, "198.51.100.1", 4, 0.2)), [200, 200, 200, 429])
            yield self.wait_connected(f._store.store)
        break_redis()
        results = {}
        for mode, f in filters.items():
            results[mode] = yield self.statuses(f, "198.51.100.2", 8, 0.2)
        self.assertEqual(results["open"], [200] * 8)
        self.assertEqual(results["closed"], [503] * 8)
        # the embedded store decides, exactly, for a client it has not seen
        self.assertEqual(results["local"], [200, 200, 200] + [429] * 5)
        for mode, f in filters.items():
            stats = f.stats()
            self.assertEqual(stats["store_breaker"], "open", mode)
            self.assertEqual(stats["store_breaker_opened"], 1, mode)
            self.assertGreaterEqual(stats["store_skipped"], 5, mode)
        body = yield maybeDeferred(filters["closed"].on_request, exchange("198.51.100.3"))
        self.assertEqual(json.loads(body.body)["status"], 503)

    def test_killed(self):
        """
        Redis killed: open lets through, closed answers 503, local decides
        with the embedded store; every answer within store_timeout.
        """
        return self.check_modes_when(self.redis.kill)

    def test_frozen(self):
        """
        Redis frozen with SIGSTOP: the same, though the connections stay up.
        """
        def freeze():
            self.redis.freeze()
            self.addCleanup(lambda: self.redis.frozen and self.redis.thaw())
        return self.check_modes_when(freeze)

    @inlineCallbacks
    def recovered(self, f, deadline=15.0):
        """
        Poll (bounded) until the filter decides with Redis again.
        """
        end = reactor.seconds() + deadline
        while True:
            reply = yield maybeDeferred(f.on_request, exchange("192.0.2.250"))
            if not (isinstance(reply, Reply) and reply.status == 503):
                return
            if reactor.seconds() > end:
                raise AssertionError(f"Redis decisions did not resume: {f.stats()}")
            yield sleep(reactor, 0.1)

    @inlineCallbacks
    def test_restarted(self):
        """
        Redis killed and started again: enforcement resumes, exactly.
        """
        f = self.build("closed")
        self.assertEqual((yield self.statuses(f, "203.0.113.1", 4, 0.2)), [200, 200, 200, 429])
        self.redis.kill()
        self.assertEqual((yield self.statuses(f, "203.0.113.1", 4, 0.2)), [503] * 4)
        self.redis.restart()
        yield self.recovered(f)
        # the restarted Redis lost its data: the client starts afresh, and
        # exactly its quota passes
        self.assertEqual((yield self.statuses(f, "203.0.113.1", 5, 0.2)), [200, 200, 200, 429, 429])
        self.assertEqual(f.stats()["store_breaker"], "closed")

    @inlineCallbacks
    def test_thawed(self):
        """
        A frozen Redis that resumes is used again.
        """
        f = self.build("closed")
        self.assertEqual((yield self.statuses(f, "203.0.113.2", 1, 0.2)), [200])
        self.redis.freeze()
        self.assertEqual((yield self.statuses(f, "203.0.113.2", 4, 0.2)), [503] * 4)
        self.redis.thaw()
        yield self.recovered(f)
        self.assertEqual((yield self.statuses(f, "203.0.113.3", 4, 0.2)), [200, 200, 200, 429])
