"""
Tests for L{gatelayer.tls.upstream}: the gateway as a TLS client of its
upstreams, handshaking in memory with test servers.
"""

import os

from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config.model import ServerSpec, TlsSpec, UpstreamSpec
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection, write_pem
from gatelayer.tls.sni import SNIServerCreator
from gatelayer.tls.store import CertificateError, load_certificate_set
from gatelayer.tls.upstream import load_trust_root, upstream_tls_creator

_CA = CertificateAuthority(name="internal CA")
_STRANGER = CertificateAuthority(name="someone else's CA")
_SERVER = _CA.issue(["api.internal"], ip_addresses=["10.0.0.5"])
_SERVER_IP = ServerSpec(host="10.0.0.5", port=443)
_SERVER_NAMED = ServerSpec(host="api.internal", port=443)


class _Case(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.ca_path = _CA.write(os.path.join(self.dir, "ca.pem"))
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def upstream(self, **kw):
        kw.setdefault("tls", True)
        kw.setdefault("ca", self.ca_path)
        return UpstreamSpec(name="secure-app", servers=(_SERVER_IP,), **kw)

    def server_creator(self, issued=_SERVER):
        path = issued.write(os.path.join(self.mktemp(), "server.pem"))
        spec = TlsSpec(name="upstream-side", certificates=(path,))
        return SNIServerCreator(spec, load_certificate_set(spec))

    def mtls_server(self, trusted=_CA):
        # A server that insists on a client certificate issued by `trusted`.
        return ssl.CertificateOptions(
            privateKey=_SERVER.key, certificate=_SERVER.certificate,
            verify=True, requireCertificate=True,
            caCerts=[ssl.Certificate.loadPEM(trusted.cert_pem()).original])

    def connect(self, spec, server=_SERVER_IP, server_creator=None):
        creator_for = upstream_tls_creator(spec)
        return memory_tls_connection(server_creator or self.server_creator(), creator_for(server))


class VerificationTests(_Case):
    """
    Upstream servers are verified against the CA and the expected name.
    """

    def test_disabled(self):
        """
        Without C{tls = yes} there is no creator.
        """
        self.assertIsNone(upstream_tls_creator(UpstreamSpec(name="plain", servers=(_SERVER_IP,))))

    def test_interface_and_cache(self):
        """
        The creator for a server is an C{IOpenSSLClientConnectionCreator},
        built once per name.
        """
        creator_for = upstream_tls_creator(self.upstream(server_name="api.internal"))
        creator = creator_for(_SERVER_IP)
        verifyObject(IOpenSSLClientConnectionCreator, creator)
        self.assertIs(creator_for(ServerSpec(host="10.0.0.6", port=443)), creator)

    def test_server_name_verified(self):
        """
        With C{server_name}, the server's certificate must carry that name;
        it is also sent as SNI.
        """
        server_creator = self.server_creator()
        connection = self.connect(self.upstream(server_name="api.internal"), server_creator=server_creator)
        self.assertTrue(connection.handshake_done(), connection.client.lost)
        self.assertEqual(connection.peer_certificate(), _SERVER.certificate)
        self.assertEqual(server_creator.selected["exact"], 1)

    def test_host_name_default(self):
        """
        Without C{server_name}, the server's host is the expected name.
        """
        connection = self.connect(self.upstream(), server=_SERVER_NAMED)
        self.assertTrue(connection.handshake_done(), connection.client.lost)

    def test_ip_address(self):
        """
        A server known by IP address is verified against the certificate's
        IP entries.
        """
        connection = self.connect(self.upstream(), server=_SERVER_IP)
        self.assertTrue(connection.handshake_done(), connection.client.lost)

    def test_wrong_name_fails(self):
        """
        A certificate for another name fails the connection.
        """
        connection = self.connect(self.upstream(server_name="billing.internal"))
        self.assertFalse(connection.handshake_done())
        self.assertIsInstance(connection.client.lost.value, VerificationError)
        self.assertEqual(connection.server.received, b"")

    def test_unknown_ca_fails(self):
        """
        A certificate from a CA not in C{ca} fails the connection.
        """
        stranger = _STRANGER.issue(["api.internal"])
        connection = self.connect(
            self.upstream(server_name="api.internal"), server_creator=self.server_creator(stranger))
        self.assertFalse(connection.handshake_done())
        self.assertIn("certificate verify failed", str(connection.client.lost.value))

    def test_bundle_with_several_cas(self):
        """
        Every certificate of the C{ca} bundle is trusted.
        """
        bundle = write_pem(os.path.join(self.dir, "bundle.pem"), _STRANGER.cert_pem() + _CA.cert_pem())
        connection = self.connect(self.upstream(ca=bundle, server_name="api.internal"))
        self.assertTrue(connection.handshake_done(), connection.client.lost)

    def test_verify_no(self):
        """
        C{verify = no} accepts any certificate, still sends SNI, and warns
        in the log with the section.
        """
        stranger = _STRANGER.issue(["api.internal"])
        server_creator = self.server_creator(stranger)
        connection = self.connect(
            self.upstream(ca=None, verify=False, server_name="api.internal"), server_creator=server_creator)
        self.assertTrue(connection.handshake_done(), connection.client.lost)
        self.assertEqual(server_creator.selected["exact"], 1)
        warnings = [e for e in self.events if e.get("section") == "upstream:secure-app"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("NOT checked", warnings[0]["log_format"])

    def test_platform_trust_default(self):
        """
        Without C{ca}, the system's trust store is used.
        """
        self.assertIsInstance(load_trust_root(self.upstream(ca=None)), type(ssl.platformTrust()))
        # The test CA is not in it, so the server is refused.
        connection = self.connect(self.upstream(ca=None, server_name="api.internal"))
        self.assertFalse(connection.handshake_done())


class MutualTLSTests(_Case):
    """
    C{client_certificate} is presented to upstreams that require one.
    """

    def test_required_and_presented(self):
        """
        A server requiring a client certificate accepts the configured one
        and sees it.
        """
        client = _CA.issue(["gateway.internal"], client=True, server=False)
        path = client.write(os.path.join(self.dir, "gw.pem"))
        connection = self.connect(
            self.upstream(server_name="api.internal", client_certificate=path),
            server_creator=self.mtls_server())
        connection.send(client_data=b"ping")
        self.assertTrue(connection.handshake_done(), connection.client.lost)
        self.assertEqual(connection.server.received, b"ping")
        self.assertEqual(connection.server.peer_certificate, client.certificate)

    def test_chain_presented(self):
        """
        The chain in the client certificate file is sent along, so a server
        trusting only the root accepts a certificate from an intermediate.
        """
        client = _CA.intermediate().issue(["gateway.internal"], client=True, server=False)
        path = client.write(os.path.join(self.dir, "gw.pem"))
        connection = self.connect(
            self.upstream(server_name="api.internal", client_certificate=path),
            server_creator=self.mtls_server())
        connection.send(client_data=b"ping")
        self.assertEqual(connection.server.received, b"ping")

    def test_missing_client_certificate_refused(self):
        """
        Without C{client_certificate}, such a server refuses the gateway.
        """
        connection = self.connect(self.upstream(server_name="api.internal"), server_creator=self.mtls_server())
        connection.send(client_data=b"ping")
        self.assertEqual(connection.server.received, b"")
        self.assertIsNotNone(connection.client.lost)

    def test_verify_no_still_presents(self):
        """
        C{verify = no} still presents the client certificate.
        """
        client = _CA.issue(["gateway.internal"], client=True, server=False)
        path = client.write(os.path.join(self.dir, "gw.pem"))
        connection = self.connect(
            self.upstream(ca=None, verify=False, client_certificate=path), server_creator=self.mtls_server())
        connection.send(client_data=b"ping")
        self.assertEqual(connection.server.received, b"ping")


class FileErrorTests(_Case):
    """
    Unusable C{ca} or C{client_certificate} files are configuration errors
    naming the section, key and file.
    """

    def assertRejected(self, spec, key, path, reason):
        error = self.assertRaises(CertificateError, upstream_tls_creator, spec)
        self.assertEqual(error.path, path)
        self.assertIn(reason, error.reason)
        self.assertIn(f"[upstream:secure-app] {key} {path}: ", str(error))

    def test_ca_missing(self):
        """
        A C{ca} file that cannot be read.
        """
        path = os.path.join(self.dir, "gone.pem")
        self.assertRejected(self.upstream(ca=path), "ca", path, "cannot be read")

    def test_ca_without_certificate(self):
        """
        A C{ca} file without certificates.
        """
        path = write_pem(os.path.join(self.dir, "empty.pem"), b"nothing here\n")
        self.assertRejected(self.upstream(ca=path), "ca", path, "holds no PEM certificate")

    def test_ca_truncated(self):
        """
        A C{ca} file cut short.
        """
        path = write_pem(os.path.join(self.dir, "cut.pem"), _CA.cert_pem()[:100])
        self.assertRejected(self.upstream(ca=path), "ca", path, "truncated PEM")

    def test_client_key_mismatch(self):
        """
        A client certificate file whose key is not the certificate's.
        """
        one, two = _CA.issue(["a"], client=True), _CA.issue(["b"], client=True)
        path = write_pem(os.path.join(self.dir, "gw.pem"), one.cert_pem() + two.key_pem())
        self.assertRejected(self.upstream(client_certificate=path), "client_certificate", path, "does not match")

    def test_client_expired(self):
        """
        An expired client certificate.
        """
        path = _CA.expired(["gw"], client=True).write(os.path.join(self.dir, "gw.pem"))
        self.assertRejected(self.upstream(client_certificate=path), "client_certificate", path,
                            "outside its validity")
