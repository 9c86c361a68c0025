"""
Integration tests of load balancing, health checks, failover and retries:
a real gatelayer master with two workers in front of upstream servers that
run as processes of their own, so they can be crashed (SIGKILL), hung
(SIGSTOP) and started again on the same port.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.config.model import ServerSpec
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port, sleep, wait_until
from gatelayer.upstream.balancers import ConsistentHashBalancer



def answered_since(load, since, count):
    """
    A predicate for L{wait_until}: C{load} has C{count} outcomes of
    requests started at or after C{since}.
    """
    return lambda: sum(o.started >= since for o in load.outcomes) >= count

# Fast health checks, so a crash is found in well under a second.
FAST_HEALTH = """
health_check = /healthz
health_interval = 200ms
health_timeout = 500ms
health_rise = 2
health_fall = 2
"""


def gate_config(upstreams, routes, gateway=""):
    """
    A gate.ini with two workers, an ephemeral listener and admin port, the
    given C{[upstream:NAME]} bodies (a dict) and C{(path, upstream, extra)}
    routes (each strips its path prefix unless it is C{/}).
    """
    parts = [f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
{gateway}
[listener:web]
bind = 127.0.0.1:0
"""]
    for name, body in upstreams.items():
        parts.append(f"[upstream:{name}]\n{body}\n")
    for index, (path, upstream, extra) in enumerate(routes):
        strip = f"strip_prefix = {path.rstrip('/')}\n" if path != "/" else ""
        parts.append(f"[route:r{index}]\npath = {path}\nupstream = {upstream}\n{strip}{extra}\n")
    return "".join(parts)


class Outcome:
    """
    One client request: when it started and ended, the status (L{None} if
    the client itself failed), the upstream server that answered (the
    C{X-Upstream} header; L{None} for the gateway's own answers) and the
    Retry-After header.
    """

    __slots__ = ("started", "ended", "status", "server", "retry_after", "body")

    def __init__(self, started, ended, status, server, retry_after=None, body=b""):
        self.started = started
        self.ended = ended
        self.status = status
        self.server = server
        self.retry_after = retry_after
        self.body = body

    def __repr__(self):
        return (f"<{self.status} from {self.server} "
                f"{self.started:.3f}-{self.ended:.3f}>")


@inlineCallbacks
def request(url, method=b"GET", headers=None, body=None):
    """
    Make one request on a new connection; returns an L{Outcome}.
    """
    started = reactor.seconds()
    try:
        response = yield fetch(reactor, url, method=method, headers=headers, body=body)
    except Exception as e:
        return Outcome(started, reactor.seconds(), None, repr(e))
    server = response.header(b"x-upstream")
    return Outcome(started, reactor.seconds(), response.status,
                   server.decode("ascii") if server else None,
                   response.header(b"retry-after"), response.body)


@inlineCallbacks
def many(url, count, concurrency=10, **kwargs):
    """
    C{count} requests to C{url}, C{concurrency} at a time; a list of
    L{Outcome} in completion order.
    """
    outcomes = []
    left = iter(range(count))

    @inlineCallbacks
    def client():
        for _ in left:
            outcome = yield request(url, **kwargs)
            outcomes.append(outcome)

    yield gatherResults([client() for _ in range(concurrency)])
    return outcomes


class SteadyLoad:
    """
    C{concurrency} clients sending GETs back to back, each on a new
    connection, until L{stop}; every outcome is kept. Bounded by
    C{max_requests} in case a test forgets to stop it.
    """

    def __init__(self, url, concurrency=10, max_requests=20000):
        self.url = url
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.outcomes = []
        self._stopping = False
        self._clients = None

    def start(self):
        """
        Start the clients.
        """
        self._clients = gatherResults([self._client() for _ in range(self.concurrency)])

    @inlineCallbacks
    def _client(self):
        while not self._stopping and len(self.outcomes) < self.max_requests:
            outcome = yield request(self.url)
            self.outcomes.append(outcome)

    def stop(self):
        """
        Let every client finish its request in flight; the Deferred fires
        with all outcomes.
        """
        self._stopping = True
        return self._clients.addCallback(lambda _: self.outcomes)


class BalancingGatewayTests(TestCase):
    """
    Balancing and health through real gateway and upstream processes.
    """

    timeout = 60

    def upstreams(self, *names):
        """
        Start one upstream process per name, in parallel.
        """
        return start_upstreams(self, reactor, *names)

    @inlineCallbacks
    def start_gateway(self, config_text):
        """
        Start the gateway (stopped again at cleanup, before the upstreams).
        """
        self.gate = yield start_gateway(self, reactor, config_text)

    def url(self, path):
        """
        A URL on the gateway's listener.
        """
        return self.gate.url("web", path)

    @inlineCallbacks
    def servers(self, upstream):
        """
        The admin /status rows of C{upstream}'s servers, by address.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        self.assertEqual(response.status, 200)
        return {row["address"]: row for row in response.json()["upstreams"][upstream]}

    @inlineCallbacks
    def wait_verdict(self, upstream, server, healthy, timeout=10.0):
        """
        Poll /status (bounded) until the master's health checks and the
        workers agree that C{server} is C{healthy}; a server coming back
        must also not be passively ejected by any worker. Returns its row.
        """
        deadline = reactor.seconds() + timeout
        while True:
            row = (yield self.servers(upstream))[server.address]
            if (row["health_check"]["healthy"] is healthy and row["healthy"] is healthy
                    and (not healthy or not row["ejected"])):
                # Every worker got the same push; give the last one a moment.
                yield sleep(reactor, 0.1)
                return row
            if reactor.seconds() > deadline:
                self.fail(f"{server.name} ({server.address}) not healthy={healthy} "
                          f"within {timeout:g}s: {row}")
            yield sleep(reactor, 0.05)

    @inlineCallbacks
    def test_crash_under_load_fails_over_and_recovers(self):
        """
        Three servers under steady load, one is SIGKILLed: once the health
        checks have found it (health_fall failed checks), no client sees a
        5xx and it gets no traffic; started again on the same port it gets
        traffic once health_rise checks pass. /status shows both
        transitions and per-server counters that add up.
        """
        a, b, c = yield self.upstreams("a", "b", "c")
        yield self.start_gateway(gate_config(
            {"app": f"""
servers = {a.address}, {b.address}, {c.address}
balance = round_robin
connect_timeout = 500ms
read_timeout = 2s
retries = 1
fail_timeout = 1s
{FAST_HEALTH}"""},
            [("/", "app", "")]))
        rows = yield self.servers("app")
        self.assertTrue(rows[c.address]["healthy"])
        self.assertTrue(rows[c.address]["health_check"]["healthy"])

        load = SteadyLoad(self.url("/work"), concurrency=10)
        load.start()
        yield wait_until(reactor, answered_since(load, 0, 30), what="30 requests under load")
        killed_at = reactor.seconds()
        yield c.stop()  # SIGKILL, and wait until it is gone

        # The detection window: until health_fall checks have failed, each
        # worker still picks c now and then (until it has passively ejected
        # it after max_fails errors). Such a GET meets a refused connection
        # or a reset keep-alive connection, nothing of the response has
        # reached the client, so it is retried on a or b (retries = 1).
        # Clients may see a slower answer here, but should see no error.
        down = yield self.wait_verdict("app", c, False)
        self.assertGreaterEqual(down["health_check"]["fails"], 2)
        detected_at = reactor.seconds()

        yield wait_until(reactor, answered_since(load, detected_at, 60),
                         what="60 requests after the crash was detected")
        restarted_at = reactor.seconds()
        yield c.start()  # the same port as before
        up = yield self.wait_verdict("app", c, True)
        self.assertGreaterEqual(up["health_check"]["passes"], 2)
        back_at = reactor.seconds()
        yield wait_until(reactor, answered_since(load, back_at, 60), what="60 requests after c came back")
        outcomes = yield load.stop()

        window = [o for o in outcomes if killed_at <= o.started < detected_at]
        after = [o for o in outcomes if o.started >= detected_at]
        self.assertGreater(len(window), 0)
        self.assertGreater(len(after), 50)
        errors = [o for o in outcomes if o.status != 200]
        # After detection not one 5xx (nor any other error); in fact the
        # retries cover the detection window as well.
        self.assertEqual([o for o in after if o.status != 200], [])
        self.assertEqual(errors, [], f"{len(errors)} errors out of {len(outcomes)} requests")
        # While c was down (found by the checks) and until it was back, only
        # a and b answered; once back, c answers its share again.
        gone = [o for o in outcomes if detected_at <= o.started and o.ended < restarted_at]
        self.assertEqual({o.server for o in gone}, {"a", "b"})
        returned = [o for o in outcomes if o.started >= back_at]
        self.assertEqual({o.server for o in returned}, {"a", "b", "c"})
        self.assertGreater(sum(o.server == "c" for o in returned), len(returned) // 5)

        rows = yield self.servers("app")
        by_name = {s.name: rows[s.address] for s in (a, b, c)}
        for name, row in by_name.items():
            self.assertEqual(row["active"], 0, name)
            self.assertTrue(row["healthy"], name)
            self.assertGreaterEqual(row["requests"], sum(o.server == name for o in outcomes), name)
        self.assertEqual(by_name["a"]["failures"] + by_name["b"]["failures"], 0)
        # Every attempt either got an answer or counted as a failure (the
        # ones that were retried).
        self.assertEqual(sum(r["requests"] for r in by_name.values()),
                         len(outcomes) + sum(r["failures"] for r in by_name.values()))
        log = self.gate.log()
        self.assertIn(f"server {c.address} is unhealthy after 2 failed checks", log)
        self.assertIn(f"server {c.address} is healthy again after 2 passing checks", log)

    @inlineCallbacks
    def test_all_down_answers_503_at_once(self):
        """
        One server crashed and two hung (SIGSTOP: connections are accepted
        but never answered): once the health checks mark them all down,
        requests get 503 with Retry-After at once, not after the 2s connect
        or 5s read timeout, and no request is sent upstream. A server that
        comes back serves again.
        """
        a, b, c = yield self.upstreams("a", "b", "c")
        yield self.start_gateway(gate_config(
            {"app": f"""
servers = {a.address}, {b.address}, {c.address}
connect_timeout = 2s
read_timeout = 5s
{FAST_HEALTH.replace("health_timeout = 500ms", "health_timeout = 300ms")}"""},
            [("/", "app", "")]))
        yield a.stop()
        b.pause()
        c.pause()
        for server in (a, b, c):
            yield self.wait_verdict("app", server, False)

        outcomes = yield many(self.url("/x"), 20)
        self.assertEqual([o.status for o in outcomes], [503] * 20)
        for outcome in outcomes:
            self.assertLess(outcome.ended - outcome.started, 1.0, outcome)
            # health_interval x health_rise = 0.4s, rounded up to whole seconds.
            self.assertEqual(outcome.retry_after, b"1")
        self.assertEqual(json.loads(outcomes[0].body)["status"], 503)
        rows = yield self.servers("app")
        self.assertEqual(sum(row["requests"] for row in rows.values()), 0)
        self.assertIn("refused", rows[a.address]["health_check"]["last"].lower())
        self.assertIn("no status line within 0.3s", rows[b.address]["health_check"]["last"])

        b.resume()
        yield self.wait_verdict("app", b, True)
        outcomes = yield many(self.url("/x"), 10)
        self.assertEqual([(o.status, o.server) for o in outcomes], [(200, "b")] * 10)

    @inlineCallbacks
    def test_retry_lands_on_another_server(self):
        """
        No health checks; one server refuses connections, the other is up.
        Every GET succeeds: those sent to the refused port first are retried
        on the live server. A POST meeting a refused connection is retried
        too (nothing was sent, so it is safe); a POST whose request reached
        a server is not retried unless its route says
        retry_non_idempotent = yes, while a GET is. With the default
        max_fails a worker stops trying the refused server after three
        errors.
        """
        a, b = yield self.upstreams("a", "b")
        refused = f"127.0.0.1:{free_port()}"
        no_ejection = "connect_timeout = 500ms\nread_timeout = 2s\nmax_fails = 0\n"
        yield self.start_gateway(gate_config(
            {
                "app": f"servers = {refused}, {a.address}\n{no_ejection}",
                "ejecting": f"servers = {refused}, {a.address}\nconnect_timeout = 500ms\n",
                "statuses": f"servers = {a.address}, {b.address}\n{no_ejection}"
                            "retry_on = connect_error, timeout, 503\n",
            },
            [("/app/", "app", ""), ("/ejecting/", "ejecting", ""),
             ("/once/", "statuses", ""), ("/again/", "statuses", "retry_non_idempotent = yes")]))

        gets = yield many(self.url("/app/x"), 20)
        self.assertEqual([(o.status, o.server) for o in gets], [(200, "a")] * 20)
        rows = yield self.servers("app")
        # Round robin per worker: about every other request met the refused
        # port first, and each of those was retried on a.
        self.assertGreaterEqual(rows[refused]["failures"], 5)
        self.assertEqual(rows[refused]["requests"], rows[refused]["failures"])
        self.assertEqual(rows[a.address]["requests"], 20)

        posts = yield many(self.url("/app/x"), 10, method=b"POST", body=b"payload")
        self.assertEqual([(o.status, o.server) for o in posts], [(200, "a")] * 10)
        rows_after = yield self.servers("app")
        self.assertGreaterEqual(rows_after[refused]["failures"] - rows[refused]["failures"], 2)
        self.assertEqual(rows_after[a.address]["requests"], 30)

        # One at a time, so each failure is counted before the next pick.
        ejecting = yield many(self.url("/ejecting/x"), 30, concurrency=1)
        self.assertEqual([o.status for o in ejecting], [200] * 30)
        rows = yield self.servers("ejecting")
        self.assertLessEqual(rows[refused]["requests"], 3 * 2)  # max_fails per worker
        self.assertTrue(rows[refused]["ejected"])

        # Both servers answer 503, which retry_on lists: a GET is sent to
        # both, a POST to one, and a POST on the retry_non_idempotent route
        # to both. The client sees the last server's 503.
        before = yield self.servers("statuses")
        results = {}
        for label, path, method in (("get", "/once/code/503", b"GET"),
                                    ("post", "/once/code/503", b"POST"),
                                    ("post_again", "/again/code/503", b"POST")):
            outcomes = yield many(self.url(path), 4, concurrency=1, method=method,
                                  body=b"x" if method == b"POST" else None)
            self.assertEqual([o.status for o in outcomes], [503] * 4, label)
            self.assertEqual([o.retry_after for o in outcomes], [None] * 4, label)
            after = yield self.servers("statuses")
            results[label] = sum(after[k]["requests"] - before[k]["requests"] for k in after)
            before = after
        self.assertEqual(results, {"get": 8, "post": 4, "post_again": 8})

    @inlineCallbacks
    def test_weighted_split(self):
        """
        balance = weighted with weights 3:1: 400 requests split 300/100
        within 3%, and /status counts the same.
        """
        a, b = yield self.upstreams("a", "b")
        yield self.start_gateway(gate_config(
            {"app": f"servers = {a.address} weight=3, {b.address} weight=1\nbalance = weighted\n"},
            [("/", "app", "")]))
        outcomes = yield many(self.url("/x"), 400)
        self.assertEqual({o.status for o in outcomes}, {200})
        to_a = sum(o.server == "a" for o in outcomes)
        self.assertLessEqual(abs(to_a - 300), 12, f"{to_a} of 400 to the weight=3 server")
        rows = yield self.servers("app")
        self.assertEqual(rows[a.address]["requests"], to_a)
        self.assertEqual(rows[b.address]["requests"], 400 - to_a)

    @inlineCallbacks
    def test_ip_hash_sticks_per_client(self):
        """
        balance = ip_hash behind a trusted proxy: each client (its address
        read from X-Forwarded-For right to left past trusted hops, whatever
        worker serves the connection) always reaches the same server, the
        one the pure rendezvous hash names. When that server is down only
        its clients move; when it is back they return.
        """
        servers = yield self.upstreams("a", "b", "c")
        yield self.start_gateway(gate_config(
            {"app": ", ".join(s.address for s in servers).join(("servers = ", "\n"))
                    + f"balance = ip_hash\nfail_timeout = 1s\n{FAST_HEALTH}"},
            [("/", "app", "")], gateway="trusted_proxies = 127.0.0.1"))
        clients = [f"198.51.100.{n}" for n in range(1, 25)]
        name_of = {f"127.0.0.1:{s.port}": s.name for s in servers}

        def expected(live):
            specs = [ServerSpec(host="127.0.0.1", port=s.port) for s in live]
            balancer = ConsistentHashBalancer()
            return {ip: name_of[balancer.pick(specs, ip, lambda s: 0).address] for ip in clients}

        @inlineCallbacks
        def mapping():
            forms = ["{ip}", "203.0.113.66, {ip}", "{ip}, 127.0.0.1"]
            jobs = [(ip, form.format(ip=ip)) for ip in clients for form in forms]
            seen = {}

            @inlineCallbacks
            def send(ip, header):
                outcome = yield request(self.url("/x"), headers={b"X-Forwarded-For": [header.encode()]})
                self.assertEqual(outcome.status, 200, (ip, header))
                seen.setdefault(ip, set()).add(outcome.server)
            for start in range(0, len(jobs), 12):
                yield gatherResults([send(ip, h) for ip, h in jobs[start:start + 12]])
            for ip, names in seen.items():
                self.assertEqual(len(names), 1, f"client {ip} went to {sorted(names)}")
            return {ip: names.pop() for ip, names in seen.items()}

        first = yield mapping()
        self.assertEqual(first, expected(servers))
        self.assertEqual(set(first.values()), {"a", "b", "c"})

        victim = servers[0]
        yield victim.stop()
        yield self.wait_verdict("app", victim, False)
        moved = yield mapping()
        self.assertEqual(moved, expected(servers[1:]))
        for ip in clients:
            if first[ip] != victim.name:
                self.assertEqual(moved[ip], first[ip], f"client {ip} moved")

        yield victim.start()
        yield self.wait_verdict("app", victim, True)
        returned = yield mapping()
        self.assertEqual(returned, first)

    @inlineCallbacks
    def test_backup_only_when_primary_down(self):
        """
        A backup server gets nothing while the primary is healthy, takes
        every request (retries included) once the primary crashed, and
        nothing again after the primary is back.
        """
        primary, standby = yield self.upstreams("primary", "standby")
        yield self.start_gateway(gate_config(
            {"app": f"servers = {primary.address}, {standby.address} backup\n"
                    f"fail_timeout = 1s\n{FAST_HEALTH}"},
            [("/", "app", "")]))
        outcomes = yield many(self.url("/x"), 20)
        self.assertEqual([(o.status, o.server) for o in outcomes], [(200, "primary")] * 20)
        rows = yield self.servers("app")
        self.assertEqual(rows[standby.address]["requests"], 0)

        yield primary.stop()
        # Before the checks notice: a GET meeting the dead primary is retried
        # on the backup.
        outcomes = yield many(self.url("/x"), 10)
        self.assertEqual([(o.status, o.server) for o in outcomes], [(200, "standby")] * 10)
        yield self.wait_verdict("app", primary, False)
        outcomes = yield many(self.url("/x"), 20)
        self.assertEqual([(o.status, o.server) for o in outcomes], [(200, "standby")] * 20)

        yield primary.start()
        yield self.wait_verdict("app", primary, True)
        outcomes = yield many(self.url("/x"), 20)
        self.assertEqual([(o.status, o.server) for o in outcomes], [(200, "primary")] * 20)
        rows = yield self.servers("app")
        self.assertEqual(rows[standby.address]["requests"], 30)
