"""
A real gateway whose configuration uses no TLS: its workers start without
OpenSSL, and a reload that brings TLS replaces them with workers that load
it, while the gateway keeps serving.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until

DEADLINE = 60.0


def gate_config(servers, extra=""):
    """
    Two workers proxying C{/app/} to C{servers}, with C{extra} sections.
    """
    return f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s

[listener:web]
bind = 127.0.0.1:0

[upstream:app]
servers = {servers}

[route:app]
path = /app/
upstream = app
{extra}
"""


# An upstream reached over TLS: its workers need OpenSSL.
SECURE = """
[upstream:secure]
servers = 127.0.0.1:9
tls = yes

[route:secure]
path = /secure/
upstream = secure
"""


def loaded_tls(pid):
    """
    Whether process C{pid} has mapped the C{cryptography} bindings that
    pyOpenSSL loads (the standard library's C{ssl} may be there either
    way: Twisted imports modules that import it).
    """
    with open(f"/proc/{pid}/maps") as f:
        return any("/cryptography/hazmat/bindings/" in line for line in f)


class TlsLeftOutTests(TestCase):
    """
    Workers of a configuration without TLS, and a reload that adds it.
    """

    timeout = 180

    @inlineCallbacks
    def status(self, gate):
        """
        The admin C{/status} document.
        """
        response = yield fetch(reactor, gate.admin_url("/status"))
        return response.json()

    @inlineCallbacks
    def test_reload_adding_tls_replaces_workers(self):
        """
        The workers of a plain configuration have not loaded OpenSSL; a
        reload adding a TLS upstream is refused by each of them (started
        without TLS), so the master replaces both with new workers, which
        have loaded it; the gateway answers throughout and afterwards.
        """
        [app] = yield start_upstreams(self, reactor, "a")
        gate = yield start_gateway(self, reactor, gate_config(app.address))
        status = yield self.status(gate)
        old = {w["pid"] for w in status["workers"]}
        self.assertEqual(len(old), 2)
        for pid in old:
            self.assertFalse(loaded_tls(pid), pid)
        before = status["reload"]["last"]
        with open(gate.config_path, "w") as f:
            f.write(gate_config(app.address, SECURE))
        gate.signal("HUP")

        @inlineCallbacks
        def decided():
            last = (yield self.status(gate))["reload"]["last"]
            return last if last is not None and last != before else None
        last = yield wait_until(reactor, decided, DEADLINE, what="the reload outcome in /status")
        self.assertEqual(len(last["problems"]), 2, last)
        for problem in last["problems"]:
            self.assertIn("started without TLS", problem)
            self.assertIn("replaced by a new worker", problem)

        @inlineCallbacks
        def replaced():
            workers = (yield self.status(gate))["workers"]
            pids = {w["pid"] for w in workers if w.get("pid")}
            return pids if len(pids) == 2 and not pids & old else None
        new = yield wait_until(reactor, replaced, DEADLINE, what="two new workers")
        for pid in new:
            self.assertTrue(loaded_tls(pid), pid)
        response = yield fetch(reactor, gate.url("web", "/app/x"))
        self.assertEqual(response.status, 200)
