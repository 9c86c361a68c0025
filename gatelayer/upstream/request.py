"""
One request to one upstream server, as the pool and a connection see it:
L{UpstreamRequest}, the handle the proxy holds (and the response body's push
producer), and the streaming of a file request body with back-pressure.

Kept apart from L{gatelayer.upstream.client}, whose connection sends these
requests and reads their responses.
"""

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["UpstreamRequest"]

# Bytes bodies up to this size go out in the same write as the head; file
# bodies are read in pieces of this size.
_PIECE = 65536

# A file body writes at most this many pieces in one reactor turn when the
# transport never asks it to pause (then it yields and goes on next turn).
_PIECES_PER_TURN = 16


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
    @ivar trailers: trailer fields sent after the body, which then goes
        chunked; empty for none (the body goes with its Content-Length).
    @ivar connection: the L{HTTP11UpstreamConnection} carrying it, if any.
    @ivar paused: whether the response producer is paused.
    @ivar retried: whether it was already re-sent once.
    @ivar waiter: a delayed call of the pool while the request waits for a
        connection, else L{None}.
    @ivar done: whether the exchange is over (its sink is called no more).
    @ivar connect_time: how long its connection took to become usable, in
        seconds, when one was opened for it; C{0.0} on a reused one.
    """

    __slots__ = ("server", "method", "target", "headers", "body", "sink", "idempotent",
                 "connection", "paused", "retried", "waiter", "done", "_owner", "trailers",
                 "connect_time")

    def __init__(self, owner, server, method, target, headers, body, sink, idempotent,
                 trailers=()):
        self._owner = owner
        self.server = server
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.sink = sink
        self.idempotent = idempotent
        self.trailers = trailers
        self.connection = None
        self.paused = False
        self.retried = False
        self.waiter = None
        self.done = False
        self.connect_time = 0.0

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

    __slots__ = ("_connection", "_file", "_remaining", "_paused", "_call", "_clock", "_tail")

    def __init__(self, connection, body, length, clock, tail=None):
        """
        @param tail: L{None} to write the file as it is (framed by its
            Content-Length); else each piece goes as a chunk, and C{tail}
            (the last chunk and trailer fields) after the last.
        """
        self._tail = tail
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
            if self._tail is None:
                connection.transport.write(data)
            else:
                connection.transport.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
            connection.body_progress()
        if not self._remaining and self._connection is not None:
            connection, self._connection = self._connection, None
            if self._tail is not None:
                connection.transport.write(self._tail)
            connection.body_sent()
