"""
TLS from the gateway to upstream servers (C{tls = yes} in an
C{[upstream:NAME]} section).

Servers are verified: the chain against the section's C{ca} bundle (or the
system's trust store), the name with C{service_identity} against
C{server_name} or, by default, the server's own host (a DNS name or an IP
address). C{client_certificate} is presented to upstreams that require
mutual TLS. C{verify = no} turns checking off and says so in the log, once,
when the configuration is loaded.

No ALPN is offered: the upstream client speaks HTTP/1.1, which is what a
server assumes without ALPN, and some TLS stacks (Twisted's own
C{CertificateOptions} among them) fail a handshake whose ALPN offer they do
not share.

Files are read when the creator is made (configuration load), so a missing or
broken CA bundle or client certificate is a configuration error naming the
section, key and file, not a failure of the first proxied request.
"""

import datetime

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from .store import CertificateError, pem_blocks, read_pem_bundle

__all__ = ["upstream_tls_creator", "load_trust_root", "load_client_certificate"]

_log = Logger(namespace="gatelayer.tls.upstream")


def _read(path, section, key):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError([(path, f"cannot be read ({e.strerror or e})")], section, key) from None


def load_trust_root(spec):
    """
    The trust root for the servers of the upstream C{spec}: the certificates
    of its C{ca} bundle, or the platform's trust store when C{ca} is unset.

    @raise CertificateError: when the bundle cannot be read or holds no
        certificate.
    """
    section = f"upstream:{spec.name}"
    if spec.ca is None:
        return ssl.platformTrust()
    data = _read(spec.ca, section, "ca")
    try:
        blocks = [block for label, block in pem_blocks(data) if label == b"CERTIFICATE"]
    except ValueError as e:
        raise CertificateError([(spec.ca, str(e))], section, "ca") from None
    if not blocks:
        raise CertificateError([(spec.ca, "holds no PEM certificate")], section, "ca")
    certificates = []
    for index, block in enumerate(blocks, 1):
        try:
            certificates.append(ssl.Certificate.loadPEM(block))
        except Exception as e:
            raise CertificateError(
                [(spec.ca, f"certificate #{index} does not parse ({e})")], section, "ca") from None
    return ssl.trustRootFromCertificates(certificates)


def load_client_certificate(spec, now=None):
    """
    The client certificate of the upstream C{spec} for mutual TLS, as a
    C{(PrivateCertificate, chain)} pair, or C{(None, [])} when
    C{client_certificate} is unset.

    @raise CertificateError: when the file is unreadable, broken, its key
        does not match, or the certificate is outside its validity.
    """
    section = f"upstream:{spec.name}"
    if spec.client_certificate is None:
        return None, []
    path = spec.client_certificate
    data = _read(path, section, "client_certificate")
    try:
        certificates, key = read_pem_bundle(data)
    except ValueError as e:
        raise CertificateError([(path, str(e))], section, "client_certificate") from None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    leaf = certificates[0]
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise CertificateError(
            [(path, "the certificate is outside its validity "
                    f"({leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()})")],
            section, "client_certificate")
    private = ssl.PrivateCertificate.fromCertificateAndKeyPair(
        ssl.Certificate(crypto.X509.from_cryptography(leaf)),
        ssl.KeyPair(crypto.PKey.from_cryptography_key(key)))
    chain = [crypto.X509.from_cryptography(c) for c in certificates[1:]]
    return private, chain


def _is_ip(host):
    return isIPAddress(host) or isIPv6Address(host)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientCreator:
    """
    A client connection creator that checks nothing about the server (for
    C{verify = no}) but still sends SNI, so virtual-hosted upstreams pick the
    right site.
    """

    def __init__(self, context, server_name):
        self._context = context
        self._server_name = None if _is_ip(server_name) else server_name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol):
        """
        A client connection with SNI and no verification.
        """
        connection = SSL.Connection(self._context, None)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def upstream_tls_creator(spec, now=None):
    """
    How to open TLS to the servers of the upstream C{spec} (a
    L{gatelayer.config.model.UpstreamSpec}).

    @return: L{None} when C{spec.tls} is false; otherwise a function taking
        a L{gatelayer.config.model.ServerSpec} (anything with a C{host}) and
        returning an C{IOpenSSLClientConnectionCreator}, one per name, built
        on first use and reused (contexts are costly; sessions resume).
    @raise CertificateError: when C{ca} or C{client_certificate} is unusable.
    """
    if not spec.tls:
        return None
    section = f"upstream:{spec.name}"
    client_certificate, chain = load_client_certificate(spec, now)
    extra = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    if chain:
        extra["extraCertChain"] = chain
    if spec.verify:
        trust_root = load_trust_root(spec)
    else:
        _log.warn(
            "[{section}] verify = no: the certificates of its servers are NOT checked; "
            "anyone on the path can impersonate them",
            section=section)
    creators = {}

    def build(name):
        if spec.verify:
            return ssl.optionsForClientTLS(
                name, trustRoot=trust_root, clientCertificate=client_certificate,
                extraCertificateOptions=dict(extra))
        options = dict(extra)
        if client_certificate is not None:
            options.update(privateKey=client_certificate.privateKey.original,
                           certificate=client_certificate.original)
        context = ssl.CertificateOptions(verify=False, **options).getContext()
        return _UnverifiedClientCreator(context, name)

    def creator_for(server):
        name = spec.server_name or server.host
        creator = creators.get(name)
        if creator is None:
            creator = creators[name] = build(name)
        return creator

    return creator_for
