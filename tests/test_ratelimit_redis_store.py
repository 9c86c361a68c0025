"""
Unit tests for L{gatelayer.ratelimit.redis_store} without a Redis server:
endpoints, how takes are batched and answered, NOSCRIPT reloading, failures,
abandoned takes and dropping stalled connections. The batch script itself
runs against a real server in tests/integration/test_ratelimit_redis.py.
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
from gatelayer.ratelimit.redis_store import (
    BATCH_SCRIPT, BATCH_SCRIPT_SHA, BatchReplyError, RedisStore, quota_spec, redis_endpoint)

GCRA = Quota(rate=10, period=1.0, burst=5)
SLIDING = Quota(rate=100, period=60.0, burst=20, algorithm="sliding_window")


class FakeRedis:
    """
    Stands in for txredisapi's connection handler: records calls and
    answers each batch with one decision per key (allowed, remaining 4,
    reset 0.25s) unless told to hang or fail.

    @ivar pending: the Deferreds of unanswered commands while C{hang}.
    """

    def __init__(self):
        self.calls = []
        self.loaded = {BATCH_SCRIPT_SHA}
        self.hang = False
        self.error = None
        self.reply = None
        self.pending = []
        self.cancelled = []

    def evalsha(self, sha, keys, args):
        self.calls.append(("evalsha", sha, tuple(keys), tuple(args)))
        if self.hang:
            d = Deferred(self.cancelled.append)
            self.pending.append(d)
            return d
        if self.error is not None:
            return fail(self.error)
        if sha not in self.loaded:
            return fail(txredisapi.ScriptDoesNotExist("No script matching hash"))
        if self.reply is not None:
            return succeed(self.reply)
        return succeed(" ".join(["1 4 0 250000"] * len(keys)))

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


class QuotaSpecTests(SynchronousTestCase):
    """
    L{quota_spec}: what the batch script is told about a quota.
    """

    def test_specs(self):
        """
        GCRA gets its emission interval in microseconds, the sliding window
        its window in milliseconds; both the limit, rate + burst.
        """
        self.assertEqual(quota_spec(GCRA), b"g 100000 15")
        self.assertEqual(quota_spec(SLIDING), b"s 60000 120")
        self.assertEqual(quota_spec(Quota(rate=7, period=60.0, burst=13)), b"g 8571429 20")

    def test_unknown_algorithm(self):
        """
        An algorithm the script does not know is refused before anything is
        sent.
        """
        quota = Quota(rate=1, period=1.0, algorithm="leaky")
        self.assertRaises(ValueError, quota_spec, quota)

    def test_script_hash(self):
        """
        The hash sent with EVALSHA is the script's SHA-1.
        """
        self.assertEqual(BATCH_SCRIPT_SHA, hashlib.sha1(BATCH_SCRIPT.encode()).hexdigest())


class RedisStoreTests(SynchronousTestCase):
    """
    L{RedisStore} with its connection handler replaced by a fake.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.store = RedisStore(self.reactor, "unix:///nonexistent/redis.sock", stall_limit=3, max_batch=4)
        self.addCleanup(self.store.close)
        self.redis = self.store._redis = FakeRedis()

    def turn(self):
        """
        End the reactor turn: the pending takes are sent.
        """
        self.reactor.advance(0)

    def test_interface(self):
        """
        It is an L{IRateLimitStore}, connecting through the given reactor.
        """
        self.assertTrue(verifyObject(IRateLimitStore, self.store))
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_one_command_per_turn(self):
        """
        The takes of one reactor turn are sent together when the turn ends,
        as one EVALSHA with a key and a quota spec per take in the order
        they were made; each take fires with its own decision.
        """
        self.redis.reply = "1 14 0 100000 0 0 1500000 2500000 1 118 0 30000000"
        takes = [self.store.take("gatelayer:rl:f:a", GCRA),
                 self.store.take("gatelayer:rl:f:b", GCRA),
                 self.store.take("gatelayer:rl:s:a", SLIDING)]
        self.assertEqual(self.redis.calls, [])
        self.assertNoResult(takes[0])
        self.turn()
        self.assertEqual(self.redis.calls, [(
            "evalsha", BATCH_SCRIPT_SHA,
            ("gatelayer:rl:f:a", "gatelayer:rl:f:b", "gatelayer:rl:s:a"),
            (b"g 100000 15", b"g 100000 15", b"s 60000 120"))])
        self.assertEqual([self.successResultOf(d) for d in takes], [
            Decision(True, 14, 0.0, 0.1), Decision(False, 0, 1.5, 2.5), Decision(True, 118, 0.0, 30.0)])
        stats = self.store.stats()
        self.assertEqual((stats["takes"], stats["allowed"], stats["rejected"], stats["batches"]), (3, 2, 1, 1))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_one_quota_sent_once(self):
        """
        When every take of a batch has the same quota (one filter's), the
        quota is sent once for all keys.
        """
        other = Quota(rate=10, period=1.0, burst=5)
        for key in ("a", "b", "c"):
            self.store.take(key, GCRA if key != "c" else other)
        self.turn()
        self.assertEqual(self.redis.calls, [
            ("evalsha", BATCH_SCRIPT_SHA, ("a", "b", "c"), (b"g 100000 15",))])

    def test_next_turn_next_command(self):
        """
        Takes made after a flush go in the next command.
        """
        self.successResultOf(self.fire(self.store.take("k1", GCRA)))
        self.store.take("k2", GCRA)
        self.store.take("k3", GCRA)
        self.turn()
        self.assertEqual([call[2] for call in self.redis.calls], [("k1",), ("k2", "k3")])

    def fire(self, d):
        """
        End the turn and return C{d}.
        """
        self.turn()
        return d

    def test_bounded_batch(self):
        """
        A turn with more takes than C{max_batch} sends a full batch as soon
        as it is full, and the rest at the end of the turn.
        """
        takes = [self.store.take(f"k{i}", GCRA) for i in range(9)]
        self.assertEqual([len(call[2]) for call in self.redis.calls], [4, 4])
        self.turn()
        self.assertEqual([len(call[2]) for call in self.redis.calls], [4, 4, 1])
        self.assertEqual([call[2][0] for call in self.redis.calls], ["k0", "k4", "k8"])
        for d in takes:
            self.assertEqual(self.successResultOf(d), Decision(True, 4, 0.0, 0.25))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_noscript_loads_then_evalsha(self):
        """
        On NOSCRIPT the script is loaded and the whole batch sent again;
        later batches go straight to EVALSHA.
        """
        self.redis.loaded.clear()
        takes = [self.store.take("a", GCRA), self.store.take("b", SLIDING)]
        self.turn()
        self.assertEqual([self.successResultOf(d).allowed for d in takes], [True, True])
        call = ("evalsha", BATCH_SCRIPT_SHA, ("a", "b"), (b"g 100000 15", b"s 60000 120"))
        self.assertEqual(self.redis.calls, [call, ("script_load",), call])
        self.successResultOf(self.fire(self.store.take("a", GCRA)))
        self.assertEqual(len(self.redis.calls), 4)
        self.assertEqual(self.store.stats()["script_loads"], 1)

    def test_bytes_reply(self):
        """
        A reply as bytes (a client not decoding) is read the same.
        """
        self.redis.reply = b"0 0 600000 600000"
        decision = self.successResultOf(self.fire(self.store.take("a", GCRA)))
        self.assertEqual(decision, Decision(False, 0, 0.6, 0.6))

    def test_unknown_algorithm_raises(self):
        """
        A quota of an unknown algorithm raises at once (the guard in front
        of the store turns that into a store error) and queues nothing.
        """
        self.assertRaises(ValueError, self.store.take, "a", Quota(rate=1, period=1.0, algorithm="leaky"))
        self.turn()
        self.assertEqual(self.redis.calls, [])

    def test_failure_fails_every_take(self):
        """
        When the command fails, every take of the batch fails with that
        error, and each is counted.
        """
        self.redis.error = txredisapi.ConnectionError("Not connected")
        takes = [self.store.take(f"k{i}", GCRA) for i in range(3)]
        self.turn()
        for d in takes:
            self.failureResultOf(d, txredisapi.ConnectionError)
        self.assertEqual(self.store.stats()["failures"], 3)

    def test_short_reply_fails_every_take(self):
        """
        A reply without one decision per take is an error for every take
        of the batch, not a wrong decision for some of them.
        """
        self.redis.reply = "1 4 0 250000"
        takes = [self.store.take("a", GCRA), self.store.take("b", GCRA)]
        self.turn()
        for d in takes:
            self.failureResultOf(d, BatchReplyError)

    def test_abandoned_take(self):
        """
        A take its caller cancels fails with L{CancelledError} at once; the
        others of its batch are still answered.
        """
        self.redis.hang = True
        first, second = self.store.take("a", GCRA), self.store.take("b", GCRA)
        self.turn()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertFalse(self.redis.pending[0].called)
        self.redis.pending[0].callback("0 0 100000 1500000 1 3 0 300000")
        self.assertEqual(self.successResultOf(second), Decision(True, 3, 0.0, 0.3))
        stats = self.store.stats()
        self.assertEqual((stats["abandoned"], stats["takes"], stats["allowed"]), (1, 1, 1))

    def test_all_abandoned_cancels_command(self):
        """
        When every take of a sent batch is abandoned, the command itself is
        cancelled: a command still waiting for a connection is then never
        sent, so Redis does not count takes nobody waits for.
        """
        self.redis.hang = True
        takes = [self.store.take("a", GCRA), self.store.take("b", GCRA)]
        self.turn()
        for d in takes:
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertEqual(self.redis.cancelled, self.redis.pending)

    def test_abandoned_before_sending(self):
        """
        Takes abandoned before their turn ends are left out of the command;
        a batch whose takes were all abandoned is not sent.
        """
        gone, kept = self.store.take("gone", GCRA), self.store.take("kept", GCRA)
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.turn()
        self.successResultOf(kept)
        self.assertEqual([call[2] for call in self.redis.calls], [("kept",)])
        d = self.store.take("also-gone", GCRA)
        d.cancel()
        self.turn()
        self.assertEqual(len(self.redis.calls), 1)
        self.failureResultOf(d, CancelledError)

    def test_stalled_connections_dropped(self):
        """
        After three commands in a row whose takes were all abandoned by
        their callers, the pooled connections are aborted so that they are
        made again.
        """
        self.redis.hang = True
        connections = [FakeConnection(), FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        for _ in range(3):
            d = self.fire(self.store.take("k", Quota(rate=1, period=1.0)))
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertTrue(all(c.transport.aborted for c in connections))
        stats = self.store.stats()
        self.assertEqual((stats["abandoned"], stats["reconnects_forced"]), (3, 1))

    def test_readonly_drops_connections(self):
        """
        A batch refused with READONLY (a connection to a master since
        demoted to a replica) fails its takes and drops the connections,
        so the pool connects to the master again.
        """
        self.redis.error = txredisapi.ResponseError("READONLY You can't write against a read only replica.")
        connections = [FakeConnection(), FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        d = self.fire(self.store.take("k", GCRA))
        self.failureResultOf(d, txredisapi.ResponseError)
        self.assertTrue(all(c.transport.aborted for c in connections))
        self.assertEqual(self.store.stats()["reconnects_forced"], 1)

    def test_other_errors_keep_connections(self):
        """
        Any other error reply leaves the connections alone.
        """
        self.redis.error = txredisapi.ResponseError("ERR something else")
        connections = [FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        self.failureResultOf(self.fire(self.store.take("k", GCRA)), txredisapi.ResponseError)
        self.assertFalse(connections[0].transport.aborted)

    def test_stall_counts_commands(self):
        """
        Takes abandoned together, in one command, count as one stalled
        command: one slow moment under load does not cost the connections.
        """
        self.redis.hang = True
        connections = [FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        takes = [self.store.take(f"k{i}", GCRA) for i in range(3)]
        self.turn()
        for d in takes:
            d.cancel()
            self.failureResultOf(d, CancelledError)
        self.assertFalse(connections[0].transport.aborted)
        self.assertEqual(self.store.stats()["abandoned"], 3)

    def test_answer_resets_stall_count(self):
        """
        An answered batch starts the count of abandoned takes afresh.
        """
        self.redis.hang = True
        connections = [FakeConnection()]
        self.store._factory.pool.extend(connections)
        self.addCleanup(self.store._factory.pool.clear)
        for _ in range(2):
            d = self.fire(self.store.take("k", GCRA))
            d.cancel()
            self.failureResultOf(d, CancelledError)
        d = self.fire(self.store.take("k", GCRA))
        self.redis.pending[-1].callback("1 4 0 250000")
        self.successResultOf(d)
        d = self.fire(self.store.take("k", GCRA))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertFalse(connections[0].transport.aborted)

    def test_close_fails_unsent(self):
        """
        Closing the store fails the takes not sent yet and leaves no timer
        behind.
        """
        d = self.store.take("k", GCRA)
        self.successResultOf(self.store.close())
        self.failureResultOf(d, txredisapi.ConnectionError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.redis.calls, [])
