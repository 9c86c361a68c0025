"""
The worker's gateway: route table, filter chains and terminals built once per
config, and the per-request path through them.
"""

from attrs import frozen
from twisted.logger import Logger

from gatelayer.chain import Exchange, run_request_phase, run_response_phase
from gatelayer.filters import FilterServices, build_filter
from gatelayer.http.direct import DirectTerminal
from gatelayer.http.errors import error_body, reason_phrase
from gatelayer.http.static import StaticTerminal
from gatelayer.net.forwarded import resolve_client_ip
from gatelayer.routing import RouteMatch, RouteTable

_JSON = [b"application/json"]


@frozen
class RouteRuntime:
    """
    A route ready to serve: its spec, filters (built once, shared between
    routes listing the same filter), terminal and body limit.
    """

    spec: object
    filters: tuple
    terminal: object
    body_limit: int


class Gateway:
    """
    Everything a worker needs to answer requests for one configuration.

    @ivar connections: open client connections (all listeners).
    @ivar requests: requests received since start.
    @ivar active: requests in progress.
    """

    log = Logger()

    def __init__(self, config, reactor, master=None, upstreams=None, access_log=None):
        """
        @param upstreams: a mapping of upstream name to an object with
            C{serve(request, exchange, route_runtime, ran)} (the proxy
            terminal), built by the caller (see L{gatelayer.http.proxy}).
        """
        self.config = config
        self.reactor = reactor
        self.master = master
        self.access_log = access_log
        self.connections = 0
        self.requests = 0
        self.active = 0
        self.idle_callbacks = []
        self._trusted = config.gateway.trusted_proxies
        self._server_header = (config.gateway.server_header or "").encode("utf-8") or None
        services = FilterServices(reactor=reactor, master=master, config=config)
        self.filters = {name: build_filter(spec, services) for name, spec in config.filters.items()}
        self.upstreams = upstreams or {}
        entries = []
        default_limit = config.gateway.max_body_size
        for spec in config.routes:
            if spec.terminal == "upstream":
                terminal = self.upstreams[spec.upstream]
            elif spec.terminal == "static":
                terminal = StaticTerminal(spec, reactor)
            else:
                terminal = DirectTerminal(spec)
            limit = spec.max_body_size if spec.max_body_size is not None else default_limit
            runtime = RouteRuntime(spec, tuple(self.filters[n] for n in spec.filters), terminal, limit)
            entries.append((spec, runtime))
        self.table = RouteTable(entries)
        self._default_limit = default_limit

    # -- the request path --------------------------------------------------

    def early_route(self, request, method, uri):
        """
        Route a request whose headers just arrived. Returns the match and the
        body size limit that applies.
        """
        host = request.host_name = _host_of(request.requestHeaders.getRawHeaders(b"host"))
        path = uri.partition(b"?")[0]
        try:
            method_name = method.decode("ascii")
        except UnicodeDecodeError:
            method_name = ""
        match = self.table.match(host, path, method_name)
        request._gateway = self
        self.requests += 1
        self.active += 1
        if match.route is None:
            return match, self._default_limit
        return match, match.route.body_limit

    def handle(self, request):
        """
        Answer a fully received request.
        """
        factory = request.channel.factory
        listener = factory.listener
        match = request.match
        if match is None:
            match = RouteMatch(None, 404)
        if listener.redirect_https is not None:
            self._redirect_https(request, listener.redirect_https)
            return
        if match.route is None:
            if match.status == 405:
                request.responseHeaders.setRawHeaders(
                    b"allow", [", ".join(match.allowed).encode("ascii")])
                self.send_error(request, 405, "method not allowed", ())
            else:
                self.send_error(request, 404, "no route matches this request", ())
            return
        route = match.route
        peer_ip = request.client.host if request.client is not None else ""
        if self._trusted:
            client_ip = resolve_client_ip(
                peer_ip, request.requestHeaders.getRawHeaders(b"x-forwarded-for"), self._trusted)
        else:
            client_ip = peer_ip
        exchange = Exchange(
            method=request.method, path=request.path, query=request.query,
            headers=request.requestHeaders, client_ip=client_ip, peer_ip=peer_ip,
            scheme=factory.scheme, host=request.host_name,
            route=route.spec.name,
        )
        if not route.filters:
            route.terminal.serve(request, exchange, route, 0)
            return

        def after_filters(reply, ran):
            if request._disconnected:
                return
            if reply is None:
                route.terminal.serve(request, exchange, route, ran)
            elif isinstance(reply, Exception):
                self.log.failure("filter failed on {path}", path=request.path,
                                 failure=_failure_of(reply))
                self.send_error(request, 500, "internal error in a filter", route.filters[:ran],
                                exchange, ran)
            else:
                self.send_reply(request, reply, route, exchange, ran)

        run_request_phase(route.filters, exchange, after_filters)

    def response_headers(self, request, exchange, route, ran):
        """
        Run the response phase of C{route}'s filters that ran and add what
        they and the listener want to the response headers.
        """
        headers = request.responseHeaders
        if ran:
            errors = run_response_phase(route.filters, ran, exchange)
            for flt, error in errors:
                self.log.failure("response phase of filter {name} failed", name=flt.name,
                                 failure=_failure_of(error))
        if exchange is not None:
            for name, value in exchange.response_headers:
                headers.addRawHeader(name, value)
        for name, value in request.channel.factory.extra_headers:
            headers.setRawHeaders(name, [value])
        if self._server_header is not None:
            headers.setRawHeaders(b"server", [self._server_header])

    def send_reply(self, request, reply, route, exchange, ran):
        """
        Answer with a filter's L{Reply}.
        """
        exchange.status = reply.status
        request.setResponseCode(reply.status, reason_phrase(reply.status))
        for name, value in reply.headers:
            request.responseHeaders.addRawHeader(name, value)
        self.response_headers(request, exchange, route, ran)
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(reply.body),)])
        request.write(reply.body)
        request.finish()

    def send_error(self, request, status, message, filters, exchange=None, ran=0, headers=()):
        """
        Answer with the gateway's own short JSON error.
        """
        if request._disconnected or request.finished:
            return
        body = error_body(status, message)
        request.setResponseCode(status, reason_phrase(status))
        for name, value in headers:
            request.responseHeaders.setRawHeaders(name, [value])
        if exchange is not None and filters:
            exchange.status = status
            errors = run_response_phase(filters, ran, exchange)
            for flt, error in errors:
                self.log.failure("response phase of filter {name} failed", name=flt.name,
                                 failure=_failure_of(error))
            for name, value in exchange.response_headers:
                request.responseHeaders.addRawHeader(name, value)
        request.responseHeaders.setRawHeaders(b"content-type", _JSON)
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()

    def _redirect_https(self, request, port):
        host = request.host_name or request.getHost().host
        if ":" in host:
            host = "[%s]" % (host,)
        authority = host if port == 443 else "%s:%d" % (host, port)
        location = b"https://" + authority.encode("idna" if not host.isascii() else "ascii") + request.uri
        request.setResponseCode(308, reason_phrase(308))
        request.responseHeaders.setRawHeaders(b"location", [location])
        body = error_body(308, "use https")
        request.responseHeaders.setRawHeaders(b"content-type", _JSON)
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()

    # -- bookkeeping -------------------------------------------------------

    def request_finished(self, request):
        """
        Called once per request when it finished or its client went away.
        """
        self.active -= 1
        if self.access_log is not None:
            self.access_log.record(request)
        if self.active == 0 and self.idle_callbacks:
            self._fire_idle()

    def connection_closed(self):
        """
        Called when a client connection closes.
        """
        if self.connections == 0 and self.idle_callbacks:
            self._fire_idle()

    def stop(self):
        """
        Stop what filters run in the background (JWKS refresh timers).
        """
        for flt in self.filters.values():
            stop = getattr(flt, "stop", None)
            if stop is not None:
                stop()

    def _fire_idle(self):
        callbacks, self.idle_callbacks = self.idle_callbacks, []
        for callback in callbacks:
            callback()


def _host_of(values):
    """
    The lower-case host name of a Host header (without port), or C{""}.
    """
    if not values:
        return ""
    value = values[0]
    try:
        host = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return ""
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    return host.partition(":")[0]


def _failure_of(error):
    from twisted.python.failure import Failure
    try:
        return Failure(error)
    except Exception:
        return Failure(RuntimeError(repr(error)))
