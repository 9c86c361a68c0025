"""
The HTTP/1.1 server channel: twisted.web's parser (it carries the fixes for
several request-smuggling bugs) with the limits a gateway needs.
"""

from twisted.logger import Logger
from twisted.web import http

from gatelayer.http.errors import raw_error_response

MAX_REQUEST_LINE = 8192


class GatewayChannel(http.HTTPChannel):
    """
    An L{http.HTTPChannel} with:
      - an absolute deadline for a request's headers (a client trickling its
        headers byte by byte is cut with 408 however often it sends);
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
    _header_deadline = None
    _headers_done = False
    _rejected = False

    def connectionMade(self):
        """
        Register with the factory, then as L{http.HTTPChannel}.
        """
        super().connectionMade()
        self.factory.channel_opened(self)

    def dataReceived(self, data):
        """
        Start the header deadline at the first byte of each request.
        """
        if self._rejected:
            return
        if self._header_deadline is None and not self._headers_done:
            self._header_deadline = self.callLater(self.header_timeout, self._header_timed_out)
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
        self._headers_done = True
        self._cancel_deadline()
        super().allHeadersReceived()

    def requestDone(self, request):
        """
        The next request on this connection gets its own header deadline.
        """
        self._headers_done = False
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

    def _header_timed_out(self):
        self._header_deadline = None
        self._reject(408, "request headers not received in time")

    def _cancel_deadline(self):
        if self._header_deadline is not None:
            if self._header_deadline.active():
                self._header_deadline.cancel()
            self._header_deadline = None

    def _reject(self, status, message):
        """
        Answer C{status} with a JSON body and close: used before any request
        object can answer (bad framing, limits, slow headers).
        """
        if self._rejected:
            return
        self._rejected = True
        self._cancel_deadline()
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
        return bool(self.requests) or self._header_deadline is not None

    def connectionLost(self, reason):
        """
        Cancel timers and unregister from the factory.
        """
        self._cancel_deadline()
        super().connectionLost(reason)
        self.factory.channel_closed(self)
