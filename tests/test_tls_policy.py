"""
Tests for L{gatelayer.tls.policy}: the settings every server context gets.
"""

import os

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection
from gatelayer.tls.policy import (
    MODERN_CIPHERS,
    PolicyError,
    check_policy,
    hsts_header,
    minimum_version,
    server_context,
)
from gatelayer.tls.sni import SNIServerCreator
from gatelayer.tls.store import load_certificate_set


def _spec(**kw):
    return TlsSpec(name="main", certificates=(), **kw)


class PolicyTests(SynchronousTestCase):
    """
    Versions, ciphers and headers from a C{[tls:NAME]} section.
    """

    def test_minimum_version(self):
        """
        TLS 1.2 is the default floor; TLS 1.3 can be required; nothing older
        is accepted.
        """
        self.assertEqual(minimum_version(_spec()), SSL.TLS1_2_VERSION)
        self.assertEqual(minimum_version(_spec(min_version="TLSv1.3")), SSL.TLS1_3_VERSION)
        error = self.assertRaises(PolicyError, minimum_version, _spec(min_version="TLSv1.1"))
        self.assertIn("[tls:main] min_version", str(error))

    def test_bad_ciphers(self):
        """
        A cipher string that selects nothing is a L{PolicyError} naming the
        section and key.
        """
        error = self.assertRaises(PolicyError, check_policy, _spec(ciphers="NOT-A-CIPHER"))
        self.assertIn("[tls:main] ciphers", str(error))
        self.assertIn("NOT-A-CIPHER", str(error))

    def test_default_ciphers_aead_only(self):
        """
        The default TLS 1.2 list has only forward-secret AEAD suites.
        """
        context = server_context(_spec())
        names = [c for c in SSL.Connection(context, None).get_cipher_list() if not c.startswith("TLS_")]
        self.assertEqual(names, MODERN_CIPHERS.split(":"))
        for name in names:
            self.assertTrue(name.startswith("ECDHE-"), name)
            self.assertTrue("GCM" in name or "CHACHA20" in name, name)

    def test_hsts(self):
        """
        L{hsts_header} gives the configured value as bytes, or L{None}.
        """
        self.assertIsNone(hsts_header(_spec()))
        self.assertEqual(hsts_header(_spec(hsts="max-age=31536000")), b"max-age=31536000")


def _session_reused(connection):
    # pyOpenSSL has no public call for this; the binding it wraps does.
    from OpenSSL.SSL import _lib
    return bool(_lib.SSL_session_reused(connection._ssl))


@implementer(IOpenSSLClientConnectionCreator)
class _ResumingClient:
    """
    A client that offers a saved session when it has one.
    """

    def __init__(self, server_name):
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self.server_name = server_name
        self.session = None

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self.context, None)
        connection.set_tlsext_host_name(self.server_name)
        if self.session is not None:
            connection.set_session(self.session)
        return connection


class ResumptionTests(SynchronousTestCase):
    """
    Sessions resume, so returning clients skip the full handshake.
    """

    def test_session_resumes(self):
        """
        A client offering the session of its previous connection resumes it,
        with TLS 1.3 tickets and with TLS 1.2.
        """
        ca = CertificateAuthority()
        directory = self.mktemp()
        ca.issue(["api.example.com"]).write(os.path.join(directory, "api.pem"))
        spec = TlsSpec(name="main", certificates=(directory,))
        creator = SNIServerCreator(spec, load_certificate_set(spec))
        for max_version in (None, SSL.TLS1_2_VERSION):
            client = _ResumingClient(b"api.example.com")
            if max_version is not None:
                client.context.set_max_proto_version(max_version)
            first = memory_tls_connection(creator, client)
            # TLS 1.3 tickets follow the handshake: let data flow once.
            first.send(server_data=b"hello")
            client.session = first.client_tls.getHandle().get_session()
            second = memory_tls_connection(creator, client)
            self.assertTrue(second.handshake_done())
            self.assertTrue(_session_reused(second.client_tls.getHandle()), max_version)
