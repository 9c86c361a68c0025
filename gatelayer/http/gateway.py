"""
The worker's gateway: route table, filter chains and terminals built once per
config, and the per-request path through them.
"""

from attrs import evolve, frozen
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from gatelayer.chain import (
    FILTER_FAILED, Exchange, RouteChain, error_body, report_failure, run_log_phase, run_request_phase,
)
from gatelayer.http.canonical import (
    KEEP as _KEEP, SUSPECT_PATH, HeaderPolicy, canonical_host, check_method, normalize_path, parse_target,
)
from gatelayer.http1 import BadRequest
from gatelayer.filters import FilterServices, build_filter
from gatelayer.http.aggregate import AggregateTerminal
from gatelayer.http.contract import RequestRouting
from gatelayer.http.direct import DirectTerminal
from gatelayer.http.errors import reason_phrase
from gatelayer.http.split import route_terminal
from gatelayer.http.static import StaticTerminal
from gatelayer.net.forwarded import resolve_client_ip
from gatelayer.observe.requestid import RequestIds
from gatelayer.observe.tracecontext import TracePropagator
from gatelayer.routing import RouteMatch, RouteTable

_JSON = [b"application/json"]
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What OPTIONS * is told the gateway accepts.
_OPTIONS_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_OPTIONS_MATCH = RouteMatch(None, 200, ("*",))
_NO_MATCH = RouteMatch(None, 404)
# Credentials passed in a query string under this name (RFC 6750 2.3) are
# redacted in the access log whatever the filters say.
_ALWAYS_REDACTED = (b"access_token",)
_HOST_CACHE_LIMIT = 1024
# The methods routed without checks (an origin-form target is all they
# need), and their names as the route table reads them.
_PLAIN_METHODS = {m.encode("ascii"): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
_SUSPECT_PATH = SUSPECT_PATH.search


def identity_headers(config):
    """
    The header names (lower-case bytes) the gateway sets to vouch for a
    client's identity: C{X-Consumer} and every header a JWT filter's
    C{forward_claims} names. A client's own copies are removed on every
    route, in every spelling.
    """
    names = {b"x-consumer"}
    for spec in config.filters.values():
        for _, header in getattr(spec.settings, "forward_claims", ()) or ():
            names.add(header.lower())
    return frozenset(names)


def credential_query_names(config):
    """
    The query parameter names (bytes) that carry credentials for some
    filter (API keys, JWTs in the query), redacted in the access log.
    """
    names = set(_ALWAYS_REDACTED)
    for spec in config.filters.values():
        settings = spec.settings
        for source in (getattr(settings, "source", None), getattr(settings, "token_from", None)):
            if source and source[0] == "query" and source[1]:
                name = source[1]
                names.add(name.encode("ascii") if isinstance(name, str) else name)
    return frozenset(names)


def _raw_header_name(name):
    """
    The key header C{name} (lower-case bytes) has in a request's raw header
    mapping: twisted's canonical spelling (C{b"X-Api-Version"}), which is
    what the route table's header conditions look up.
    """
    headers = Headers()
    headers.setRawHeaders(name, [b""])
    return next(iter(headers._rawHeaders))


def _with_preflight(spec, config):
    """
    C{spec} (a L{gatelayer.config.model.RouteSpec}) as the route table sees
    it for CORS preflights: with OPTIONS among its C{methods} when one of
    its filters is of type C{cors}, unchanged otherwise.
    """
    if spec.methods is None or "OPTIONS" in spec.methods:
        return spec
    if not any(config.filters[name].type == "cors" for name in spec.filters):
        return spec
    return evolve(spec, methods=spec.methods | {"OPTIONS"})


@frozen
class RouteRuntime:
    """
    A route ready to serve: its spec, filters (built once, shared between
    routes listing the same filter), terminal (an
    L{gatelayer.chain.ITerminal}), body limit, and the
    L{gatelayer.chain.RouteChain} its exchanges answer through.
    """

    spec: object
    filters: tuple
    terminal: object
    body_limit: int
    chain: object = None


class Gateway:
    """
    Everything a worker needs to answer requests for one configuration.

    @ivar connections: open client connections (all listeners).
    @ivar requests: requests received since start.
    @ivar active: requests in progress.
    """

    log = Logger()

    def __init__(self, config, reactor, master=None, upstreams=None, access_log=None, stores=None,
                 metrics=None, spans=None):
        """
        @param upstreams: a mapping of upstream name to an object whose
            C{for_route(route_spec)} is the route's terminal (an
            L{gatelayer.chain.ITerminal}), built by the caller (see
            L{gatelayer.http.proxy.UpstreamTerminal}); a split or mirrored
            route combines several (L{gatelayer.http.split.route_terminal}).
        @param stores: the worker's rate-limit store registry, handed to the
            filters (see L{gatelayer.filters.FilterServices}).
        @param metrics: the worker's
            L{gatelayer.observe.metrics.WorkerMetrics}, told of every finished
            request and handed to the filters, or L{None} (no metrics).
        @param spans: the worker's L{gatelayer.observe.otel.SpanRecorder}
            (sampled requests' spans are handed to it when they end), or
            L{None} without C{[tracing]} export.
        """
        self.config = config
        self.reactor = reactor
        self._seconds = reactor.seconds
        self.master = master
        self.access_log = access_log
        self.metrics = metrics
        if metrics is not None:
            metrics.use_config(config)
        self.spans = spans
        self.trace = TracePropagator(config.gateway.trace_sample_rate, recording=spans is not None)
        self.connections = 0
        self.requests = 0
        self.active = 0
        self.idle_callbacks = []
        self._trusted = config.gateway.trusted_proxies
        gateway = config.gateway
        self.request_ids = RequestIds(self._trusted)
        self.request_id_header = gateway.request_id_header.encode("ascii")
        self._request_id_key = _raw_header_name(self.request_id_header.lower())
        self._merge_slashes = gateway.merge_slashes
        self._escaped_slashes = gateway.escaped_slashes
        self._headers = HeaderPolicy(gateway.underscore_headers, identity_headers(config))
        self._header_verdicts = self._headers.verdicts
        self._hosts = {"http": {}, "https": {}}
        self._strict_sni = frozenset(
            listener.name for listener in config.listeners
            if listener.tls is not None and listener.tls in config.tls
            and config.tls[listener.tls].strict_sni)
        if access_log is not None:
            access_log.redact = credential_query_names(config)
        self._server_header = (config.gateway.server_header or "").encode("utf-8") or None
        self.upstreams = upstreams or {}
        services = FilterServices(reactor=reactor, master=master, config=config, stores=stores,
                                  upstreams=self.upstreams, metrics=metrics)
        self.filters = {name: build_filter(spec, services) for name, spec in config.filters.items()}
        entries = []
        preflight_entries = []
        default_limit = config.gateway.max_body_size
        for spec in config.routes:
            if spec.terminal == "upstream":
                terminal = route_terminal(spec, self.upstreams, reactor)
            elif spec.terminal == "static":
                terminal = StaticTerminal(spec, reactor)
            elif spec.terminal == "aggregate":
                terminal = AggregateTerminal(spec, self.upstreams, reactor)
            elif spec.terminal == "resource":
                # twisted.web.server is loaded only by workers that mount resources.
                from gatelayer.http.resource import ResourceTerminal
                terminal = ResourceTerminal(spec)
            else:
                terminal = DirectTerminal(spec)
            limit = spec.max_body_size if spec.max_body_size is not None else default_limit
            filters = tuple(self.filters[n] for n in spec.filters)
            runtime = RouteRuntime(spec, filters, terminal, limit,
                                   RouteChain.build(filters, self._server_header,
                                                    self.request_id_header,
                                                    [config.filters[n].timeout for n in spec.filters],
                                                    reactor))
            entries.append((spec, runtime))
            preflight_entries.append((_with_preflight(spec, config), runtime))
        self.table = RouteTable(entries, header_key=_raw_header_name)
        # CORS preflights (OPTIONS with Access-Control-Request-Method) also
        # match the routes whose cors filter answers them, whatever their
        # methods; every other request is routed by the table above.
        if preflight_entries != entries:
            self._preflight_table = RouteTable(preflight_entries, header_key=_raw_header_name)
        else:
            self._preflight_table = self.table
        self._default_limit = default_limit

    # -- the request path --------------------------------------------------

    def early_route(self, request, method, uri):
        """
        Make the canonical request of a request whose headers just arrived
        and route it. Sets and returns C{request.routing}, a
        L{RequestRouting} (the match, the host, the body size limit that
        applies); raises L{BadRequest} for what cannot be made canonical.

        The canonical request is what routing, every filter, the access log
        and the upstream see: the path normalized (see
        L{gatelayer.http.canonical.normalize_path}), the host validated and
        lower-cased (an absolute-form target's authority replaces Host), the
        Host header rewritten to that form, and the client headers the
        gateway vouches for removed.
        """
        raw = request.requestHeaders._rawHeaders
        method_name = _PLAIN_METHODS.get(method)
        if method_name is not None and uri[:1] == b"/":
            # origin-form, the usual case: no target object
            path, _, query = uri.partition(b"?")
            host_value = None
            form = "origin"
        else:
            if method_name is None:
                check_method(method)
                method_name = method.decode("ascii")
            target = parse_target(method, uri)
            path, query, host_value, form = target.path, target.query, target.authority, target.form
        if host_value is None:
            hosts = raw.get(b"Host")
            host_value = hosts[0] if hosts else None
        factory = request.channel.factory
        if host_value is not None:
            cache = self._hosts[factory.scheme]
            found = cache.get(host_value)
            if found is None:
                found = canonical_host(host_value, _DEFAULT_PORTS[factory.scheme])
                if len(cache) < _HOST_CACHE_LIMIT:
                    cache[host_value] = found
            host, authority = found
            if host_value != authority:
                raw[b"Host"] = [authority]
        else:
            host = ""
        if self._strict_sni and factory.listener.name in self._strict_sni:
            _check_sni(request, host)
        verdicts = self._header_verdicts
        for name in raw:
            if verdicts.get(name) is not _KEEP:
                # Some header is new to the policy or not kept as it is.
                self._headers.apply(raw)
                break
        # The one id every later step, the upstream and the log see.
        key = self._request_id_key
        client = request.client
        request_id = self.request_ids.choose(raw.get(key), client.host if client is not None else "")
        raw[key] = [request_id]
        if form == "asterisk":
            path = b"*"
        elif _SUSPECT_PATH(path) is not None:
            path = normalize_path(path, self._merge_slashes, self._escaped_slashes)
        request.path = path
        request.query = query
        if form == "asterisk":
            match, limit = _OPTIONS_MATCH, self._default_limit
        else:
            table = self.table
            if method_name == "OPTIONS" and b"Access-Control-Request-Method" in raw:
                table = self._preflight_table
            match = table.match(host, path, method_name, raw, query)
            route = match.route
            limit = self._default_limit if route is None else route.body_limit
        routing = request.routing = RequestRouting(
            match, host, limit, self, self._seconds(), request_id, self.trace.start(raw))
        self.requests += 1
        self.active += 1
        return routing

    def handle(self, request):
        """
        Answer a fully received request.
        """
        factory = request.channel.factory
        listener = factory.listener
        routing = request.routing
        if routing is not None and routing.gateway is not self:
            # Routed before a reload switched the factory to this gateway:
            # the request finishes on the configuration it started on.
            routing.gateway.handle(request)
            return
        match = routing.match if routing is not None else _NO_MATCH
        if listener.redirect_https is not None:
            self._redirect_https(request, listener.redirect_https)
            return
        if match.route is None:
            if match is _OPTIONS_MATCH:
                self._answer_options(request)
            elif match.status == 405:
                _send_error(request, 405, "method not allowed",
                            ((b"allow", ", ".join(match.allowed).encode("ascii")),))
            else:
                _send_error(request, 404, "no route matches this request")
            return
        route = match.route
        peer_ip = request.client.host if request.client is not None else ""
        if self._trusted:
            client_ip = resolve_client_ip(
                peer_ip, request.requestHeaders.getRawHeaders(b"x-forwarded-for"), self._trusted)
        else:
            client_ip = peer_ip
        # Positional: cheaper than keywords, once per request.
        exchange = Exchange(request.method, request.path, request.query, request.requestHeaders, client_ip,
                            peer_ip, factory.scheme, routing.host, route.spec.name)
        exchange.request = request
        exchange.chain = route.chain
        exchange.request_id = routing.request_id
        routing.exchange = exchange
        if not route.filters:
            route.terminal.serve(exchange)
            return
        trace = routing.trace
        if self.spans is not None and trace is not None and trace.sampled:
            trace.filters_started = self._seconds()
        else:
            trace = None

        def after_filters(reply, ran):
            exchange.ran = ran
            if trace is not None:
                trace.filters_ended = self._seconds()
            failed = isinstance(reply, Exception)
            if failed:
                report_failure(route.filters[ran - 1], reply, routing.request_id)
            if request.disconnected:
                return
            if reply is None:
                route.terminal.serve(exchange)
            elif failed:
                exchange.reply_error(500, None, problem=FILTER_FAILED)
            else:
                exchange.reply(reply)

        run_request_phase(route.filters, exchange, after_filters)

    def _answer_options(self, request):
        """
        Answer C{OPTIONS *}: the gateway itself, not a route, is asked.
        """
        request.setResponseCode(200, reason_phrase(200))
        _request_id(request)
        request.responseHeaders.setRawHeaders(b"allow", [_OPTIONS_ALLOW])
        request.responseHeaders.setRawHeaders(b"content-length", [b"0"])
        request.finish()

    def _redirect_https(self, request, port):
        # The location is built from the validated host and the normalized
        # path only: neither Host nor an absolute-form target can send the
        # client elsewhere.
        host = request.routing.host if request.routing is not None else ""
        host = host or request.getHost().host
        if ":" in host:
            host = "[%s]" % (host,)
        authority = host if port == 443 else "%s:%d" % (host, port)
        target = request.path if request.path != b"*" else b"/"
        if request.query:
            target += b"?" + request.query
        location = b"https://" + authority.encode("ascii") + target
        request.setResponseCode(308, reason_phrase(308))
        request.responseHeaders.setRawHeaders(b"location", [location])
        body = error_body(308, "use https", _request_id(request))
        request.responseHeaders.setRawHeaders(b"content-type", _JSON)
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()

    def refusal_id(self, request):
        """
        C{(header name, id)} for a refusal written before a request could
        answer (bad framing, limits): the id of C{request} when it was
        routed, else a new one.
        """
        routing = getattr(request, "routing", None)
        if routing is not None and routing.request_id:
            return self.request_id_header, routing.request_id
        return self.request_id_header, self.request_ids.new()

    # -- bookkeeping -------------------------------------------------------

    def request_finished(self, request):
        """
        Called once per request when it finished or its client went away.
        """
        self.active -= 1
        if self.access_log is not None:
            self.access_log.record(request)
        if self.metrics is not None:
            self.metrics.request_finished(request)
        if self.spans is not None:
            self._record_spans(request)
        routing = request.routing
        if routing is not None:
            exchange = routing.exchange
            if exchange is not None and exchange.chain.log_hooks:
                run_log_phase(exchange)
            routing.exchange = None
        if self.active == 0 and self.idle_callbacks:
            self._fire_idle()

    def _record_spans(self, request):
        """
        Hand a sampled request's spans to the span recorder; a failure is
        logged, never the request's problem.
        """
        routing = request.routing
        if routing is None or routing.trace is None or not routing.trace.sampled:
            return
        try:
            self.spans.record(request, self._seconds(), self.trace.span_id)
        except Exception:
            self.log.failure("recording the spans of {path} failed", path=request.path)

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


def _request_id(request):
    """
    The request id of a routed C{request} (bytes), set in the response's
    request id header; C{b""} for none.
    """
    routing = request.routing
    if routing is None or not routing.request_id:
        return b""
    request.responseHeaders.setRawHeaders(routing.gateway.request_id_header, [routing.request_id])
    return routing.request_id


def _send_error(request, status, message, headers=()):
    """
    Answer a request no route took with the gateway's own short JSON error
    (no filter ran: there is no exchange).
    """
    body = error_body(status, message, _request_id(request))
    request.setResponseCode(status, reason_phrase(status))
    for name, value in headers:
        request.responseHeaders.setRawHeaders(name, [value])
    request.responseHeaders.setRawHeaders(b"content-type", _JSON)
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
    request.write(body)
    request.finish()


def _check_sni(request, host):
    """
    With C{strict_sni}, the request's host must be the name the client gave
    in its TLS handshake: 421 Misdirected Request otherwise (a client must
    not reach one virtual host over a connection opened for another).
    """
    transport = request.channel.transport
    try:
        sni = transport.getHandle().get_servername()
    except Exception:
        sni = None
    if sni is None or sni.decode("ascii", "replace").lower().rstrip(".") != host:
        raise BadRequest(421, "the request's host does not match the TLS server name")

