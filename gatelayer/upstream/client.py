"""
The lean HTTP/1.1 client the proxy terminal forwards requests with.

One L{HTTP11UpstreamConnection} is one keep-alive connection to one server;
it carries one L{UpstreamRequest} at a time (no pipelining). The request head
is built with one join and sent with one write; the response status line and
headers are parsed once; the body is handed to an L{IResponseSink} as it
arrives. There are no Deferreds on this path: a connection reports to its
owner (the pool's per-server slot, an L{IConnectionOwner}) and to the
request's sink by plain method calls.

The request handle is L{gatelayer.upstream.request.UpstreamRequest}; reading
the response, with its strict framing, is
L{gatelayer.upstream.response.ResponseReader}.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from gatelayer.http1 import BODY_METHODS, body_length, build_request_head, last_chunk
from gatelayer.upstream.interfaces import IConnectionOwner, IResponseSink, IStreamedBody
from gatelayer.upstream.request import _PIECE, UpstreamRequest, _FileBody
from gatelayer.upstream.response import (
    _CLOSED, _CONNECTING, _HEAD, _IDLE, _UNTIL_CLOSE, MAX_HEAD_SIZE, ResponseReader,
)

#: The most bytes one read of a plain upstream connection takes (Twisted
#: reads 64 KB): a large body comes in a quarter of the reads, each a pass
#: through the Python path from the socket to the client's transport.
READ_SIZE = 256 * 1024

__all__ = [
    "READ_SIZE",
    "IResponseSink",
    "IConnectionOwner",
    "UpstreamRequest",
    "HTTP11UpstreamConnection",
    "build_request_head",
    "body_length",
    "MAX_HEAD_SIZE",
]


@implementer(IHandshakeListener)
class HTTP11UpstreamConnection(ResponseReader, Protocol):
    """
    One keep-alive HTTP/1.1 connection to one server, carrying one request
    at a time.

    The pool creates it before connecting (it is its factory's only
    protocol), calls L{begin} with the first request, and L{send} for each
    later one. A single delayed call per connection serves as connect
    timeout, response timeout and idle timeout, depending on the state.

    @ivar served: how many requests were sent on it.
    @ivar connector: the L{IConnector} of its connection attempt.
    """

    def __init__(self, owner, clock, read_timeout, host=None, keepalive=True, tls=False):
        """
        @param owner: the L{IConnectionOwner} (the pool's slot for the server).
        @param clock: an L{IReactorTime} for the timeouts.
        @param read_timeout: seconds to wait for the response head once the
            request is written, and for each read of the body.
        @param host: bytes for a Host header when a request has none.
        @param keepalive: L{False} to ask the server to close after each
            response (C{Connection: close}).
        @param tls: whether the transport is TLS (then requests wait for the
            handshake).
        """
        self._owner = owner
        self._clock = clock
        self._read_timeout = read_timeout
        self._host = host
        self._keepalive = keepalive
        self._tls = tls
        self._state = _CONNECTING
        self._request = None
        self._timer = None
        self._buffer = b""
        self._scanned = 0
        self._remaining = 0
        self._reusable = False
        self._got_bytes = False
        self._no_body = False
        self._paused = False
        self._producer = None
        self._gone = False
        self.served = 0
        self.connector = None

    def __repr__(self):
        return "<HTTP11UpstreamConnection state=%d served=%d>" % (self._state, self.served)

    # -- timer -------------------------------------------------------------

    def _arm(self, seconds):
        timer = self._timer
        if timer is not None and timer.active():
            # Moving a timer (later: no heap work; sooner: one sift) is
            # cheaper than cancelling it and allocating another.
            timer.reset(seconds)
            return
        self._timer = self._clock.callLater(seconds, self._expired)

    def _disarm(self):
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _expired(self):
        self._timer = None
        state = self._state
        if state == _CONNECTING:
            self._connect_timed_out()
        elif state == _IDLE:
            self.close()
        elif state != _CLOSED and not self._paused:
            # While paused the wait is the client's, not the server's; the
            # timer is re-armed on resume.
            self._fail("timeout", "no response within %gs" % (self._read_timeout,))

    # -- connecting --------------------------------------------------------

    def begin(self, request, connect_timeout):
        """
        A connection attempt starts for C{request} (L{None} for none):
        it is sent once connected, or fails with C{connect_failed} after
        C{connect_timeout} seconds (covering the TLS handshake too).
        """
        self._request = request
        if request is not None:
            request.connection = self
        self._begun = self._clock.seconds()
        self._arm(connect_timeout)

    def _connect_timed_out(self):
        self._state = _CLOSED
        request, self._request = self._request, None
        self._owner.lost(self)
        if self.transport is not None:
            # Connected, but the TLS handshake did not finish.
            self.transport.abortConnection()
        else:
            if self.connector is not None:
                try:
                    self.connector.stopConnecting()
                except Exception:
                    pass
            self._closed()
        if request is not None:
            request.fail_connect("timeout", "no connection within the connect timeout")

    def connect_error(self, reason):
        """
        The connection attempt failed (the factory's C{clientConnectionFailed}).
        """
        if self._state == _CONNECTING:
            self._state = _CLOSED
            self._disarm()
            request, self._request = self._request, None
            self._owner.lost(self)
            self._closed()
            if request is not None:
                kind = "timeout" if reason.check(ConnectTimeoutError) else "connect_error"
                request.fail_connect(kind, reason.getErrorMessage())
        else:
            self._closed()

    def connectionMade(self):
        """
        TCP is up: ready at once, or after the TLS handshake. A plain TCP
        connection reads up to L{READ_SIZE} bytes at once.
        """
        if not self._tls:
            if getattr(self.transport, "bufferSize", None) is not None:
                self.transport.bufferSize = READ_SIZE
            self._ready()

    def handshakeCompleted(self):
        """
        The TLS handshake finished: the connection is ready.
        """
        self._ready()

    def _ready(self):
        if self._state != _CONNECTING:
            return
        self._state = _IDLE
        request, self._request = self._request, None
        if request is None or request.done:
            self._disarm()
            self._owner.release(self)
        else:
            request.connect_time = self._clock.seconds() - self._begun
            self.send(request)

    def _closed(self):
        if not self._gone:
            self._gone = True
            self._owner.closed(self)

    # -- sending -----------------------------------------------------------

    def send(self, request):
        """
        Send C{request} on this idle connection.
        """
        self._request = request
        request.connection = self
        self.served += 1
        self._state = _HEAD
        self._scanned = 0
        self._got_bytes = False
        self._reusable = self._keepalive
        method = request.method
        self._no_body = method == b"HEAD"
        body = request.body
        if body is None and not request.trailers:
            self.transport.write(build_request_head(
                method, request.target, request.headers,
                0 if method in BODY_METHODS else None, self._host, not self._keepalive))
        # providedBy of None or bytes costs zope an AttributeError raised
        # and cleared inside: asked of files only.
        elif body is not None and not isinstance(body, bytes) and IStreamedBody.providedBy(body):
            self._send_streamed(request, body)
        elif request.trailers:
            self._send_chunked(request, body)
        elif isinstance(body, bytes):
            size = len(body)
            if size <= _PIECE:
                self.transport.write(build_request_head(
                    method, request.target, request.headers, size, self._host,
                    not self._keepalive, body))
            else:
                self.transport.write(build_request_head(
                    method, request.target, request.headers, size, self._host,
                    not self._keepalive))
                self.transport.write(body)
        else:
            length = body_length(body)
            self.transport.write(build_request_head(
                method, request.target, request.headers, length, self._host,
                not self._keepalive))
            if length:
                self._producer = _FileBody(self, body, length, self._clock)
                self.transport.registerProducer(self._producer, True)
                self._producer.resumeProducing()
        if request.paused:
            self.pause()
        self._arm(self._read_timeout)

    def _send_chunked(self, request, body):
        """
        Send C{request}'s body chunked, its trailer fields after the last
        chunk (a file body streams as chunks with back-pressure).
        """
        tail = last_chunk(request.trailers)
        head = build_request_head(request.method, request.target, request.headers, None,
                                  self._host, not self._keepalive, chunked=True)
        if body is None or isinstance(body, bytes):
            parts = [head]
            if body:
                parts += (b"%x\r\n" % (len(body),), body, b"\r\n")
            parts.append(tail)
            self.transport.writeSequence(parts)
            return
        length = body_length(body)
        self.transport.write(head)
        if not length:
            self.transport.write(tail)
            return
        self._producer = _FileBody(self, body, length, self._clock, tail)
        self.transport.registerProducer(self._producer, True)
        self._producer.resumeProducing()

    def _send_streamed(self, request, body):
        """
        Send C{request} whose body arrives while it is sent (an HTTP/2
        stream's, L{gatelayer.http2.upload.StreamedBody}): with its length,
        or chunked; the body writes on the transport as its producer.
        """
        self.transport.write(build_request_head(
            request.method, request.target, request.headers,
            None if body.chunked else body.length, self._host, not self._keepalive,
            chunked=body.chunked))
        self._producer = body
        self.transport.registerProducer(body, True)
        body.stream_to(self)

    def body_progress(self):
        """
        A piece of a file body was written: the server is reading, so the
        response timeout counts from now.
        """
        if self._timer is not None:
            self._timer.reset(self._read_timeout)

    def body_sent(self):
        """
        The file body is completely written.
        """
        if self._producer is not None:
            self._producer = None
            self.transport.unregisterProducer()

    def body_truncated(self):
        """
        The file body ended before its length: the request cannot be
        completed on this connection.
        """
        self._fail("connection_lost", "request body shorter than its length")

    def _stop_body(self):
        producer = self._producer
        if producer is not None:
            self._producer = None
            producer.stopProducing()
            self.transport.unregisterProducer()

    # -- flow control ------------------------------------------------------

    def pause(self):
        """
        Stop reading from the server (the client is slow).
        """
        if not self._paused and self._state not in (_CONNECTING, _CLOSED):
            self._paused = True
            self.transport.pauseProducing()

    def resume(self):
        """
        Read from the server again.
        """
        if self._paused:
            self._paused = False
            if self._state != _CLOSED:
                self.transport.resumeProducing()
                if self._timer is None and self._request is not None:
                    self._arm(self._read_timeout)

    # -- ending ------------------------------------------------------------

    def abandon(self, request):
        """
        C{request} was cancelled: forget it; if it was sent, close the
        connection (its response would arrive on a reused one).
        """
        if self._request is not request:
            return
        self._request = None
        if self._state != _CONNECTING:
            self._shutdown(True)

    def close(self):
        """
        Close this connection gracefully (it is no longer usable).
        """
        self._shutdown(False)

    def _shutdown(self, abort):
        if self._state == _CLOSED:
            return
        connecting = self._state == _CONNECTING
        self._state = _CLOSED
        self._disarm()
        self._stop_body()
        self._owner.lost(self)
        if self.transport is None:
            if connecting and self.connector is not None:
                try:
                    self.connector.stopConnecting()
                except Exception:
                    pass
            self._closed()
        elif abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _switching(self, request, headers, data):
        """
        A C{101 Switching Protocols} came: no request of the pool asked to
        upgrade, so it is a broken response (an upgrade uses a connection
        of its own, L{gatelayer.upstream.upgrade.UpgradeConnection}).
        """
        self._fail("bad_response", "unexpected 101 Switching Protocols")

    def _fail(self, kind, detail):
        request, self._request = self._request, None
        self._shutdown(True)
        if request is not None:
            request.fail(kind, detail)

    def _finish(self, leftover):
        request, self._request = self._request, None
        request.connection = None
        if leftover or self._producer is not None:
            # Bytes beyond the response, or an upload cut short: the stream
            # is out of step, drop it at once.
            self._shutdown(True)
        elif not self._reusable:
            self._shutdown(False)
        else:
            self._state = _IDLE
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self._owner.release(self)
        request.end()

    def park(self, keepalive_timeout):
        """
        The connection waits idle in the pool: close it after
        C{keepalive_timeout} seconds unused.
        """
        self._arm(keepalive_timeout)

    def connectionLost(self, reason):
        """
        The transport is gone: end whatever was in progress. A reused
        connection found dead before any response byte re-sends an
        idempotent request once on a fresh connection.
        """
        state = self._state
        self._state = _CLOSED
        self._disarm()
        if self._producer is not None:
            self._producer.stopProducing()
            self._producer = None
        request, self._request = self._request, None
        if state == _CLOSED:
            pass
        elif state == _CONNECTING:
            self._owner.lost(self)
            if request is not None:
                request.fail_connect("connect_error", reason.getErrorMessage())
        elif request is None or request.done:
            self._owner.lost(self)
        elif state == _UNTIL_CLOSE:
            self._owner.lost(self)
            if reason.check(ConnectionDone):
                request.end()
            else:
                request.fail("connection_lost", reason.getErrorMessage())
        elif (not self._got_bytes and self.served > 1 and request.idempotent
              and not request.retried):
            request.retried = True
            request.connection = None
            self._owner.retry(self, request)
        else:
            self._owner.lost(self)
            request.fail("connection_lost", "closed by the server %s" % (
                "before the response" if state == _HEAD else "during the response body"))
        self._closed()
