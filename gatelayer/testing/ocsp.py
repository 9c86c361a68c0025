"""
OCSP for tests: responses built on the spot (good, revoked, expired, signed
by the wrong key, ...), a delegated responder certificate, an in-memory
responder for the master's fetcher, and a real C{openssl ocsp} responder on
loopback for integration tests.
"""

import datetime
import os
import subprocess
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from gatelayer.testing.certs import IssuedCertificate, generate_key, write_pem
from gatelayer.testing.waiting import free_port

__all__ = [
    "ocsp_signer",
    "ocsp_response",
    "unsuccessful_response",
    "FakeResponder",
    "OpenSSLResponder",
    "StaplingClientCreator",
    "stapled_response",
]

_ONE_DAY = datetime.timedelta(days=1)


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def ocsp_signer(ca, name="gatelayer test OCSP responder", eku=True, issuer_key=None):
    """
    A responder certificate issued by C{ca} (a
    L{gatelayer.testing.certs.CertificateAuthority}): with the OCSP signing
    extended key usage unless C{eku} is false. C{issuer_key} signs it
    instead of the CA's key (a forged delegation).
    """
    now = _utcnow()
    key = generate_key("ec")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 365 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    certificate = builder.sign(issuer_key or ca.key, hashes.SHA256())
    return IssuedCertificate(certificate, key, ca.chain)


def ocsp_response(issued, ca, status="good", this_update=None, next_update=None, signer=None,
                  algorithm=None, issuer=None, revoked_at=None, no_next_update=False):
    """
    A DER OCSP response about C{issued} (an
    L{gatelayer.testing.certs.IssuedCertificate}) issued by C{ca}.

    @param status: C{"good"}, C{"revoked"} or C{"unknown"}.
    @param this_update: default: an hour ago.
    @param next_update: default: a day from C{this_update}.
    @param signer: an L{IssuedCertificate} that signs (and is included);
        default: the CA itself.
    @param algorithm: the certificate id hash (default SHA-1).
    @param issuer: the issuer certificate the id is computed with (default
        the CA's): another one makes a response for the wrong issuer.
    @param no_next_update: leave C{nextUpdate} out.
    """
    now = _utcnow()
    this_update = this_update or now - datetime.timedelta(hours=1)
    next_update = None if no_next_update else (next_update or this_update + _ONE_DAY)
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    revoked = None
    reason = None
    if status == "revoked":
        revoked = revoked_at or this_update - _ONE_DAY
        reason = x509.ReasonFlags.key_compromise
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=issued.certificate, issuer=issuer or ca.certificate, algorithm=algorithm or hashes.SHA1(),
        cert_status=cert_status, this_update=this_update, next_update=next_update,
        revocation_time=revoked, revocation_reason=reason)
    if signer is None:
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca.certificate)
        response = builder.sign(ca.key, hashes.SHA256())
    else:
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
        builder = builder.certificates([signer.certificate])
        response = builder.sign(signer.key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def unsuccessful_response(status="try_later"):
    """
    A DER OCSP response with an error status (C{"try_later"},
    C{"internal_error"}, C{"unauthorized"}, ...).
    """
    value = getattr(ocsp.OCSPResponseStatus, status.upper())
    return ocsp.OCSPResponseBuilder.build_unsuccessful(value).public_bytes(serialization.Encoding.DER)


class FakeResponder:
    """
    An in-memory OCSP responder with the signature of the master's C{post}
    function (C{post(url, body)} returning a Deferred of the response
    bytes), for unit tests of the fetcher.

    @ivar requests: C{(url, OCSPRequest)} of every request, in order.
    @ivar answer: a callable C{(url, request)} returning bytes or raising;
        by default C{responses[url]}.
    @ivar hold: when true, requests wait in L{pending} until L{release}.
    """

    def __init__(self, responses=None):
        self.responses = dict(responses or {})
        self.requests = []
        self.pending = []
        self.hold = False
        self.answer = self._default_answer

    def _default_answer(self, url, request):
        answer = self.responses[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def post(self, url, body):
        """
        Answer one request: parse it, record it, and reply (now, or on
        L{release} when holding).
        """
        request = ocsp.load_der_ocsp_request(body)
        self.requests.append((url, request))
        if self.hold:
            d = Deferred()
            self.pending.append((d, url, request))
            return d
        return self._reply(url, request)

    def _reply(self, url, request):
        try:
            return succeed(self.answer(url, request))
        except Exception as e:
            d = Deferred()
            d.errback(e)
            return d

    def release(self):
        """
        Answer every held request.
        """
        pending, self.pending = self.pending, []
        for d, url, request in pending:
            self._reply(url, request).chainDeferred(d)


def _index_date(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%y%m%d%H%M%SZ")


class OpenSSLResponder:
    """
    A real C{openssl ocsp} responder on a loopback port, answering for the
    certificates of one CA from an index it writes.

    C{openssl ocsp} needs a fixed port, so one is picked free and the start
    is retried on another if something took it meanwhile. Starting blocks
    until the port answers, which is acceptable in integration tests only.

    @ivar port: the port (fixed once started).
    @ivar url: C{http://127.0.0.1:PORT/}, for C{ocsp_url} of the leaves
        (see L{start}'s C{issue}).
    """

    def __init__(self, ca, signer, minutes=1):
        """
        @param ca: the L{gatelayer.testing.certs.CertificateAuthority} whose
            leaves it answers for.
        @param signer: the responder certificate (L{ocsp_signer}).
        @param minutes: the validity of its responses (C{-nmin}).
        """
        self.ca = ca
        self.signer = signer
        self.minutes = minutes
        self.directory = tempfile.mkdtemp(prefix="gatelayer-ocsp-")
        self.index = os.path.join(self.directory, "index.txt")
        self.rows = []
        self.process = None
        self.port = free_port()
        write_pem(os.path.join(self.directory, "ca.pem"), ca.cert_pem())
        write_pem(os.path.join(self.directory, "signer.pem"), signer.cert_pem())
        write_pem(os.path.join(self.directory, "signer.key"), signer.key_pem())
        self._write_index()

    @property
    def url(self):
        """
        The responder's URL.
        """
        return f"http://127.0.0.1:{self.port}/"

    def _write_index(self):
        with open(self.index, "w") as f:
            f.writelines(self.rows)
        with open(self.index + ".attr", "w") as f:
            f.write("unique_subject = no\n")

    def add(self, issued, revoked=False):
        """
        List C{issued} in the index, valid or revoked (an hour ago). The
        responder reads the index when it starts.
        """
        certificate = issued.certificate
        expires = _index_date(certificate.not_valid_after_utc)
        subject = "/" + "/".join(
            f"{a.oid._name}={a.value}" for a in certificate.subject)
        if revoked:
            when = _index_date(_utcnow() - datetime.timedelta(hours=1))
            row = f"R\t{expires}\t{when},keyCompromise\t{certificate.serial_number:X}\tunknown\t{subject}\n"
        else:
            row = f"V\t{expires}\t\t{certificate.serial_number:X}\tunknown\t{subject}\n"
        self.rows.append(row)
        self._write_index()

    @property
    def running(self):
        """
        Whether the process is alive.
        """
        return self.process is not None and self.process.poll() is None

    def start(self, issue=None, timeout=10.0):
        """
        Start answering (on the same port after a L{stop}).

        @param issue: for a first start, C{issue(url)} issuing the
            certificates that name the responder's URL, returning
            C{[(issued, revoked)]} for the index: it is called again for a
            new port when the first one was taken meanwhile.
        @return: what C{issue} returned (else L{None}).
        """
        log_path = os.path.join(self.directory, "ocsp.log")
        for attempt in range(3 if issue is not None else 1):
            issued = None
            if issue is not None:
                self.rows = []
                issued = issue(self.url)
                for certificate, revoked in issued:
                    self.add(certificate, revoked)
            with open(log_path, "wb") as log:
                self.process = subprocess.Popen(
                    ["openssl", "ocsp", "-index", self.index, "-port", str(self.port), "-ignore_err",
                     "-rsigner", os.path.join(self.directory, "signer.pem"),
                     "-rkey", os.path.join(self.directory, "signer.key"),
                     "-CA", os.path.join(self.directory, "ca.pem"), "-nmin", str(self.minutes)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            # A probe connection would hold the one-at-a-time responder:
            # its own word that it listens is awaited instead.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running:
                with open(log_path, "rb") as log:
                    if b"waiting for OCSP client connections" in log.read():
                        return issued
                time.sleep(0.05)
            self.stop()
            # The port was taken between picking and binding: try another.
            self.port = free_port()
        raise RuntimeError("openssl ocsp did not start")

    def stop(self):
        """
        Stop the responder (its port then refuses connections).
        """
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        self.process = None


@implementer(IOpenSSLClientConnectionCreator)
class StaplingClientCreator:
    """
    A permissive TLS client creator (any certificate accepted) that asks
    for the OCSP status and keeps what the server stapled.

    @ivar stapled: per handshake, the stapled response (C{b""}: none).
    """

    def __init__(self, server_name=None):
        self.server_name = server_name
        self.stapled = []
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        self.context.set_verify(SSL.VERIFY_NONE, lambda *a: True)
        self.context.set_alpn_protos([b"http/1.1"])
        self.context.set_ocsp_client_callback(self._received)

    def _received(self, connection, response, data):
        self.stapled.append(bytes(response))
        return True

    def clientConnectionForTLS(self, tlsProtocol):
        """
        A client connection sending SNI and the status request.
        """
        connection = SSL.Connection(self.context, None)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name.encode("idna"))
        connection.request_ocsp()
        return connection


@implementer(IHandshakeListener)
class _StatusProbe(Protocol):
    # Closes once the handshake is done; fires when the connection is gone.
    def __init__(self, done):
        self.done = done

    def handshakeCompleted(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(None)


class _ProbeFactory(ClientFactory):
    def __init__(self, done):
        self.done = done

    def buildProtocol(self, addr):
        return _StatusProbe(self.done)

    def clientConnectionFailed(self, connector, reason):
        self.done.errback(reason)


def stapled_response(reactor, address, server_name, timeout=10.0):
    """
    Connect to C{address} (C{(host, port)}) over TLS sending C{server_name}
    and asking for the certificate status; fire with what the server
    stapled (C{b""}: nothing), or fail when no handshake completed.
    """
    creator = StaplingClientCreator(server_name)
    done = Deferred()
    factory = TLSMemoryBIOFactory(creator, True, _ProbeFactory(done), clock=reactor)
    host, port = address
    reactor.connectTCP(host, port, factory, timeout=timeout)

    def answer(_):
        if not creator.stapled:
            raise RuntimeError(f"no TLS handshake completed with {host}:{port}")
        return creator.stapled[0]
    return done.addTimeout(timeout, reactor).addCallback(answer)
