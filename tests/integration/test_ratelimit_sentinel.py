"""
Rate limits on a Redis watched by Sentinels, through a real gateway (a
master and two workers): a real master, replica and three Sentinels on free
loopback ports, the master killed with SIGKILL while a client keeps sending
requests. What is checked: how long until the limits are enforced again
through the promoted replica, that the answers in between are the
configured C{on_store_error} behaviour, and that the limit is exact again
afterwards, counting from what the replica had. The same failover over TLS
(C{rediss+sentinel://}) is checked on the store itself.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import TimeoutError, gatherResults, inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from gatelayer.ratelimit.algorithms import Quota
from gatelayer.ratelimit.redis_store import RedisStore
from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.http import fetch
from gatelayer.testing.redis import SentinelCluster, write_certificates, ask_redis
from gatelayer.testing.waiting import sleep, wait_until

RATE = 20
# the longest a failover may take until every worker enforces limits again:
# the Sentinels' agreement (down_after 0.8s), the store's reconnection
# back-off (at most 2s) and its breaker's cool-down (2s), with room for a
# loaded machine
BOUND = 15.0
# probes in a row that must reach the new master before enforcement counts
# as back on both workers (each probe is a new connection, which the
# kernel spreads over the workers)
SETTLED = 12
KEY = "gatelayer:rl:limited:header:x-client="

_log = Logger()


def gate_config(store, on_store_error):
    """
    A gate.ini: two workers, route C{/limited/} answering C{200 ok} behind
    a rate limit of RATE a minute per C{X-Client} in C{store}.
    """
    return f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
[listener:web]
bind = 127.0.0.1:0
[filter:limited]
type = rate_limit
key = header:X-Client
rate = {RATE}/minute
store = {store}
store_timeout = 200ms
on_store_error = {on_store_error}
[route:limited]
path = /limited/
respond = 200 ok
filters = limited
"""


class SentinelFailoverTests(TestCase):
    """
    A gateway's rate limits across a Sentinel failover, for each
    C{on_store_error} mode.
    """

    timeout = 120

    @inlineCallbacks
    def start(self, on_store_error):
        """
        Start the Sentinel cluster and a gateway using it.
        """
        self.cluster = SentinelCluster().start()
        self.addCleanup(self.cluster.stop)
        self.gate = GatewayProcess(reactor, os.path.abspath(self.mktemp()),
                                   gate_config(self.cluster.url, on_store_error))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()
        # the workers connect in the background: wait until both answer
        # from Redis (new connections are spread over the workers)
        self.warmups = 0

        @inlineCallbacks
        def both_workers_connected():
            statuses = []
            for _ in range(8):
                self.warmups += 1
                response = yield self.request(f"warm-up-{self.warmups}")
                statuses.append(response.status)
            return statuses == [200] * 8
        yield wait_until(reactor, both_workers_connected, timeout=15, interval=0.2,
                         what="both workers answering from Redis")

    def request(self, client):
        """
        One request for C{/limited/} as C{client}, on a new connection.
        """
        return fetch(reactor, self.gate.url("web", "/limited/"), headers={b"X-Client": [client.encode()]})

    @inlineCallbacks
    def burst(self, client, count):
        """
        C{count} requests as C{client} at once; the statuses, sorted.
        """
        responses = yield gatherResults([self.request(client) for _ in range(count)], consumeErrors=True)
        return sorted(r.status for r in responses)

    def replica_has(self, client):
        """
        Whether the replica holds C{client}'s counter.
        """
        return ask_redis(self.cluster.replica.port, "EXISTS", KEY + client) == 1

    @inlineCallbacks
    def failover(self, on_store_error):
        """
        Exhaust a client's limit, kill the master and probe with a new
        client every 50ms until SETTLED probes in a row reached the
        promoted replica; returns C{(seconds, probes)}: the time from the
        kill until then, and each probe's C{(seconds, status, has a
        RateLimit header, reached the new master)}.
        """
        yield self.start(on_store_error)
        self.assertEqual((yield self.burst("before", RATE + 5)), [200] * RATE + [429] * 5)
        exhausted = reactor.seconds()
        master, replica = self.cluster.master.port, self.cluster.replica.port
        # the replica must hold the exhausted counter as the master has it
        yield wait_until(reactor, lambda: ask_redis(replica, "GET", KEY + "before") is not None and (
            ask_redis(replica, "GET", KEY + "before") == ask_redis(master, "GET", KEY + "before")),
            what="the counter reaching the replica")

        self.cluster.master.kill()
        killed = reactor.seconds()
        during = yield self.request("before")
        probes, in_a_row, index = [], 0, 0
        while in_a_row < SETTLED:
            elapsed = reactor.seconds() - killed
            if elapsed > BOUND:
                self.fail(f"limits not enforced again {BOUND:g}s after the master was killed: {probes}\n"
                          + self.gate.log()[-4000:])
            client = f"probe-{index}"
            index += 1
            response = yield self.request(client)
            reached = self.replica_has(client)
            probes.append((round(elapsed, 2), response.status, response.header(b"RateLimit") is not None, reached))
            in_a_row = in_a_row + 1 if reached else 0
            yield sleep(reactor, 0.05)
        settled = probes[-SETTLED][0]
        _log.info("failover with on_store_error = {mode}: limits enforced on every worker {settled}s "
                  "after the master was killed (first {first}s)", mode=on_store_error, settled=settled,
                  first=next(p[0] for p in probes if p[3]))
        self.assertEqual(self.cluster.role(self.cluster.replica), "master")

        # after: what the replica had is kept (the exhausted client has only
        # what refilled since: one request every 60/RATE seconds), and a new
        # client gets exactly RATE
        statuses = yield self.burst("before", 10)
        refilled = int((reactor.seconds() - exhausted) / (60 / RATE)) + 1
        self.assertLessEqual(statuses.count(200), refilled, statuses)
        self.assertLess(refilled, 10)
        self.assertEqual((yield self.burst("after", RATE + 5)), [200] * RATE + [429] * 5)
        return settled, during, probes

    def assertBetween(self, probes, expected):
        """
        Every probe that did not reach the new master was answered as
        C{expected} (C{(status, has a RateLimit header)}), and every probe
        that did was let through with its RateLimit header.
        """
        before = [(code, header) for _, code, header, reached in probes if not reached]
        after = [(code, header) for _, code, header, reached in probes if reached]
        self.assertTrue(before, f"no probe answered during the failover: {probes}")
        self.assertEqual(set(before), {expected}, probes)
        self.assertEqual(set(after), {(200, True)}, probes)

    @inlineCallbacks
    def test_closed(self):
        """
        on_store_error = closed: 503 until the promoted replica answers
        (the exhausted client too), then limits as before, within BOUND.
        """
        settled, during, probes = yield self.failover("closed")
        self.assertEqual(during.status, 503)
        self.assertBetween(probes, (503, False))
        self.assertLess(settled, BOUND)

    @inlineCallbacks
    def test_open(self):
        """
        on_store_error = open: requests go through unlimited (no RateLimit
        header; the exhausted client too) until the promoted replica
        answers, then limits as before.
        """
        settled, during, probes = yield self.failover("open")
        self.assertEqual((during.status, during.header(b"RateLimit")), (200, None))
        self.assertBetween(probes, (200, False))
        self.assertLess(settled, BOUND)

    @inlineCallbacks
    def test_local(self):
        """
        on_store_error = local: the master's embedded store decides until
        the promoted replica answers (RateLimit headers, counting from
        zero: the client exhausted in Redis is let through), then limits
        as before.
        """
        settled, during, probes = yield self.failover("local")
        self.assertEqual(during.status, 200)
        self.assertIsNotNone(during.header(b"RateLimit"))
        self.assertBetween(probes, (200, True))
        self.assertLess(settled, BOUND)


class SentinelTlsStoreTests(TestCase):
    """
    L{RedisStore} on C{rediss+sentinel://}: TLS to the Sentinels and to the
    servers, whose certificates are checked against the IP address the
    Sentinels report.
    """

    timeout = 90

    @inlineCallbacks
    def test_follows_failover_over_tls(self):
        """
        Exact over TLS before the failover; after the master is killed the
        store reaches the promoted replica (within BOUND), a key exhausted
        before is still exhausted and a new key gets exactly its quota.
        """
        cluster = SentinelCluster(tls=True).start()
        self.addCleanup(cluster.stop)
        store = RedisStore(reactor, cluster.url)
        self.addCleanup(store.close)
        quota = Quota(rate=RATE, period=3600.0)

        @inlineCallbacks
        def allowed(key, count):
            decisions = yield gatherResults([store.take(KEY + key, quota) for _ in range(count)])
            return sum(d.allowed for d in decisions)

        @inlineCallbacks
        def answers(key):
            try:
                decision = yield store.take(KEY + key, quota).addTimeout(0.5, reactor)
            except Exception:
                return False
            return decision.allowed
        yield wait_until(reactor, lambda: answers("first"), timeout=15, what="a first take over TLS")
        self.assertEqual((yield allowed("before", RATE + 5)), RATE)

        # a store trusting another CA never gets an answer
        other = os.path.abspath(self.mktemp())
        os.makedirs(other)
        write_certificates(other)
        stranger = RedisStore(reactor, cluster.url.replace(cluster.ca_path, os.path.join(other, "ca.pem")))
        self.addCleanup(stranger.close)
        for _ in range(3):
            with self.assertRaises(TimeoutError):
                yield stranger.take(KEY + "stranger", quota).addTimeout(0.5, reactor)
        self.assertEqual(stranger.stats()["connections"], 0)

        yield wait_until(reactor, lambda: cluster.ask(cluster.replica.port, "GET", KEY + "before") == (
            cluster.ask(cluster.master.port, "GET", KEY + "before")), what="the counter reaching the replica")

        cluster.master.kill()
        killed = reactor.seconds()
        probes = iter(range(1000))
        yield wait_until(reactor, lambda: answers(f"probe-{next(probes)}"), timeout=BOUND, interval=0.1,
                         what="a take through the promoted replica")
        self.assertLess(reactor.seconds() - killed, BOUND)
        self.assertEqual(cluster.role(cluster.replica), "master")
        self.assertEqual((yield allowed("before", 5)), 0)
        self.assertEqual((yield allowed("after", RATE + 5)), RATE)
