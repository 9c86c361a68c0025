"""
The request object of the lean server channel (L{gatelayer.http.lean}): the
part of twisted.web's L{twisted.web.http.Request} the gateway uses, with the
response head built in one join and sent with the first body bytes in one
write.
"""

from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.http.contract import IGatewayRequest
from gatelayer.http.request_base import ServerRequest
from gatelayer.http.date import is_imf_fixdate
from gatelayer.http.errors import reason_phrase, valid_status
from gatelayer.http1 import connection_flags, last_chunk, status_line

__all__ = ["LeanRequest"]

# Bodies up to this size are copied into the head's write; larger ones are
# handed to the transport as a second buffer (no copy).
_JOIN_LIMIT = 16384
_NO_BODY_CODES = frozenset([204, 304])
_STATUS_LINES = {}
_new = object.__new__


def _raw_headers(headers):
    """
    The name -> values mapping of C{headers}, names in twisted's canonical
    case (C{b"Content-Length"}).
    """
    try:
        return headers._rawHeaders
    except AttributeError:  # pragma: no cover - other Twisted versions
        return {_canonical(name): list(values) for name, values in headers.getAllRawHeaders()}


def _canonical(name):  # pragma: no cover - other Twisted versions
    return b"-".join(word.capitalize() for word in name.split(b"-"))


def _status_line(code):
    """
    The status line for C{code} (a valid status), cached: at most 500
    entries.
    """
    line = _STATUS_LINES.get(code)
    if line is None:
        line = _STATUS_LINES[code] = status_line(code, reason_phrase(code))
    return line


@implementer(IGatewayRequest)
class LeanRequest(ServerRequest):
    """
    One request of a L{gatelayer.http.lean.LeanChannel}: the gateway's
    request contract (L{IGatewayRequest}, which
    L{gatelayer.http.request.GatewayRequest} provides over twisted.web's
    request), in the names of L{twisted.web.http.Request}: request line
    fields, L{Headers} both ways, C{setResponseCode}, C{write}, C{finish},
    push producers, C{on_lost}, C{disconnected} and C{routing}.

    The response is framed by Content-Length when the response headers
    carry one, else chunked (HTTP/1.1) or delimited by closing the
    connection (HTTP/1.0); HEAD, 1xx, 204 and 304 responses carry no body.

    @ivar method: the method (bytes).
    @ivar uri: the request target as sent.
    @ivar path: the target up to C{?}.
    @ivar query: the query string without C{?}.
    @ivar clientproto: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar requestHeaders: the request's L{Headers}.
    @ivar responseHeaders: the response's L{Headers}.
    @ivar content: the body, a L{io.BytesIO} or (over 100 KB) a temporary file.
    @ivar client: the peer's address.
    @ivar code: the response status; C{code_message} its reason phrase.
    @ivar sentLength: body bytes written.
    @ivar finished: whether C{finish} was called.
    @ivar producer: the registered push producer, or L{None}.
    @ivar routing: the L{gatelayer.http.contract.RequestRouting} the
        gateway made when the head arrived (L{None} until then).
    @ivar trailers: the trailer fields of a chunked request body (set by
        the channel), C{(name, value)} pairs; empty for none.
    """

    code = 200
    code_message = b"OK"
    sentLength = 0
    startedWriting = False
    finished = False
    _disconnected = False
    # An attribute, not the base's property: read several times per
    # request (set with _disconnected, in lost()).
    disconnected = False
    producer = None
    routing = None
    content = None
    _received = 0
    _completed = False
    _on_lost = None
    _chunked = False
    _no_body = False
    _notify = None
    trailers = ()
    _send_trailers = ()
    relay = None

    def __init__(self, channel, head):
        self.channel = channel
        self.transport = channel.transport
        self.client = channel.peer
        self.method, self.uri, self.clientproto, self.requestHeaders, _, _, self.keep_alive, _ = head
        self.path, _, self.query = self.uri.partition(b"?")
        # A Headers without its __init__ (a Python call per request).
        headers = self.responseHeaders = _new(Headers)
        headers._rawHeaders = {}
        # The defaults read during every request, as instance values: a
        # class attribute read through an instance costs more than the
        # store (they are read once or more each).
        self.finished = self._disconnected = self.disconnected = self.startedWriting = False
        self._chunked = self._no_body = self._completed = False
        self.producer = self._notify = None
        self._received = 0

    def __repr__(self):
        return "<LeanRequest %s %s %s>" % (
            self.method.decode("latin-1"), self.uri.decode("latin-1"),
            self.clientproto.decode("latin-1"))

    # -- the response side -------------------------------------------------

    def setResponseCode(self, code, message=None):
        """
        Set the response status. The status line always carries the
        gateway's own reason phrase for C{code}
        (L{gatelayer.http.errors.reason_phrase}): C{message} is ignored, so
        no upstream or client bytes reach the status line. A code outside
        100..599 is answered as 502.
        """
        if not isinstance(code, int):
            raise TypeError("HTTP response code must be int, not %r" % (code,))
        if not 100 <= code <= 599:
            code = valid_status(code)
        self.code = code
        self.code_message = reason_phrase(code)

    def write(self, data):
        """
        Send body bytes; the first call sends the status line and headers
        too, in the same write.
        """
        if self.finished:
            raise RuntimeError("write called on a finished request")
        if self._disconnected:
            return
        if not self.startedWriting:
            self._write_head(data, False)
            return
        if not data or self._no_body:
            return
        self.sentLength += len(data)
        if self._chunked:
            self.transport.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
        else:
            self.transport.write(data)

    def finish(self):
        """
        End the response: the last chunk if chunked, then the gateway's
        bookkeeping, then the channel goes on with the next request.
        """
        if self.finished or self._disconnected:
            self.finished = True
            return
        if not self.startedWriting:
            # An empty body with trailers is still chunked, to carry them.
            self._write_head(b"", not self._send_trailers)
        if self._chunked:
            self.transport.write(last_chunk(self._send_trailers))
        self.finished = True
        self._on_lost = None
        # _done(), inline: once per request.
        if not self._completed:
            self._completed = True
            routing = self.routing
            if routing is not None:
                routing.gateway.request_finished(self)
        if self._notify is not None:
            notify, self._notify = self._notify, None
            for d in notify:
                d.callback(None)
        self.channel.request_done(self)

    def set_trailers(self, fields):
        """
        Send the trailer fields C{fields} after the last chunk: only a
        chunked response (HTTP/1.1, no Content-Length) can carry them.
        """
        self._send_trailers = fields

    def registerProducer(self, producer, streaming):
        """
        Register the push producer of the response body: the connection's
        pause and resume go to it. Pull producers (C{streaming} false) are
        not supported.
        """
        if not streaming:
            raise ValueError("only push producers (streaming=True) are supported")
        if self.producer is not None:
            raise RuntimeError("a producer is already registered for %r" % (self,))
        self.producer = producer
        if self.channel.write_paused:
            producer.pauseProducing()

    def unregisterProducer(self):
        """
        Forget the registered producer.
        """
        self.producer = None

    def switch_protocols(self, relay):
        """
        Send the 101 head and hand the connection to C{relay}: the response
        producer becomes the upstream's reading (a slow client pauses it),
        and the request ends when the connection closes (the access log
        then records the bytes relayed to the client).
        """
        self._write_head(b"", False)
        self.relay = relay
        self.registerProducer(relay.upstream_reading, True)
        self.channel.switch_protocols(relay)

    def _write_head(self, data, finishing):
        code = self.code
        line = _STATUS_LINES.get(code)
        if line is None:
            # Not yet seen, or not a status at all (a code assigned
            # directly rather than through setResponseCode).
            code = self.code = valid_status(code)
            line = _status_line(code)
        raw = _raw_headers(self.responseHeaders)
        channel = self.channel
        # A Date already there (an upstream's, a cached response's) is kept
        # when well formed: it says when the response was generated, which
        # caches downstream rely on.
        dates = raw.get(b"Date")
        if dates is not None and (len(dates) != 1 or not is_imf_fixdate(dates[0])):
            del raw[b"Date"]
            dates = None
        for name, value in channel.extra_headers:
            raw[name] = [value]
        if code < 200 or code == 204:
            # RFC 9110 8.6: never a Content-Length on 1xx and 204 (an
            # upstream's included).
            raw.pop(b"Content-Length", None)
        version11 = self.clientproto == b"HTTP/1.1"
        keep = self.keep_alive and channel.persistent
        parts = [line]
        append = parts.append
        if dates is None:
            append(channel.date.line())
        extend = parts.extend
        for name, values in raw.items():
            for value in values:
                extend((name, b": ", value, b"\r\n"))
        connection = raw.get(b"Connection")
        if connection is not None and keep and connection_flags(connection)[0]:
            keep = False
        if self.method == b"HEAD" or code in _NO_BODY_CODES or code < 200:
            self._no_body = True
        elif b"Content-Length" not in raw:
            if finishing:
                append(b"Content-Length: 0\r\n")
            elif version11:
                append(b"Transfer-Encoding: chunked\r\n")
                self._chunked = True
            else:
                keep = False
        if not keep:
            self.keep_alive = False
            if connection is None:
                append(b"Connection: close\r\n")
        elif not version11 and connection is None:
            append(b"Connection: keep-alive\r\n")
        append(b"\r\n")
        self.startedWriting = True
        if data and not self._no_body:
            self.sentLength = len(data)
            if self._chunked:
                parts += (b"%x\r\n" % (len(data),), data, b"\r\n")
            elif len(data) > _JOIN_LIMIT:
                self.transport.writeSequence((b"".join(parts), data))
                return
            else:
                append(data)
        self.transport.write(b"".join(parts))

    # -- bookkeeping -------------------------------------------------------

    def lost(self):
        """
        The connection closed before the response finished: stop whatever
        produces the response, tell the gateway.
        """
        if self.finished or self._disconnected:
            return
        self._disconnected = self.disconnected = True
        relay = self.relay
        if relay is not None:
            self.sentLength = relay.sent_down
            self.routing.log_fields += (("upgraded_up", "%d" % (relay.sent_up,)),)
        self._end_lost()
