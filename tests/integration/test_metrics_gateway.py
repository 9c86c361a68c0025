"""
Metrics through a real gateway: a twistd master with two workers, a real
upstream process, real clients; C{GET /metrics} on the admin endpoint read
with prometheus-client's parser. The request count summed over the workers
is exact, and stays exact (never lower) across a worker killed with SIGKILL
and respawned; the health, authentication, rate-limit and TLS families move
when those things happen.
"""

import hashlib
import os
import signal

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gatelayer.testing.certs import CertificateAuthority, tls_client_creator
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, send_raw
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port, wait_until

KEY = b"k-5d1e9b7a3c2f4e6a8b0c1d3e5f7a9b2c"

GATE = """
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 5s
{gateway}
[listener:web]
bind = 127.0.0.1:0
[listener:secure]
bind = 127.0.0.1:0
tls = main
[tls:main]
certificates = certs/
[upstream:app]
servers = {app}
[upstream:gone]
servers = 127.0.0.1:{dead}
health_check = /healthz
health_interval = 200ms
health_timeout = 500ms
health_fall = 2
[filter:keys]
type = api_key
keys = keys.ini
[filter:tight]
type = rate_limit
key = global
rate = 2/hour
burst = 2
[route:app]
path = /app/
upstream = app
[route:keyed]
path = /keyed/
upstream = app
filters = keys
[route:limited]
path = /limited/
upstream = app
filters = tight
"""


@implementer(IPolicyForHTTPS)
class _AnyCertificate:
    """
    A client TLS policy that sends SNI C{www.example.com} and accepts the
    gateway's test certificate.
    """

    def creatorForNetloc(self, hostname, port):
        """
        The permissive test creator.
        """
        return tls_client_creator(server_name="www.example.com")


def families(text):
    """
    C{{sample name: {sorted label items: value}}} of an exposition.
    """
    out = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


class MetricsGatewayTests(TestCase):
    """
    C{/metrics} of a real two-worker gateway.
    """

    timeout = 90

    @inlineCallbacks
    def setUp(self):
        (self.app,) = yield start_upstreams(self, reactor, "app")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(directory, "certs", "www.pem"))
        with open(os.path.join(directory, "keys.ini"), "w") as f:
            f.write("[consumers]\nalice = %s\n" % (hashlib.sha256(KEY).hexdigest(),))
        self.directory = directory

    @inlineCallbacks
    def start(self, gateway=""):
        """
        Start the gateway with C{gateway} added to its C{[gateway]}.
        """
        self.dead = free_port()
        self.gate = yield start_gateway(self, reactor, GATE.format(
            gateway=gateway, app=self.app.address, dead=self.dead), self.directory)

    @inlineCallbacks
    def scrape(self):
        """
        C{GET /metrics}: the samples, after checking the content type.
        """
        response = yield fetch(reactor, self.gate.admin_url("/metrics"))
        self.assertEqual(response.status, 200, response.body)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))
        return families(response.body)

    @inlineCallbacks
    def requests_total(self, route="app"):
        """
        The summed C{gatelayer_requests_total} of C{route}'s 2xx GETs.
        """
        found = yield self.scrape()
        key = (("code", "2xx"), ("method", "GET"), ("route", route), ("upstream", "app"))
        return found.get("gatelayer_requests_total", {}).get(key, 0)

    @inlineCallbacks
    def send(self, count, path="/app/x"):
        """
        Send C{count} requests on new connections (so both workers get some).
        """
        for _ in range(count):
            response = yield fetch(reactor, self.gate.url("web", path))
            self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_exact_across_a_killed_worker(self):
        """
        N requests are exactly N in the summed count at once (the scrape
        asks the workers); after one worker is killed with SIGKILL and
        respawned and M more requests are sent, the sum is exactly N + M,
        and no scrape in between saw it go down.
        """
        yield self.start()
        n, m = 30, 20
        yield self.send(n)
        self.assertEqual((yield self.requests_total()), n)
        found = yield self.scrape()
        per_slot = found["gatelayer_worker_requests_total"]
        self.assertTrue(all(v > 0 for v in per_slot.values()), per_slot)
        status = (yield fetch(reactor, self.gate.admin_url("/status"))).json()
        victim = status["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        seen = []

        @inlineCallbacks
        def respawned():
            seen.append((yield self.requests_total()))
            workers = (yield fetch(reactor, self.gate.admin_url("/status"))).json()["workers"]
            return workers[0]["pid"] != victim and workers[0]["state"] == "serving"
        yield wait_until(reactor, respawned, timeout=15, what="the killed worker's respawn")
        yield self.send(m)
        total = yield self.requests_total()
        self.assertEqual(total, n + m)
        self.assertEqual(seen, sorted(seen))
        self.assertTrue(all(value >= n for value in seen), seen)
        found = yield self.scrape()
        self.assertEqual(found["gatelayer_worker_restarts_total"][(("slot", "0"),)], 1.0)
        self.assertEqual(found["gatelayer_workers"][()], 2.0)
        self.assertEqual(sum(found["gatelayer_worker_requests_total"].values()), n + m + 0.0)

    @inlineCallbacks
    def test_subsystem_families_move(self):
        """
        A health-checked server that is down shows 0 in
        C{gatelayer_upstream_server_up}; a request without a key counts a
        denied C{missing}, one with the key an allowed C{ok}; the third
        request over a small limit counts C{limited}; an HTTPS request
        counts a handshake on its listener and garbage on the TLS port a
        failed one; the certificate's expiry is exposed.
        """
        yield self.start()

        @inlineCallbacks
        def gone_down():
            found = yield self.scrape()
            return found.get("gatelayer_upstream_server_up", {}).get(
                (("server", f"127.0.0.1:{self.dead}"), ("upstream", "gone"))) == 0.0
        yield wait_until(reactor, gone_down, timeout=15, what="the dead server's verdict")

        refused = yield fetch(reactor, self.gate.url("web", "/keyed/x"))
        self.assertEqual(refused.status, 401)
        allowed = yield fetch(reactor, self.gate.url("web", "/keyed/x"), headers={b"X-Api-Key": [KEY]})
        self.assertEqual(allowed.status, 200)
        statuses = []
        while 429 not in statuses and len(statuses) < 10:
            statuses.append((yield fetch(reactor, self.gate.url("web", "/limited/x"))).status)
        self.assertEqual(statuses[-1], 429)
        secure = yield fetch(reactor, self.gate.url("secure", "/app/x", scheme="https"),
                             context_factory=_AnyCertificate())
        self.assertEqual(secure.status, 200)
        yield send_raw(reactor, self.gate.address("secure"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

        found = yield self.scrape()
        auth = found["gatelayer_auth_total"]
        self.assertEqual(auth[(("filter", "keys"), ("outcome", "denied"), ("reason", "missing"))], 1.0)
        self.assertEqual(auth[(("filter", "keys"), ("outcome", "allowed"), ("reason", "ok"))], 1.0)
        decisions = found["gatelayer_ratelimit_decisions_total"]
        self.assertEqual(decisions[(("filter", "tight"), ("outcome", "allowed"))], len(statuses) - 1.0)
        self.assertEqual(decisions[(("filter", "tight"), ("outcome", "limited"))], 1.0)
        codes = found["gatelayer_requests_total"]
        self.assertEqual(codes[(("code", "4xx"), ("method", "GET"), ("route", "limited"), ("upstream", "app"))],
                         1.0)
        self.assertEqual(found["gatelayer_tls_handshakes_total"][(("listener", "secure"),)], 1.0)
        self.assertEqual(found["gatelayer_tls_handshake_failures_total"][(("listener", "secure"),)], 1.0)
        expiry = found["gatelayer_tls_certificate_expiry_timestamp_seconds"]
        self.assertGreater(expiry[(("host", "www.example.com"), ("tls", "main"))], reactor.seconds())
        self.assertEqual(found["gatelayer_upstream_server_up"][
            (("server", self.app.address), ("upstream", "app"))], 1.0)

    @inlineCallbacks
    def test_metrics_off(self):
        """
        With C{metrics = no} the admin endpoint answers C{/metrics} with a
        JSON 404 and the gateway serves as before; a guarded admin endpoint
        refuses a scrape from a foreign Host like any other page.
        """
        yield self.start("metrics = no")
        yield self.send(2)
        response = yield fetch(reactor, self.gate.admin_url("/metrics"))
        self.assertEqual(response.status, 404)
        self.assertEqual(response.json()["status"], 404)
        foreign = yield fetch(reactor, self.gate.admin_url("/metrics"), headers={b"Host": [b"evil.example"]})
        self.assertEqual(foreign.status, 421)
