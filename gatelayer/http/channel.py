"""
The HTTP/1.1 server channel of C{[gateway] http_server = twisted}:
twisted.web's parser with the limits and timers a gateway needs, and with
the strictness of the lean channel's framing module
(L{gatelayer.http1}) in front of it, so both channels refuse the
same requests: twisted.web on its own accepts obs-fold lines, control bytes
in values, a missing or repeated Host, C{Transfer-Encoding: identity},
malformed chunk trailers, and waits forever for the CRLF of a line a client
ended with a bare LF.
"""

from twisted.logger import Logger
from twisted.web import http

from gatelayer.http.errors import raw_error_response
from gatelayer.http.timer import BODY, BUSY, HEADERS, IDLE, ConnectionTimer
from gatelayer.http1 import REQUEST, BadRequest, ChunkedDecoder, parse_request_head

__all__ = ["GatewayChannel", "StrictChunkedDecoder"]

_MAX_REQUEST_LINE = REQUEST.max_start_line
_MAX_HEADERS = REQUEST.max_fields
_MAX_HEADERS_SIZE = REQUEST.max_head


class StrictChunkedDecoder:
    """
    twisted.web's transfer-decoder interface over the strict
    L{ChunkedDecoder} of L{gatelayer.http1}: chunk sizes of at most 16 hex digits, lines ended by
    CRLF only (a bare LF is refused at once, not waited on), trailers held
    to the header limits. twisted.web's own decoder accepts any chunk-size
    length and trailers it does not check.

    @ivar channel: the L{GatewayChannel} (refusals go to its C{_reject}).
    """

    def __init__(self, channel, deliver, finish, request=None):
        """
        @param deliver: called with each piece of body.
        @param finish: called with the bytes after the body once it ended.
        @param request: the request whose C{trailers} get the body's
            trailer fields, if any.
        """
        self.channel = channel
        self.request = request
        self._deliver = deliver
        self._finish = finish
        self._decoder = ChunkedDecoder()

    def dataReceived(self, data):
        """
        Decode C{data}; a framing fault answers 400 (or 431) and closes.
        """
        channel = self.channel
        try:
            pieces, rest = self._decoder.feed(data)
        except BadRequest as refusal:
            channel._reject(refusal.status, refusal.message)
            return
        for piece in pieces:
            self._deliver(piece)
            if channel._rejected:
                return
        if rest is not None:
            if self._decoder.trailers and self.request is not None:
                self.request.trailers = self._decoder.trailers
            self._finish(rest)

    def noMoreData(self):
        """
        The connection ended inside the body: the request is incomplete.
        """
        raise http._DataLoss("chunked request body ended early")



class GatewayChannel(ConnectionTimer, http.HTTPChannel):
    """
    An L{http.HTTPChannel} with:
      - one timer per connection, moved rather than recreated, for the idle
        keep-alive timeout, the absolute deadline of a request's headers (a
        client trickling its headers byte by byte is cut with 408 however
        often it sends) and the body's idle timeout; twisted.web's own
        timeout (a new timer per request) is off;
      - each request head collected line by line and checked whole by
        L{parse_request_head} (the lean channel's rules and statuses: 400, 414,
        431) before twisted.web sees any of it; a line ended by a bare LF
        is refused as soon as it arrives;
      - chunked bodies decoded by L{StrictChunkedDecoder};
      - refusals carrying the listener's headers and a Date;
      - bookkeeping for draining (whether a request is in progress).
    """

    _log = Logger()
    MAX_LENGTH = _MAX_REQUEST_LINE
    maxHeaders = _MAX_HEADERS
    # The real limits are checked before twisted.web counts (which includes
    # the request line in its total).
    totalHeadersSize = _MAX_REQUEST_LINE + _MAX_HEADERS_SIZE

    header_timeout = 10.0
    idle_timeout = 60.0
    body_timeout = 30.0
    _phase = IDLE
    _rejected = False
    # The lines of the request head being received (None between heads) and
    # the size of its header lines, CRLFs included.
    _head = None
    _head_size = 0

    def connectionMade(self):
        """
        Register with the factory, start the idle timer.
        """
        super().connectionMade()
        self._arm(self.idle_timeout)
        self.factory.channel_opened(self)

    def dataReceived(self, data):
        """
        The first byte of a request starts its header deadline; body bytes
        push the body timeout back. An unfinished head line holding a bare
        LF or CR is refused at once.
        """
        if self._rejected:
            return
        phase = self._phase
        if phase == IDLE:
            self._phase = HEADERS
            self._arm(self.header_timeout)
        elif phase == BODY:
            self._arm(self.body_timeout)
        # Pipelined bytes played back while a line is being handled are
        # only queued by twisted.web: they are looked at by the outer call.
        outer = not self._busyReceiving
        super().dataReceived(data)
        if outer and self.line_mode and not self._rejected:
            # What twisted.web holds is an unfinished head line: a CR or LF
            # in it can only be a line ending that is not CRLF, which
            # twisted.web would wait on until the header deadline.
            pending = self._buffer
            if pending and (b"\n" in pending or b"\r" in pending[:-1]) \
                    and not self.transport.disconnecting:
                self._reject(400, "request head line not ended by CRLF")

    def lineReceived(self, line):
        """
        Collect the lines of a request head; when it is complete, check it
        whole with L{parse_request_head} and only then hand it to twisted.web, line
        by line. Empty lines before a request line are ignored (RFC 9112
        section 2.2), as the lean channel does.
        """
        head = self._head
        if head is None:
            if not self.persistent:
                # Closing after the last response: twisted.web drops what
                # follows.
                super().lineReceived(line)
                return
            if not line:
                return
            self._head = [line]
            self._head_size = 0
            return
        if line:
            head.append(line)
            size = self._head_size = self._head_size + len(line) + 2
            if size > _MAX_HEADERS_SIZE:
                self._reject(431, "request headers too large")
            elif len(head) > _MAX_HEADERS + 1:
                self._reject(431, "too many request headers")
            return
        self._head = None
        data = b"\r\n".join(head) + b"\r\n\r\n"
        try:
            parse_request_head(data, len(data) - 4)
        except BadRequest as refusal:
            self._reject(refusal.status, refusal.message)
            return
        # The head began on a persistent connection: a drain since then
        # (which clears persistent) lets this request be answered, the
        # connection closing after it, as on the lean channel.
        self.persistent = True
        receive = super().lineReceived
        for line in head:
            receive(line)
            if self._rejected:
                return
        receive(b"")

    def lineLengthExceeded(self, line):
        """
        A line over C{MAX_LENGTH} (8 KB, as nginx's header buffers): 414 for
        the request line, 431 for a header line.
        """
        if self._head is None:
            self._reject(414, "request line too long")
        else:
            self._reject(431, "request header too large")

    def allHeadersReceived(self):
        """
        The headers are in: the header deadline no longer applies, the body
        (if any) has C{body_timeout} between reads, and a chunked one is
        decoded strictly.
        """
        self._phase = BODY
        self._arm(self.body_timeout)
        if isinstance(self._transferDecoder, http._ChunkedTransferDecoder):
            request = self.requests[-1]
            self._transferDecoder = StrictChunkedDecoder(
                self, request.handleContentChunk, self._finishRequestBody, request)
        super().allHeadersReceived()

    def _send100Continue(self):
        # Not after a refusal (413 for a body declared too large).
        if not self._rejected:
            super()._send100Continue()

    def allContentReceived(self):
        """
        The whole request is in: no client timeout while it is answered.
        """
        self._phase = BUSY
        super().allContentReceived()

    def requestDone(self, request):
        """
        The response is out: the connection is idle until the next request
        (which may already be buffered, pipelined).
        """
        self._phase = IDLE
        if self.persistent:
            self._arm_idle()
        super().requestDone(request)
        self.factory.request_done(self)

    def _respondToBadRequestAndDisconnect(self):
        # twisted.web calls this for every refusal; tell the limits apart
        # from malformed requests so clients get 431 rather than 400.
        if self._receivedHeaderSize > self.totalHeadersSize:
            self._reject(431, "request headers too large")
        elif self._receivedHeaderCount > self.maxHeaders:
            self._reject(431, "too many request headers")
        else:
            self._reject(400, "malformed request")

    def _idle_timed_out(self):
        self.timeoutConnection()

    def _reject(self, status, message):
        """
        Answer C{status} with a JSON body and close: used before any request
        object can answer (bad framing, limits, slow headers).
        """
        if self._rejected:
            return
        self._rejected = True
        self._cancel_timer()
        factory = self.factory
        pending = [r for r in self.requests if not r.finished]
        self.transport.write(raw_error_response(
            status, message, factory.date(), factory.extra_headers,
            factory.gateway.refusal_id(pending[-1] if pending else None)))
        self.dataReceived = lambda data: None
        self.lineReceived = lambda line: None
        for request in self.requests:
            # The request being received ends here: its bookkeeping (the
            # access log records the refusal) is done now.
            if not request.finished and not request.startedWriting:
                request.code = status
                request._done()
        self.loseConnection()

    def reject_body(self, status, message):
        """
        Refuse a request body (413) without reading it: answer and close.
        """
        self._reject(status, message)

    def switch_protocols(self, relay):
        """
        The request in progress switched protocols (its 101 is written):
        the connection's bytes go to C{relay} from now on, those twisted.web
        buffered after the request first; the relay's idle timer replaces
        this one. twisted.web keeps treating the request as in progress, so
        a full write buffer pauses only the response producer (the
        upstream's reading), never this connection's own reading.
        """
        self._cancel_timer()
        leftover = b"".join(self._dataBuffer)
        self._dataBuffer = []
        # twisted.web stops reading past a few bytes buffered while a
        # request is handled: the relay reads from now on.
        self._networkProducer.resumeProducing()
        self.dataReceived = relay.from_client
        relay.attach_client(self.transport, self.loseConnection, self.callLater)
        if leftover:
            relay.from_client(leftover)

    @property
    def busy(self):
        """
        Whether a request is being received or answered on this connection.
        """
        return bool(self.requests) or self._phase != IDLE

    def connectionLost(self, reason):
        """
        Cancel the timer and unregister from the factory.
        """
        self._cancel_timer()
        super().connectionLost(reason)
        self.factory.channel_closed(self)
