"""
The request object of a worker's HTTP channel.
"""

from io import BytesIO

from twisted.web import http
from zope.interface import implementer

from gatelayer.http.contract import IGatewayRequest
from gatelayer.http.date import is_imf_fixdate
from gatelayer.http.errors import reason_phrase, valid_status
from gatelayer.http1 import BadRequest, build_response_head, connection_flags, last_chunk, status_line


@implementer(IGatewayRequest)
class GatewayRequest(http.Request):
    """
    An L{http.Request} that is routed as soon as its headers are in (so a
    body over the route's C{max_body_size} is refused with 413 before it is
    read), skips twisted.web's query and form parsing (the gateway forwards
    bytes, it does not interpret them) and hands itself to the worker's
    L{gatelayer.http.gateway.Gateway}: the gateway's request contract
    (L{IGatewayRequest}) over twisted.web's request.

    @ivar routing: the L{gatelayer.http.contract.RequestRouting} made when
        the headers arrived (L{None} until then, or if they were refused).
    @ivar query: the query string without C{?}.
    @ivar trailers: the trailer fields of a chunked request body (set by
        the channel's decoder), C{(name, value)} pairs; empty for none.
    """

    routing = None
    query = b""
    content = None
    relay = None
    _on_lost = None
    _received = 0
    _completed = False
    trailers = ()
    _send_trailers = ()

    @property
    def disconnected(self):
        """
        Whether the client went away before the response finished.
        """
        return self._disconnected

    def parseCookies(self):
        """
        Cookies are forwarded as bytes, never parsed (it costs every request
        that carries them).
        """

    def gotLength(self, length):
        """
        Route the request and check the declared body size.
        """
        gateway = self.channel.factory.gateway
        try:
            limit = gateway.early_route(self, self.channel._command, self.channel._path).body_limit
        except BadRequest as refusal:
            self.content = BytesIO()
            self.channel.reject_body(refusal.status, refusal.message)
            return
        if length is not None and length > limit:
            self.content = BytesIO()
            self.channel.reject_body(413, "request body larger than %d bytes" % (limit,))
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        """
        Store body data, refusing a body (chunked or not) that outgrows the
        limit.
        """
        self._received += len(data)
        limit = self.routing.body_limit
        if self._received > limit:
            self.channel.reject_body(413, "request body larger than %d bytes" % (limit,))
            return
        self.content.write(data)

    def requestReceived(self, command, path, version):
        """
        The whole request is in: set the request line fields and process it
        (unless the channel already refused it).
        """
        if getattr(self.channel, "_rejected", False):
            return
        self.content.seek(0, 0)
        self.args = {}
        self.method, self.uri, self.clientproto = command, path, version
        if self.routing is None:
            # Not routed (the gateway sets the canonical path and query
            # when it routes the request; keep those).
            self.path, _, self.query = path.partition(b"?")
        self.process()

    def process(self):
        """
        Hand the request to the gateway.
        """
        self.channel.factory.gateway.handle(self)

    def body_length(self):
        """
        The number of body bytes received.
        """
        return self._received

    def setResponseCode(self, code, message=None):
        """
        Set the response status. The status line always carries the
        gateway's own reason phrase for C{code}: C{message} (an upstream's
        reason phrase, say) is ignored, so no bytes from elsewhere reach the
        status line. A code outside 100..599 is answered as 502.
        """
        if not isinstance(code, int):
            raise TypeError("HTTP response code must be int, not %r" % (code,))
        code = valid_status(code)
        self.code = code
        self.code_message = reason_phrase(code)

    def write(self, data):
        """
        Send body bytes; before the first, the response head gets a Date
        (a well-formed one already there, an upstream's, is kept) and the
        listener's own headers.
        """
        if not self.startedWriting and not self.finished and not self._disconnected:
            headers = self.responseHeaders
            factory = self.channel.factory
            dates = headers.getRawHeaders(b"date")
            if dates is None or len(dates) != 1 or not is_imf_fixdate(dates[0]):
                headers.setRawHeaders(b"date", [factory.date()])
            for name, value in factory.extra_headers:
                headers.setRawHeaders(name, [value])
            # Again here: code and code_message may have been set directly
            # rather than through setResponseCode.
            code = self.code = valid_status(self.code)
            self.code_message = reason_phrase(code)
            if code < 200 or code == 204:
                # RFC 9110 8.6: never a Content-Length on 1xx and 204.
                headers.removeHeader(b"content-length")
            connection = headers.getRawHeaders(b"connection")
            if connection is not None and connection_flags(connection)[0]:
                # A response saying Connection: close ends the connection,
                # as on the lean channel (twisted.web reads only the
                # request's).
                self.channel.persistent = False
        super().write(data)

    def switch_protocols(self, relay):
        """
        Send the 101 head and hand the connection to C{relay}: the head is
        written here, not by twisted.web (which would frame a 101 as a
        chunked body); the response producer becomes the upstream's
        reading; the request ends when the connection closes.
        """
        channel = self.channel
        factory = channel.factory
        headers = self.responseHeaders
        dates = headers.getRawHeaders(b"date")
        if dates is None or len(dates) != 1 or not is_imf_fixdate(dates[0]):
            headers.setRawHeaders(b"date", [factory.date()])
        for name, value in factory.extra_headers:
            headers.setRawHeaders(name, [value])
        headers.removeHeader(b"content-length")
        pairs = [(name, value) for name, values in headers.getAllRawHeaders() for value in values]
        channel.transport.write(build_response_head(status_line(101, reason_phrase(101)), pairs))
        self.code = 101
        self.startedWriting = 1
        self.relay = relay
        self.registerProducer(relay.upstream_reading, True)
        channel.switch_protocols(relay)

    def on_lost(self, callback):
        """
        Call C{callback()} if the client goes away before the response is
        finished (cheaper than a Deferred from C{notifyFinish} per request).
        """
        self._on_lost = callback

    def set_trailers(self, fields):
        """
        Send the trailer fields C{fields} after the last chunk, if the
        response is chunked.
        """
        self._send_trailers = fields

    def finish(self):
        """
        Finish the response and tell the gateway the request is done. With
        trailer fields to send on a chunked response, the last chunk is
        written here with them, and twisted.web's own (empty) one skipped.
        """
        if self._send_trailers and not self.finished and not self._disconnected:
            if not self.startedWriting:
                self.write(b"")
            if self.chunked:
                self.chunked = False
                self.channel.write(last_chunk(self._send_trailers))
        super().finish()
        self._on_lost = None
        self._done()

    def connectionLost(self, reason):
        """
        The client went away: stop whatever is producing the response.
        """
        super().connectionLost(reason)
        relay = self.relay
        if relay is not None:
            self.sentLength = relay.sent_down
            self.routing.log_fields += (("upgraded_up", "%d" % (relay.sent_up,)),)
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()
        self._done()

    def _done(self):
        if not self._completed:
            self._completed = True
            routing = self.routing
            if routing is not None:
                routing.gateway.request_finished(self)
