"""
Certificates for tests, generated on the spot with C{cryptography}.

A L{CertificateAuthority} issues leaf certificates with chosen names, common
name, validity window and key type (expired and not-yet-valid ones are just a
window in the past or the future). L{IssuedCertificate} renders the PEM
layouts gatelayer reads (certificate, chain and key in one file) and a few
deliberately broken ones (truncated, key missing), so a test states the case
it needs in one line instead of shipping fixture files.

L{tls_client_creator} and L{memory_tls_connection} do a real TLS handshake
in memory (no sockets) against any server connection creator, for tests of
the TLS layer and of HTTPS through the gateway.

It is longer than most modules because it is a catalogue of cases (one
method per kind of good or broken certificate), not logic to split.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from zope.interface import implementer

__all__ = [
    "CertificateAuthority",
    "IssuedCertificate",
    "generate_key",
    "write_pem",
    "tls_client_creator",
    "memory_tls_connection",
    "RecordingProtocol",
    "server_tls_options",
]

_ONE_DAY = datetime.timedelta(days=1)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def generate_key(key_type="ec"):
    """
    A new private key: C{"ec"} (P-256, the fast default), C{"rsa"} (2048
    bits) or C{"ed25519"}.
    """
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r} (ec, rsa, ed25519)")


def _sign_hash(key):
    # Ed25519 signs without a separate digest.
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_pem(path, data, mode=0o600):
    """
    Write C{data} (bytes) to C{path} in one go and return C{path}; the
    directory is created when missing.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


class IssuedCertificate:
    """
    A certificate with its private key and the chain up to (not including)
    the root.

    @ivar certificate: the L{x509.Certificate}.
    @ivar key: its private key.
    @ivar chain: intermediate certificates, nearest first.
    """

    def __init__(self, certificate, key, chain=()):
        self.certificate = certificate
        self.key = key
        self.chain = tuple(chain)

    def cert_pem(self):
        """
        The certificate alone, PEM.
        """
        return _cert_pem(self.certificate)

    def key_pem(self):
        """
        The private key alone, unencrypted PKCS#8 PEM.
        """
        return _key_pem(self.key)

    def chain_pem(self):
        """
        The intermediate certificates, PEM, nearest first.
        """
        return b"".join(_cert_pem(c) for c in self.chain)

    def bundle_pem(self, chain=True):
        """
        Certificate, chain and key in one PEM: the layout gatelayer reads.
        """
        return self.cert_pem() + (self.chain_pem() if chain else b"") + self.key_pem()

    def truncated_pem(self, keep=0.6):
        """
        The bundle cut part-way through, as a file caught half-written.
        """
        whole = self.bundle_pem()
        return whole[: int(len(whole) * keep)]

    def mismatched_key_pem(self, key_type="ec"):
        """
        The certificate and chain with somebody else's private key: a file
        whose key does not match its certificate.
        """
        return self.cert_pem() + self.chain_pem() + _key_pem(generate_key(key_type))

    def write(self, path, chain=True):
        """
        Write L{bundle_pem} to C{path}; returns C{path}.
        """
        return write_pem(path, self.bundle_pem(chain=chain))

    def fingerprint(self):
        """
        SHA-256 of the certificate's DER, as bytes; compare with what a peer
        presented.
        """
        return self.certificate.fingerprint(hashes.SHA256())


class CertificateAuthority:
    """
    A self-signed CA (or an intermediate, from L{intermediate}) that issues
    leaf certificates.

    @ivar certificate: the CA certificate.
    @ivar key: its private key.
    @ivar chain: the certificates between this CA and the root (empty for a
        root).
    """

    def __init__(self, name="gatelayer test CA", key_type="ec", now=None, _issuer=None):
        now = now or _utcnow()
        self.key = generate_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        if _issuer is None:
            issuer_name, signing_key = subject, self.key
        else:
            issuer_name, signing_key = _issuer.certificate.subject, _issuer.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _ONE_DAY)
            .not_valid_after(now + 3650 * _ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        if _issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(_issuer.key.public_key()), critical=False)
        self.certificate = builder.sign(signing_key, _sign_hash(signing_key))
        self.chain = () if _issuer is None else (self.certificate,) + _issuer.chain

    def intermediate(self, name="gatelayer test intermediate CA", key_type="ec"):
        """
        A CA signed by this one; leaves it issues carry it in their chain.
        """
        return CertificateAuthority(name=name, key_type=key_type, _issuer=self)

    def cert_pem(self):
        """
        The CA certificate, PEM: what a client trusts.
        """
        return _cert_pem(self.certificate)

    def write(self, path):
        """
        Write the CA certificate (a trust bundle) to C{path}; returns C{path}.
        """
        return write_pem(path, self.cert_pem(), mode=0o644)

    def issue(self, names=(), common_name=None, key_type="ec", not_before=None, not_after=None,
              days=30, ip_addresses=(), client=False, server=True, ocsp_url=None):
        """
        Issue a leaf certificate.

        @param names: subjectAltName DNS names (may be empty, to test the
            common-name fallback).
        @param common_name: the subject CN; default: the first name.
        @param not_before: start of validity (aware datetime); default: a day
            ago.
        @param not_after: end of validity; default: C{days} from now. Put both
            in the past for an expired certificate, or both in the future for
            one not yet valid.
        @param ip_addresses: subjectAltName IP entries.
        @param client: include the clientAuth extended key usage.
        @param server: include the serverAuth extended key usage.
        @param ocsp_url: an OCSP responder URL for the authorityInfoAccess
            extension (what OCSP stapling fetches from).
        """
        now = _utcnow()
        not_before = not_before or (now - _ONE_DAY)
        not_after = not_after or (now + days * _ONE_DAY)
        key = generate_key(key_type)
        cn = common_name if common_name is not None else (names[0] if names else "gatelayer test")
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        alt = [x509.DNSName(n) for n in names]
        alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if ocsp_url is not None:
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
        certificate = builder.sign(self.key, _sign_hash(self.key))
        return IssuedCertificate(certificate, key, self.chain)

    def expired(self, names, **kw):
        """
        A leaf whose validity ended yesterday.
        """
        now = _utcnow()
        return self.issue(names, not_before=now - 30 * _ONE_DAY, not_after=now - _ONE_DAY, **kw)

    def not_yet_valid(self, names, **kw):
        """
        A leaf whose validity starts tomorrow.
        """
        now = _utcnow()
        return self.issue(names, not_before=now + _ONE_DAY, not_after=now + 30 * _ONE_DAY, **kw)


@implementer(IOpenSSLClientConnectionCreator)
class _TestClientCreator:
    def __init__(self, context, server_name):
        self._context = context
        self._server_name = server_name

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self._context, None)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name.encode("idna"))
        return connection


_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}


def tls_client_creator(server_name=None, max_version=None, alpn=(b"http/1.1",), certificate=None):
    """
    A permissive test client: sends C{server_name} as SNI (none when
    L{None}), accepts whatever certificate the server shows (tests read it
    back with C{getPeerCertificate}), offers C{alpn}, and can be held to
    C{max_version} (C{"TLSv1"}, C{"TLSv1.1"}, ...) to probe refusals of old
    protocols. C{certificate} (an L{IssuedCertificate}) is presented when the
    server asks for one.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
    if max_version is not None:
        version = _VERSIONS[max_version]
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_max_proto_version(version)
        if version < SSL.TLS1_2_VERSION:
            # Old protocols need security level 0 on this side to even be
            # offered; the point is to see the server refuse them.
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    if alpn:
        context.set_alpn_protos(list(alpn))
    if certificate is not None:
        context.use_certificate(certificate.certificate)
        for extra in certificate.chain:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(certificate.key)
    return _TestClientCreator(context, server_name)


@implementer(IHandshakeListener)
class RecordingProtocol(Protocol):
    """
    An application protocol that keeps what it received, what the TLS
    handshake settled and how the connection ended.

    @ivar received: the bytes received so far.
    @ivar handshake: whether the TLS handshake completed.
    @ivar lost: the failure C{connectionLost} got, or L{None} while open.
    @ivar peer_certificate: the certificate the other side presented (a
        C{cryptography} certificate), or L{None}.
    @ivar negotiated_protocol: the ALPN result, or L{None}.
    """

    def __init__(self):
        self.received = b""
        self.handshake = False
        self.lost = None
        self.peer_certificate = None
        self.negotiated_protocol = None

    def handshakeCompleted(self):
        """
        Note what the handshake settled.
        """
        self.handshake = True
        peer = self.transport.getPeerCertificate()
        if peer is not None:
            self.peer_certificate = peer.to_cryptography()
        self.negotiated_protocol = self.transport.negotiatedProtocol

    def dataReceived(self, data):
        """
        Keep the data.
        """
        self.received += data

    def connectionLost(self, reason):
        """
        Keep the reason.
        """
        self.lost = reason


class MemoryTLSConnection:
    """
    Both ends of an in-memory TLS connection and the pump between them.

    @ivar client: the client's application protocol (L{RecordingProtocol}
        unless another was given).
    @ivar server: the server's application protocol.
    @ivar client_tls: the client's TLS protocol (peer certificate, ALPN).
    @ivar server_tls: the server's TLS protocol.
    @ivar pump: the L{iosim.IOPump}.
    """

    def __init__(self, client, server, client_tls, server_tls, pump):
        self.client = client
        self.server = server
        self.client_tls = client_tls
        self.server_tls = server_tls
        self.pump = pump

    def peer_certificate(self):
        """
        The certificate the server presented (a C{cryptography} certificate),
        or L{None} when the handshake did not complete.
        """
        return getattr(self.client, "peer_certificate", None)

    def handshake_done(self):
        """
        Whether the client completed its handshake and is still connected.
        """
        return self.client.handshake and self.client.lost is None

    def send(self, client_data=b"", server_data=b""):
        """
        Write from either side and pump until idle.
        """
        if client_data:
            self.client.transport.write(client_data)
        if server_data:
            self.server.transport.write(server_data)
        self.pump.flush()


def memory_tls_connection(server_creator, client_creator, server_protocol=RecordingProtocol,
                          client_protocol=RecordingProtocol, clock=None, server_wrapper=None):
    """
    Connect a TLS client to a TLS server in memory and run the handshake.

    @param server_creator: an C{IOpenSSLServerConnectionCreator} (such as an
        C{SNIServerCreator}) or a server TLS factory's creator.
    @param client_creator: an C{IOpenSSLClientConnectionCreator} (see
        L{tls_client_creator}).
    @param server_wrapper: builds the server's TLS factory from C{(creator,
        application factory, clock)} (such as
        L{gatelayer.tls.sni.wrap_server_factory}); a plain
        L{TLSMemoryBIOFactory} by default.
    @return: a L{MemoryTLSConnection}; check C{handshake_done()}.
    """
    clock = clock or Clock()
    built = {}

    def factory(side, protocol):
        def build():
            built[side] = protocol()
            return built[side]
        return Factory.forProtocol(build)

    if server_wrapper is None:
        server_factory = TLSMemoryBIOFactory(server_creator, False, factory("server", server_protocol), clock=clock)
    else:
        server_factory = server_wrapper(server_creator, factory("server", server_protocol), clock)
    client_factory = TLSMemoryBIOFactory(client_creator, True, factory("client", client_protocol), clock=clock)
    client_tls, server_tls, pump = iosim.connectedServerAndClient(
        lambda: server_factory.buildProtocol(None),
        lambda: client_factory.buildProtocol(None),
        clock=clock,
    )
    return MemoryTLSConnection(built["client"], built["server"], client_tls, server_tls, pump)


def server_tls_options(issued, client_ca=None):
    """
    Twisted server TLS options (for C{listenSSL}) presenting C{issued} (an
    L{IssuedCertificate}) with its chain: a stand-in HTTPS upstream.

    @param client_ca: a L{CertificateAuthority}; when given, the server
        demands a client certificate issued by it and refuses the handshake
        without one (mutual TLS).
    """
    options = dict(
        privateKey=crypto.PKey.from_cryptography_key(issued.key),
        certificate=crypto.X509.from_cryptography(issued.certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in issued.chain],
    )
    if client_ca is not None:
        options.update(
            verify=True, requireCertificate=True,
            caCerts=[crypto.X509.from_cryptography(client_ca.certificate)])
    return CertificateOptions(**options)
