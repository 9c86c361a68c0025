"""
ALPN on the gateway's TLS listeners in memory: a listener with HTTP/2 on
offers C{h2} then C{http/1.1}, one without offers C{http/1.1} alone, with
contexts shared by every listener of a C{[tls:NAME]} section.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection, tls_client_creator
from gatelayer.tls.policy import ALPN_HTTP1, ALPN_PROTOCOLS
from gatelayer.tls.sni import SNIServerCreator, wrap_server_factory
from gatelayer.tls.store import load_certificate_set


class ALPNTests(SynchronousTestCase):
    """
    What ALPN settles on, by what the listener and the client offer.
    """

    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        path = CertificateAuthority().issue(["www.example.com"]).write(os.path.join(directory, "site.pem"))
        spec = TlsSpec(name="main", certificates=(directory,), default=path)
        # One creator, as for every listener of one [tls:NAME] section.
        self.creator = SNIServerCreator(spec, load_certificate_set(spec))

    def negotiate(self, listener_offers, client_offers):
        def wrapper(creator, factory, clock):
            wrapped = wrap_server_factory(creator, factory, clock)
            wrapped.alpn_protocols = listener_offers
            return wrapped
        connection = memory_tls_connection(
            self.creator, tls_client_creator("www.example.com", alpn=client_offers), server_wrapper=wrapper)
        self.assertTrue(connection.handshake_done())
        return connection.server_tls.negotiatedProtocol

    def test_h2_listener(self):
        """
        With HTTP/2 on, a client offering both gets C{h2} (the server's
        preference, whatever the client's order); one offering only
        C{http/1.1} gets it; one offering no ALPN gets none.
        """
        self.assertEqual(self.negotiate(ALPN_PROTOCOLS, [b"http/1.1", b"h2"]), b"h2")
        self.assertEqual(self.negotiate(ALPN_PROTOCOLS, [b"http/1.1"]), b"http/1.1")
        self.assertIsNone(self.negotiate(ALPN_PROTOCOLS, []))

    def test_http1_listener(self):
        """
        With HTTP/2 off, the same context never settles on C{h2}: a client
        offering only C{h2} gets no ALPN result (and speaks HTTP/1.1 or
        leaves).
        """
        self.assertEqual(self.negotiate(ALPN_HTTP1, [b"h2", b"http/1.1"]), b"http/1.1")
        self.assertIsNone(self.negotiate(ALPN_HTTP1, [b"h2"]))
