"""
HTTP/2 request bodies streamed through a real gateway: a twistd master with
two workers, a TLS listener, httpx (C{http2=True}) uploading tens of MB, and
an upstream on loopback that reads slowly and hashes what it gets. The
upstream must get every byte, its reading must start long before the
client finished sending, the bytes in flight between the client and the
upstream must stay well under the body's size, and the workers' memory must
not grow with the body.
"""

import hashlib
import json
import os
import socket

import httpx
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, rss_kb

SERVER_NAME = "www.example.com"
BODY_SIZE = 24 * 1024 * 1024
PIECE = 64 * 1024
# The slow upstream's reading speed, bytes per second.
READ_RATE = 8 * 1024 * 1024

CONFIG = """
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
max_body_size = 64MB

[listener:secure]
bind = 127.0.0.1:0
tls = main

[tls:main]
certificates = {pem}
default = {pem}

[upstream:app]
servers = {upstream}
read_timeout = 30s

[route:upload]
path = /
upstream = app
"""


class _SlowSink(Protocol):
    """
    One upstream connection: reads a request (body framed by its length or
    chunked) at most at L{READ_RATE}, hashes the body and answers its size
    and SHA-256 as JSON.
    """

    def __init__(self, server):
        self.server = server
        self.buffer = b""
        self.head = None
        self.remaining = None
        self.chunked = False
        self.digest = hashlib.sha256()
        self.size = 0
        self.done = False

    def dataReceived(self, data):
        self.server.received += len(data)
        self.transport.pauseProducing()
        reactor.callLater(len(data) / READ_RATE, self._resume)
        self.buffer += data
        self._parse()

    def _resume(self):
        if self.transport.connected and not self.done:
            self.transport.resumeProducing()

    def _take(self, data):
        if data:
            if self.server.first_body_at is None:
                self.server.first_body_at = self.server.sent()
            self.digest.update(data)
            self.size += len(data)

    def _parse(self):
        while not self.done:
            if self.head is None:
                head, found, rest = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return
                self.head, self.buffer = head, rest
                lines = head.lower().split(b"\r\n")
                self.chunked = b"transfer-encoding: chunked" in lines
                for line in lines:
                    if line.startswith(b"content-length:"):
                        self.remaining = int(line.split(b":")[1])
            elif self.chunked:
                if self.remaining:
                    piece = self.buffer[:self.remaining]
                    self.buffer = self.buffer[len(piece):]
                    self.remaining -= len(piece)
                    self._take(piece)
                    if self.remaining:
                        return
                    continue
                line, found, rest = self.buffer.partition(b"\r\n")
                if not found:
                    return
                if line == b"":
                    self.buffer = rest
                    continue
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    if not rest.endswith(b"\r\n\r\n") and rest != b"\r\n":
                        return
                    self._answer()
                    return
                self.buffer, self.remaining = rest, size
            else:
                piece = self.buffer[:self.remaining]
                self.buffer = self.buffer[len(piece):]
                self.remaining -= len(piece)
                self._take(piece)
                if not self.remaining:
                    self._answer()
                return

    def _answer(self):
        self.done = True
        body = json.dumps({"size": self.size, "sha256": self.digest.hexdigest(),
                           "chunked": self.chunked}).encode()
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.resumeProducing()


class SlowSinkServer:
    """
    The slow upstream on 127.0.0.1 (port 0), its receive buffer kept small
    so that it holds back what it does not read.

    @ivar received: bytes read from every connection.
    @ivar first_body_at: how many body bytes the client had sent when the
        first body byte reached the upstream, or L{None}.
    @ivar sent: a callable giving the bytes the client has sent so far.
    """

    def __init__(self, sent):
        self.sent = sent
        self.received = 0
        self.first_body_at = None
        factory = Factory.forProtocol(lambda: _SlowSink(self))
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)

    @property
    def address(self):
        """
        C{host:port} for the gateway's C{servers}.
        """
        return "127.0.0.1:%d" % (self.port.getHost().port,)


class HTTP2UploadTests(TestCase):
    """
    A large HTTP/2 upload through a two-worker gateway to a slow upstream.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        pem = os.path.join(self.directory, "site.pem")
        CertificateAuthority().issue([SERVER_NAME]).write(pem)
        self.yielded = 0
        self.upstream = SlowSinkServer(lambda: self.yielded)
        self.addCleanup(self.upstream.port.stopListening)
        self.gate = yield start_gateway(self, reactor, CONFIG.format(
            pem=pem, upstream=self.upstream.address), self.directory)
        self.port = self.gate.address("secure")[1]
        response = yield fetch(reactor, self.gate.admin_url())
        self.pids = [worker["pid"] for worker in json.loads(response.body)["workers"]]

    def _pieces(self, expected):
        """
        The body (a repeatable pattern, C{BODY_SIZE} bytes) as pieces,
        counting what was handed to the client and hashing it in
        C{expected}.
        """
        pattern = bytes(range(256)) * (PIECE // 256)
        for index in range(BODY_SIZE // PIECE):
            piece = pattern[index % 251:] + pattern[:index % 251]
            expected.update(piece)
            self.yielded += len(piece)
            yield piece

    def _upload(self, with_length):
        """
        POST the body with httpx over HTTP/2 (blocking: run in a thread);
        returns C{(http_version, status, document)}.
        """
        expected = hashlib.sha256()
        headers = {"content-length": str(BODY_SIZE)} if with_length else {}
        with httpx.Client(http2=True, verify=False, timeout=60.0) as client:
            response = client.post("https://127.0.0.1:%d/up" % (self.port,), headers=headers,
                                   content=self._pieces(expected))
        document = response.json() if response.status_code == 200 else {}
        document["expected"] = expected.hexdigest()
        return response.http_version, response.status_code, document

    @inlineCallbacks
    def _measure(self, with_length):
        before = {pid: rss_kb(pid) for pid in self.pids}
        upload = deferToThread(self._upload, with_length)
        peak_gap = 0
        peak = dict(before)
        while not upload.called:
            peak_gap = max(peak_gap, self.yielded - self.upstream.received)
            for pid in self.pids:
                peak[pid] = max(peak[pid], rss_kb(pid))
            yield task.deferLater(reactor, 0.05, lambda: None)
        version, status, document = yield upload
        grown = max(peak[pid] - before[pid] for pid in self.pids)
        return version, status, document, peak_gap, grown

    @inlineCallbacks
    def test_streamed_with_length(self):
        """
        A 24 MB body with C{content-length}: every byte reaches the slow
        upstream (same SHA-256, framed by its length); the upstream got its
        first body bytes before the client had sent a quarter of it, the
        bytes between client and upstream never reached half the body, and
        no worker grew by more than 16 MB.
        """
        version, status, document, gap, grown = yield self._measure(True)
        self.assertEqual((version, status), ("HTTP/2", 200))
        self.assertEqual((document["size"], document["sha256"], document["chunked"]),
                         (BODY_SIZE, document["expected"], False))
        self.assertLess(self.upstream.first_body_at, BODY_SIZE // 4)
        self.assertLess(gap, BODY_SIZE // 2, "up to %d bytes were in flight" % (gap,))
        self.assertLess(grown, 16 * 1024, "a worker grew by %d KB" % (grown,))

    @inlineCallbacks
    def test_streamed_chunked(self):
        """
        Without C{content-length} the body goes upstream chunked, complete
        and streamed the same way.
        """
        version, status, document, gap, grown = yield self._measure(False)
        self.assertEqual((version, status), ("HTTP/2", 200))
        self.assertEqual((document["size"], document["sha256"], document["chunked"]),
                         (BODY_SIZE, document["expected"], True))
        self.assertLess(self.upstream.first_body_at, BODY_SIZE // 4)
        self.assertLess(gap, BODY_SIZE // 2, "up to %d bytes were in flight" % (gap,))
        self.assertLess(grown, 16 * 1024, "a worker grew by %d KB" % (grown,))
