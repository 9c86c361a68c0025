"""
Turn C{gate.ini} text into a validated L{GateConfig}, reporting every problem.
"""

import configparser
import os
import os.path
import re

from gatelayer.config import values as v
from gatelayer.config.aggregate import aggregate_problems, parse_aggregate
from gatelayer.config._errors import ConfigError
from gatelayer.config.filtertypes import FilterTypes, FilterTypeError
from gatelayer.config.listener_l4 import l4_listener_keys, l4_problems, send_proxy_key
from gatelayer.config.listener_h2 import h2_listener_keys
from gatelayer.config.model import (
    FilterSpec, GateConfig, GatewaySpec, HealthSpec, ListenerSpec, RouteSpec, ServerSpec, UpstreamSpec,
)
from gatelayer.config.reader import SectionReader
from gatelayer.config.route_upstreams import (
    parse_mirror, parse_split_key, parse_upstream, route_upstream_problems,
)
from gatelayer.config.route_match import hidden_header_problems, route_conditions
from gatelayer.config.route_origin import origin_keys
from gatelayer.config.route_resource import resource_key
from gatelayer.config.tls_section import parse_tls_section
from gatelayer.config.tracing import TracingSpec, parse_sample_rate, parse_tracing

BALANCERS = ("round_robin", "weighted", "least_conn", "ip_hash", "random2")
RETRY_ON = ("connect_error", "timeout", "502", "503", "504")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+(?:/[!#$%&'*+\-.^_`|~0-9a-z]+)?")
KINDS = ("gateway", "listener", "tls", "upstream", "route", "filter", "tracing")
# Sections of one instance, without a name.
SINGLE_KINDS = ("gateway", "tracing")


def load_config(path):
    """
    Read and validate the configuration file at C{path}.

    @raise ConfigError: listing every problem, each naming file, section and key.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from None
    return parse_config_text(text, path)


def parse_config_text(text, path="gate.ini", cpu_count=None, filter_types=None):
    """
    Validate configuration C{text}; relative paths in it are taken relative to
    the directory of C{path}.

    @param filter_types: the L{FilterTypes} C{[filter:NAME] type} names
        are found in; L{None} reads the installed entry points.
    """
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True,
        default_section="\0no-defaults",
    )
    parser.optionxform = str.lower
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise ConfigError([f"{path}: {e.message if hasattr(e, 'message') else e}".replace("\n", " ")]) from None

    problems = []
    base_dir = os.path.dirname(os.path.abspath(path))
    readers = {}
    for section in parser.sections():
        kind, sep, name = section.partition(":")
        if kind not in KINDS or (kind in SINGLE_KINDS) == bool(sep) or (sep and not name.strip()):
            problems.append(
                f"{path} [{section}]: is not a known section "
                "(use [gateway], [listener:NAME], [tls:NAME], [upstream:NAME], [route:NAME], [filter:NAME], "
                "[tracing])")
            continue
        readers[section] = SectionReader(path, section, parser.items(section), problems, base_dir)

    def of_kind(kind):
        return [r for s, r in readers.items() if s.partition(":")[0] == kind]

    gateway_reader = readers.get("gateway") or SectionReader(path, "gateway", {}, problems, base_dir)
    gateway = _gateway(gateway_reader, cpu_count)
    tls = {r.name: parse_tls_section(r) for r in of_kind("tls")}
    listeners = tuple(_listener(r) for r in of_kind("listener"))
    upstreams = {r.name: _upstream(r) for r in of_kind("upstream")}
    kinds = filter_types if filter_types is not None else FilterTypes() if of_kind("filter") else None
    filters = {r.name: _filter(r, kinds) for r in of_kind("filter")}
    routes = tuple(_route(r) for r in of_kind("route"))
    tracing = parse_tracing(readers["tracing"]) if "tracing" in readers else TracingSpec()
    # The [gateway] reader is in readers when the file has the section: finish
    # each reader once, or its unknown keys would be listed twice.
    for reader in {id(r): r for r in [gateway_reader, *readers.values()]}.values():
        reader.finish()

    if not listeners:
        problems.append(f"{path}: no [listener:NAME] section: the gateway would accept nothing")
    for listener in listeners:
        if listener.tls is not None and listener.tls not in tls:
            problems.append(f"{path} [listener:{listener.name}] tls: no section [tls:{listener.tls}]")
    if not routes and (not listeners or any(listener.mode == "http" for listener in listeners)):
        problems.append(f"{path}: no [route:NAME] section: every request would get 404")
    problems.extend(l4_problems(path, gateway, listeners, upstreams, routes))
    for route in routes:
        problems.extend(route_upstream_problems(path, route, upstreams, filters))
        if route.aggregate is not None:
            problems.extend(aggregate_problems(path, route, upstreams))
        for name in route.filters:
            if name not in filters:
                problems.append(f"{path} [route:{route.name}] filters: no section [filter:{name}]")
    if any(spec.type == "transform" for spec in filters.values()):
        from gatelayer.config.filter_transform import identity_problems
        problems.extend(identity_problems(path, filters))
    problems.extend(hidden_header_problems(path, routes, gateway, filters))
    seen = {}
    for route in routes:
        key = (route.host, route.path, route.methods, frozenset(route.conditions))
        if key in seen:
            problems.append(
                f"{path} [route:{route.name}]: matches exactly what [route:{seen[key]}] matches "
                "(same host, path, methods and conditions)")
        seen[key] = route.name
    if problems:
        raise ConfigError(problems)
    return GateConfig(
        path=path, gateway=gateway, listeners=listeners, tls=tls,
        upstreams=upstreams, routes=routes, filters=filters, tracing=tracing,
    )



def _gateway(r, cpu_count):
    workers = r.get("workers", lambda t: v.parse_int(t, 1, 256), None)
    if workers is None:
        workers = cpu_count or os.cpu_count() or 1
    admin = r.get("admin", lambda t: v.parse_hostport(t, allow_port_zero=True), None)
    proxies = r.get("trusted_proxies", lambda t: tuple(v.parse_network(x) for x in v.parse_list(t)), ())
    admin_token = r.path("admin_token_file", None)
    if admin_token is not None and not os.path.isfile(admin_token):
        r.error("admin_token_file", "is not a file", admin_token)
    return GatewaySpec(
        workers=workers,
        drain_timeout=r.get("drain_timeout", v.parse_duration, 10.0),
        admin=admin,
        max_body_size=r.get("max_body_size", v.parse_size, 10 * 1024 * 1024),
        header_timeout=r.get("header_timeout", v.parse_duration, 10.0),
        idle_timeout=r.get("idle_timeout", v.parse_duration, 60.0),
        trusted_proxies=proxies or (),
        access_log=r.get("access_log", None, None),
        server_header=r.get("server_header", None, None),
        http_server=r.choice("http_server", ("twisted", "gatelayer"), "gatelayer") or "gatelayer",
        merge_slashes=_or(r.get("merge_slashes", v.parse_bool, True), True),
        escaped_slashes=r.choice("escaped_slashes", ("keep", "reject", "decode"), "reject") or "reject",
        underscore_headers=r.choice("underscore_headers", ("drop", "allow", "reject"), "drop") or "drop",
        body_timeout=_or(r.get("body_timeout", v.parse_duration, 30.0), 30.0),
        max_connections=_or(r.get("max_connections", lambda t: v.parse_int(t, 1, 10000000), 10000), 10000),
        max_connections_per_ip=_or(
            r.get("max_connections_per_ip", lambda t: v.parse_int(t, 0, 10000000), 0), 0),
        admin_token_file=admin_token,
        heartbeat_timeout=_or(r.get("heartbeat_timeout", v.parse_duration, 30.0), 30.0),
        metrics=_or(r.get("metrics", v.parse_bool, True), True),
        access_log_format=r.choice("access_log_format", ("json", "combined"), "json") or "json",
        request_id_header=_or(r.get("request_id_header", _header_name, "X-Request-Id"), "X-Request-Id"),
        trace_sample_rate=_or(r.get("trace_sample_rate", parse_sample_rate, 1.0), 1.0),
    )


def _header_name(text):
    """
    C{text} if it is a header field name (an RFC 9110 token).
    """
    text = text.strip()
    if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", text):
        raise ValueError("is not a header name")
    return text


def _or(value, default):
    """
    C{value}, or C{default} when reading it failed (the problem is already
    recorded).
    """
    return default if value is None else value


def _listener(r):
    def binds(text):
        return tuple(v.parse_hostport(item, allow_port_zero=True) for item in v.parse_list(text))
    l4 = l4_listener_keys(r)
    return ListenerSpec(
        name=r.name,
        binds=r.get("bind", binds) or (),
        tls=r.get("tls", None, None),
        redirect_https=r.get("redirect_https", v.parse_port, None),
        **l4,
        **h2_listener_keys(r, l4["mode"]),
    )


def parse_server(text):
    """
    Parse one server of an upstream: C{host:port [weight=N] [backup] [down]}.
    """
    words = text.split()
    if not words:
        raise ValueError("is an empty server")
    host, port = v.parse_hostport(words[0])
    weight, backup, down = 1, False, False
    for word in words[1:]:
        if word.startswith("weight="):
            weight = v.parse_int(word[len("weight="):], 1, 1000)
        elif word == "backup":
            backup = True
        elif word == "down":
            down = True
        else:
            raise ValueError(f"has an unknown option {word!r} (use weight=N, backup, down)")
    return ServerSpec(host=host, port=port, weight=weight, backup=backup, down=down)


def _servers(text):
    servers = []
    for item in v.parse_list(text):
        try:
            servers.append(parse_server(item))
        except ValueError as e:
            raise ValueError(f"has {item!r}, which {e}") from None
    servers = tuple(servers)
    if not servers:
        raise ValueError("lists no server")
    return servers


def _upstream(r):
    health = None
    path = r.get("health_check", None, None)
    interval = r.get("health_interval", v.parse_duration, 2.0)
    timeout = r.get("health_timeout", v.parse_duration, 1.0)
    rise = r.get("health_rise", lambda t: v.parse_int(t, 1, 100), 2)
    fall = r.get("health_fall", lambda t: v.parse_int(t, 1, 100), 3)
    status = r.get("health_status", v.parse_status_range, frozenset(range(200, 400)))
    host = r.get("health_host", None, None)
    if path is not None and path.lower() == "tcp":
        health = HealthSpec(path=None, kind="tcp", interval=interval or 2.0, timeout=timeout or 1.0,
                            rise=rise or 2, fall=fall or 3)
        for key in ("health_status", "health_host"):
            if r.has(key):
                r.error(key, "does not apply with health_check = tcp")
    elif path is not None:
        if not path.startswith("/"):
            r.error("health_check", "must be tcp or a path starting with /", path)
        health = HealthSpec(path=path, host=host, interval=interval or 2.0, timeout=timeout or 1.0,
                            rise=rise or 2, fall=fall or 3, status=status or frozenset(range(200, 400)))

    def retry_on(text):
        items = tuple(x.lower() for x in v.parse_list(text))
        for item in items:
            if item not in RETRY_ON:
                raise ValueError(f"has {item!r}, not one of " + ", ".join(RETRY_ON))
        return frozenset(items)

    tls = r.get("tls", v.parse_bool, False)
    ca = r.path("ca", None)
    cert = r.path("client_certificate", None)
    for key, p in (("ca", ca), ("client_certificate", cert)):
        if p is not None and not os.path.isfile(p):
            r.error(key, "is not a file", p)
    spec = UpstreamSpec(
        name=r.name,
        servers=r.get("servers", _servers) or (),
        balance=r.choice("balance", BALANCERS, "round_robin") or "round_robin",
        connect_timeout=r.get("connect_timeout", v.parse_duration, 5.0),
        read_timeout=r.get("read_timeout", v.parse_duration, 60.0),
        health=health,
        max_fails=r.get("max_fails", lambda t: v.parse_int(t, 0, 10000), 3),
        fail_timeout=r.get("fail_timeout", v.parse_duration, 10.0),
        retries=r.get("retries", lambda t: v.parse_int(t, 0, 10), 1),
        retry_on=r.get("retry_on", retry_on, frozenset({"connect_error", "timeout"})),
        max_connections=r.get("max_connections", lambda t: v.parse_int(t, 1, 1000000), 1000),
        max_pending=r.get("max_pending", lambda t: v.parse_int(t, 0, 1000000), 100),
        keepalive=r.get("keepalive", lambda t: v.parse_int(t, 0, 100000), 32),
        keepalive_timeout=r.get("keepalive_timeout", v.parse_duration, 60.0),
        tls=tls,
        ca=ca,
        verify=r.get("verify", v.parse_bool, True),
        server_name=r.get("server_name", None, None),
        client_certificate=cert,
        send_proxy=send_proxy_key(r),
    )
    if not tls:
        for key in ("ca", "server_name", "client_certificate", "verify"):
            if r.has(key):
                r.error(key, "only applies with tls = yes")
    return spec


def _route(r):
    path = r.get("path", None, "/")
    if path is not None and not path.startswith("/"):
        r.error("path", "must start with /", path)

    def methods(text):
        items = frozenset(m.upper() for m in v.parse_list(text))
        for m in items:
            if m not in METHODS:
                raise ValueError(f"has {m!r}, not an HTTP method")
        return items

    def respond(text):
        status_text, _, body = text.partition(" ")
        status = v.parse_int(status_text, 100, 599)
        return status, body.strip().encode("utf-8")

    host = r.get("host", _host_pattern, None)
    responded = r.get("respond", respond, None)
    static = r.path("static", None)
    upstream, split = r.get("upstream", parse_upstream, None) or (None, ())
    split_key = r.get("split_key", parse_split_key, None)
    mirror = r.get("mirror", parse_mirror, None)
    if split_key is not None and not split and (upstream is not None or not r.has("upstream")):
        r.error("split_key", "only applies with weighted versions (upstream = v1:90, v2:10)")
    if mirror is not None and not r.has("upstream"):
        r.error("mirror", "only applies to a route with upstream")
    aggregate = parse_aggregate(r)
    resource = resource_key(r)
    terminals = [k for k in ("respond", "static", "upstream", "aggregate", "resource") if r.has(k)]
    if not terminals:
        r.error(None, "needs one of respond, static, upstream, aggregate or resource")
    elif len(terminals) > 1:
        r.error(None, "has " + " and ".join(terminals)
                + ": a route has exactly one of respond, static, upstream, aggregate, resource")
    route_methods = r.get("methods", methods, None)
    if r.has("aggregate"):
        # Parts are reads: the route answers GET and HEAD, and says 405 to the rest.
        if route_methods is None:
            route_methods = frozenset({"GET", "HEAD"})
        elif route_methods - {"GET", "HEAD"}:
            r.error("methods", "may only list GET and HEAD on an aggregate route",
                    ", ".join(sorted(route_methods)))
        for key in ("strip_prefix", "preserve_host", "retry_non_idempotent"):
            if r.has(key):
                r.error(key, "does not apply to an aggregate route (its parts name their own targets)")
    if static is not None and not os.path.isdir(static):
        r.error("static", "is not a directory", static)
    rewrite_location, hide_headers = origin_keys(r)
    upgrades = r.get("upgrades", _upgrades, None)
    upgrade_timeout = r.get("upgrade_timeout", v.parse_duration, None)
    for key in ("upgrades", "upgrade_timeout", "request_buffering"):
        if r.has(key) and not r.has("upstream"):
            r.error(key, "only applies to a route with upstream")
    strip = r.get("strip_prefix", None, None)
    if strip is not None and (not strip.startswith("/") or (path and not path.startswith(strip))):
        r.error("strip_prefix", "must be a prefix of path", strip)
    return RouteSpec(
        name=r.name,
        path=path or "/",
        host=host,
        methods=route_methods,
        respond_status=responded[0] if responded else None,
        respond_body=responded[1] if responded else None,
        static=static,
        upstream=upstream,
        strip_prefix=strip,
        preserve_host=r.get("preserve_host", v.parse_bool, True),
        max_body_size=r.get("max_body_size", v.parse_size, None),
        filters=r.get("filters", v.parse_list, ()) or (),
        retry_non_idempotent=r.get("retry_non_idempotent", v.parse_bool, False),
        dotfiles=r.choice("dotfiles", ("allow", "deny"), "deny") == "allow",
        split=split,
        split_key=split_key or ("ip", None),
        mirror=mirror[0] if mirror else None,
        mirror_percent=mirror[1] if mirror else 100.0,
        aggregate=aggregate,
        conditions=route_conditions(r),
        rewrite_location=rewrite_location,
        hide_headers=hide_headers,
        upgrades=frozenset({"websocket"}) if upgrades is None else upgrades,
        upgrade_timeout=upgrade_timeout or 3600.0,
        resource=resource,
        request_buffering=r.get("request_buffering", v.parse_bool, False),
    )


def _upgrades(text):
    """
    A route's C{upgrades}: protocol tokens, or C{none}. C{h2c} is never
    allowed: tunnelled through a gateway it lets a client speak HTTP/2 to
    the server past the routes and filters.
    """
    items = [item.lower() for item in v.parse_list(text)]
    if items == ["none"]:
        return frozenset()
    for item in items:
        if item == "none":
            raise ValueError("lists none with protocols (none alone refuses every upgrade)")
        if item.split("/")[0] == "h2c":
            raise ValueError("has 'h2c', which is never proxied (an h2c upgrade through a gateway "
                             "reaches the server past its routes and filters)")
        if not _TOKEN.fullmatch(item):
            raise ValueError(f"has {item!r}, which is not a protocol name")
    if not items:
        raise ValueError("lists no protocol (use none to refuse every upgrade)")
    return frozenset(items)


def _host_pattern(text):
    host = text.strip().lower()
    name = host[2:] if host.startswith("*.") else host
    if not name or not all(part and all(c.isalnum() or c == "-" for c in part) for part in name.split(".")):
        raise ValueError("is not a host name or *.domain pattern")
    return host


def _filter(r, kinds):
    filter_type = r.get("type", None)
    settings = factory = timeout = None
    if filter_type is not None:
        problem = None
        if filter_type not in kinds:
            problem = "is not a filter type (" + kinds.describe_known() + ")"
        else:
            try:
                factory = kinds.load(filter_type)
            except FilterTypeError as e:
                problem = str(e)
        if problem is not None:
            r.error("type", problem, filter_type)
            for key in list(r._items):
                r.raw(key)
        else:
            try:
                settings = factory.parse_filter(r)
            except Exception as e:
                # A plugin's bug reading its section is a problem of this
                # section, reported with the rest, not a crash of --check.
                r.error(None, f"the filter type {filter_type!r} failed to read the section: "
                              f"{type(e).__name__}: {e}")
            timeout = r.get("timeout", _filter_timeout, factory.default_timeout)
    return FilterSpec(name=r.name, type=filter_type, settings=settings, timeout=timeout, factory=factory)


def _filter_timeout(text):
    seconds = v.parse_duration(text)
    if not 0 < seconds <= 3600:
        raise ValueError("must be more than 0s and at most 1h")
    return seconds
