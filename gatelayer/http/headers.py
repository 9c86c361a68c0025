"""
Header rewriting for the proxy: hop-by-hop removal and the X-Forwarded-* /
Forwarded headers. Pure functions over lists of byte pairs.
"""

from gatelayer.http1 import token_set, wants_trailers

HOP_BY_HOP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
])

# Set by the gateway itself: a client's own values are replaced.
_REPLACED_UPSTREAM = frozenset([b"host", b"x-forwarded-proto", b"x-forwarded-host", b"content-length"])


def connection_tokens(values):
    """
    The lower-cased header names listed in C{Connection} header values (the
    token-list reading of L{gatelayer.http1.token_set}, shared with the
    channels and the upstream client).
    """
    return token_set(values)


def _format_for(ip):
    if ":" in ip:
        return '"[%s]"' % (ip,)
    return ip


# How upstream_headers treats a request header name (any spelling).
_PLAIN, _CONNECTION, _TE, _DROPPED, _XFF, _FORWARDED = range(6)
# Names seen, and the forwarding headers made for (peer, scheme, host):
# both repeat from request to request; bounded against a client sending
# many different ones.
_KINDS = {}
_FORWARDING = {}
_CACHE_LIMIT = 1024


def _kind(name):
    lower = name.lower()
    if lower == b"connection":
        kind = _CONNECTION
    elif lower == b"te":
        kind = _TE
    elif lower in HOP_BY_HOP or lower in _REPLACED_UPSTREAM:
        kind = _DROPPED
    elif lower == b"x-forwarded-for":
        kind = _XFF
    elif lower == b"forwarded":
        kind = _FORWARDED
    else:
        kind = _PLAIN
    if len(_KINDS) < _CACHE_LIMIT:
        _KINDS[name] = kind
    return kind


def _forwarding(peer_ip, scheme, host_header):
    """
    C{(peer, element, tail)} for a request from C{peer_ip} over C{scheme}
    with the Host C{host_header}: the peer's address (bytes), the
    C{Forwarded} element describing this hop, and the four forwarding
    headers a request without earlier proxies' ones gets (kept for the
    next request from the same client).
    """
    peer = peer_ip.encode("ascii")
    proto = scheme.encode("ascii")
    element = b"for=" + _format_for(peer_ip).encode("ascii") + b";proto=" + proto
    if host_header is not None and b'"' not in host_header:
        element += b';host="' + host_header + b'"'
    tail = [(b"X-Forwarded-For", peer), (b"X-Forwarded-Proto", proto)]
    if host_header is not None:
        tail.append((b"X-Forwarded-Host", host_header))
    tail.append((b"Forwarded", element))
    made = (peer, element, tuple(tail))
    if len(_FORWARDING) < _CACHE_LIMIT:
        _FORWARDING[(peer_ip, scheme, host_header)] = made
    return made


def upstream_headers(raw_headers, peer_ip, scheme, host_header, upstream_host):
    """
    The header list sent upstream.

    @param raw_headers: the request's C{(name, [values])} pairs as from
        L{Headers.getAllRawHeaders}.
    @param peer_ip: the TCP peer, appended to X-Forwarded-For and Forwarded
        (as nginx's C{$proxy_add_x_forwarded_for} does).
    @param scheme: C{"http"} or C{"https"} as the client spoke to us.
    @param host_header: the client's Host header value (bytes) or L{None}.
    @param upstream_host: the Host header to send (the client's one when
        preserving the host, else the server's address), bytes.

    Of the client's C{TE}, only the C{trailers} token goes on (as
    C{TE: trailers}): other transfer codings are the connection's.
    @return: a list of C{(name, value)} byte pairs.
    """
    out = [(b"Host", upstream_host)]
    append = out.append
    kinds = _KINDS
    drop = None
    xff = None
    forwarded = None
    te = False
    for name, values in raw_headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind == _PLAIN:
            for value in values:
                append((name, value))
        elif kind == _CONNECTION:
            drop = connection_tokens(values)
        elif kind == _TE:
            te = wants_trailers(values)
        elif kind == _XFF:
            xff = values
        elif kind == _FORWARDED:
            forwarded = values
    if drop:
        out = [pair for pair in out if pair[0].lower() not in drop or pair[0] == b"Host"]
    if te:
        # TE is hop-by-hop, but the client's acceptance of trailers is what
        # lets the upstream send them, and the gateway relays them.
        out.append((b"TE", b"trailers"))
    made = _FORWARDING.get((peer_ip, scheme, host_header))
    if made is None:
        made = _forwarding(peer_ip, scheme, host_header)
    peer, element, tail = made
    if not xff and not forwarded:
        out += tail
        return out
    if xff:
        out.append((b"X-Forwarded-For", b", ".join(xff) + b", " + peer))
    else:
        out.append(tail[0])
    out += tail[1:-1]
    if forwarded:
        out.append((b"Forwarded", b", ".join(forwarded) + b", " + element))
    else:
        out.append(tail[-1])
    return out


def downstream_headers(headers, origin=None, scheme="http", authority=None):
    """
    Filter an upstream response's C{(name, value)} pairs for the client:
    hop-by-hop headers and those named in Connection are removed; framing is
    redone by the server side (Transfer-Encoding is not relayed), and
    Content-Length is relayed once, as a single number, even when the
    upstream repeated it or sent a list (C{2, 2}): the upstream client
    accepts those only when every length is the same, and a client behind
    the gateway must not have to decide which one counts.

    With an L{gatelayer.http.origin.OriginPolicy} C{origin}, the route's
    hidden headers are removed too and the URLs of Location,
    Content-Location and Refresh naming an upstream server are rewritten
    for a client that used C{scheme} and sent the Host C{authority}; the
    policy's one set of names keeps headers that need none of this at one
    lookup each.
    """
    drop = None
    length = False
    out = []
    special = HOP_BY_HOP if origin is None else origin.special
    for name, value in headers:
        lower = name.lower()
        if lower in special:
            if lower in HOP_BY_HOP:
                if lower == b"connection":
                    tokens = connection_tokens([value])
                    drop = tokens if drop is None else drop | tokens
                continue
            if lower in origin.hide:
                continue
            value = origin.rewrite(lower, value, scheme, authority)
        elif lower == b"content-length":
            if length:
                continue
            length = True
            if b"," in value:
                value = value.partition(b",")[0].strip(b" \t")
        out.append((name, value))
    if drop:
        out = [pair for pair in out if pair[0].lower() not in drop]
    return out
