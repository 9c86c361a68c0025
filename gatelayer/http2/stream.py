"""
One HTTP/2 stream as the gateway sees it: L{H2Request}, the request
contract (L{gatelayer.http.contract.IGatewayRequest}) over a stream of an
L{gatelayer.http2.connection.H2Channel}, so routing, filters, terminals,
the access log and metrics treat it like an HTTP/1.1 request.

The response goes out through the connection's flow control: body bytes
the client's window does not admit yet wait in the stream, and the
response's producer (the upstream relay) is paused while they do.
"""

from io import BytesIO
from tempfile import TemporaryFile

from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.http.contract import IGatewayRequest
from gatelayer.http.request_base import ServerRequest
from gatelayer.http.date import is_imf_fixdate
from gatelayer.http.errors import valid_status

__all__ = ["H2Request", "MEMORY_BODY_LIMIT", "PAUSE_BACKLOG"]

#: Request bodies above this size are kept in a temporary file (as on the
#: HTTP/1.1 channel).
MEMORY_BODY_LIMIT = 100000
#: Response bytes waiting for the client's window above which the
#: response's producer is paused.
PAUSE_BACKLOG = 65536

# RFC 9113 8.2.2: connection-specific fields never go out on HTTP/2.
_CONNECTION_SPECIFIC = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te",
])
_NO_BODY_CODES = frozenset([204, 304])


class StreamTransport:
    """
    What a stream's request offers as C{channel.transport}: the
    connection's addresses and TLS handle, and the two ways a terminal ends
    a response early, which on HTTP/2 end the stream only (RST_STREAM), not
    the connection its neighbours share.
    """

    __slots__ = ("_request",)

    def __init__(self, request):
        self._request = request

    def getHost(self):
        """
        The gateway's address.
        """
        return self._request._connection.transport.getHost()

    def getPeer(self):
        """
        The client's address.
        """
        return self._request._connection.transport.getPeer()

    def getHandle(self):
        """
        The connection's TLS handle (for the server name and version).
        """
        return self._request._connection.transport.getHandle()

    def loseConnection(self):
        """
        End the stream: a response cut short is reset, not completed.
        """
        self._request.reset()

    def abortConnection(self):
        """
        Reset the stream at once.
        """
        self._request.reset()


class StreamChannel:
    """
    The C{channel} of an L{H2Request}: the listener's factory and the
    stream's L{StreamTransport}.
    """

    __slots__ = ("factory", "transport")

    def __init__(self, factory, transport):
        self.factory = factory
        self.transport = transport


@implementer(IGatewayRequest)
class H2Request(ServerRequest):
    """
    The request of one HTTP/2 stream.

    @ivar stream_id: the stream's id.
    @ivar clientproto: always C{b"HTTP/2"}.
    @ivar uri: the C{:path} pseudo-header.
    @ivar requestHeaders: the regular fields, with C{Host} from
        C{:authority} when the client sent no Host.
    @ivar window_blocked: whether body bytes wait for the client's window.
    """

    clientproto = b"HTTP/2"
    code = 200
    sentLength = 0
    startedWriting = False
    finished = False
    producer = None
    routing = None
    content = None
    trailers = ()
    _received = 0
    _completed = False
    _disconnected = False
    _on_lost = None
    _notify = None
    _no_body = False
    _send_trailers = ()
    _ending = False
    _producer_paused = False
    ended = False
    dispatched = False
    body_timer = None
    #: The L{gatelayer.http2.upload.StreamedBody} when the body is streamed
    #: upstream as it arrives, else L{None} (kept whole first).
    upload = None

    def __init__(self, connection, stream_id, method, uri, headers):
        self._connection = connection
        self.stream_id = stream_id
        self.transport = connection.transport
        self.channel = StreamChannel(connection.factory, StreamTransport(self))
        self.client = connection.peer
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition(b"?")
        self.requestHeaders = headers
        self.responseHeaders = Headers()
        self.content = BytesIO()
        self._pending = []
        self._pending_size = 0

    def __repr__(self):
        return "<H2Request %d %s %s>" % (
            self.stream_id, self.method.decode("latin-1"), self.uri.decode("latin-1"))

    # -- the request side --------------------------------------------------

    def count_body(self, size):
        """
        Count C{size} more body bytes received (of a streamed body, which
        is not kept); returns the total.
        """
        self._received += size
        return self._received

    def store(self, data):
        """
        Keep request body bytes; returns whether they are within the
        route's body limit (the channel refuses the stream otherwise).
        """
        received = self._received = self._received + len(data)
        limit = self.routing.body_limit if self.routing is not None else 0
        if received > limit:
            return False
        content = self.content
        if received > MEMORY_BODY_LIMIT and isinstance(content, BytesIO):
            spill = TemporaryFile()
            spill.write(content.getvalue())
            self.content = content = spill
        content.write(data)
        return True

    # -- the response side -------------------------------------------------

    def setResponseCode(self, code, message=None):
        """
        Set the status (HTTP/2 has no reason phrase); a code outside
        100..599 is answered as 502.
        """
        if not isinstance(code, int):
            raise TypeError("HTTP response code must be int, not %r" % (code,))
        self.code = code if 100 <= code <= 599 else valid_status(code)

    def write(self, data):
        """
        Send body bytes (the head with the first call), as far as the
        client's flow-control window admits; the rest waits in the stream
        and pauses the producer.
        """
        if self.finished:
            raise RuntimeError("write called on a finished request")
        if self._disconnected:
            return
        if not self.startedWriting:
            self._send_head(False)
        if not data or self._no_body:
            return
        self.sentLength += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        self._connection.send_pending(self)

    def finish(self):
        """
        End the response: the END_STREAM flag (on the last data, or on the
        trailers) once every pending byte is out.
        """
        if self.finished or self._disconnected:
            self.finished = True
            return
        self.finished = True
        self._ending = True
        if not self.startedWriting and self._send_head(not self._send_trailers):
            return
        self._connection.send_pending(self)

    def set_trailers(self, fields):
        """
        Send the trailer fields C{fields} after the body (HTTP/2 carries
        them on any response).
        """
        self._send_trailers = tuple((name.lower(), value) for name, value in fields)

    def registerProducer(self, producer, streaming):
        """
        Register the push producer of the response body; it is paused
        while the stream's bytes wait for the client's window or the
        connection's transport is full.
        """
        if not streaming:
            raise ValueError("only push producers (streaming=True) are supported")
        if self.producer is not None:
            raise RuntimeError("a producer is already registered for %r" % (self,))
        self.producer = producer
        self.update_producer()

    def unregisterProducer(self):
        """
        Forget the registered producer.
        """
        self.producer = None
        self._producer_paused = False

    def switch_protocols(self, relay):
        """
        Not possible on HTTP/2 (upgrades are refused before they get here):
        the stream is reset.
        """
        relay.close()
        self.reset()

    # -- what the connection does with the stream --------------------------

    def update_producer(self):
        """
        Pause or resume the producer after the backlog or the transport's
        state changed.
        """
        producer = self.producer
        if producer is None:
            return
        want = self._pending_size > PAUSE_BACKLOG or self._connection.write_paused
        if want != self._producer_paused:
            self._producer_paused = want
            if want:
                producer.pauseProducing()
            else:
                producer.resumeProducing()

    def take(self, allowed):
        """
        Up to C{allowed} bytes of the pending body, removed from the
        backlog (the connection sends them).
        """
        taken = []
        size = 0
        pending = self._pending
        while pending and size < allowed:
            piece = pending[0]
            room = allowed - size
            if len(piece) <= room:
                taken.append(pending.pop(0))
                size += len(piece)
            else:
                taken.append(piece[:room])
                pending[0] = piece[room:]
                size += room
        self._pending_size -= size
        return b"".join(taken)

    @property
    def pending_size(self):
        """
        Response body bytes waiting for the client's window.
        """
        return self._pending_size

    @property
    def ending(self):
        """
        Whether C{finish} was called and the stream ends once the backlog
        is out.
        """
        return self._ending

    def end_trailers(self):
        """
        The trailer fields to close the stream with, or C{()}.
        """
        return self._send_trailers

    def reset(self):
        """
        End the stream early (RST_STREAM): a response that cannot be
        completed.
        """
        if self._disconnected:
            return
        self._connection.reset_stream(self)

    def _send_head(self, end_stream):
        code = self.code
        if not 100 <= code <= 599:
            code = self.code = valid_status(code)
        connection = self._connection
        head = [(b":status", b"%d" % (code,))]
        raw = self.responseHeaders.getAllRawHeaders()
        has_date = False
        extra = connection.extra_header_names
        for name, values in raw:
            name = name.lower()
            if name in _CONNECTION_SPECIFIC or name in extra:
                continue
            if name == b"date":
                if len(values) != 1 or not is_imf_fixdate(values[0]):
                    continue
                has_date = True
            if name == b"content-length" and (code < 200 or code == 204):
                continue
            for value in values:
                head.append((name, value))
        if not has_date:
            head.append((b"date", connection.factory.date()))
        head.extend(connection.extra_headers)
        if self.method == b"HEAD" or code in _NO_BODY_CODES or code < 200:
            self._no_body = True
        self.startedWriting = True
        end_stream = end_stream or (self._no_body and self.finished and not self._send_trailers)
        connection.send_head(self, head, end_stream)
        return end_stream

    def cancel_body_timer(self):
        """
        Stop waiting for the request body (it is in, or the stream is over).
        """
        timer, self.body_timer = self.body_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _completed_response(self):
        """
        The last frame of the response went out (or the response had no
        body): the gateway's bookkeeping.
        """
        self.cancel_body_timer()
        self._on_lost = None
        self._done()
        notify, self._notify = self._notify, None
        if notify:
            for d in notify:
                d.callback(None)

    def completed(self):
        """
        Called by the connection once END_STREAM went out.
        """
        self.ended = True
        self._completed_response()

    def lost(self):
        """
        The stream was reset (either side) or the connection closed before
        the response finished: stop the producer, tell the gateway.
        """
        if self._disconnected or self._completed:
            return
        self._disconnected = True
        self.cancel_body_timer()
        if self.upload is not None:
            # What waits unacknowledged is given back to the connection.
            self.upload.fail()
        self._pending = []
        self._pending_size = 0
        self._end_lost()
