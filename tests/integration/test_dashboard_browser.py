"""
The admin dashboard in a real headless Chromium: a twistd master with two
workers, a real upstream and a server that is down, a TLS listener with a
certificate whose names include markup, and an admin bearer token. The
browser (driven over the DevTools protocol) loads the page and the test
waits, bounded, until the page shows what C{/status} says; the page must
raise no console error and no CSP violation, and render hostile text as
text.
"""

import datetime
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.browser import Chromium
from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port, wait_until

# Generous: Chromium and two workers start on a loaded 2-core machine.
DEADLINE = 90.0
TOKEN = "dash-Token_0123456789"
HOSTILE_NAME = "<img src=x onerror=alert(1)>.example.test"
HOSTILE_FILE = "<img src=x id=pwned>.pem"

CONFIG = """
[gateway]
workers = 2
admin = 127.0.0.1:0
admin_token_file = token.txt

[listener:web]
bind = 127.0.0.1:0

[listener:secure]
bind = 127.0.0.1:0
tls = main

[tls:main]
certificates = certs/

[upstream:app]
servers = {live}, {dead}
health_check = /
health_interval = 1s
health_fall = 1

[route:app]
path = /app/
strip_prefix = /app
upstream = app
"""

# What the test reads from the page: every table's cells as text, and
# what tells whether anything was injected.
SNAPSHOT = """(() => {
  if (!document.getElementById("login")) return null;  // the page is not there (yet)
  const rows = (id) => Array.from(document.querySelectorAll("#" + id + " tbody tr"))
      .map((r) => Array.from(r.cells).map((c) => c.textContent));
  return {
    workers: rows("workers"), listeners: rows("listeners"), upstreams: rows("upstreams"),
    certificates: rows("certificates"), errors: rows("errors"),
    hash: location.hash, stored: sessionStorage.getItem("gatelayer-admin-token"),
    login: !document.getElementById("login").hidden,
    violations: window.__violations || [], injected: document.getElementById("pwned") !== null,
    images: document.images.length,
  };
})()"""

CATCH_VIOLATIONS = """window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));"""


def unexpected_errors(events, allowed):
    """
    The console errors, exceptions and error log entries (CSP violations
    among them) in DevTools C{events}, but for failed loads of the paths in
    C{allowed} (source C{network}).
    """
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(json.dumps(params.get("args"))[:300])
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            url = entry.get("url") or ""
            if entry.get("source") == "network" and any(url.endswith(path) for path in allowed):
                continue
            found.append(f"{entry.get('source')}: {entry.get('text')} {url}")
    return found


class DashboardBrowserTests(TestCase):
    """
    The page, loaded by Chromium, shows the gateway's workers, listeners,
    upstream servers with their health and traffic, certificates with the
    days to expiry and the master's recent errors.
    """

    timeout = 400

    @inlineCallbacks
    def test_dashboard(self):
        """
        The page takes the token from the fragment (and removes it from
        the address bar), shows the worker pids of /status, the live
        server healthy with the requests it served and a request rate, the
        dead one unhealthy, each listener with its TLS, the certificate
        with 40 days to expiry and its hostile name as text, a rejected
        reload's error naming a hostile file name as text; without a
        token it asks for one and works once given. No console error, no
        CSP violation; /metrics (not served here) is handled.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "certs"))
        with open(os.path.join(directory, "token.txt"), "w") as f:
            f.write(TOKEN + "\n")
        not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40, hours=12)
        CertificateAuthority().issue(["www.example.test", HOSTILE_NAME], not_after=not_after).write(
            os.path.join(directory, "certs", "www.pem"))
        live, = yield start_upstreams(self, reactor, "app")
        dead = f"127.0.0.1:{free_port()}"
        gate = yield start_gateway(self, reactor, CONFIG.format(live=live.address, dead=dead), directory)
        auth = {b"authorization": [b"Bearer " + TOKEN.encode("ascii")]}

        @inlineCallbacks
        def status():
            answer = yield fetch(reactor, gate.admin_url("/status"), headers=auth)
            return json.loads(answer.body)

        @inlineCallbacks
        def dead_is_down():
            servers = {s["address"]: s for s in (yield status())["upstreams"]["app"]}
            return servers[dead]["healthy"] is False and servers[live.address]["healthy"]
        yield wait_until(reactor, dead_is_down, timeout=DEADLINE, what="the dead server marked unhealthy")
        for _ in range(6):
            answer = yield fetch(reactor, gate.url("web", "/app/x"))
            self.assertEqual(answer.status, 200)
        pids = sorted(str(w["pid"]) for w in (yield status())["workers"])

        browser = Chromium(reactor, directory)
        self.addCleanup(browser.stop)
        yield browser.start(timeout=DEADLINE)
        yield browser.call("Page.addScriptToEvaluateOnNewDocument", source=CATCH_VIOLATIONS)
        host, port = gate.info["admin"]
        page = f"http://{host}:{port}/"
        yield browser.call("Page.navigate", url=page + "#token=" + TOKEN)

        def snapshot():
            return browser.evaluate(SNAPSHOT)

        @inlineCallbacks
        def shows_everything():
            seen = yield snapshot()
            if seen is None:
                return None
            servers = {row[0]: row for row in seen["upstreams"]}
            if (sorted(row[1] for row in seen["workers"]) != pids or len(servers) != 2
                    or not seen["certificates"]):
                return None
            if servers[live.address][1] != "healthy" or servers[live.address][4] != "6":
                return None
            return seen if servers[dead][1] == "unhealthy" else None
        seen = yield wait_until(reactor, shows_everything, timeout=DEADLINE, interval=0.2,
                                what="the page showing the workers, servers and certificate")
        self.assertEqual(seen["hash"], "")
        self.assertEqual(seen["stored"], TOKEN)
        self.assertFalse(seen["login"])
        listeners = {row[0]: row[1:3] for row in seen["listeners"]}
        self.assertEqual(listeners, {
            "secure": ["%s:%d" % gate.address("secure"), "TLS main"],
            "web": ["%s:%d" % gate.address("web"), "plain"],
        })
        certificate, = seen["certificates"]
        self.assertEqual(certificate[0], "main")
        self.assertEqual(certificate[1], "www.example.test, " + HOSTILE_NAME)
        self.assertEqual(certificate[3], "40 days")

        @inlineCallbacks
        def rate_shown():
            # Requests keep coming while the page polls, so two successive
            # polls see the count grow.
            yield fetch(reactor, gate.url("web", "/app/x"))
            seen = yield snapshot()
            servers = {row[0]: row for row in seen["upstreams"]} if seen else {}
            if live.address not in servers:
                return False
            return float(servers[live.address][5].replace("–", "0")) > 0
        yield wait_until(reactor, rate_shown, timeout=DEADLINE, interval=0.2,
                         what="a request rate for the live server")

        # A certificate file that does not parse, named with markup: the
        # reload is rejected and the error is shown as text.
        with open(os.path.join(directory, "certs", HOSTILE_FILE), "w") as f:
            f.write("not a certificate\n")
        gate.signal("HUP")

        @inlineCallbacks
        def error_shown():
            seen = yield snapshot()
            return seen and any(HOSTILE_FILE in row[2] for row in seen["errors"] if len(row) == 3) and seen
        seen = yield wait_until(reactor, error_shown, timeout=DEADLINE, interval=0.2,
                                what="the rejected reload among the recent errors")
        error = next(row for row in seen["errors"] if HOSTILE_FILE in row[2])
        self.assertEqual(error[1], "master")
        self.assertFalse(seen["injected"])
        self.assertEqual(seen["images"], 0)
        self.assertEqual(seen["violations"], [])
        self.assertEqual(unexpected_errors(browser.events, ["/metrics"]), [])

        # Without a token the page asks for one, then works with it.
        yield browser.evaluate("sessionStorage.clear()")
        yield browser.call("Page.navigate", url=page)

        @inlineCallbacks
        def asks():
            seen = yield snapshot()
            return seen and seen["login"] and not seen["workers"]
        yield wait_until(reactor, asks, timeout=DEADLINE, interval=0.2, what="the page asking for the token")
        yield browser.evaluate(
            f'document.getElementById("token").value = {json.dumps(TOKEN)};'
            'document.getElementById("token-use").click();')

        @inlineCallbacks
        def works():
            seen = yield snapshot()
            return seen if seen and sorted(row[1] for row in seen["workers"]) == pids else None
        seen = yield wait_until(reactor, works, timeout=DEADLINE, interval=0.2,
                                what="the page working with the typed token")
        self.assertEqual(seen["stored"], TOKEN)
        self.assertFalse(seen["login"])
        self.assertEqual(seen["violations"], [])
        self.assertEqual(unexpected_errors(browser.events, ["/metrics", "/status"]), [])


METRICS_CONFIG = """
[gateway]
workers = 2
admin = 127.0.0.1:0

[listener:web]
bind = 127.0.0.1:0

[upstream:app]
servers = {live}

[route:app]
path = /app/
strip_prefix = /app
upstream = app
filters = per-client, pages

[filter:per-client]
type = rate_limit
key = ip
rate = 100/second

[filter:pages]
type = cache
"""

# The names and labels of the metrics contract; hostile and malformed lines
# among them. Served in place of /metrics by the browser itself.
METRICS = """# HELP gatelayer_requests_total Requests by route, upstream, method and status class.
# TYPE gatelayer_requests_total counter
gatelayer_requests_total{{route="app",upstream="app",method="GET",code="2xx"}} 40
gatelayer_requests_total{{route="app",upstream="app",method="POST",code="5xx"}} 2 1700000000000
gatelayer_requests_total{{route="<script>alert(1)</script>",upstream="-",method="OTHER",code="4xx"}} 3
gatelayer_requests_total{{route="a\\"b\\\\c",upstream="-",method="GET",code="2xx",}} 1
gatelayer_requests_total{{route="broken,code="2xx"}} 99
gatelayer_requests_total{{route="nan",code="2xx"}} NaN
gatelayer_request_duration_seconds_bucket{{route="app",le="+Inf"}} 42
gatelayer_received_bytes_total{{route="app"}} 1234
gatelayer_sent_bytes_total{{route="app"}} 5.678e3
gatelayer_open_connections{{listener="web"}} 3
gatelayer_tls_handshakes_total{{listener="web"}} 7
gatelayer_tls_handshake_failures_total{{listener="web"}} 1
gatelayer_upstream_server_up{{upstream="app",server="{live}"}} 1
gatelayer_upstream_retries_total{{upstream="app"}} 4
gatelayer_upstream_connect_failures_total{{upstream="app",server="{live}"}} 2
gatelayer_ratelimit_decisions_total{{filter="per-client",outcome="allowed"}} 10
gatelayer_ratelimit_decisions_total{{filter="per-client",outcome="limited"}} 2
gatelayer_ratelimit_breaker_open{{filter="per-client"}} 1
gatelayer_cache_total{{filter="pages",outcome="hit"}} 8
gatelayer_cache_total{{filter="pages",outcome="miss"}} 5
this line is not a metric
{{}} 1
"""

TABLES = """(() => {
  if (!document.getElementById("summary")) return null;
  const cells = (row) => Array.from(row.cells).map((c) => c.textContent);
  const panel = (id) => ({
    titles: Array.from(document.querySelectorAll("#" + id + " h3")).map((h) => h.textContent),
    tables: Array.from(document.querySelectorAll("#" + id + " table")).map((t) => ({
      head: cells(t.tHead.rows[0]), rows: Array.from(t.tBodies[0].rows).map(cells)})),
  });
  const found = {summary: document.getElementById("summary").textContent};
  for (const id of ["traffic", "listeners", "upstreams", "ratelimits", "cache"]) found[id] = panel(id);
  found.scripts = document.scripts.length;
  return found;
})()"""


class DashboardMetricsTests(TestCase):
    """
    When /metrics is served, the page reads the Prometheus text format
    tolerantly and shows what it finds next to /status.
    """

    timeout = 400

    @inlineCallbacks
    def test_metrics(self):
        """
        Per-route traffic by status class and bytes, open connections and
        handshakes per listener, retries and connect failures per upstream,
        rate-limit decisions and an open breaker, cache outcomes: from the
        metrics of the contract. Escaped label values are unescaped, a
        route name holding markup is shown as text, malformed lines and NaN
        samples are skipped, and nothing raises.
        """
        directory = os.path.abspath(self.mktemp())
        live, = yield start_upstreams(self, reactor, "app")
        gate = yield start_gateway(self, reactor, METRICS_CONFIG.format(live=live.address), directory)
        answer = yield fetch(reactor, gate.url("web", "/app/x"))
        self.assertEqual(answer.status, 200)
        metrics = METRICS.format(live=live.address).encode("utf-8")
        browser = Chromium(reactor, directory)
        self.addCleanup(browser.stop)
        yield browser.start(timeout=DEADLINE)
        yield browser.intercept("*/metrics")
        host, port = gate.info["admin"]
        yield browser.call("Page.navigate", url=f"http://{host}:{port}/")

        @inlineCallbacks
        def shown():
            yield browser.answer_held(lambda url: (200, "text/plain; version=0.0.4", metrics))
            seen = yield browser.evaluate(TABLES)
            if not seen or "metrics yes" not in seen["summary"] or not seen["traffic"]["tables"]:
                return None
            return seen if seen["traffic"]["tables"][0]["head"][0] == "route" and seen["cache"]["titles"] else None
        seen = yield wait_until(reactor, shown, timeout=DEADLINE, interval=0.2,
                                what="the page showing the metrics")

        traffic, = seen["traffic"]["tables"]
        self.assertEqual(traffic["head"], ["route", "requests", "req/s", "2xx", "3xx", "4xx", "5xx",
                                           "received bytes", "sent bytes"])
        routes = {row[0]: row for row in traffic["rows"]}
        self.assertEqual(sorted(routes), sorted(["app", "<script>alert(1)</script>", 'a"b\\c']))
        app = routes["app"]
        self.assertEqual([app[1], app[3], app[4], app[5], app[6], app[7], app[8]],
                         ["42", "40", "0", "0", "2", "1234", "5678"])
        self.assertEqual(routes["<script>alert(1)</script>"][5], "3")
        self.assertEqual(routes['a"b\\c'][3], "1")
        self.assertEqual(seen["scripts"], 1)

        listeners = {row[0]: row for row in seen["listeners"]["tables"][0]["rows"]}
        self.assertEqual(listeners["web"][3:], ["3", "7", "1"])
        self.assertEqual(seen["upstreams"]["titles"], ["app  (retries: 4)"])
        server, = seen["upstreams"]["tables"][0]["rows"]
        self.assertEqual((server[0], server[1], server[8]), (live.address, "healthy", "2"))

        store, decisions = seen["ratelimits"]["tables"]
        self.assertIn("takes", store["head"])
        self.assertEqual(decisions["head"], ["filter", "allowed", "limited", "breaker"])
        self.assertEqual(decisions["rows"], [["per-client", "10", "2", "open"]])
        self.assertEqual(seen["cache"]["titles"], ["per filter, all workers", "outcomes"])
        self.assertEqual(seen["cache"]["tables"][1]["rows"], [["pages", "8", "5"]])
        self.assertEqual(unexpected_errors(browser.events, []), [])
