"""
The layer 4 keys of C{[listener:NAME]} (C{mode}, C{upstream}, C{routes},
C{accept_proxy}, C{header_timeout}, C{idle_timeout}) and of
C{[upstream:NAME]} (C{send_proxy}), and the checks across sections that
keep TCP and pass-through listeners consistent with the rest of the file.
"""

from gatelayer.config import values as v

__all__ = ["LISTENER_MODES", "l4_listener_keys", "l4_problems", "parse_sni_routes", "send_proxy_key"]

LISTENER_MODES = ("http", "tcp", "tls_passthrough")
_L4_KEYS = ("upstream", "routes", "accept_proxy", "idle_timeout")


def parse_sni_routes(text):
    """
    Parse a pass-through listener's C{routes}: C{NAME -> UPSTREAM} pairs
    separated by commas, where NAME is a host name, a C{*.domain} wildcard
    (one label) or C{*} (the default: no server name, or one nothing else
    matches). Returns C{((pattern, upstream), ...)}.
    """
    routes = []
    seen = set()
    for item in v.parse_list(text):
        pattern, arrow, upstream = item.partition("->")
        pattern, upstream = pattern.strip().lower(), upstream.strip()
        if not arrow or not pattern or not upstream or " " in upstream:
            raise ValueError(f"has {item!r}, which is not 'NAME -> UPSTREAM'")
        name = pattern[2:] if pattern.startswith("*.") else pattern
        if pattern != "*" and not _is_host_name(name):
            raise ValueError(f"has {pattern!r}, which is not a host name, *.domain or *")
        if pattern in seen:
            raise ValueError(f"names {pattern!r} twice")
        seen.add(pattern)
        routes.append((pattern, upstream))
    if not routes:
        raise ValueError("lists no route")
    return tuple(routes)


def _is_host_name(name):
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(
        label and not label.startswith("-") and all(c.isalnum() or c == "-" for c in label)
        and label.isascii()
        for label in labels)


def l4_listener_keys(r):
    """
    Read the layer 4 keys of the listener section C{r} (a
    L{gatelayer.config.reader.SectionReader}) into keyword arguments of
    L{gatelayer.config.model.ListenerSpec}, recording contradictions (keys
    of another mode, C{tls} on a layer 4 listener).
    """
    mode = r.choice("mode", LISTENER_MODES, "http") or "http"
    upstream = r.get("upstream", None, None)
    routes = r.get("routes", parse_sni_routes, None)
    accept_proxy = r.get("accept_proxy", v.parse_bool, False)
    header_timeout = r.get("header_timeout", v.parse_duration, None)
    idle_timeout = r.get("idle_timeout", v.parse_duration, None)
    if mode == "http":
        for key in _L4_KEYS + ("header_timeout",):
            if r.has(key):
                r.error(key, "only applies with mode = tcp or tls_passthrough")
    else:
        if r.has("tls"):
            r.error("tls", f"does not apply with mode = {mode} (the listener never terminates TLS; "
                           "use mode = tls_passthrough to relay TLS by server name)")
        if r.has("redirect_https"):
            r.error("redirect_https", f"does not apply with mode = {mode}")
    if mode == "tcp":
        if not r.has("upstream"):
            r.error("upstream", "is required with mode = tcp")
        if r.has("routes"):
            r.error("routes", "only applies with mode = tls_passthrough (a tcp listener has one upstream)")
    if mode == "tls_passthrough":
        if not r.has("routes"):
            r.error("routes", "is required with mode = tls_passthrough "
                              "(e.g. routes = api.example.com -> api, * -> default)")
        if r.has("upstream"):
            r.error("upstream", "does not apply with mode = tls_passthrough "
                                "(name the default in routes: * -> UPSTREAM)")
    for key, value in (("header_timeout", header_timeout), ("idle_timeout", idle_timeout)):
        if value is not None and value <= 0:
            r.error(key, "must be above zero", r.raw(key))
    if mode == "tcp" and r.has("header_timeout") and not accept_proxy:
        r.error("header_timeout", "only applies with accept_proxy = yes on a tcp listener")
    return {
        "mode": mode,
        "upstream": upstream if mode == "tcp" else None,
        "sni_routes": (routes or ()) if mode == "tls_passthrough" else (),
        "accept_proxy": bool(accept_proxy),
        "header_timeout": header_timeout or 10.0,
        "l4_idle_timeout": idle_timeout or 300.0,
    }


def send_proxy_key(r):
    """
    An upstream's C{send_proxy}: L{None}, C{"v1"} or C{"v2"}.
    """
    value = r.choice("send_proxy", ("v1", "v2", "no"), None)
    return None if value in (None, "no") else value


def l4_problems(path, gateway, listeners, upstreams, routes):
    """
    Problems across sections: unknown upstreams of layer 4 listeners,
    C{accept_proxy} without C{trusted_proxies}, C{send_proxy} on an upstream
    HTTP routes use, HTTP health checks of upstreams only layer 4 listeners
    use.
    """
    problems = []
    l4_used = set()
    for listener in listeners:
        section = f"{path} [listener:{listener.name}]"
        if listener.mode == "tcp" and listener.upstream is not None:
            l4_used.add(listener.upstream)
            if listener.upstream not in upstreams:
                problems.append(f"{section} upstream: no section [upstream:{listener.upstream}]")
        for pattern, upstream in listener.sni_routes:
            l4_used.add(upstream)
            if upstream not in upstreams:
                problems.append(f"{section} routes: {pattern} -> {upstream}: no section [upstream:{upstream}]")
        if listener.accept_proxy and not gateway.trusted_proxies:
            problems.append(f"{section} accept_proxy: needs [gateway] trusted_proxies "
                            "(PROXY headers are only taken from those addresses)")
    http_used = set()
    for route in routes:
        if route.upstream is not None:
            http_used.add(route.upstream)
        http_used.update(name for name, _ in route.split)
        if route.mirror is not None:
            http_used.add(route.mirror)
        aggregate = route.aggregate
        if aggregate is not None:
            http_used.update(getattr(part, "upstream", None) for part in getattr(aggregate, "parts", ()))
    for name, spec in upstreams.items():
        if spec.send_proxy is not None and name in http_used:
            problems.append(f"{path} [upstream:{name}] send_proxy: only applies to upstreams of "
                            "tcp and tls_passthrough listeners (HTTP routes use it)")
        if spec.tls and name in l4_used:
            problems.append(f"{path} [upstream:{name}] tls: a tcp or tls_passthrough listener relays "
                            "bytes as they are and never speaks TLS to its upstream")
        health = spec.health
        if health is not None and health.kind == "http" and name in l4_used and name not in http_used:
            problems.append(f"{path} [upstream:{name}] health_check: {health.path!r} is an HTTP check, "
                            "but only tcp or tls_passthrough listeners use this upstream "
                            "(use health_check = tcp)")
    return problems
