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
      - 414 for a request line over 8 KB and 431 for headers over the limits,
        instead of a bare 400;
      - bookkeeping for draining (whether a request is in progress).
    """

    _log = Logger()
    MAX_LENGTH = 65536
    maxHeaders = 100
    totalHeadersSize = 32768

    header_timeout = 10.0
    _header_deadline = None
    _awaiting_line = True
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

    def lineReceived(self, line):
        """
        Check the request line and header sizes before twisted.web does.
        """
        if self._awaiting_line and line:
            self._awaiting_line = False
            if len(line) > MAX_REQUEST_LINE:
                self._reject(414, "request line too long")
                return
        elif len(line) + self._receivedHeaderSize > self.totalHeadersSize:
            self._reject(431, "request headers too large")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line):
        """
        A line without end over C{MAX_LENGTH}: 414 for the request line,
        431 for a header.
        """
        if self._awaiting_line:
            self._reject(414, "request line too long")
        else:
            self._reject(431, "request header too large")

    def headerReceived(self, line):
        """
        Count headers against C{maxHeaders} with a 431.
        """
        if self._receivedHeaderCount + 1 > self.maxHeaders:
            self._reject(431, "too many request headers")
            return False
        return super().headerReceived(line)

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
        self._awaiting_line = True
        super().requestDone(request)
        self.factory.request_done(self)

    def _respondToBadRequestAndDisconnect(self):
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
