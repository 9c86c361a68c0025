"""
Rate limits through whole gateways: real masters with two workers each, a
real redis-server started on a free loopback port, and requests on new
connections. What a client sees: exact admission across workers and hosts,
the 429 answer and its headers, each C{on_store_error} mode while Redis is
dead or frozen, enforcement resuming when Redis is back, and shadow mode.
"""

import os
import re

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.http import fetch
from gatelayer.testing.redis import RedisServer
from gatelayer.testing.waiting import sleep

# store_timeout of the filters in the failure tests, and how much later than
# that a client may get its answer on a busy machine (its own connection
# set-up, the worker's turn, the master's turn for a fallback decision).
# A store that is never given up on would hold the request until the test
# times out, so a generous slack still tells the two apart.
STORE_TIMEOUT = 0.2
SLACK = 1.0

CLIENT = b"X-Client"

_RATELIMIT = re.compile(r'^"(?P<name>[^"]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')



def gate_config(filters, workers=2):
    """
    A gate.ini with one C{rate_limit} filter per entry of C{filters} (name ->
    extra keys) and a route C{/NAME/} answering C{200 ok} through it.
    """
    sections = [f"""
[gateway]
workers = {workers}
admin = 127.0.0.1:0
drain_timeout = 2s
[listener:web]
bind = 127.0.0.1:0
"""]
    for name, keys in filters.items():
        sections.append(f"""
[filter:{name}]
type = rate_limit
{keys.strip()}
[route:{name}]
path = /{name}/
respond = 200 ok
filters = {name}
""")
    return "".join(sections)


def rate_limit_header(response):
    """
    The C{RateLimit} header parsed: C{(name, remaining, reset seconds)}, or
    L{None} when it is absent.
    """
    value = response.header(b"RateLimit")
    if value is None:
        return None
    match = _RATELIMIT.match(value.decode("ascii"))
    if match is None:
        raise AssertionError(f"malformed RateLimit header {value!r}")
    return match.group("name"), int(match.group("r")), int(match.group("t"))


class RateLimitGatewayTestCase(TestCase):
    """
    Starts gateways and a redis-server for a test and stops them after it.
    """

    timeout = 60

    def start_redis(self):
        """
        A redis-server on a free loopback port, stopped after the test.
        """
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        return redis

    @inlineCallbacks
    def start_gateways(self, config_text, count=1):
        """
        Start C{count} gateways (each a master and its workers) with the same
        configuration; returns them in a list.
        """
        gates = []
        for index in range(count):
            gate = GatewayProcess(reactor, os.path.abspath(self.mktemp()), config_text, name=f"gate{index}")
            self.addCleanup(gate.stop)
            gates.append(gate)
        yield gatherResults([gate.start() for gate in gates])
        return gates

    @inlineCallbacks
    def burst(self, gates, path, count, client=None):
        """
        C{count} requests for C{path} sent at once, each on a new
        connection, spread in turn over C{gates}; returns the responses in
        the order sent.
        """
        headers = {CLIENT: [client.encode("ascii")]} if client is not None else None
        responses = yield gatherResults(
            [fetch(reactor, gates[i % len(gates)].url("web", path), headers=headers) for i in range(count)],
            consumeErrors=True)
        return responses

    @inlineCallbacks
    def timed(self, gate, path, client, bound=STORE_TIMEOUT + SLACK):
        """
        One request on a new connection; checks that it is answered within
        C{bound} seconds and returns the response.
        """
        started = reactor.seconds()
        response = yield fetch(reactor, gate.url("web", path), headers={CLIENT: [client.encode("ascii")]})
        took = reactor.seconds() - started
        self.assertLess(took, bound, f"{path} for {client} answered {response.status} after {took:.3f}s")
        return response

    @inlineCallbacks
    def statuses(self, gate, path, client, count):
        """
        C{count} requests one after the other, each answered in time; returns
        their statuses.
        """
        statuses = []
        for _ in range(count):
            response = yield self.timed(gate, path, client)
            statuses.append(response.status)
        return statuses

    @inlineCallbacks
    def status(self, gate):
        """
        The gateway's admin C{/status} document.
        """
        response = yield fetch(reactor, gate.admin_url("/status"))
        return response.json()

    @inlineCallbacks
    def served_by_workers(self, gate, total, deadline=10.0):
        """
        Poll /status (bounded) until the workers' heartbeats account for
        C{total} requests; returns the per-worker counts.
        """
        end = reactor.seconds() + deadline
        while True:
            status = yield self.status(gate)
            served = [w["requests"] or 0 for w in status["workers"]]
            if sum(served) >= total:
                return served
            self.assertLess(reactor.seconds(), end, f"workers report {served}, expected {total} in all")
            yield sleep(reactor, 0.1)

    def assertExact(self, responses, name, rate, period, admitted, unique_below=None):
        """
        Exactly C{admitted} responses are 200 and the rest 429; each carries
        the draft's headers, the 429s a C{Retry-After} and a problem+json
        body, and the 200s' remaining counts are C{admitted - 1} down to 0,
        once each (no two requests saw the same count).

        @param unique_below: with leases, a lease that comes back unused
            makes its counts available again, so only the counts below this
            margin (decided by the master alone, in arrival order) are
            each seen once; the others need only be in range.
        """
        codes = [r.status for r in responses]
        self.assertEqual(sorted(set(codes)), [200, 429], codes)
        passed = [r for r in responses if r.status == 200]
        refused = [r for r in responses if r.status == 429]
        self.assertEqual(len(passed), admitted)
        policy = f'"{name}";q={rate};w={period}'.encode("ascii")
        remaining = []
        for response in passed:
            self.assertEqual(response.header(b"RateLimit-Policy"), policy)
            header_name, left, reset = rate_limit_header(response)
            self.assertEqual(header_name, name)
            self.assertGreaterEqual(reset, 1)
            remaining.append(left)
        if unique_below is None:
            self.assertEqual(sorted(remaining), list(range(admitted)))
        else:
            self.assertEqual(sorted(n for n in remaining if n < unique_below), list(range(unique_below)))
            self.assertTrue(all(0 <= n < admitted for n in remaining), remaining)
        for response in refused:
            self.assertEqual(response.header(b"Content-Type"), b"application/problem+json")
            retry = int(response.header(b"Retry-After"))
            # A sliding window's Retry-After can pass the period: early in a
            # window that is already full, the count only drops below the
            # limit once the next window is 1/limit of the way in, so it is at
            # most period + period / (rate + burst), whatever the hour.
            self.assertTrue(1 <= retry <= period + -(-period // admitted), retry)
            self.assertEqual(response.header(b"RateLimit-Policy"), policy)
            self.assertEqual(rate_limit_header(response), (name, 0, retry))
            body = response.json()
            self.assertEqual(body["status"], 429)
            self.assertEqual(body["title"], "Too Many Requests")
            self.assertIn(f"rate limit {name} exceeded", body["detail"])


class SharedRedisTests(RateLimitGatewayTestCase):
    """
    Two gateways (two masters, two workers each) sharing one Redis count
    together.
    """

    @inlineCallbacks
    def check_exact(self, algorithm, key, client):
        """
        Of 300 requests sent at once over both gateways, exactly rate +
        burst pass.
        """
        redis = self.start_redis()
        # Per hour, so that nothing drips back in while the 300 requests are
        # in flight even on a slow machine: the count is exact, not "about".
        # A generous store_timeout, so that a busy machine cannot turn this
        # into a test of on_store_error (which would answer 503).
        gates = yield self.start_gateways(gate_config({"shared": f"""
key = {key}
rate = 50/hour
burst = 10
algorithm = {algorithm}
store = {redis.url}
store_timeout = 2s
on_store_error = closed
"""}), count=2)
        responses = yield self.burst(gates, "/shared/x", 300, client=client)
        self.assertExact(responses, "shared", 50, 3600, admitted=60)
        suffix = "*" if key == "global" else client
        source = "global" if key == "global" else key.lower()
        ttl = int(redis.command("PTTL", f"gatelayer:rl:shared:{source}={suffix}")[1:].strip())
        self.assertTrue(0 < ttl <= 2 * 3600 * 1000, ttl)
        for gate in gates:
            served = yield self.served_by_workers(gate, 150)
            self.assertEqual(len(served), 2)
            self.assertTrue(all(n > 0 for n in served), served)

    def test_gcra(self):
        """
        GCRA in Redis, one global counter: 60 of 300 pass, 240 get 429.
        """
        return self.check_exact("gcra", "global", None)

    def test_sliding_window(self):
        """
        The sliding window in Redis, counted per X-Client header: 60 of 300
        pass, 240 get 429.
        """
        return self.check_exact("sliding_window", "header:X-Client", "tenant-a")


class EmbeddedStoreTests(RateLimitGatewayTestCase):
    """
    Without C{store} the master's embedded store counts for all its
    workers.
    """

    @inlineCallbacks
    def test_exact_across_workers(self):
        """
        Of 300 requests at once over new connections, exactly rate + burst
        pass although both workers served requests.
        """
        # A generous store_timeout: on a machine with fewer CPUs than busy
        # processes the master's answer to a burst can take longer than the
        # default 100ms, and each worker would then decide alone (its own
        # fallback store), which is not what this test is about.
        gates = yield self.start_gateways(gate_config({"embedded": """
key = global
rate = 50/hour
burst = 10
store_timeout = 2s
"""}))
        responses = yield self.burst(gates, "/embedded/x", 300)
        self.assertExact(responses, "embedded", 50, 3600, admitted=60)
        served = yield self.served_by_workers(gates[0], 300)
        self.assertEqual(len(served), 2)
        self.assertTrue(all(n > 0 for n in served), served)
        status = yield self.status(gates[0])
        self.assertEqual(status["ratelimit"]["takes"], 300)
        self.assertEqual(status["ratelimit"]["allowed"], 60)
        self.assertEqual(status["ratelimit"]["rejected"], 240)


class LeaseTests(RateLimitGatewayTestCase):
    """
    The embedded store hands busy keys far from their limit to the workers
    as leases: the count stays exact, the headers the same as the master's.
    """

    @inlineCallbacks
    def exact_with_leases(self, algorithm):
        """
        400 requests over both workers with a limit of 200 (40 at once, then
        360 at once): exactly 200 pass, although part of them were answered
        from leases (the master granted some); the counts within the margin
        are each seen once; the master's counters account for every request.
        """
        gates = yield self.start_gateways(gate_config({"leased": f"""
key = global
rate = 200/hour
algorithm = {algorithm}
store_timeout = 2s
"""}))
        # A first wave far from the limit, whose takes ask for leases and
        # get them (a single burst may reach the master in batches so large
        # that the budget is near the limit before any take asks), then the
        # rest at once.
        responses = yield self.burst(gates, "/leased/x", 40)
        responses += (yield self.burst(gates, "/leased/x", 360))
        # Leases are lent only above a margin of a quarter of the quota.
        self.assertExact(responses, "leased", 200, 3600, admitted=200, unique_below=50)
        served = yield self.served_by_workers(gates[0], 400)
        self.assertTrue(all(n > 0 for n in served), served)
        status = yield self.status(gates[0])
        counts = status["ratelimit"]
        self.assertGreater(counts["leases"], 0)
        self.assertEqual((counts["takes"], counts["allowed"], counts["rejected"]), (400, 200, 200))

    def test_gcra(self):
        """
        Exact with leases under GCRA.
        """
        return self.exact_with_leases("gcra")

    def test_sliding_window(self):
        """
        Exact with leases under the sliding window.
        """
        return self.exact_with_leases("sliding_window")


# one filter per on_store_error mode, all on the same Redis ({url}),
# counting per X-Client header
FAILURE_FILTERS = {
    mode: f"""
key = header:X-Client
rate = 3/hour
store = {{url}}
store_timeout = {int(STORE_TIMEOUT * 1000)}ms
on_store_error = {mode}
""" for mode in ("open", "closed", "local")
}


class StoreFailureTests(RateLimitGatewayTestCase):
    """
    Redis dies or hangs under two gateways sharing it: every request is
    answered within store_timeout (plus slack) as its filter's
    C{on_store_error} says, and limits resume when Redis is back.
    """

    timeout = 90

    @inlineCallbacks
    def setUp(self):
        self.redis = self.start_redis()
        filters = {mode: keys.format(url=self.redis.url) for mode, keys in FAILURE_FILTERS.items()}
        self.gates = yield self.start_gateways(gate_config(filters), count=2)
        # Redis decides while it is up
        for mode in filters:
            self.assertEqual((yield self.statuses(self.gates[0], f"/{mode}/", "early", 2)), [200, 200])
            self.assertEqual((yield self.statuses(self.gates[1], f"/{mode}/", "early", 2)), [200, 429])

    @inlineCallbacks
    def check_broken(self):
        """
        With Redis unusable: open lets through, closed answers 503, local
        decides exactly per host with its embedded store (so each gateway
        admits the rate once); every answer comes in time.
        """
        a, b = self.gates
        self.assertEqual((yield self.statuses(a, "/open/", "c1", 6)), [200] * 6)
        self.assertEqual((yield self.statuses(b, "/open/", "c1", 6)), [200] * 6)
        response = yield self.timed(a, "/open/", "c1")
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.header(b"RateLimit"))

        self.assertEqual((yield self.statuses(a, "/closed/", "c1", 6)), [503] * 6)
        self.assertEqual((yield self.statuses(b, "/closed/", "c1", 6)), [503] * 6)
        response = yield self.timed(b, "/closed/", "c1")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.header(b"Content-Type"), b"application/problem+json")
        self.assertEqual(response.header(b"Retry-After"), b"1")
        self.assertEqual(response.json()["status"], 503)

        self.assertEqual((yield self.statuses(a, "/local/", "c1", 6)), [200, 200, 200, 429, 429, 429])
        self.assertEqual((yield self.statuses(b, "/local/", "c1", 6)), [200, 200, 200, 429, 429, 429])
        # at once over both workers of each host: still exact per host
        for gate in self.gates:
            started = reactor.seconds()
            responses = yield self.burst([gate], "/local/", 40, client="c2")
            self.assertLess(reactor.seconds() - started, 2.0)
            self.assertEqual(sorted(r.status for r in responses), [200] * 3 + [429] * 37)

    def redis_key(self, mode, client):
        """
        Whether Redis holds the counter of C{client} for filter C{mode}.
        """
        return self.redis.command("EXISTS", f"gatelayer:rl:{mode}:header:x-client={client}") == b":1\r\n"

    @inlineCallbacks
    def recovered(self, deadline=20.0, span=3.0):
        """
        Poll (bounded) until every filter has decided in Redis for a
        stretch of at least C{span} seconds (longer than the breaker's
        cool-down and the reconnection back-off), on both gateways: each
        request uses a new client, whose counter must then be in Redis.
        """
        end = reactor.seconds() + deadline
        since, probe = None, 0
        while True:
            failed = []
            for index, gate in enumerate(self.gates):
                for mode in FAILURE_FILTERS:
                    probe += 1
                    client = f"probe{probe}"
                    response = yield fetch(reactor, gate.url("web", f"/{mode}/"),
                                           headers={CLIENT: [client.encode("ascii")]})
                    if response.status != 200 or not self.redis_key(mode, client):
                        failed.append((index, mode, response.status))
            ok = not failed
            now = reactor.seconds()
            if not ok:
                since = None
            elif since is None:
                since = now
            elif now - since >= span:
                return
            self.assertLess(now, end, f"Redis decisions did not resume in time; last round: {failed}")
            yield sleep(reactor, 0.1)

    @inlineCallbacks
    def check_resumed(self):
        """
        Redis decides again, across both gateways.
        """
        yield self.recovered()
        a, b = self.gates
        for mode in FAILURE_FILTERS:
            self.assertEqual((yield self.statuses(a, f"/{mode}/", "after", 2)), [200, 200], mode)
            self.assertEqual((yield self.statuses(b, f"/{mode}/", "after", 3)), [200, 429, 429], mode)
            self.assertTrue(self.redis_key(mode, "after"))

    @inlineCallbacks
    def test_killed_and_restarted(self):
        """
        Redis killed: each mode as documented, in time; restarted (empty):
        limits are shared through it again.
        """
        self.redis.kill()
        yield self.check_broken()
        self.redis.restart()
        yield self.check_resumed()

    @inlineCallbacks
    def test_frozen_and_thawed(self):
        """
        Redis frozen with SIGSTOP (connections stay open, nothing answers):
        the same; thawed: limits are shared through it again.
        """
        self.redis.freeze()
        self.addCleanup(lambda: self.redis.frozen and self.redis.thaw())
        yield self.check_broken()
        self.redis.thaw()
        yield self.check_resumed()


class ShadowModeTests(RateLimitGatewayTestCase):
    """
    C{mode = shadow} decides and counts but never refuses.
    """

    @inlineCallbacks
    def test_never_rejects(self):
        """
        Far beyond the rate, with the embedded store and with Redis, and
        with Redis dead under on_store_error = closed: always 200, without
        rate-limit headers; the decisions were still counted.
        """
        redis = self.start_redis()
        gates = yield self.start_gateways(gate_config({
            "shadow-embedded": "key = global\nrate = 2/hour\nmode = shadow",
            "shadow-redis": f"key = global\nrate = 2/hour\nmode = shadow\nstore = {redis.url}\n"
                            f"store_timeout = {int(STORE_TIMEOUT * 1000)}ms\non_store_error = closed",
        }))
        for name in ("shadow-embedded", "shadow-redis"):
            responses = yield self.burst(gates, f"/{name}/", 40)
            self.assertEqual([r.status for r in responses], [200] * 40, name)
            self.assertEqual([r.header(b"RateLimit") for r in responses], [None] * 40)
            self.assertEqual([r.header(b"Retry-After") for r in responses], [None] * 40)
        status = yield self.status(gates[0])
        self.assertEqual(status["ratelimit"]["takes"], 40)
        self.assertEqual(status["ratelimit"]["rejected"], 38)
        self.assertEqual(redis.command("EXISTS", "gatelayer:rl:shadow-redis:global=*"), b":1\r\n")
        redis.kill()
        self.assertEqual((yield self.statuses(gates[0], "/shadow-redis/", "any", 8)), [200] * 8)
