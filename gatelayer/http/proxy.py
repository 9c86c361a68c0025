"""
The proxy terminal: a request goes to a server of an upstream over a pooled
keep-alive connection, and the response streams back with back-pressure.
"""

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.chain import ITerminal
from gatelayer.http.headers import relay_headers, upstream_headers
from gatelayer.http.origin import origin_policy
from gatelayer.http1 import allowed_trailers, token_set, wants_trailers
from gatelayer.upstream.state import health_failure, log_server_failure, may_retry_method

_NO_BODY_METHODS = frozenset([b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"])


def _stored_name(name):
    """
    The key of header C{name} in a L{Headers}' mapping (twisted's canonical
    case): the request headers are read with one dict lookup each.
    """
    probe = Headers()
    probe.setRawHeaders(name, [b""])
    return next(iter(dict(probe.getAllRawHeaders())))


_HOST = _stored_name(b"host")
_TE = _stored_name(b"te")


def upstream_target(route_spec, exchange):
    """
    The request target (bytes) sent upstream for C{exchange} on the route
    C{route_spec}: the canonical path, less the route's C{strip_prefix},
    and the query.
    """
    path = exchange.path
    if route_spec.strip_prefix:
        # The path is normalized already: a prefix stripped from it can
        # never leave a dot segment behind.
        prefix = route_spec.strip_prefix.encode("utf-8")
        if path.startswith(prefix):
            path = path[len(prefix):]
            if not path.startswith(b"/"):
                path = b"/" + path
    query = exchange.query
    return path + b"?" + query if query else path


def upstream_body(exchange):
    """
    The request body sent upstream for C{exchange}: L{None} (no body, and
    a method that has none), bytes, or the received body file at its start.
    """
    if exchange.body_length() == 0:
        return None if exchange.method in _NO_BODY_METHODS else b""
    content = exchange.body
    if hasattr(content, "getvalue"):
        return content.getvalue()
    content.seek(0)
    return content


class UpstreamTerminal:
    """
    What every route proxying to one upstream shares, in one worker: its
    connection pool and its balancing state. Each route gets its own
    terminal from L{for_route}.
    """

    log = Logger()

    def __init__(self, spec, pool, state):
        self.spec = spec
        self.pool = pool
        self.state = state
        #: The statuses of C{retry_on}, as numbers (a response's status is
        #: looked up here, not formatted first).
        self.retry_statuses = frozenset(int(kind) for kind in spec.retry_on if kind.isdigit())

    def for_route(self, route_spec):
        """
        The terminal of the route C{route_spec} (its prefix stripping and
        Host policy) on this upstream.
        """
        return RouteProxy(self, route_spec)


@implementer(ITerminal)
class RouteProxy:
    """
    The terminal of one route proxying to an upstream.

    @ivar upstream: the L{UpstreamTerminal}.
    @ivar spec: the route's L{gatelayer.config.model.RouteSpec}.
    @ivar origin: the route's L{gatelayer.http.origin.OriginPolicy} on
        this upstream (built once, here), or L{None}.
    """

    __slots__ = ("upstream", "spec", "origin")

    #: An HTTP/2 stream's body may be streamed to this terminal as it
    #: arrives (see L{gatelayer.http2.upload}).
    streams_request_body = True

    def __init__(self, upstream, spec):
        self.upstream = upstream
        self.spec = spec
        self.origin = origin_policy(upstream.spec, spec)

    def serve(self, exchange):
        """
        Proxy the request C{exchange} describes (one with an C{Upgrade}
        header goes through L{gatelayer.http.upgrade}).
        """
        # The raw mapping is keyed by canonical names on both channels: one
        # dict lookup per request (hasHeader costs six times as much).
        if b"Upgrade" in exchange.headers._rawHeaders:
            from gatelayer.http.upgrade import serve_upgrade
            serve_upgrade(self.upstream, self.spec, exchange, self.origin)
            return
        ProxiedRequest(self.upstream, self.spec, exchange, self.origin).start()


class ProxiedRequest:
    """
    One request on its way through an upstream: picks a server, sends, and
    relays the response (the L{gatelayer.upstream.client.IResponseSink} of the
    pool).

    It retries on another server only when the failure allows it (C{retries},
    C{retry_on}, the method), nothing of the response has reached the client,
    and a usable server it has not tried yet exists. Otherwise the client
    gets the real outcome of the last attempt: 504 for a timeout, 502 for a
    connection failure or an invalid response, and a server's own response
    (a 503 with its Retry-After, say) relayed whole even when C{retry_on}
    lists its status.

    An HTTP/2 stream's body streamed as it arrives (C{upload}, a
    L{gatelayer.upstream.interfaces.IStreamedBody}) is never sent twice:
    once part of it reached a server there is no retry.
    """

    __slots__ = (
        "terminal", "spec", "exchange", "server", "tried", "handle",
        "headers", "target", "body", "retryable", "head_sent", "in_flight", "discarding",
        "host_header", "next_server", "relayed_failure", "origin", "trailers_wanted",
        "request_trailers", "upload",
    )

    def __init__(self, terminal, route_spec, exchange, origin=None):
        """
        @param terminal: the upstream's L{UpstreamTerminal}.
        @param route_spec: the route's spec.
        @param exchange: the L{gatelayer.chain.Exchange} to answer.
        @param origin: the route's L{gatelayer.http.origin.OriginPolicy}
            on this upstream, or L{None}.
        """
        self.origin = origin
        self.terminal = terminal
        self.spec = route_spec
        self.exchange = exchange
        self.server = None
        self.tried = []
        self.handle = None
        self.head_sent = False
        self.in_flight = False
        self.discarding = False
        self.next_server = None
        self.relayed_failure = None
        self.upload = None

    def start(self):
        """
        Build what is sent upstream (once for all attempts) and send it.
        """
        exchange = self.exchange
        spec = self.spec
        method = exchange.method
        if method == b"CONNECT":
            # A route may let CONNECT through its filters, but an HTTP
            # upstream is not a tunnel.
            self.fail(501, "CONNECT tunnels are not proxied")
            return
        # Everything sent upstream comes from the exchange the filters
        # edited (normalized path, query without hidden credentials,
        # headers without identity spoofs), never from the raw request.
        headers = exchange.headers
        # The raw mapping, keyed by canonical names: no name is encoded
        # again per lookup.
        raw = headers._rawHeaders
        host = raw.get(_HOST)
        self.host_header = host[0] if host else None
        self.headers = upstream_headers(raw.items(), exchange.peer_ip, exchange.scheme, self.host_header, b"")
        te = raw.get(_TE)
        self.trailers_wanted = wants_trailers(te) if te else False
        self.request_trailers = ()
        self.target = upstream_target(spec, exchange)
        upload = self.upload = getattr(exchange.request, "upload", None)
        if upload is not None:
            if upload.failed:
                # The stream was answered or reset while the filters ran.
                return
            # A body sent as it arrives cannot be sent again.
            self.body = upload
            self.retryable = False
            upload.on_abort = self.client_lost
            if upload.trailer_names:
                self.headers.append((b"Trailer", b", ".join(sorted(upload.trailer_names))))
        else:
            if exchange.trailers:
                self._forward_trailers(headers.getRawHeaders(b"trailer"))
            self.body = upstream_body(exchange)
            self.retryable = may_retry_method(method, spec)
        exchange.on_client_lost(self.client_lost)
        self.attempt()

    def _forward_trailers(self, declared):
        """
        Send the request body's trailer fields on with it: those the client
        declared in its C{Trailer} header (undeclared ones, and every one
        without the header, are dropped), less the forbidden ones; the
        upstream gets a C{Trailer} header naming them.
        """
        if not declared:
            return
        fields = allowed_trailers(self.exchange.trailers, token_set(declared))
        if fields:
            self.request_trailers = fields
            self.headers.append((b"Trailer", b", ".join(sorted({n.lower() for n, _ in fields}))))

    def attempt(self, server=None):
        """
        Send the request to C{server}: for a retry, the one
        L{UpstreamState.retry_target} chose; else the one the balancer
        picks, and with none usable the client gets 503 at once.
        """
        state = self.terminal.state
        if server is None:
            server = state.pick(self.exchange.client_ip, self.tried)
            if server is None:
                self.fail(503, "no healthy upstream server",
                          ((b"retry-after", b"%d" % (state.retry_after(),)),))
                return
        self.server = server
        self.tried.append(server)
        routing = getattr(self.exchange.request, "routing", None)
        if routing is not None:
            routing.upstream_server = server.address
            routing.upstream = self.terminal.spec.name
            routing.tries += 1
            if routing.upstream_started is None:
                routing.upstream_started = routing.gateway.reactor.seconds()
        if self.spec.preserve_host and self.host_header is not None:
            self.headers[0] = (b"Host", self.host_header)
        else:
            self.headers[0] = (b"Host", server.address.encode("ascii"))
        if self.body is not None and not isinstance(self.body, bytes) and self.upload is None:
            self.body.seek(0)
        state.request_started(server)
        self.in_flight = True
        self.handle = self.send(server)

    def send(self, server):
        """
        Hand the request to the pool for C{server}; returns the handle.
        """
        return self.terminal.pool.request(
            server, self.exchange.method, self.target, self.headers, self.body, self,
            self.retryable, self.request_trailers)

    def _end_attempt(self):
        if self.in_flight:
            self.in_flight = False
            self.terminal.state.request_finished(self.server)

    def _retry_target(self, kind, sent=True):
        """
        The untried server to retry on after C{kind}, or L{None}. A request
        that reached a server (C{sent}) is resent only when its method
        allows it; one that never left may always go elsewhere.
        """
        if self.head_sent or (sent and not self.retryable):
            return None
        if self.upload is not None and self.upload.started:
            # Part of a streamed body went to the server that failed.
            return None
        return self.terminal.state.retry_target(kind, self.exchange.client_ip, self.tried)

    def _log_failure(self, kind, detail):
        log_server_failure(self.terminal.log, self.terminal.spec.name, self.server.address, kind, detail,
                           self.exchange.request_id)

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
        self._log_failure(kind, detail)
        # Nothing reached the server: safe to resend whatever the method.
        server = self._retry_target(kind, sent=False)
        if server is not None:
            self.attempt(server)
        elif kind == "timeout":
            self.fail(504, "upstream server did not accept the connection in time")
        else:
            self.fail(502, "upstream server unreachable")

    def response_head(self, status, reason, headers):
        """
        Relay the status and headers, or, for a status C{retry_on} lists
        when another server will really be tried, discard this response and
        retry once it is over (the connection stays reusable).

        The upstream's reason phrase is not relayed: the client gets the
        gateway's standard one for the status, whichever server channel
        serves it.
        """
        exchange = self.exchange
        if exchange.disconnected:
            return
        if status in self.terminal.retry_statuses:
            status_text = str(status)
            server = self._retry_target(status_text)
            if server is not None:
                self.discarding = status_text
                self.next_server = server
                return
            self.relayed_failure = status_text
        self.head_sent = True
        routing = getattr(exchange.request, "routing", None)
        if routing is not None:
            routing.upstream_first_byte = routing.gateway.reactor.seconds()
            routing.upstream_connect = self.handle.connect_time
        origin = self.origin
        if origin is None:
            relayed = relay_headers(headers)
        else:
            relayed = relay_headers(headers, origin, exchange.scheme, self.host_header)
        if self.trailers_wanted:
            self._announce_trailers(headers, relayed)
        sink = exchange.respond(status, relayed)
        if exchange.method != b"HEAD":
            sink.register_producer(self.handle)

    def response_body(self, data):
        """
        Relay body bytes as they come (a client gone ignores them).
        """
        if not self.discarding:
            self.exchange.write(data)

    def _announce_trailers(self, headers, relayed):
        # The upstream's Trailer header (hop-by-hop to relay_headers) goes
        # on, less the names that will not.
        names = [n for n in token_set(v for k, v in headers if k.lower() == b"trailer")
                 if allowed_trailers(((n, b""),), None, self.origin.hide if self.origin else ())]
        if names:
            relayed.addRawHeader(b"Trailer", b", ".join(sorted(names)))

    def response_trailers(self, fields):
        """
        Relay the response's trailer fields after its body when the client
        said C{TE: trailers}, less the forbidden and hidden ones.
        """
        if self.discarding or not self.trailers_wanted:
            return
        origin = self.origin
        fields = allowed_trailers(fields, None, origin.hide if origin is not None else frozenset())
        if fields:
            self.exchange.write_trailers(fields)

    def response_end(self):
        """
        The upstream's response is complete.
        """
        self._end_attempt()
        state = self.terminal.state
        if self.discarding:
            status_text, self.discarding = self.discarding, False
            state.report_failure(self.server, status_text)
            self._retry()
            return
        if self.relayed_failure is not None:
            # Relayed because no other server was left, but it still says
            # this server is failing (passive health counts it).
            state.report_failure(self.server, self.relayed_failure)
        else:
            state.report_success(self.server)
        # Unregisters the producer; nothing happens if the client is gone.
        self.exchange.finish()

    def response_failed(self, kind, detail):
        """
        The exchange with the server failed after the request was sent.
        """
        self._end_attempt()
        state = self.terminal.state
        failure_kind = health_failure(kind)
        state.report_failure(self.server, failure_kind)
        self._log_failure(kind, detail)
        exchange = self.exchange
        if exchange.disconnected:
            return
        if self.head_sent:
            # Part of the response is out: the only honest signal left is to
            # cut the connection so the client sees a truncated response.
            exchange.abort()
            return
        if self.discarding:
            # The retry was decided when this response's status came; its
            # body breaking off changes nothing.
            self.discarding = False
            self._retry()
            return
        server = self._retry_target(failure_kind)
        if server is not None:
            self.attempt(server)
        elif kind == "timeout":
            self.fail(504, "upstream server did not answer in time")
        elif kind == "bad_response":
            self.fail(502, "upstream server sent an invalid response")
        else:
            self.fail(502, "upstream server closed the connection")

    def _retry(self):
        server, self.next_server = self.next_server, None
        self.attempt(server)

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
        self.exchange.reply_error(status, message, headers)
