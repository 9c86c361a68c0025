"""
The proxy terminal: a request goes to a server of an upstream over a pooled
keep-alive connection, and the response streams back with back-pressure.
"""

from twisted.logger import Logger

from gatelayer.http.headers import downstream_headers, upstream_headers
from gatelayer.upstream.state import may_retry_method

_NO_BODY_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"])
_FAILURE_KIND = {"connection_lost": "connect_error", "bad_response": "invalid_response"}


class UpstreamTerminal:
    """
    The terminal of every route proxying to one upstream, in one worker:
    its connection pool and its balancing state.
    """

    log = Logger()

    def __init__(self, spec, pool, state):
        self.spec = spec
        self.pool = pool
        self.state = state

    def serve(self, request, exchange, route, ran):
        """
        Proxy C{request}.
        """
        ProxiedRequest(self, request, exchange, route, ran).start()


class ProxiedRequest:
    """
    One request on its way through an upstream: picks a server, sends, and
    relays the response (the L{gatelayer.upstream.client.IResponseSink} of the
    pool). Retries on another server when the failure allows it and nothing
    of the response has reached the client.
    """

    __slots__ = (
        "terminal", "request", "exchange", "route", "ran", "server", "tried", "handle",
        "headers", "target", "body", "retryable", "head_sent", "in_flight", "discarding",
        "host_header",
    )

    def __init__(self, terminal, request, exchange, route, ran):
        self.terminal = terminal
        self.request = request
        self.exchange = exchange
        self.route = route
        self.ran = ran
        self.server = None
        self.tried = []
        self.handle = None
        self.head_sent = False
        self.in_flight = False
        self.discarding = False

    def start(self):
        """
        Build what is sent upstream (once for all attempts) and send it.
        """
        request = self.request
        exchange = self.exchange
        spec = self.route.spec
        # Everything sent upstream comes from the exchange the filters
        # edited (normalized path, query without hidden credentials,
        # headers without identity spoofs), never from the raw request.
        headers = exchange.headers
        host = headers.getRawHeaders(b"host")
        self.host_header = host[0] if host else None
        self.headers = upstream_headers(
            headers.getAllRawHeaders(), exchange.peer_ip, exchange.scheme, self.host_header, b"")
        path = exchange.path
        if spec.strip_prefix:
            # The path is normalized already: a prefix stripped from it can
            # never leave a dot segment behind.
            prefix = spec.strip_prefix.encode("utf-8")
            if path.startswith(prefix):
                path = path[len(prefix):]
                if not path.startswith(b"/"):
                    path = b"/" + path
        query = exchange.query
        self.target = path + b"?" + query if query else path
        length = request.body_length()
        if length == 0:
            self.body = None if request.method in _NO_BODY_METHODS else b""
        elif hasattr(request.content, "getvalue"):
            self.body = request.content.getvalue()
        else:
            request.content.seek(0)
            self.body = request.content
        self.retryable = may_retry_method(request.method, spec)
        request.on_lost(self.client_lost)
        self.attempt()

    def attempt(self):
        """
        Send the request to the next server the balancer picks.
        """
        state = self.terminal.state
        server = state.pick(self.exchange.client_ip, self.tried)
        if server is None:
            if self.tried:
                self.fail(502, "no upstream server answered")
            else:
                self.fail(503, "no healthy upstream server",
                          ((b"retry-after", b"%d" % (state.retry_after(),)),))
            return
        self.server = server
        self.tried.append(server)
        if self.route.spec.preserve_host and self.host_header is not None:
            self.headers[0] = (b"Host", self.host_header)
        else:
            self.headers[0] = (b"Host", server.address.encode("ascii"))
        if not isinstance(self.body, (bytes, type(None))):
            self.body.seek(0)
        state.request_started(server)
        self.in_flight = True
        self.handle = self.terminal.pool.request(
            server, self.request.method, self.target, self.headers, self.body, self,
            self.retryable)

    def _end_attempt(self):
        if self.in_flight:
            self.in_flight = False
            self.terminal.state.request_finished(self.server)

    def _may_retry(self, kind):
        state = self.terminal.state
        return (self.retryable and not self.head_sent
                and state.should_retry(kind, len(self.tried)))

    # -- IResponseSink -----------------------------------------------------

    def connect_failed(self, kind, detail):
        """
        Nothing was sent: count the failure and try another server if allowed.
        """
        self._end_attempt()
        state = self.terminal.state
        if kind == "overloaded":
            self.fail(503, "upstream server has too many requests queued",
                      ((b"retry-after", b"1"),))
            return
        state.report_failure(self.server, kind)
        self.terminal.log.warn(
            "upstream {upstream} server {address}: {kind} ({detail})",
            upstream=self.terminal.spec.name, address=self.server.address, kind=kind, detail=detail)
        if self._may_retry_connect(kind):
            self.attempt()
            return
        self.fail(502, "upstream server unreachable")

    def _may_retry_connect(self, kind):
        # Nothing reached the server: safe to resend whatever the method.
        state = self.terminal.state
        return state.should_retry(kind, len(self.tried)) and not self.head_sent

    def response_head(self, status, reason, headers):
        """
        Relay the status and headers (or, for a retryable 5xx, prepare to
        discard this response and try elsewhere).
        """
        request = self.request
        if request._disconnected:
            return
        status_text = str(status)
        if status_text in self.terminal.spec.retry_on and self._may_retry(status_text):
            self.discarding = status_text
            return
        self.head_sent = True
        self.exchange.status = status
        request.setResponseCode(status, reason or None)
        raw = request.responseHeaders
        for name, value in downstream_headers(headers):
            raw.addRawHeader(name, value)
        request.channel.factory.gateway.response_headers(request, self.exchange, self.route, self.ran)
        if request.method != b"HEAD":
            request.registerProducer(self.handle, True)

    def response_body(self, data):
        """
        Relay body bytes as they come.
        """
        if not self.discarding and not self.request._disconnected:
            self.request.write(data)

    def response_end(self):
        """
        The upstream's response is complete.
        """
        self._end_attempt()
        state = self.terminal.state
        if self.discarding:
            status_text, self.discarding = self.discarding, False
            state.report_failure(self.server, status_text)
            self.attempt()
            return
        state.report_success(self.server)
        request = self.request
        if request._disconnected:
            return
        if request.producer is not None:
            request.unregisterProducer()
        request.finish()

    def response_failed(self, kind, detail):
        """
        The exchange with the server failed after the request was sent.
        """
        self._end_attempt()
        state = self.terminal.state
        failure_kind = _FAILURE_KIND.get(kind, kind)
        state.report_failure(self.server, failure_kind)
        self.terminal.log.warn(
            "upstream {upstream} server {address}: {kind} ({detail})",
            upstream=self.terminal.spec.name, address=self.server.address, kind=kind, detail=detail)
        request = self.request
        if request._disconnected:
            return
        if self.head_sent:
            # Part of the response is out: the only honest signal left is to
            # cut the connection so the client sees a truncated response.
            if request.producer is not None:
                request.unregisterProducer()
            request.channel.transport.abortConnection()
            return
        self.discarding = False
        if kind != "bad_response" and self._may_retry(failure_kind):
            self.attempt()
            return
        if kind == "timeout":
            self.fail(504, "upstream server did not answer in time")
        else:
            self.fail(502, "upstream server sent an invalid response"
                      if kind == "bad_response" else "upstream server closed the connection")

    # -- helpers -----------------------------------------------------------

    def client_lost(self):
        """
        The client went away: abandon the upstream exchange (the connection
        is closed, not reused).
        """
        if self.handle is not None and self.in_flight:
            self.handle.cancel()
        self._end_attempt()

    def fail(self, status, message, headers=()):
        """
        Answer the client with the gateway's own error.
        """
        request = self.request
        if request._disconnected or request.finished:
            return
        request.channel.factory.gateway.send_error(
            request, status, message, self.route.filters, self.exchange, self.ran, headers)
