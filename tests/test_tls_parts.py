"""
Tests for L{gatelayer.tls.parts}: the master part and the worker side, joined
by an in-memory control channel.
"""

import datetime
import os

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import GateConfig, GatewaySpec, ListenerSpec, ServerSpec, TlsSpec, UpstreamSpec
from gatelayer.process.control import ControlProtocol
from gatelayer.testing.certs import CertificateAuthority, RecordingProtocol, write_pem
from gatelayer.tls.parts import CertificatePart, upstream_tls_creators, worker_tls
from gatelayer.tls.store import CertificateError

# Dated around a fixed moment that the part's clock is set to.
_NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.timezone.utc)
_CA = CertificateAuthority(now=_NOW)


def _issue(names, days):
    return _CA.issue(names, not_before=_NOW - datetime.timedelta(days=1),
                     not_after=_NOW + datetime.timedelta(days=days))


class PartTests(SynchronousTestCase):
    """
    The master part syncs new workers, reloads on demand and reports.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.path = _issue(["www.example.com"], 30).write(os.path.join(self.dir, "www.pem"))
        ca = _CA.write(os.path.join(self.mktemp(), "ca.pem"))
        self.listener = ListenerSpec(name="secure", binds=(("127.0.0.1", 0),), tls="main")
        self.config = GateConfig(
            path="gate.ini", gateway=GatewaySpec(workers=1), listeners=(self.listener,),
            tls={"main": TlsSpec(name="main", certificates=(self.dir,))},
            upstreams={
                "app": UpstreamSpec(name="app", servers=(ServerSpec("10.0.0.5", 443),), tls=True, ca=ca),
                "plain": UpstreamSpec(name="plain", servers=(ServerSpec("10.0.0.6", 80),)),
            })
        self.clock = Clock()
        self.clock.advance(_NOW.timestamp())
        worker_control, master_control, self.pump = iosim.connectedServerAndClient(
            ControlProtocol, ControlProtocol)
        self.master_control = master_control
        self.part = CertificatePart(self.config, self.clock, lambda: [master_control])
        self.wrapper, self.creator_for = worker_tls(self.config, worker_control, self.clock)

    def test_bad_certificate_stops_start(self):
        """
        Making the part loads the certificates: a bad one raises, naming the
        file.
        """
        write_pem(os.path.join(self.dir, "bad.pem"), b"")
        error = self.assertRaises(CertificateError, CertificatePart, self.config, self.clock, list)
        self.assertIn("bad.pem", str(error))

    def test_sync_then_wrap(self):
        """
        After the master's sync, the worker can wrap its TLS listener.
        """
        self.assertRaises(RuntimeError, self.wrapper, self.listener, Factory.forProtocol(RecordingProtocol))
        d = self.part.sync(self.master_control)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d), ["main"])
        wrapped = self.wrapper(self.listener, Factory.forProtocol(RecordingProtocol))
        self.assertIs(wrapped._clock, self.clock)

    def test_reload(self):
        """
        A reload pushes renewed certificates to the workers.
        """
        self.part.sync(self.master_control)
        self.pump.flush()
        renewed = _issue(["www.example.com"], 90)
        renewed.write(self.path)
        d = self.part.reload()
        self.pump.flush()
        ok, results = self.successResultOf(d)
        self.assertTrue(ok)
        self.assertEqual(results, [(True, ["main"])])
        creator = self.wrapper.receiver.creators["main"]
        self.assertEqual(creator.certificate_set.entries[0].certificate, renewed.certificate)

    def test_status(self):
        """
        The status names each certificate and the last reload.
        """
        status = self.part.status()["tls"]
        self.assertEqual(status["certificates"]["main"][0]["names"], ["www.example.com"])
        self.assertTrue(status["last_reload"]["ok"])

    def test_upstream_creators(self):
        """
        Upstreams with TLS get a creator function; plain ones none.
        """
        creators = upstream_tls_creators(self.config)
        self.assertEqual(sorted(creators), ["app"])
        self.assertIsNotNone(creators["app"](ServerSpec("10.0.0.5", 443)))
        self.assertIsNone(self.creator_for(self.config.upstreams["plain"]))
