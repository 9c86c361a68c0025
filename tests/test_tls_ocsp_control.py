"""
Tests for L{gatelayer.tls.ocsp_control}: responses sent from the master to a
worker over in-memory AMP, and stapled in in-memory TLS handshakes on the
context of the certificate SNI picked, only inside their validity.
"""

import datetime
import os
from types import SimpleNamespace

from cryptography.hazmat.primitives import hashes
from twisted.application.service import MultiService, Service
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import TlsSpec
from gatelayer.process.control import ControlProtocol
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection
from gatelayer.testing.ocsp import FakeResponder, StaplingClientCreator, ocsp_response
from gatelayer.tls.control import CertificateReceiver, CertificateReloader, push_certificates
from gatelayer.tls.ocsp import CLOCK_SKEW, check_response
from gatelayer.tls.ocsp_control import StapleBook, StaplingPart, push_staple
from gatelayer.tls.sni import SNIServerCreator, wrap_server_factory
from gatelayer.tls.store import load_certificate_set

_NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.timezone.utc)
_DAY = datetime.timedelta(days=1)
_HOUR = datetime.timedelta(hours=1)
_CA = CertificateAuthority(now=_NOW).intermediate()
_URL = "http://127.0.0.1:9/"


def _issue(name):
    return _CA.issue([name], not_before=_NOW - _DAY, not_after=_NOW + 30 * _DAY, ocsp_url=_URL)


_WWW = _issue("www.example.com")
_API = _issue("api.example.com")


def _fingerprint(issued):
    return issued.certificate.fingerprint(hashes.SHA256()).hex()


def _staple(issued, hours=2, **kw):
    der = ocsp_response(issued, _CA, this_update=_NOW - _HOUR, next_update=_NOW + hours * _HOUR, **kw)
    return check_response(der, issued.certificate, _CA.certificate, _NOW)


def _clock():
    clock = Clock()
    clock.advance(_NOW.timestamp())
    return clock


def _channel():
    worker, master, pump = iosim.connectedServerAndClient(ControlProtocol, ControlProtocol)
    return master, worker, pump


class _Section(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.clock = _clock()

    def spec(self, *issued, mode="auto"):
        paths = tuple(i.write(os.path.join(self.directory, f"{n}.pem")) for n, i in enumerate(issued))
        return TlsSpec(name="main", certificates=paths, ocsp_staple=mode)

    def handshake(self, creator, server_name):
        client = StaplingClientCreator(server_name)
        connection = memory_tls_connection(
            creator, client, clock=self.clock, server_wrapper=wrap_server_factory)
        self.assertTrue(connection.handshake_done())
        return client.stapled


class StapleBookTests(_Section):
    """
    A worker staples what the master sent, for the certificate served and
    only within the response's validity.
    """

    def test_book_window(self):
        """
        A response is given between its times, and not after; an empty one
        withdraws it.
        """
        book = StapleBook(self.clock)
        book.set_staple("ab", b"der", _NOW.timestamp() - 10, _NOW.timestamp() + 10)
        self.assertEqual(book.response_for("ab"), b"der")
        self.assertEqual(book.response_for("cd"), b"")
        self.clock.advance(10)
        self.assertEqual(book.response_for("ab"), b"")
        book.set_staple("ab", b"", 0.0, 0.0)
        self.assertEqual(book.response_for("ab"), b"")

    def test_sni_staples_per_certificate(self):
        """
        Each certificate's context staples its own response: the handshake
        for www gets www's, the one for api gets api's.
        """
        book = StapleBook(self.clock)
        spec = self.spec(_WWW, _API)
        creator = SNIServerCreator(spec, load_certificate_set(spec, now=_NOW), staples=book)
        www, api = _staple(_WWW), _staple(_API)
        for issued, staple in ((_WWW, www), (_API, api)):
            book.set_staple(_fingerprint(issued), staple.der, (staple.this_update - CLOCK_SKEW).timestamp(),
                            staple.next_update.timestamp())
        self.assertEqual(self.handshake(creator, "www.example.com"), [www.der])
        self.assertEqual(self.handshake(creator, "api.example.com"), [api.der])
        self.assertEqual(book.stapled, 2)

    def test_expired_not_stapled(self):
        """
        Past nextUpdate the worker staples nothing, even before the master
        says so.
        """
        book = StapleBook(self.clock)
        spec = self.spec(_WWW)
        creator = SNIServerCreator(spec, load_certificate_set(spec, now=_NOW), staples=book)
        staple = _staple(_WWW, hours=1)
        book.set_staple(_fingerprint(_WWW), staple.der, _NOW.timestamp() - 3600, staple.next_update.timestamp())
        self.clock.advance(3600)
        self.assertEqual(self.handshake(creator, "www.example.com"), [b""])

    def test_section_without_stapling(self):
        """
        A section without C{ocsp_staple} never staples, whatever the book
        holds.
        """
        book = StapleBook(self.clock)
        spec = self.spec(_WWW, mode=None)
        creator = SNIServerCreator(spec, load_certificate_set(spec, now=_NOW), staples=book)
        staple = _staple(_WWW)
        book.set_staple(_fingerprint(_WWW), staple.der, 0.0, staple.next_update.timestamp())
        self.assertEqual(self.handshake(creator, "www.example.com"), [b""])


class TransferTests(_Section):
    """
    The master's part pushes responses to workers over AMP, at sync and on
    every change; the worker staples them on the certificates it was sent.
    """

    def test_push_and_withdraw(self):
        """
        L{push_staple} sets a worker's response; L{None} withdraws it.
        """
        master, worker, pump = _channel()
        book = StapleBook(self.clock).register(worker)
        staple = _staple(_WWW)
        d = push_staple(master, "ab", staple)
        pump.flush()
        self.successResultOf(d)
        self.assertEqual(book.response_for("ab"), staple.der)
        push_staple(master, "ab", None)
        pump.flush()
        self.assertEqual(book.response_for("ab"), b"")

    def test_part_sync_and_changes(self):
        """
        A worker that connects gets the current responses at sync, is
        stapled through the certificates the master sent it, and gets
        refreshed responses as they come; the part reports each
        certificate's state.
        """
        spec = self.spec(_WWW)
        reloader = CertificateReloader({"main": spec}, self.clock)
        reloader.load()
        first = _staple(_WWW).der
        responder = FakeResponder({_URL: first})
        master, worker, pump = _channel()
        part = StaplingPart(reloader, self.clock, lambda: [master], post=responder.post)
        part.startService()
        self.addCleanup(part.stopService)
        book = StapleBook(self.clock).register(worker)
        receiver = CertificateReceiver({"main": spec}, staples=book).register(worker)
        done = push_certificates(master, reloader.current)
        pump.flush()
        self.successResultOf(done)
        part.sync(master)
        pump.flush()
        creator = receiver.creators["main"]
        self.assertEqual(self.handshake(creator, "www.example.com"), [first])
        status = part.status()["ocsp"]["main"][0]
        self.assertEqual((status["mode"], status["stapling"], status["responder"]), ("auto", True, _URL))
        later = ocsp_response(_WWW, _CA, this_update=_NOW + _HOUR, next_update=_NOW + 3 * _HOUR)
        responder.responses[_URL] = later
        self.clock.advance(3600)
        pump.flush()
        self.assertEqual(self.handshake(creator, "www.example.com"), [later])

    def test_part_added_beside_running_tls(self):
        """
        A part made without a reloader (a reload turned stapling on while
        the C{tls} part ran) follows the C{tls} part beside it in the tree
        once started.
        """
        spec = self.spec(_WWW)
        reloader = CertificateReloader({"main": spec}, self.clock)
        reloader.load()
        tree = MultiService()
        tls = Service()
        tls.setName("tls")
        tls.part = SimpleNamespace(reloader=reloader)
        tls.setServiceParent(tree)
        responder = FakeResponder({_URL: _staple(_WWW).der})
        part = StaplingPart(None, self.clock, lambda: [], post=responder.post)
        part.setServiceParent(tree)
        self.assertEqual(responder.requests, [])
        part.startService()
        self.addCleanup(part.stopService)
        self.assertEqual(len(responder.requests), 1)
        self.assertEqual([f for f, _ in part.stapler.staples()], [_fingerprint(_WWW)])
