"""
Tests for L{gatelayer.tls.sni}: real TLS handshakes, in memory, against
L{SNIServerCreator}.
"""

import os

import attrs
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface.verify import verifyObject

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import (
    CertificateAuthority,
    RecordingProtocol,
    memory_tls_connection,
    tls_client_creator,
)
from gatelayer.tls.sni import SNIServerCreator, wrap_server_factory
from gatelayer.tls.store import load_certificate_set

_CA = CertificateAuthority()
_DEFAULT = _CA.issue(["default.test"])
_API = _CA.issue(["api.example.com"])
_WILD = _CA.issue(["*.example.com"])
_OTHER = _CA.issue(["other.test", "*.other.test"], key_type="rsa")


class _Fixture:
    def __init__(self, case, **policy):
        directory = case.mktemp()
        paths = [
            _DEFAULT.write(os.path.join(directory, "0-default.pem")),
            _API.write(os.path.join(directory, "api.pem")),
            _WILD.write(os.path.join(directory, "wild.pem")),
            _OTHER.write(os.path.join(directory, "other.pem")),
        ]
        self.spec = TlsSpec(name="main", certificates=(directory,), default=paths[0], **policy)
        self.creator = SNIServerCreator(self.spec, load_certificate_set(self.spec))

    def connect(self, server_name, **client):
        return memory_tls_connection(self.creator, tls_client_creator(server_name, **client))


class SelectionTests(SynchronousTestCase):
    """
    The certificate a client gets depends on the server name it sends.
    """

    def setUp(self):
        self.fixture = _Fixture(self)

    def served(self, server_name, **client):
        connection = self.fixture.connect(server_name, **client)
        self.assertTrue(connection.handshake_done(), connection.client.lost)
        return connection.peer_certificate()

    def test_interface(self):
        """
        The creator is an C{IOpenSSLServerConnectionCreator}.
        """
        verifyObject(IOpenSSLServerConnectionCreator, self.fixture.creator)

    def test_exact(self):
        """
        A name with its own certificate gets it.
        """
        self.assertEqual(self.served("api.example.com"), _API.certificate)
        self.assertEqual(self.served("other.test"), _OTHER.certificate)

    def test_exact_beats_wildcard(self):
        """
        C{api.example.com} has an exact certificate and a wildcard covering
        it; the exact one is served.
        """
        self.assertEqual(self.served("api.example.com"), _API.certificate)
        self.assertEqual(self.fixture.creator.select(b"api.example.com")[1], "exact")

    def test_wildcard(self):
        """
        A name covered by a wildcard gets the wildcard certificate.
        """
        self.assertEqual(self.served("www.example.com"), _WILD.certificate)
        self.assertEqual(self.served("x.other.test"), _OTHER.certificate)
        self.assertEqual(self.fixture.creator.select("www.example.com")[1], "wildcard")

    def test_wildcard_one_label(self):
        """
        The wildcard does not cover a name two labels deeper: it gets the
        default.
        """
        self.assertEqual(self.served("a.www.example.com"), _DEFAULT.certificate)

    def test_default_without_sni(self):
        """
        A client that sends no server name gets the default certificate.
        """
        self.assertEqual(self.served(None), _DEFAULT.certificate)

    def test_default_for_unknown(self):
        """
        An unknown name gets the default certificate.
        """
        self.assertEqual(self.served("unknown.test"), _DEFAULT.certificate)
        self.assertEqual(self.fixture.creator.selected["default"], 1)

    def test_alpn(self):
        """
        ALPN settles on http/1.1 whichever certificate context serves the
        handshake; a client offering h2 first still gets http/1.1; a client
        without ALPN gets none.
        """
        for name in ("api.example.com", "www.example.com", None):
            connection = self.fixture.connect(name, alpn=(b"h2", b"http/1.1"))
            self.assertEqual(connection.client.negotiated_protocol, b"http/1.1")
        connection = self.fixture.connect("api.example.com", alpn=())
        self.assertTrue(connection.handshake_done())
        self.assertIsNone(connection.client.negotiated_protocol)

    def test_h2_only_client(self):
        """
        A client offering only h2 still completes the handshake, without an
        ALPN result.
        """
        connection = self.fixture.connect("api.example.com", alpn=(b"h2",))
        self.assertTrue(connection.handshake_done())
        self.assertIsNone(connection.client.negotiated_protocol)

    def test_data_flows(self):
        """
        Application data crosses the connection both ways.
        """
        connection = self.fixture.connect("api.example.com")
        connection.send(client_data=b"GET / HTTP/1.1\r\n\r\n", server_data=b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(connection.server.received, b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(connection.client.received, b"HTTP/1.1 200 OK\r\n\r\n")


class StrictTests(SynchronousTestCase):
    """
    With C{strict_sni}, only names with a certificate are served.
    """

    def setUp(self):
        self.fixture = _Fixture(self, strict_sni=True)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_known_names_served(self):
        """
        Exact and wildcard names are still served.
        """
        for name, issued in (("api.example.com", _API), ("www.example.com", _WILD)):
            connection = self.fixture.connect(name)
            self.assertTrue(connection.handshake_done())
            self.assertEqual(connection.peer_certificate(), issued.certificate)

    def test_unknown_refused(self):
        """
        An unknown name fails the handshake, is counted and logged.
        """
        connection = self.fixture.connect("unknown.test")
        self.assertFalse(connection.handshake_done())
        self.assertIsNotNone(connection.client.lost)
        self.assertIsNone(connection.peer_certificate())
        self.assertEqual(self.fixture.creator.refused, 1)
        self.assertTrue(any(e.get("server_name") == b"unknown.test" for e in self.events))

    def test_missing_refused(self):
        """
        A client without SNI fails the handshake.
        """
        connection = self.fixture.connect(None)
        self.assertFalse(connection.handshake_done())
        self.assertEqual(self.fixture.creator.refused, 1)


class VersionTests(SynchronousTestCase):
    """
    Old protocol versions are refused; TLS 1.2 only unless the section asks
    for TLS 1.3.
    """

    def test_old_versions_refused(self):
        """
        Clients capped at TLS 1.0 or 1.1 are refused.
        """
        fixture = _Fixture(self)
        for version in ("TLSv1", "TLSv1.1"):
            connection = fixture.connect("api.example.com", max_version=version)
            self.assertFalse(connection.handshake_done(), version)
            self.assertIn("version", str(connection.client.lost.value))

    def test_tls12_accepted_by_default(self):
        """
        A client capped at TLS 1.2 is served by default; others get TLS 1.3.
        """
        fixture = _Fixture(self)
        connection = fixture.connect("api.example.com", max_version="TLSv1.2")
        self.assertTrue(connection.handshake_done())
        self.assertEqual(connection.client_tls.getHandle().get_protocol_version_name(), "TLSv1.2")
        connection = fixture.connect("api.example.com")
        self.assertEqual(connection.client_tls.getHandle().get_protocol_version_name(), "TLSv1.3")

    def test_tls13_minimum(self):
        """
        With C{min_version = TLSv1.3}, a TLS 1.2 client is refused.
        """
        fixture = _Fixture(self, min_version="TLSv1.3")
        self.assertFalse(fixture.connect("api.example.com", max_version="TLSv1.2").handshake_done())
        self.assertTrue(fixture.connect("api.example.com").handshake_done())

    def test_custom_ciphers(self):
        """
        A configured TLS 1.2 cipher string is what a TLS 1.2 client gets.
        """
        fixture = _Fixture(self, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
        connection = fixture.connect("api.example.com", max_version="TLSv1.2")
        self.assertTrue(connection.handshake_done())
        self.assertEqual(connection.client_tls.getHandle().get_cipher_name(), "ECDHE-ECDSA-CHACHA20-POLY1305")


class SwapTests(SynchronousTestCase):
    """
    L{SNIServerCreator.swap} changes what new handshakes get and nothing
    else.
    """

    def test_new_handshakes_get_new_set(self):
        """
        After a swap, new handshakes see the new certificate, while a
        connection established before keeps working on the old one.
        """
        fixture = _Fixture(self)
        before = fixture.connect("api.example.com")
        self.assertEqual(before.peer_certificate(), _API.certificate)

        renewed = _CA.issue(["api.example.com"])
        directory = self.mktemp()
        spec = attrs.evolve(fixture.spec, certificates=(directory,), default=None)
        renewed.write(os.path.join(directory, "api.pem"))
        fixture.creator.swap(load_certificate_set(spec))

        after = fixture.connect("api.example.com")
        self.assertEqual(after.peer_certificate(), renewed.certificate)
        before.send(client_data=b"still here", server_data=b"and here")
        self.assertEqual(before.server.received, b"still here")
        self.assertEqual(before.client.received, b"and here")
        self.assertIsNone(before.client.lost)
        self.assertEqual(fixture.creator.certificate_set.entries[0].path, os.path.join(directory, "api.pem"))

    def test_unchanged_contexts_reused(self):
        """
        Certificates whose bytes did not change keep their context; changed
        ones get a new context.
        """
        fixture = _Fixture(self)
        old = dict(fixture.creator._selection.contexts)
        fixture.creator.swap(load_certificate_set(fixture.spec))
        self.assertEqual(fixture.creator._selection.contexts, old)
        for pem, context in fixture.creator._selection.contexts.items():
            self.assertIs(context, old[pem])

    def test_prepare_does_not_serve(self):
        """
        L{SNIServerCreator.prepare} builds without serving; L{install} serves.
        """
        fixture = _Fixture(self)
        directory = self.mktemp()
        renewed = _CA.issue(["api.example.com"])
        renewed.write(os.path.join(directory, "api.pem"))
        prepared = fixture.creator.prepare(
            load_certificate_set(attrs.evolve(fixture.spec, certificates=(directory,), default=None)))
        self.assertEqual(fixture.connect("api.example.com").peer_certificate(), _API.certificate)
        fixture.creator.install(prepared)
        self.assertEqual(fixture.connect("api.example.com").peer_certificate(), renewed.certificate)


class WrapTests(SynchronousTestCase):
    """
    L{wrap_server_factory} gives the TLS factory a worker listens with.
    """

    def test_wrap(self):
        """
        The result is a server-side L{TLSMemoryBIOFactory} around the
        application factory, using the given clock.
        """
        fixture = _Fixture(self)
        application = Factory.forProtocol(RecordingProtocol)
        clock = Clock()
        wrapped = wrap_server_factory(fixture.creator, application, clock)
        self.assertIsInstance(wrapped, TLSMemoryBIOFactory)
        self.assertIs(wrapped.wrappedFactory, application)
        self.assertIs(wrapped._clock, clock)


class HandshakeCountTests(SynchronousTestCase):
    """
    A listener's TLS factory tells C{on_handshake} how each handshake
    ended, once per connection (the worker's metrics count them).
    """

    def connect(self, **client):
        """
        A connection through L{wrap_server_factory}; what C{on_handshake}
        was told.
        """
        told = []

        def wrapper(creator, application, clock):
            wrapped = wrap_server_factory(creator, application, clock)
            wrapped.on_handshake = told.append
            return wrapped
        connection = memory_tls_connection(_Fixture(self).creator, tls_client_creator("api.example.com", **client),
                                           server_wrapper=wrapper)
        return connection, told

    def test_completed(self):
        """
        A completed handshake is told once, also after data and the close.
        """
        connection, told = self.connect()
        self.assertTrue(connection.handshake_done())
        connection.send(b"hello")
        connection.client_tls.transport.loseConnection()
        connection.pump.flush()
        self.assertEqual(told, [True])

    def test_refused(self):
        """
        A client refused for its protocol version is one failed handshake.
        """
        connection, told = self.connect(max_version="TLSv1")
        self.assertFalse(connection.handshake_done())
        connection.pump.flush()
        self.assertEqual(told, [False])

    def test_nobody_told_by_default(self):
        """
        Without C{on_handshake} the factory serves as before.
        """
        connection = memory_tls_connection(
            _Fixture(self).creator, tls_client_creator("api.example.com"), server_wrapper=wrap_server_factory)
        self.assertTrue(connection.handshake_done())


class _SecureResource(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"secure=%d host=%s" % (request.isSecure(), request.getRequestHostname())


class SiteTests(SynchronousTestCase):
    """
    A twisted.web site wrapped for TLS answers HTTPS requests.
    """

    def test_https_request(self):
        """
        An HTTP/1.1 request over a handshake picked by SNI reaches the site,
        which knows the request came over TLS.
        """
        fixture = _Fixture(self)
        clock = Clock()
        site = Site(_SecureResource(), reactor=clock)
        wrapped = wrap_server_factory(fixture.creator, site, clock)
        client = TLSMemoryBIOFactory(
            tls_client_creator("api.example.com"), True, Factory.forProtocol(RecordingProtocol), clock=clock)
        client_tls, server_tls, pump = iosim.connectedServerAndClient(
            lambda: wrapped.buildProtocol(None), lambda: client.buildProtocol(None), clock=clock)
        application = client_tls.wrappedProtocol
        application.transport.write(b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        pump.flush()
        self.assertEqual(application.peer_certificate, _API.certificate)
        self.assertTrue(application.received.startswith(b"HTTP/1.1 200 OK\r\n"), application.received)
        self.assertTrue(application.received.endswith(b"secure=1 host=api.example.com"), application.received)
