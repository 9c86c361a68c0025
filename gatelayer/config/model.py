"""
The configuration model: frozen, slotted attrs classes built once from
C{gate.ini}. A reload builds a new L{GateConfig}; nothing mutates one.
"""

from attrs import field, frozen

from gatelayer.config.listener_h2 import H2Settings
from gatelayer.config.tracing import TracingSpec


@frozen
class GatewaySpec:
    """
    The C{[gateway]} section: process-wide settings.
    """

    workers: int
    drain_timeout: float = 10.0
    admin: tuple = None
    max_body_size: int = 10 * 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    trusted_proxies: tuple = ()
    access_log: str = None
    server_header: str = None
    http_server: str = "gatelayer"
    merge_slashes: bool = True
    escaped_slashes: str = "reject"
    underscore_headers: str = "drop"
    body_timeout: float = 30.0
    max_connections: int = 10000
    max_connections_per_ip: int = 0
    admin_token_file: str = None
    heartbeat_timeout: float = 30.0
    metrics: bool = True
    access_log_format: str = "json"
    request_id_header: str = "X-Request-Id"
    trace_sample_rate: float = 1.0


@frozen
class ListenerSpec:
    """
    A C{[listener:NAME]} section: addresses to accept on, and TLS if any.

    @ivar mode: C{"http"}, C{"tcp"} (every connection relayed to
        C{upstream}) or C{"tls_passthrough"} (relayed by the ClientHello's
        server name, per C{sni_routes}: C{((pattern, upstream), ...)}).
    @ivar accept_proxy: whether connections start with a PROXY header
        (taken only from C{[gateway] trusted_proxies}).
    @ivar header_timeout: seconds a layer 4 listener waits for the PROXY
        header and the ClientHello.
    @ivar l4_idle_timeout: seconds a relayed connection may go without a
        byte either way (the listener's C{idle_timeout}).
    @ivar http2: whether HTTP/2 is offered through ALPN (TLS listeners).
    @ivar h2: the L{H2Settings} of its HTTP/2 connections.
    """

    name: str
    binds: tuple
    tls: str = None
    redirect_https: int = None
    mode: str = "http"
    upstream: str = None
    sni_routes: tuple = ()
    accept_proxy: bool = False
    header_timeout: float = 10.0
    l4_idle_timeout: float = 300.0
    http2: bool = False
    h2: H2Settings = H2Settings()


#: Key exchange groups of Mozilla's "intermediate" TLS profile, in order.
DEFAULT_TLS_GROUPS = ("X25519", "P-256", "P-384")


@frozen
class TlsSpec:
    """
    A C{[tls:NAME]} section: where certificates come from and the policy.
    """

    name: str
    certificates: tuple
    default: str = None
    strict_sni: bool = False
    min_version: str = "TLSv1.2"
    ciphers: str = None
    hsts: str = None
    #: OCSP stapling: L{None} (off), C{"auto"} (fetched from the
    #: certificates' responders) or the path of a DER response file.
    ocsp_staple: str = None
    groups: tuple = DEFAULT_TLS_GROUPS
    prefer_server_ciphers: bool = None
    session_tickets: bool = True
    ticket_key_rotation: float = 3600.0


@frozen
class ServerSpec:
    """
    One server of an upstream: C{10.0.0.1:80 weight=3 backup}.
    """

    host: str
    port: int
    weight: int = 1
    backup: bool = False
    down: bool = False
    #: C{host:port} (C{[host]:port} for IPv6), the name servers are known
    #: by in logs, metrics and /status, and the key of per-server state:
    #: made once, not per request.
    address: str = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        if ":" in self.host:
            address = f"[{self.host}]:{self.port}"
        else:
            address = f"{self.host}:{self.port}"
        object.__setattr__(self, "address", address)


@frozen
class HealthSpec:
    """
    Active health checking of an upstream's servers (run by the master).

    @ivar kind: C{"http"} (C{GET path}, the status decides) or C{"tcp"} (a
        connection that opens passes; C{path} is then L{None}).
    """

    path: str
    host: str = None
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    status: frozenset = frozenset(range(200, 400))
    kind: str = "http"


@frozen
class UpstreamSpec:
    """
    An C{[upstream:NAME]} section: servers, balancing, timeouts, health and
    upstream TLS.
    """

    name: str
    servers: tuple
    balance: str = "round_robin"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    health: HealthSpec = None
    max_fails: int = 3
    fail_timeout: float = 10.0
    retries: int = 1
    retry_on: frozenset = frozenset({"connect_error", "timeout"})
    max_connections: int = 1000
    max_pending: int = 100
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    tls: bool = False
    ca: str = None
    verify: bool = True
    server_name: str = None
    client_certificate: str = None
    send_proxy: str = None


@frozen
class RouteSpec:
    """
    A C{[route:NAME]} section: what it matches and its terminal (a direct
    response, static files, an upstream, an aggregate of upstream calls or
    a twisted.web resource), with its filters.

    @ivar split: the versions of a weighted split, C{((name, weight), ...)}
        (C{upstream} is then L{None}); empty for one upstream.
    @ivar split_key: C{(kind, name)}: C{("ip", None)}, C{("header",
        lower-case name)}, C{("cookie", name)} or C{("jwt", claim)}.
    @ivar mirror: the shadow upstream's name, or L{None}; C{mirror_percent}
        is the share of requests copied to it.
    @ivar aggregate: the L{gatelayer.config.aggregate.AggregateSpec} of an
        aggregate route, else L{None}.
    @ivar conditions: the route's header, query and cookie conditions
        (L{gatelayer.config.route_match.MatchCondition}s), all of which must
        hold; empty for none.
    @ivar rewrite_location: whether Location, Content-Location and Refresh
        URLs naming an upstream server are rewritten to the client's
        scheme and Host.
    @ivar hide_headers: lower-case response header names (bytes) removed
        from the upstream's responses.
    @ivar upgrades: the protocols (lower-case tokens) a request may switch
        to through the proxy (C{Upgrade}); empty for none.
    @ivar upgrade_timeout: seconds an upgraded connection may go without a
        byte either way.
    @ivar resource: the C{package.module:attribute} name of a twisted.web
        resource (or a factory of one) mounted as the terminal, or L{None}.
    @ivar request_buffering: whether an HTTP/2 stream's request body is
        kept whole before the request goes upstream even where it could be
        streamed (see L{gatelayer.http2.upload}).
    """

    name: str
    path: str
    host: str = None
    methods: frozenset = None
    respond_status: int = None
    respond_body: bytes = None
    static: str = None
    upstream: str = None
    strip_prefix: str = None
    preserve_host: bool = True
    max_body_size: int = None
    filters: tuple = ()
    retry_non_idempotent: bool = False
    dotfiles: bool = False
    split: tuple = ()
    split_key: tuple = ("ip", None)
    mirror: str = None
    mirror_percent: float = 100.0
    aggregate: object = None
    conditions: tuple = ()
    rewrite_location: bool = True
    hide_headers: frozenset = frozenset()
    upgrades: frozenset = frozenset({"websocket"})
    upgrade_timeout: float = 3600.0
    resource: str = None
    request_buffering: bool = False

    @property
    def terminal(self):
        """
        C{"respond"}, C{"static"}, C{"upstream"} (one upstream in
        C{upstream}, or the versions of a weighted split in C{split}:
        C{(name, weight)} pairs, with C{upstream} L{None}), C{"aggregate"}
        or C{"resource"}.
        """
        if self.upstream is not None or self.split:
            return "upstream"
        if self.resource is not None:
            return "resource"
        if self.aggregate is not None:
            return "aggregate"
        if self.static is not None:
            return "static"
        return "respond"


@frozen
class FilterSpec:
    """
    A C{[filter:NAME]} section: its type and the type's own parsed settings.

    @ivar timeout: how long (seconds) the filter's request phase may take
        when it answers asynchronously, or L{None} for no bound (the
        C{timeout} key, else the type's C{default_timeout}).
    @ivar factory: the filter type that read the section and builds the
        filter (see L{gatelayer.config.filtertypes}); L{None} for a spec
        made without the loader, which names a built-in type.
    """

    name: str
    type: str
    settings: object = None
    timeout: float = None
    factory: object = field(default=None, eq=False, repr=False)


@frozen
class GateConfig:
    """
    A whole, validated configuration.
    """

    path: str
    gateway: GatewaySpec
    listeners: tuple = ()
    tls: dict = field(factory=dict)
    upstreams: dict = field(factory=dict)
    routes: tuple = ()
    filters: dict = field(factory=dict)
    tracing: TracingSpec = field(factory=TracingSpec)
