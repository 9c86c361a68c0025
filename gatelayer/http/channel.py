"""
The HTTP/1.1 server channel: twisted.web's parser (it carries the fixes for
several request-smuggling bugs) with the limits and timers a gateway needs.
"""

from twisted.logger import Logger
from twisted.web import http

from gatelayer.http.errors import raw_error_response
from gatelayer.http.timer import BODY, BUSY, HEADERS, IDLE, ConnectionTimer

MAX_REQUEST_LINE = 8192



class GatewayChannel(ConnectionTimer, http.HTTPChannel):
    """
    An L{http.HTTPChannel} with:
      - one timer per connection, moved rather than recreated, for the idle
        keep-alive timeout, the absolute deadline of a request's headers (a
        client trickling its headers byte by byte is cut with 408 however
        often it sends) and the body's idle timeout; twisted.web's own
        timeout (a new timer per request) is off;
      - 414 for a request line over 8 KB and 431 for a header line over 8 KB,
        more than C{maxHeaders} headers or more than C{totalHeadersSize}
        bytes of them, instead of a bare 400;
      - bookkeeping for draining (whether a request is in progress).
    """

    _log = Logger()
    MAX_LENGTH = MAX_REQUEST_LINE
    maxHeaders = 100
    totalHeadersSize = 32768

    header_timeout = 10.0
    idle_timeout = 60.0
    _phase = IDLE
    _rejected = False

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
        push the body's idle timeout back.
        """
        if self._rejected:
            return
        phase = self._phase
        if phase == IDLE:
            self._phase = HEADERS
            self._arm(self.header_timeout)
        elif phase == BODY:
            self._arm(self.idle_timeout)
        super().dataReceived(data)

    def lineLengthExceeded(self, line):
        """
        A line over C{MAX_LENGTH} (8 KB, as nginx's header buffers): 414 for
        the request line, 431 for a header line.
        """
        if getattr(self, "_HTTPChannel__first_line", 0):
            self._reject(414, "request line too long")
        else:
            self._reject(431, "request header too large")

    def allHeadersReceived(self):
        """
        The headers are in: the header deadline no longer applies.
        """
        self._phase = BODY
        self._arm(self.idle_timeout)
        super().allHeadersReceived()

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
            self._arm(self.idle_timeout)
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
        self.transport.write(raw_error_response(status, message))
        self.dataReceived = lambda data: None
        self.lineReceived = lambda line: None
        self.loseConnection()

    def reject_body(self, status, message):
        """
        Refuse a request body (413) without reading it: answer and close.
        """
        self._reject(status, message)

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
