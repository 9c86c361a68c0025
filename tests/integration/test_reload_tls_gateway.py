"""
Integration tests of reloading TLS settings: a real gatelayer master with
two workers serving HTTPS, eight keep-alive TLS clients looping requests
while the master is sent SIGHUP with a new [tls:NAME] section. The change
is applied by a new generation of workers, without a failed request.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from gatelayer.testing.load import KeepAliveLoad
from gatelayer.testing.waiting import wait_until
from tests.integration.test_tls_gateway import DEADLINE, RecordingPolicy, TLSGatewayTestCase, fingerprint, handshake


def tls_config(certificates, tls_extra="", gateway_extra=""):
    """
    Two workers, one TLS listener on [tls:main] with C{certificates},
    C{/hello} answered directly.
    """
    return f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 3s
{gateway_extra}
[listener:secure]
bind = 127.0.0.1:0
tls = main
[tls:main]
certificates = {certificates}
{tls_extra}
[route:hello]
path = /hello
respond = 200 hello
"""


class TLSReloadTests(TLSGatewayTestCase):
    """
    A reload that changes a [tls:NAME] section (its minimum version, its
    certificates) rolls a new generation of workers: clients never see a
    failure, and new handshakes get the new policy.
    """

    timeout = 120

    def setUp(self):
        super().setUp()
        self.www = self.ca.issue(["www.example.com"])
        self.api = self.ca.issue(["api.example.com"])
        self.www.write(self.path("certs", "www.pem"))
        self.api.write(self.path("more", "api.pem"))

    def rewrite(self, text):
        """
        Replace the gateway's configuration file.
        """
        with open(self.gate.config_path, "w") as f:
            f.write(text)

    @inlineCallbacks
    def start_load(self):
        """
        Eight keep-alive TLS clients looping on /hello, stopped at cleanup;
        fires once they have had 80 answers.
        """
        load = KeepAliveLoad(reactor, self.gate.url("secure", "/hello", scheme="https"), clients=8,
                             context_factory=RecordingPolicy("www.example.com"))
        self.addCleanup(load.stop)
        load.start()
        yield wait_until(reactor, lambda: load.count() >= 80, DEADLINE, what="80 answers before the reload")
        return load

    @inlineCallbacks
    def served_name(self, server_name, max_version=None):
        """
        One handshake with C{server_name}: the fingerprint shown, or the
        reason it failed.
        """
        probe = yield handshake(self.gate.address("secure"), server_name, max_version=max_version)
        if not probe.handshake:
            return None
        return fingerprint(probe.peer_certificate)

    @inlineCallbacks
    def draining_done(self):
        """
        Whether no worker of a previous generation is left.
        """
        status = yield self.status()
        return status["reload"]["draining_workers"] == 0

    @inlineCallbacks
    def test_min_version_and_new_certificate_without_failure(self):
        """
        Under eight keep-alive TLS clients, a reload raising min_version to
        TLSv1.3 and adding a certificate for api.example.com fails no
        request; afterwards a client held to TLS 1.2 is refused, SNI
        api.example.com gets the new certificate, /status shows the
        roll, and the old workers exit.
        """
        yield self.start(tls_config("certs/"))
        before = yield self.status()
        old_pids = {worker["pid"] for worker in before["workers"]}
        www, api = self.www.fingerprint().hex(), self.api.fingerprint().hex()
        self.assertEqual((yield self.served_name("www.example.com", "TLSv1.2")), www)
        self.assertEqual((yield self.served_name("api.example.com")), www)
        load = yield self.start_load()
        self.rewrite(tls_config(f"certs/www.pem, {self.path('more', 'api.pem')}", "min_version = TLSv1.3\n"))
        tls = yield self.reload()
        self.assertEqual(self.outcome["problems"], [])
        self.assertEqual(self.outcome["generation"], 2)
        self.assertIn("tls:main changed", self.outcome["changes"])
        self.assertEqual(sorted(c["sha256"] for c in tls["certificates"]["main"]), sorted([www, api]))
        switched = load.count()
        yield wait_until(reactor, lambda: load.count() >= switched + 200, DEADLINE,
                         what="200 answers after the reload")
        self.assertIsNone((yield self.served_name("www.example.com", "TLSv1.2")))
        self.assertEqual((yield self.served_name("www.example.com", "TLSv1.3")), www)
        self.assertEqual((yield self.served_name("api.example.com")), api)
        yield wait_until(reactor, self.draining_done, DEADLINE * 2, what="the old generation to exit")
        counted = load.count()
        yield wait_until(reactor, lambda: load.count() >= counted + 100, DEADLINE,
                         what="100 answers after the old generation exited")
        yield load.stop()
        self.assertEqual(load.bad(), [])
        status = yield self.status()
        new_pids = {worker["pid"] for worker in status["workers"]}
        self.assertEqual(len(new_pids), 2)
        self.assertEqual(new_pids & old_pids, set())
        self.assertEqual(status["reload"]["generation"], 2)

    @inlineCallbacks
    def test_missing_certificate_keeps_serving(self):
        """
        A reload whose TLS section names a certificate file that does not
        exist is refused naming the section, key and file: the running
        workers keep serving the old policy without a failed request, and
        no new generation starts.
        """
        yield self.start(tls_config("certs/"))
        before = yield self.status()
        load = yield self.start_load()
        missing = self.path("more", "missing.pem")
        self.rewrite(tls_config(f"certs/www.pem, {missing}", "min_version = TLSv1.3\n"))
        yield self.reload(ok=False)
        [problem] = self.outcome["problems"]
        self.assertIn("[tls:main] certificates", problem)
        self.assertIn(missing, problem)
        yield self.wait_log("reload problem", missing)
        counted = load.count()
        yield wait_until(reactor, lambda: load.count() >= counted + 100, DEADLINE,
                         what="100 answers after the refused reload")
        yield load.stop()
        self.assertEqual(load.bad(), [])
        self.assertEqual((yield self.served_name("www.example.com", "TLSv1.2")), self.www.fingerprint().hex())
        status = yield self.status()
        self.assertEqual(status["reload"]["generation"], 1)
        self.assertEqual(status["reload"]["draining_workers"], 0)
        self.assertEqual({w["pid"] for w in status["workers"]}, {w["pid"] for w in before["workers"]})

    @inlineCallbacks
    def test_worker_gateway_key_rolls(self):
        """
        A changed idle_timeout (read by workers at start) is applied by a
        new generation instead of being refused, without a failed request;
        a changed worker count is still refused, naming the key.
        """
        yield self.start(tls_config("certs/"))
        load = yield self.start_load()
        self.rewrite(tls_config("certs/", gateway_extra="idle_timeout = 20s"))
        yield self.reload()
        self.assertEqual(self.outcome["changes"], ["gateway changed"])
        counted = load.count()
        yield wait_until(reactor, lambda: load.count() >= counted + 100, DEADLINE,
                         what="100 answers after the reload")
        yield wait_until(reactor, self.draining_done, DEADLINE * 2, what="the old generation to exit")
        self.rewrite(tls_config("certs/", gateway_extra="idle_timeout = 20s").replace("workers = 2",
                                                                                       "workers = 3"))
        yield self.reload(ok=False)
        [problem] = self.outcome["problems"]
        self.assertIn("[gateway] workers: changed from 2 to 3", problem)
        yield load.stop()
        self.assertEqual(load.bad(), [])
        self.assertEqual((yield self.status())["reload"]["generation"], 2)
