"""
The lean HTTP/1.1 client the proxy terminal forwards requests with.

One L{HTTP11UpstreamConnection} is one keep-alive connection to one server;
it carries one L{UpstreamRequest} at a time (no pipelining). The request head
is built with one join and sent with one write; the response status line and
headers are parsed once; the body is handed to an L{IResponseSink} as it
arrives. There are no Deferreds on this path: a connection reports to its
owner (the pool's per-server slot, an L{IConnectionOwner}) and to the
request's sink by plain method calls.

Framing is strict, because a proxy that guesses where a response ends can be
made to mix two clients' responses: both Content-Length and
Transfer-Encoding, differing Content-Lengths, a non-numeric length, a bad
chunk size or a transfer coding other than C{chunked} fail the exchange as
C{bad_response}, and a connection that failed is never reused. So does a
head the gateway would otherwise relay to clients who read it differently:
a status outside 100-599, a header name that is not a token, a value with
a control character (NUL, a bare CR or LF...), an obs-fold continuation
line, lines ended by bare LFs (see L{gatelayer.upstream.messages}).
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from gatelayer.upstream.interfaces import IConnectionOwner, IResponseSink
from gatelayer.upstream.messages import (
    BODY_METHODS, CHUNK_SIZE, MAX_HEAD_SIZE, BadResponse, body_length, build_request_head,
    parse_head, valid_field,
)

__all__ = [
    "IResponseSink",
    "IConnectionOwner",
    "UpstreamRequest",
    "HTTP11UpstreamConnection",
    "build_request_head",
    "body_length",
    "MAX_HEAD_SIZE",
]

# A chunk-size line longer than this is not a chunk size (16 hex digits
# plus room for extensions).
_MAX_CHUNK_LINE = 4096

# Trailers are read and dropped; this bounds what a server can make us buffer.
_MAX_TRAILERS = 65536

# Bytes bodies up to this size go out in the same write as the head; file
# bodies are read in pieces of this size.
_PIECE = 65536

# A file body writes at most this many pieces in one reactor turn when the
# transport never asks it to pause (then it yields and goes on next turn).
_PIECES_PER_TURN = 16


# Connection states. HEAD..UNTIL_CLOSE mean a request is in flight and say
# which part of the response is expected next.
_CONNECTING = 0
_IDLE = 1
_HEAD = 2
_LENGTH = 3
_CHUNK_SIZE = 4
_CHUNK_DATA = 5
_CHUNK_CRLF = 6
_TRAILER = 7
_UNTIL_CLOSE = 8
_CLOSED = 9



@implementer(IPushProducer)
class UpstreamRequest:
    """
    One request to one server: the handle L{UpstreamPool.request} returns.

    It is the response body's push producer: the proxy registers it on the
    client's transport so that a slow client pauses reading from the
    upstream socket. C{cancel} (or C{stopProducing}) abandons the exchange
    and closes its upstream connection.

    @ivar server: the server (with C{.host}, C{.port}, C{.address}).
    @ivar method: the request method (bytes).
    @ivar target: the request target (bytes), e.g. C{b"/a?b=c"}.
    @ivar headers: the header list to send, C{(name, value)} byte pairs.
    @ivar body: L{None}, bytes, or a seekable file object.
    @ivar sink: the L{IResponseSink}.
    @ivar idempotent: whether a dead pooled connection may be retried.
    @ivar connection: the L{HTTP11UpstreamConnection} carrying it, if any.
    @ivar paused: whether the response producer is paused.
    @ivar retried: whether it was already re-sent once.
    @ivar waiter: a delayed call of the pool while the request waits for a
        connection, else L{None}.
    @ivar done: whether the exchange is over (its sink is called no more).
    """

    __slots__ = ("server", "method", "target", "headers", "body", "sink", "idempotent",
                 "connection", "paused", "retried", "waiter", "done", "_owner")

    def __init__(self, owner, server, method, target, headers, body, sink, idempotent):
        self._owner = owner
        self.server = server
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.sink = sink
        self.idempotent = idempotent
        self.connection = None
        self.paused = False
        self.retried = False
        self.waiter = None
        self.done = False

    def __repr__(self):
        return "<UpstreamRequest %s %s to %s>" % (
            self.method.decode("latin-1"), self.target.decode("latin-1"), self.server.address)

    def cancel(self):
        """
        The client went away: end the exchange without telling the sink,
        and close the upstream connection if the request was sent on one
        (it is never reused). A connection still being opened for it is
        kept for the next request.
        """
        if self.done:
            return
        self.done = True
        connection = self.connection
        self.connection = None
        if connection is not None:
            connection.abandon(self)
        self._owner.finished(self)

    def stopProducing(self):
        """
        The consumer (the client's connection) is gone: same as C{cancel}.
        """
        self.cancel()

    def pauseProducing(self):
        """
        Stop reading the response from the upstream socket until resumed.
        """
        self.paused = True
        if self.connection is not None:
            self.connection.pause()

    def resumeProducing(self):
        """
        Read the response from the upstream socket again.
        """
        self.paused = False
        if self.connection is not None:
            self.connection.resume()

    def fail_connect(self, kind, detail):
        """
        End the exchange with C{sink.connect_failed} (used by the pool and
        the connection).
        """
        if self.done:
            return
        self.done = True
        self.connection = None
        self._owner.finished(self)
        self.sink.connect_failed(kind, detail)

    def fail(self, kind, detail):
        """
        End the exchange with C{sink.response_failed}.
        """
        if self.done:
            return
        self.done = True
        self.connection = None
        self._owner.finished(self)
        self.sink.response_failed(kind, detail)

    def end(self):
        """
        End the exchange with C{sink.response_end}.
        """
        if self.done:
            return
        self.done = True
        self.connection = None
        self._owner.finished(self)
        self.sink.response_end()


@implementer(IPushProducer)
class _FileBody:
    """
    Streams a file request body to the connection's transport with
    back-pressure: it writes until the transport pauses it.
    """

    __slots__ = ("_connection", "_file", "_remaining", "_paused", "_call", "_clock")

    def __init__(self, connection, body, length, clock):
        self._connection = connection
        self._file = body
        self._remaining = length
        self._paused = False
        self._call = None
        self._clock = clock

    def pauseProducing(self):
        """
        The transport's buffer is full: stop writing.
        """
        self._paused = True

    def resumeProducing(self):
        """
        The transport drained: write more.
        """
        self._paused = False
        if self._call is None:
            self._pump()

    def stopProducing(self):
        """
        The connection is going away: write no more.
        """
        self._connection = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _next_turn(self):
        self._call = None
        self._pump()

    def _pump(self):
        written = 0
        while not self._paused and self._remaining:
            connection = self._connection
            if connection is None:
                return
            if written == _PIECES_PER_TURN:
                self._call = self._clock.callLater(0, self._next_turn)
                return
            data = self._file.read(min(self._remaining, _PIECE))
            if not data:
                connection.body_truncated()
                return
            self._remaining -= len(data)
            written += 1
            connection.transport.write(data)
            connection.body_progress()
        if not self._remaining and self._connection is not None:
            connection, self._connection = self._connection, None
            connection.body_sent()


@implementer(IHandshakeListener)
class HTTP11UpstreamConnection(Protocol):
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
        TCP is up: ready at once, or after the TLS handshake.
        """
        if not self._tls:
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
        if body is None:
            head = build_request_head(
                method, request.target, request.headers,
                0 if method in BODY_METHODS else None, self._host, not self._keepalive)
            self.transport.write(head)
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

    # -- receiving ---------------------------------------------------------

    def dataReceived(self, data):
        """
        Parse response bytes; hand the body to the sink as it comes.
        """
        request = self._request
        if request is None:
            if self._state == _IDLE:
                # Nothing was asked: whatever this is, the connection's
                # framing can no longer be trusted.
                self._shutdown(True)
            return
        self._got_bytes = True
        state = self._state
        if state != _HEAD:
            # The body must keep coming: read_timeout counts between reads.
            timer = self._timer
            if timer is not None:
                timer.reset(self._read_timeout)
            if state == _LENGTH and not self._buffer:
                # The common case of a large body: no copies.
                remaining = self._remaining
                if len(data) < remaining:
                    self._remaining = remaining - len(data)
                    request.sink.response_body(data)
                    return
            elif state == _UNTIL_CLOSE:
                request.sink.response_body(data)
                return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        self._process(request, data)

    def _process(self, request, data):
        sink = request.sink
        while True:
            state = self._state
            if state == _HEAD:
                # Search only what was not searched yet (less the three
                # bytes an end may straddle): a head trickled byte by byte
                # costs linear time.
                end = data.find(b"\r\n\r\n", self._scanned)
                if end < 0:
                    if len(data) > MAX_HEAD_SIZE:
                        self._fail("bad_response", "response head larger than %d bytes"
                                   % (MAX_HEAD_SIZE,))
                    elif (data.find(b"\n\n", self._scanned) >= 0
                          or data.find(b"\n\r\n", self._scanned) >= 0):
                        # A head ended with a bare LF: never trusted, and
                        # failed now rather than after the read timeout.
                        self._fail("bad_response", "response head lines not ended by CRLF")
                    else:
                        self._buffer = data
                        self._scanned = max(0, len(data) - 3)
                    return
                if end > MAX_HEAD_SIZE:
                    self._fail("bad_response", "response head larger than %d bytes"
                               % (MAX_HEAD_SIZE,))
                    return
                head = data[:end]
                data = data[end + 4:]
                self._scanned = 0
                try:
                    (status, reason, headers, http11, length, chunked, close,
                     keep_alive) = parse_head(head)
                except BadResponse as e:
                    self._fail("bad_response", str(e))
                    return
                if status < 200:
                    if status == 101:
                        self._fail("bad_response", "unexpected 101 Switching Protocols")
                        return
                    # 100 Continue, 103 Early Hints...: interim, the final
                    # response follows.
                    continue
                if close or not (http11 or keep_alive):
                    self._reusable = False
                if self._producer is not None:
                    # Answered before the whole body was sent (an early
                    # error): stop sending, and do not reuse the connection.
                    self._stop_body()
                    self._reusable = False
                if self._no_body or status == 204 or status == 304:
                    state = _IDLE
                elif chunked:
                    state = _CHUNK_SIZE
                elif length is not None:
                    if length:
                        state = _LENGTH
                        self._remaining = length
                    else:
                        state = _IDLE
                else:
                    state = _UNTIL_CLOSE
                    self._reusable = False
                self._state = state
                if self._timer is not None:
                    self._timer.reset(self._read_timeout)
                sink.response_head(status, reason, headers)
                if self._request is not request:
                    return
                if state == _IDLE:
                    self._finish(data)
                    return
            elif state == _LENGTH:
                if not data:
                    return
                remaining = self._remaining
                if len(data) < remaining:
                    self._remaining = remaining - len(data)
                    sink.response_body(data)
                    return
                if len(data) == remaining:
                    piece, data = data, b""
                else:
                    piece, data = data[:remaining], data[remaining:]
                self._remaining = 0
                sink.response_body(piece)
                if self._request is request:
                    self._finish(data)
                return
            elif state == _CHUNK_SIZE:
                end = data.find(b"\r\n")
                if end < 0 or end > _MAX_CHUNK_LINE:
                    if end >= 0 or len(data) > _MAX_CHUNK_LINE:
                        self._fail("bad_response", "chunk size line too long")
                    elif b"\n" in data:
                        self._fail("bad_response", "chunk size line not ended by CRLF")
                    else:
                        self._buffer = data
                    return
                match = CHUNK_SIZE.fullmatch(data, 0, end)
                if match is None:
                    self._fail("bad_response", "invalid chunk size line %r" % (data[:min(end, 40)],))
                    return
                size = int(match.group(1), 16)
                data = data[end + 2:]
                if size:
                    self._remaining = size
                    self._state = _CHUNK_DATA
                else:
                    self._remaining = 0
                    self._state = _TRAILER
            elif state == _CHUNK_DATA:
                if not data:
                    return
                remaining = self._remaining
                if len(data) <= remaining:
                    self._remaining = remaining - len(data)
                    if self._remaining == 0:
                        self._state = _CHUNK_CRLF
                    sink.response_body(data)
                    return
                piece, data = data[:remaining], data[remaining:]
                self._remaining = 0
                self._state = _CHUNK_CRLF
                sink.response_body(piece)
                if self._request is not request:
                    return
            elif state == _CHUNK_CRLF:
                if len(data) < 2:
                    self._buffer = data
                    return
                if data[:2] != b"\r\n":
                    self._fail("bad_response", "chunk data longer than its size")
                    return
                data = data[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = data.find(b"\r\n")
                if end < 0:
                    if self._remaining + len(data) > _MAX_TRAILERS:
                        self._fail("bad_response", "trailers too large")
                    elif b"\n" in data:
                        self._fail("bad_response", "trailer line not ended by CRLF")
                    else:
                        self._buffer = data
                    return
                line = data[:end]
                data = data[end + 2:]
                if not line:
                    self._finish(data)
                    return
                self._remaining += end + 2
                if self._remaining > _MAX_TRAILERS:
                    self._fail("bad_response", "trailers too large")
                    return
                if not valid_field(line):
                    self._fail("bad_response", "invalid trailer line %r" % (line[:80],))
                    return
            elif state == _UNTIL_CLOSE:
                if data:
                    sink.response_body(data)
                return
            else:
                return
