"""
Integration tests of reloading the whole configuration: a real gatelayer
master with two workers in front of real upstream processes, eight
keep-alive clients looping requests while the master is sent SIGHUP.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.load import KeepAliveLoad
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port, scaled, wait_until
from tests.integration.test_metrics_gateway import families

DEADLINE = 30.0


def gate_config(servers, routes=""):
    """
    A two-worker gateway with upstream C{app} of C{servers} (a C{servers =}
    value) behind C{/app/} and C{/slow}, and C{routes} added.
    """
    return f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = {scaled(5):g}s

[listener:web]
bind = 127.0.0.1:0

[upstream:app]
servers = {servers}
balance = weighted

[route:app]
path = /app/
upstream = app

[route:slow]
path = /slow
upstream = app
{routes}
"""


class ReloadGatewayTests(TestCase):
    """
    SIGHUP reloads routes and upstreams without a restart and without a
    failed request; a bad file changes nothing and says why.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.a, self.b, self.c = yield start_upstreams(self, reactor, "a", "b", "c")
        servers = f"{self.a.address}, {self.b.address}, {self.c.address}"
        self.gate = yield start_gateway(self, reactor, gate_config(servers))

    @inlineCallbacks
    def status(self):
        """
        The admin /status document.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        self.assertEqual(response.status, 200)
        return response.json()

    def rewrite(self, text):
        """
        Replace the gateway's configuration file.
        """
        with open(self.gate.config_path, "w") as f:
            f.write(text)

    @inlineCallbacks
    def reload(self, expected_generation):
        """
        SIGHUP the master and wait (bounded) for the outcome of the attempt
        in /status; returns C{reload.last}.
        """
        before = (yield self.status())["reload"]["last"]
        self.gate.signal("HUP")

        @inlineCallbacks
        def decided():
            last = (yield self.status())["reload"]["last"]
            return last if last is not None and last != before else None
        last = yield wait_until(reactor, decided, DEADLINE, what="the reload outcome in /status")
        self.assertEqual(last["generation"], expected_generation)
        return last

    @inlineCallbacks
    def start_load(self):
        """
        Eight keep-alive clients looping on /app/, stopped at cleanup; fires
        once each has had answers.
        """
        load = KeepAliveLoad(reactor, self.gate.url("web", "/app/x"), clients=8).start()
        self.addCleanup(load.stop)
        yield wait_until(reactor, lambda: load.count() >= 80, DEADLINE, what="80 answers before the reload")
        return load

    @inlineCallbacks
    def test_routes_weights_and_servers_change_without_failure(self):
        """
        A reload that adds a route, changes the servers' weights and removes
        a server, under the load of eight keep-alive clients: not one
        request fails, the new route answers, the removed server gets no
        new request, /status shows the outcome and the new generation.
        """
        load = yield self.start_load()
        self.assertEqual({r[2] for r in load.results}, {b"a", b"b", b"c"})
        self.rewrite(gate_config(f"{self.a.address} weight=3, {self.b.address} weight=1",
                                 "[route:hello]\npath = /hello\nrespond = 200 hello\n"))
        last = yield self.reload(2)
        self.assertTrue(last["ok"], last)
        self.assertEqual(last["problems"], [])
        self.assertIn("route:hello added", last["changes"])
        self.assertIn("upstream:app changed", last["changes"])
        switched = load.count()
        yield wait_until(reactor, lambda: load.count() >= switched + 200, DEADLINE,
                         what="200 answers after the reload")
        # At most one request per client was in flight on the old gateway.
        after = load.results[switched + load.clients:]
        self.assertNotIn(b"c", {r[2] for r in after})
        self.assertEqual({r[2] for r in after}, {b"a", b"b"})
        hello = yield fetch(reactor, self.gate.url("web", "/hello"))
        self.assertEqual((hello.status, hello.body), (200, b"hello"))
        yield load.stop()
        self.assertEqual(load.bad(), [])
        status = yield self.status()
        self.assertEqual(status["reload"]["generation"], 2)
        self.assertEqual(status["reload"]["digest"], last["digest"])
        self.assertEqual(sorted(r["name"] for group in status["routes"] for r in group["routes"]),
                         ["app", "hello", "slow"])
        self.assertEqual({s["address"] for s in status["upstreams"]["app"]},
                         {self.a.address, self.b.address})

    @inlineCallbacks
    def test_first_rate_limit_added(self):
        """
        A reload that adds the first rate-limit filter starts the master's
        embedded store and the running workers' takes reach it: the limit
        is exact over both workers.
        """
        limit = "[filter:few]\ntype = rate_limit\nkey = global\nrate = 3/hour\n"
        route = "[route:few]\npath = /few\nrespond = 200 few\nfilters = few\n"
        self.rewrite(gate_config(self.a.address, limit + route))
        last = yield self.reload(2)
        self.assertTrue(last["ok"], last)
        statuses = []
        for _ in range(6):
            response = yield fetch(reactor, self.gate.url("web", "/few"))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 200, 200, 429, 429, 429])
        status = yield self.status()
        self.assertEqual(status["ratelimit"]["takes"], 6)

    @inlineCallbacks
    def test_typo_keeps_running_config(self):
        """
        A reload of a file with a typo keeps serving the old configuration
        without a failed request; /status, the master's log and --check name
        the same problem.
        """
        load = yield self.start_load()
        self.rewrite(gate_config(self.a.address, "[route:hello]\npath = /hello\nrespnd = 200 hello\n"))
        last = yield self.reload(1)
        self.assertFalse(last["ok"])
        problem = [p for p in last["problems"] if "respnd" in p][0]
        self.assertIn("[route:hello] respnd: is not a known key", problem)
        code, output = yield self.gate.check()
        self.assertEqual(code, 1)
        for each in last["problems"]:
            self.assertIn(each, output)
        yield wait_until(reactor, lambda: problem in self.gate.log(), DEADLINE, what="the problem in the log")
        counted = load.count()
        yield wait_until(reactor, lambda: load.count() >= counted + 100, DEADLINE,
                         what="100 answers after the failed reload")
        self.assertEqual({r[2] for r in load.results[counted:]}, {b"a", b"b", b"c"})
        missing = yield fetch(reactor, self.gate.url("web", "/hello"))
        self.assertEqual(missing.status, 404)
        yield load.stop()
        self.assertEqual(load.bad(), [])
        self.assertEqual((yield self.status())["reload"]["generation"], 1)
        metrics = yield fetch(reactor, self.gate.admin_url("/metrics"))
        found = families(metrics.body)
        self.assertEqual(found["gatelayer_reloads_total"][(("outcome", "failed"),)], 1.0)
        self.assertEqual(found["gatelayer_reloads_total"][(("outcome", "ok"),)], 0.0)
        self.assertEqual(found["gatelayer_reload_last_success"][()], 0.0)

    @inlineCallbacks
    def test_listener_port_change_rolls_workers(self):
        """
        A reload that moves the listener to another port starts a new
        generation of workers serving on it, while a long request on the
        old port finishes; the old port is closed once the old workers are
        gone, and a reload meanwhile that changes listeners again is
        refused.
        """
        old_host, old_port = self.gate.address("web")
        new_port = free_port()
        # Longer than a new generation takes to start (cold processes, slower on PyPy).
        slow = fetch(reactor, self.gate.url("web", f"/slow?delay={scaled(3):g}"))
        yield wait_until(reactor, lambda: self.active_requests(), DEADLINE, what="the slow request in flight")
        self.rewrite(gate_config(self.a.address).replace("bind = 127.0.0.1:0", f"bind = 127.0.0.1:{new_port}"))
        last = yield self.reload(2)
        self.assertTrue(last["ok"], last)
        self.assertIn("listener:web changed", last["changes"])
        status = yield self.status()
        self.assertEqual(status["listeners"], {"web": [f"127.0.0.1:{new_port}"]})
        self.assertEqual(status["reload"]["draining_workers"], 2)
        moved = yield fetch(reactor, f"http://127.0.0.1:{new_port}/app/x".encode("ascii"))
        self.assertEqual((moved.status, moved.header(b"x-upstream")), (200, b"a"))
        self.rewrite(gate_config(self.a.address).replace("bind = 127.0.0.1:0", "bind = 127.0.0.1:0"))
        refused = yield self.reload(2)
        self.assertFalse(refused["ok"])
        self.assertIn("still draining", refused["problems"][0])
        response = yield slow
        self.assertEqual(response.status, 200)
        yield wait_until(reactor, self.old_generation_gone, DEADLINE, what="the old generation to exit")
        refused = yield fetch(reactor, f"http://{old_host}:{old_port}/app/x".encode("ascii")).addCallbacks(
            lambda response: response.status, lambda failure: failure.type.__name__)
        self.assertEqual(refused, "ConnectionRefusedError")

    @inlineCallbacks
    def active_requests(self):
        """
        Whether a worker reports a request in progress.
        """
        status = yield self.status()
        return any(worker["active"] for worker in status["workers"])

    @inlineCallbacks
    def old_generation_gone(self):
        """
        Whether no worker of a previous generation is left.
        """
        status = yield self.status()
        return status["reload"]["draining_workers"] == 0


def split_config(v1, v2, weights, extra=""):
    """
    A one-worker gateway whose C{/split/} route splits between upstreams
    C{v1} and C{v2} by C{X-User} with C{weights} (C{(w1, w2)}), and whose
    C{/limited/} route allows 5 requests an hour in all.
    """
    return f"""
[gateway]
workers = 1
admin = 127.0.0.1:0
drain_timeout = 2s

[listener:web]
bind = 127.0.0.1:0

[upstream:v1]
servers = {v1}
[upstream:v2]
servers = {v2}

[filter:hourly]
type = rate_limit
key = global
rate = 5/hour

[route:split]
path = /split/
upstream = v1:{weights[0]}, v2:{weights[1]}
split_key = header:X-User

[route:limited]
path = /limited/
upstream = v1
filters = hourly
{extra}
"""


class ReloadStateTests(TestCase):
    """
    What a reload keeps and what it changes at once: rate-limit counters
    and canary weights.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.v1, self.v2 = yield start_upstreams(self, reactor, "v1", "v2")
        self.gate = yield start_gateway(self, reactor, split_config(self.v1.address, self.v2.address, (95, 5)))

    @inlineCallbacks
    def reload(self, text):
        """
        Write C{text}, SIGHUP, and wait (bounded) for generation 2.
        """
        with open(self.gate.config_path, "w") as f:
            f.write(text)
        self.gate.signal("HUP")

        @inlineCallbacks
        def reloaded():
            response = yield fetch(reactor, self.gate.admin_url("/status"))
            last = response.json()["reload"]["last"]
            return last if last is not None else None
        last = yield wait_until(reactor, reloaded, DEADLINE, what="the reload outcome")
        self.assertTrue(last["ok"], last)
        self.assertEqual(last["generation"], 2)

    @inlineCallbacks
    def versions(self):
        """
        Which version answers each of 40 users.
        """
        names = []
        for user in range(40):
            response = yield fetch(reactor, self.gate.url("web", "/split/x"),
                                   headers={b"X-User": [b"user-%d" % (user,)]})
            self.assertEqual(response.status, 200)
            names.append(response.header(b"x-upstream"))
        return names

    @inlineCallbacks
    def test_counters_kept_and_weights_changed(self):
        """
        After a reload that flips the canary weights (and changes the
        limit's route), the rate-limit counter of the unchanged filter goes
        on where it was, while most users move to the other version.
        """
        before = yield self.versions()
        self.assertGreater(before.count(b"v1"), 30)
        for _ in range(3):
            response = yield fetch(reactor, self.gate.url("web", "/limited/x"))
            self.assertEqual(response.status, 200)
        yield self.reload(split_config(self.v1.address, self.v2.address, (5, 95),
                                       "[route:new]\npath = /new\nrespond = 200 new\n"))
        after = yield self.versions()
        self.assertGreater(after.count(b"v2"), 30)
        statuses = []
        for _ in range(3):
            response = yield fetch(reactor, self.gate.url("web", "/limited/x"))
            statuses.append(response.status)
        self.assertEqual(statuses, [200, 200, 429])
