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
