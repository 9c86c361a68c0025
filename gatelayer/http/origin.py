"""
Origin hiding for the proxy: response headers that would show clients an
upstream server's own address (C{Location}, C{Content-Location},
C{Refresh}) are rewritten to the address the client used, and the headers
a route names in C{hide_headers} are removed.

Pure: an L{OriginPolicy} is built once per route and upstream at load, and
L{rewrite_url} is a function of bytes. The URL reading is by hand and
strict on purpose: a value is rewritten only when its authority is plainly
one of the servers (no userinfo, no backslash, no stray character), so a
value that merely looks like the upstream to a loose parser
(C{http://10.0.0.1:8080@evil.example/}) is left exactly as the upstream
sent it, and never becomes a redirect to the gateway's host with an
attacker's path or to an attacker's host.
"""

import ipaddress
import re

from gatelayer.http.headers import HOP_BY_HOP

__all__ = ["REWRITTEN", "OriginPolicy", "origin_policy", "rewrite_refresh", "rewrite_url"]

#: The response headers whose URLs are rewritten.
REWRITTEN = frozenset([b"location", b"content-location", b"refresh"])

_DEFAULT_PORTS = {b"http": 80, b"https": 443}

# A reg-name or IPv4 address (no percent-escapes: a server is never named
# with one), then an optional port of digits.
_NAME_AUTHORITY = re.compile(rb"([A-Za-z0-9._~!$&'()*+,;=-]+)(?::([0-9]{0,5}))?")
_IPV6_AUTHORITY = re.compile(rb"\[([0-9A-Fa-f:.]+)\](?::([0-9]{0,5}))?")

# "5; url=http://h/x", "0;URL='/x'", "3, http://h/x": the delay, the
# separator and the optional "url=" are kept as sent.
_REFRESH = re.compile(rb"([ \t]*[0-9]+(?:\.[0-9]*)?[ \t]*[;,][ \t]*(?:[Uu][Rr][Ll][ \t]*=[ \t]*)?)(.*)",
                      re.DOTALL)


def _ipv6(text):
    """
    The compressed form of the IPv6 address C{text} (bytes), or L{None}.
    """
    try:
        return ipaddress.IPv6Address(text).compressed.encode("ascii")
    except ValueError:
        return None


def _server_key(server):
    """
    C{(host, port)} of a L{gatelayer.config.model.ServerSpec}, as
    L{_authority_key} reads a URL naming it.
    """
    host = server.host.lower().rstrip(".")
    if ":" in host:
        return _ipv6(host), server.port
    return host.encode("ascii"), server.port


def _authority_key(authority, scheme):
    """
    C{(host, port)} of a URL's C{authority} (bytes) under C{scheme} (the
    port defaulted from it), the host lower-case without IPv6 brackets; or
    L{None} when the authority is not plainly a host and port.
    """
    if authority[:1] == b"[":
        match = _IPV6_AUTHORITY.fullmatch(authority)
        if match is None:
            return None
        host = _ipv6(match.group(1).decode("ascii"))
        if host is None:
            return None
    else:
        match = _NAME_AUTHORITY.fullmatch(authority)
        if match is None:
            return None
        host = match.group(1).lower()
        if host.endswith(b"."):
            host = host[:-1]
    port = match.group(2)
    if port:
        number = int(port)
    else:
        number = _DEFAULT_PORTS.get(scheme)
        if number is None:
            return None
    return host, number


def rewrite_url(value, servers, scheme, authority, prefix=b""):
    """
    C{value} (a URL, bytes) with the client's C{scheme} and C{authority}
    in place of the upstream server's, or C{value} itself when it does not
    point at one of C{servers}.

    @param servers: the upstream's servers as C{(host, port)} pairs, the
        host bytes, lower-case, IPv6 without brackets.
    @param scheme: the scheme the client used, C{b"http"} or C{b"https"}.
    @param authority: the client's canonical Host (bytes).
    @param prefix: the route's C{strip_prefix} (bytes without a trailing
        slash), put back in front of the path.

    Only an absolute URL (C{http:} or C{https:}, any case) or a
    scheme-relative one (C{//host/x}, whose port defaults from the client's
    scheme, as the client resolves it) is considered; relative references
    are already the client's. The authority must be a plain C{host[:port]}
    (a name, IPv4 or bracketed IPv6): one with userinfo, a backslash or any
    other character is never rewritten.
    """
    if value[:2] == b"//":
        url_scheme = None
        start = 2
    else:
        colon = value.find(b":", 0, 6)
        if colon < 0:
            return value
        url_scheme = value[:colon].lower()
        if url_scheme not in _DEFAULT_PORTS or value[colon + 1:colon + 3] != b"//":
            return value
        start = colon + 3
    end = len(value)
    for stop in (b"/", b"?", b"#"):
        found = value.find(stop, start, end)
        if found >= 0:
            end = found
    key = _authority_key(value[start:end], url_scheme or scheme)
    if key is None or key not in servers:
        return value
    rest = value[end:]
    if prefix:
        rest = prefix + (rest if rest[:1] == b"/" else b"/" + rest)
    if url_scheme is None:
        return b"//" + authority + rest
    return scheme + b"://" + authority + rest


def rewrite_refresh(value, servers, scheme, authority, prefix=b""):
    """
    A C{Refresh} value (C{5; url=http://10.0.0.1:8080/x}) with its URL
    rewritten by L{rewrite_url}; the delay, separator, C{url=} and quotes
    are kept. A value of a delay alone, or of another shape, is unchanged.
    """
    match = _REFRESH.fullmatch(value)
    if match is None:
        return value
    head, url = match.group(1), match.group(2)
    quote = url[:1]
    if quote in (b"'", b'"') and len(url) > 1 and url[-1:] == quote:
        new = rewrite_url(url[1:-1], servers, scheme, authority, prefix)
        return value if new is url[1:-1] else head + quote + new + quote
    new = rewrite_url(url, servers, scheme, authority, prefix)
    return value if new is url else head + new


class OriginPolicy:
    """
    What one route does to the response headers of one upstream: the
    lower-case names it hides, and whether it rewrites URLs naming the
    upstream's servers.

    @ivar special: every lower-case name the response filter must look at
        (hop-by-hop, hidden, rewritten): one set lookup per header decides
        whether a header needs any work, so ordinary responses cost what
        they cost without the policy.
    @ivar hide: the lower-case names removed.
    @ivar servers: the servers' C{(host, port)} pairs, or L{None} when URLs
        are not rewritten.
    @ivar prefix: the route's C{strip_prefix} as bytes without a trailing
        slash (C{b""} for none).
    @ivar names: L{gatelayer.http.headers.relay_headers}' cache of what it
        does with each response header name under this policy.
    """

    __slots__ = ("special", "hide", "servers", "prefix", "names")

    def __init__(self, hide, servers, prefix):
        self.hide = hide
        self.servers = servers
        self.prefix = prefix
        self.special = HOP_BY_HOP | hide | (REWRITTEN if servers is not None else frozenset())
        self.names = {}

    def rewrite(self, lower, value, scheme, authority):
        """
        The value of the rewritten header C{lower} for a client that used
        C{scheme} (C{"http"} or C{"https"}) and sent the Host C{authority}
        (bytes, or L{None} when it sent none: nothing is rewritten then).
        """
        if authority is None or self.servers is None:
            return value
        scheme = scheme.encode("ascii")
        if lower == b"refresh":
            return rewrite_refresh(value, self.servers, scheme, authority, self.prefix)
        return rewrite_url(value, self.servers, scheme, authority, self.prefix)


def origin_policy(upstream_spec, route_spec):
    """
    The L{OriginPolicy} of the route C{route_spec} over the upstream
    C{upstream_spec}, or L{None} when the route neither hides headers nor
    rewrites URLs (the response headers then go through untouched).
    """
    hide = route_spec.hide_headers
    servers = None
    if route_spec.rewrite_location:
        servers = frozenset(_server_key(server) for server in upstream_spec.servers)
    if not hide and servers is None:
        return None
    prefix = (route_spec.strip_prefix or "").rstrip("/").encode("utf-8")
    return OriginPolicy(hide, servers, prefix)
