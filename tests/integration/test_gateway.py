"""
Integration tests of the gateway core: a real master with two workers on
loopback, real upstream servers, real signals.
"""

import os
import signal

from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, rss_growth_limit_kb, slow_read_peak_rss
from gatelayer.testing.upstreams import UpstreamServer


def gate_config(upstreams, extra_upstream="", workers=2, read_timeout="1s"):
    servers = ", ".join(u if isinstance(u, str) else u.address for u in upstreams)
    return f"""
[gateway]
workers = {workers}
admin = 127.0.0.1:0
drain_timeout = 5s
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = {servers}
connect_timeout = 500ms
read_timeout = {read_timeout}
{extra_upstream}
[route:hello]
path = /hello
respond = 200 hello
[route:app]
path = /
upstream = app
"""


class GatewayIntegrationTests(TestCase):
    """
    The master, its workers and the proxy, for real.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, config_text):
        self.gate = yield start_gateway(self, reactor, config_text)

    def upstream(self, name):
        server = UpstreamServer(reactor, name)
        server.start()
        self.addCleanup(server.stop)
        return server

    @inlineCallbacks
    def status(self):
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()

    @inlineCallbacks
    def test_both_workers_serve(self):
        """
        New connections spread over both workers (one SO_REUSEPORT socket
        each), visible in /status; proxied requests reach both upstream
        servers round-robin.
        """
        a, b = self.upstream("a"), self.upstream("b")
        yield self.start(gate_config([a, b]))
        results = yield DeferredList([fetch(reactor, self.gate.url("web", "/x")) for _ in range(60)])
        self.assertTrue(all(ok and r.status == 200 for ok, r in results))
        self.assertGreater(a.requests, 10)
        self.assertGreater(b.requests, 10)
        yield task.deferLater(reactor, 1.2, lambda: None)  # one heartbeat
        status = yield self.status()
        served = [w["requests"] for w in status["workers"]]
        self.assertEqual(len(served), 2)
        self.assertTrue(all(n > 0 for n in served), served)
        self.assertEqual(sum(served), 60)

    @inlineCallbacks
    def test_forwarded_headers(self):
        """
        The upstream sees X-Forwarded-*, Forwarded and no hop-by-hop headers.
        """
        a = self.upstream("a")
        yield self.start(gate_config([a]))
        response = yield fetch(reactor, self.gate.url("web", "/echo?q=1"),
                               headers={b"Connection": [b"keep-alive, X-Drop"], b"X-Drop": [b"1"],
                                        b"X-Forwarded-For": [b"203.0.113.9"]})
        seen = response.json()
        self.assertEqual(seen["uri"], "/echo?q=1")
        self.assertEqual(seen["headers"]["x-forwarded-for"], ["203.0.113.9, 127.0.0.1"])
        self.assertEqual(seen["headers"]["x-forwarded-proto"], ["http"])
        self.assertIn("for=127.0.0.1;proto=http", seen["headers"]["forwarded"][0])
        self.assertNotIn("x-drop", seen["headers"])

    @inlineCallbacks
    def test_kill_worker_respawns(self):
        """
        kill -9 of a worker: the master respawns it and both slots serve.
        """
        a = self.upstream("a")
        yield self.start(gate_config([a]))
        status = yield self.status()
        victim = status["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = reactor.seconds() + 10
        while True:
            status = yield self.status()
            worker = status["workers"][0]
            if worker["pid"] != victim and worker["alive"] and worker["requests"] is not None:
                break
            self.assertLess(reactor.seconds(), deadline, "worker not respawned in time")
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(worker["restarts"], 1)
        for _ in range(10):
            response = yield fetch(reactor, self.gate.url("web", "/hello"))
            self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_sigterm_drains(self):
        """
        SIGTERM during an in-flight request: the request completes, then
        the master exits 0.
        """
        a = self.upstream("a")
        yield self.start(gate_config([a], read_timeout="5s"))
        in_flight = fetch(reactor, self.gate.url("web", "/slow?delay=1.5"))
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.gate.signal("TERM")
        response = yield in_flight
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["server"], "a")
        code = yield self.gate.wait_exit(15)
        self.assertEqual(code, 0)

    @inlineCallbacks
    def test_bad_gateway(self):
        """
        An upstream that refuses connections: 502 with a JSON body.
        """
        a = self.upstream("a")
        address = a.address
        yield a.stop()
        yield self.start(gate_config([address]))
        response = yield fetch(reactor, self.gate.url("web", "/x"))
        self.assertEqual(response.status, 502)
        self.assertEqual(response.json()["status"], 502)

    @inlineCallbacks
    def test_gateway_timeout(self):
        """
        An upstream slower than read_timeout: 504 with a JSON body, in
        about read_timeout.
        """
        a = self.upstream("a")
        yield self.start(gate_config([a], extra_upstream="retries = 0"))
        started = reactor.seconds()
        response = yield fetch(reactor, self.gate.url("web", "/slow?delay=5"))
        self.assertEqual(response.status, 504)
        self.assertEqual(response.json()["status"], 504)
        self.assertLess(reactor.seconds() - started, 3)

    @inlineCallbacks
    def test_streamed_download_bounded_memory(self):
        """
        A 256 MB download to a slow client streams with back-pressure: the
        workers' memory grows by a few MB at most.
        """
        a = self.upstream("a")
        yield self.start(gate_config([a], workers=1, read_timeout="30s"))
        status = yield self.status()
        pid = status["workers"][0]["pid"]
        reader, before, peak = yield slow_read_peak_rss(
            reactor, self.gate.address("web"),
            b"GET /big?mb=256 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", pid, chunk=8 * 1024 * 1024)
        received = reader.received
        self.assertTrue(reader.head.startswith(b"HTTP/1.1 200"), reader.head)
        self.assertGreater(received, 256 * 1024 * 1024)
        self.assertLess(peak - before, rss_growth_limit_kb(16 * 1024), f"worker RSS grew from {before} KB to {peak} KB")

    @inlineCallbacks
    def test_master_killed_workers_exit(self):
        """
        kill -9 of the master: its workers see their control pipe close and
        exit by themselves (no orphans).
        """
        yield self.start(gate_config([self.upstream("a")]))
        status = yield self.status()
        pids = [w["pid"] for w in status["workers"]]
        self.gate.signal("KILL")
        yield self.gate.wait_exit(10)
        deadline = reactor.seconds() + 10
        while any(_alive(pid) for pid in pids):
            self.assertLess(reactor.seconds(), deadline, "workers outlived their master")
            yield task.deferLater(reactor, 0.1, lambda: None)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except OSError:
        return False
