"""
Header rewriting for the proxy: hop-by-hop removal and the X-Forwarded-* /
Forwarded headers. Pure functions over lists of byte pairs, and
L{relay_headers}, which makes the response head the client gets straight
into a twisted.web L{Headers} (the form the server channels write).
"""

from twisted.web.http_headers import Headers, InvalidHeaderName

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
    # Names Connection lists that are hop-by-hop anyway (an upstream's
    # "Connection: keep-alive") are already gone: no second pass for them.
    if drop and not drop <= HOP_BY_HOP:
        out = [pair for pair in out if pair[0].lower() not in drop]
    return out


# Where relay_headers puts a response header, by its lower-case name.
_RELAY, _HOP, _RELAY_CONNECTION, _LENGTH, _HIDDEN, _REWRITTEN = range(6)
# Connection values that name nothing but hop-by-hop headers, as nginx and
# most servers send them: no token set to build.
_PLAIN_CONNECTION = frozenset([b"keep-alive", b"close", b"Keep-Alive", b"Close"])
# Response header names as sent -> (canonical name, kind), without a route
# policy; an OriginPolicy keeps its own. Bounded: the names are a server's.
_RELAY_NAMES = {}
_MAX_NAMES = 1000

try:
    from twisted.web.http_headers import _nameEncoder
    _canonical_name = _nameEncoder.encode
    Headers()._rawHeaders  # noqa: B018 -- the layout relay_headers fills
except (ImportError, AttributeError):  # pragma: no cover - other Twisted versions
    _canonical_name = None


def _relay_kind(name, origin):
    """
    C{(canonical name, kind)} of the response header C{name} (a token)
    under the route policy C{origin} (or L{None}), in the order
    L{downstream_headers} decides: hop-by-hop, hidden, rewritten,
    Content-Length, relayed.
    """
    lower = name.lower()
    if lower in HOP_BY_HOP:
        kind = _RELAY_CONNECTION if lower == b"connection" else _HOP
    elif origin is not None and lower in origin.hide:
        kind = _HIDDEN
    elif origin is not None and lower in origin.special:
        kind = _REWRITTEN
    elif lower == b"content-length":
        kind = _LENGTH
    else:
        kind = _RELAY
    return _canonical_name(name), kind


def relay_headers(headers, origin=None, scheme="http", authority=None):
    """
    What L{downstream_headers} relays of C{headers}, as a L{Headers} (the
    names in twisted's canonical case, as C{addRawHeader} would have made
    them), built in one pass: each name is looked up once in a cache, not
    lower-cased and compared several times.

    C{headers} must have passed the response head's grammar (names are
    tokens, no value holds CR or LF), as the upstream client's are: the
    values go in without twisted's sanitizing.
    """
    if _canonical_name is None:  # pragma: no cover - other Twisted versions
        out = Headers()
        for name, value in downstream_headers(headers, origin, scheme, authority):
            out.addRawHeader(name, value)
        return out
    names = _RELAY_NAMES if origin is None else origin.names
    raw = {}
    drop = None
    length = False
    for name, value in headers:
        entry = names.get(name)
        if entry is None:
            entry = _relay_kind(name, origin)
            if len(names) < _MAX_NAMES:
                names[name] = entry
        canonical, kind = entry
        if kind:
            if kind == _LENGTH:
                if length:
                    continue
                length = True
                if b"," in value:
                    value = value.partition(b",")[0].strip(b" \t")
            elif kind == _REWRITTEN:
                value = origin.rewrite(canonical.lower(), value, scheme, authority)
            else:
                if kind == _RELAY_CONNECTION and value not in _PLAIN_CONNECTION:
                    tokens = token_set((value,))
                    drop = tokens if drop is None else drop | tokens
                continue
        values = raw.get(canonical)
        if values is None:
            raw[canonical] = [value]
        else:
            values.append(value)
    if drop:
        for token in drop - HOP_BY_HOP:
            try:
                raw.pop(_canonical_name(token), None)
            except InvalidHeaderName:
                # Not a token: no header has that name.
                pass
    out = Headers()
    out._rawHeaders = raw
    return out
