"""
A buffered upstream call: one request through an upstream's pool and
balancing state whose whole response (up to a size bound) is collected in
memory, for a caller that needs the body before it can answer (the
aggregate terminal's parts).

It follows the proxy's rules for choosing servers and retrying
(L{gatelayer.upstream.state.UpstreamState.pick} and C{retry_target}: connect
failures, C{retry_on} kinds and statuses, C{retries}), and feeds passive
health the same way. Since nothing of a buffered response reaches a client
before it is complete, a response broken off in its body may be retried
too.
"""

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.upstream.interfaces import IResponseSink
from gatelayer.upstream.state import IDEMPOTENT_METHODS, health_failure, log_server_failure

__all__ = ["BufferedCall", "CallOutcome"]

_log = Logger(namespace="gatelayer.upstream")

# The outcome of a call that got no usable response, by what went wrong.
_REASONS = {
    "connect_error": "unreachable",
    "timeout": "timeout",
    "overloaded": "overloaded",
    "bad_response": "invalid response",
    "connection_lost": "connection closed",
}


class CallOutcome:
    """
    How a L{BufferedCall} ended.

    @ivar status: the response status (int), or L{None} without a response.
    @ivar headers: the response's C{(name, value)} byte pairs as received.
    @ivar body: the whole response body (bytes).
    @ivar error: L{None} for a complete response, else a short reason:
        C{"unreachable"}, C{"timeout"}, C{"overloaded"}, C{"invalid
        response"}, C{"connection closed"}, C{"too large"}, C{"no healthy
        server"}.
    @ivar server: the address of the last server tried, or L{None}.
    """

    __slots__ = ("status", "headers", "body", "error", "server")

    def __init__(self, status=None, headers=(), body=b"", error=None, server=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error
        self.server = server

    def __repr__(self):
        return "<CallOutcome status=%r error=%r server=%r %d bytes>" % (
            self.status, self.error, self.server, len(self.body))


@implementer(IResponseSink)
class BufferedCall:
    """
    One bodiless request to an upstream, its response collected whole.

    C{done(outcome)} is called once with a L{CallOutcome}, never from within
    L{start}, and never after L{cancel}.
    """

    __slots__ = (
        "upstream", "method", "target", "headers", "client_ip", "max_size", "done",
        "server", "tried", "handle", "in_flight", "status", "response_headers", "chunks",
        "size", "discarding", "next_server", "relayed_failure", "finished", "clock", "later", "host",
        "request_id",
    )

    def __init__(self, upstream, clock, method, target, headers, client_ip, max_size, done, host=None,
                 request_id=b""):
        """
        @param upstream: the upstream's terminal (C{.pool}, C{.state},
            C{.spec}), as L{gatelayer.http.proxy.UpstreamTerminal}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param method: bytes; a method L{IDEMPOTENT_METHODS} lists (retries
            resend it).
        @param target: the request target (bytes).
        @param headers: C{(name, value)} byte pairs; the first is replaced
            by C{Host} with the chosen server's address.
        @param client_ip: the client's address (for C{ip_hash}).
        @param max_size: the largest body accepted: a response announcing
            or sending more ends the call as C{"too large"}.
        @param done: called with the L{CallOutcome}.
        @param host: the C{Host} value to send (bytes; a route's
            C{preserve_host}), or L{None} for the chosen server's address.
        @param request_id: the id of the client's request (bytes), named in
            failure log lines.
        """
        if method not in IDEMPOTENT_METHODS:
            raise ValueError(f"a buffered call is only made with an idempotent method, not {method!r}")
        self.upstream = upstream
        self.clock = clock
        self.later = None
        self.host = host
        self.request_id = request_id
        self.method = method
        self.target = target
        self.headers = list(headers)
        self.client_ip = client_ip
        self.max_size = max_size
        self.done = done
        self.server = None
        self.tried = []
        self.handle = None
        self.in_flight = False
        self.status = None
        self.response_headers = ()
        self.chunks = []
        self.size = 0
        self.discarding = False
        self.next_server = None
        self.relayed_failure = None
        self.finished = False

    def start(self):
        """
        Send the request to the server the balancer picks.
        """
        self._attempt(None)

    def cancel(self):
        """
        Abandon the call (a part timeout, the deadline, the client gone):
        the upstream connection is closed if the request was sent on it,
        and C{done} is not called. A cancelled call is not held against the
        server: the gateway stopped waiting, the server did nothing wrong.
        """
        if self.finished:
            return
        self.finished = True
        if self.later is not None and self.later.active():
            self.later.cancel()
        if self.handle is not None and self.in_flight:
            self.handle.cancel()
        self._end_attempt()

    def _attempt(self, server):
        state = self.upstream.state
        if server is None:
            server = state.pick(self.client_ip, self.tried)
            if server is None:
                # Answered on a later turn: done is never called from start().
                self.later = self.clock.callLater(0, self._finish, "no healthy server")
                return
        self.server = server
        self.tried.append(server)
        host = self.host if self.host is not None else server.address.encode("ascii")
        self.headers[0] = (b"Host", host)
        self.status = None
        self.chunks = []
        self.size = 0
        state.request_started(server)
        self.in_flight = True
        self.handle = self.upstream.pool.request(
            server, self.method, self.target, self.headers, None, self, True)

    def _end_attempt(self):
        if self.in_flight:
            self.in_flight = False
            self.upstream.state.request_finished(self.server)

    def _finish(self, error=None):
        if self.finished:
            return
        self.finished = True
        address = self.server.address if self.server is not None else None
        if error is not None:
            outcome = CallOutcome(self.status, self.response_headers, b"", error, address)
        else:
            outcome = CallOutcome(self.status, self.response_headers, b"".join(self.chunks), None, address)
        self.chunks = []
        self.done(outcome)

    def _too_large(self):
        # The server answered properly; only this call's bound was passed.
        self.handle.cancel()
        self._end_attempt()
        self.upstream.state.report_success(self.server)
        self._finish("too large")

    def _log_failure(self, kind, detail):
        log_server_failure(_log, self.upstream.spec.name, self.server.address, kind, detail,
                           self.request_id)

    def _retry_target(self, kind):
        return self.upstream.state.retry_target(kind, self.client_ip, self.tried)

    # -- IResponseSink -----------------------------------------------------

    def connect_failed(self, kind, detail):
        """
        Nothing was sent: count the failure and try another server if
        C{retries} and C{retry_on} allow it.
        """
        self._end_attempt()
        if self.finished:
            return
        if kind == "overloaded":
            self._finish("overloaded")
            return
        self.upstream.state.report_failure(self.server, kind)
        self._log_failure(kind, detail)
        server = self._retry_target(kind)
        if server is not None:
            self._attempt(server)
        else:
            self._finish(_REASONS.get(kind, kind))

    def response_head(self, status, reason, headers):
        """
        Keep the status and headers; a status C{retry_on} lists is
        discarded when another server will be tried, and a body announced
        larger than the bound ends the call at once.
        """
        if self.finished:
            return
        status_text = str(status)
        if status_text in self.upstream.spec.retry_on:
            server = self._retry_target(status_text)
            if server is not None:
                self.discarding = status_text
                self.next_server = server
                return
            self.relayed_failure = status_text
        self.status = status
        self.response_headers = headers
        for name, value in headers:
            if name.lower() == b"content-length":
                length = value.partition(b",")[0].strip()
                if length.isdigit() and int(length) > self.max_size:
                    self._too_large()
                return

    def response_body(self, data):
        """
        Collect body bytes, up to the bound.
        """
        if self.discarding or self.finished:
            return
        self.size += len(data)
        if self.size > self.max_size:
            self._too_large()
            return
        self.chunks.append(data)

    def response_trailers(self, fields):
        """
        Trailer fields are not part of what a call collects: dropped.
        """

    def response_end(self):
        """
        The response is complete: report the server's health, then retry
        (a discarded status) or end the call with the response.
        """
        self._end_attempt()
        if self.finished:
            return
        state = self.upstream.state
        if self.discarding:
            status_text, self.discarding = self.discarding, False
            state.report_failure(self.server, status_text)
            server, self.next_server = self.next_server, None
            self._attempt(server)
            return
        if self.relayed_failure is not None:
            state.report_failure(self.server, self.relayed_failure)
        else:
            state.report_success(self.server)
        self._finish()

    def response_failed(self, kind, detail):
        """
        The exchange failed after the request was sent: count it, retry
        where allowed, else end the call with the reason.
        """
        self._end_attempt()
        if self.finished:
            return
        failure_kind = health_failure(kind)
        self.upstream.state.report_failure(self.server, failure_kind)
        self._log_failure(kind, detail)
        if self.discarding:
            self.discarding = False
            server, self.next_server = self.next_server, None
            self._attempt(server)
            return
        server = self._retry_target(failure_kind)
        if server is not None:
            self._attempt(server)
        else:
            self._finish(_REASONS.get(kind, kind))
