"""
Trailer fields (RFC 9110 section 6.5, RFC 9112 section 7.1.2): which ones
the gateway passes on, and their serialization after a chunked body's last
chunk. The chunked decoder reads them (with the direction's bounds); this
module decides what of them may travel on.

RFC 9110 6.5.1 lets a recipient ignore a trailer field it does not know to
be safe there; the gateway never passes on one that would change how the
message is framed, routed, authenticated or cached had it been a header,
because a peer that merges trailers into the header section (as many
servers and client libraries do) would then act on a field no check of the
gateway ever saw.
"""

from gatelayer.http1.tokens import token_set

__all__ = ["FORBIDDEN_TRAILERS", "allowed_trailers", "last_chunk", "wants_trailers"]

#: Lower-case names never passed on as trailer fields: framing
#: (Content-Length, Transfer-Encoding, Trailer, Content-Encoding,
#: Content-Range, Content-Type), routing and connection control (Host,
#: Connection and the other hop-by-hop fields, TE, Expect, Max-Forwards,
#: Upgrade), authentication and cookies (Authorization,
#: Proxy-Authorization, WWW-Authenticate, Proxy-Authenticate, Cookie,
#: Set-Cookie), request modifiers (Range, If-*, Cache-Control, Pragma), and
#: response control (Age, Date, Expires, Location, Content-Location,
#: Refresh, Retry-After, Vary, Warning); plus the forwarding headers the
#: gateway itself vouches for (X-Forwarded-*, Forwarded).
FORBIDDEN_TRAILERS = frozenset([
    b"content-length", b"transfer-encoding", b"trailer", b"content-encoding", b"content-range",
    b"content-type", b"host", b"connection", b"keep-alive", b"proxy-connection", b"te", b"expect",
    b"max-forwards", b"upgrade", b"authorization", b"proxy-authorization", b"www-authenticate",
    b"proxy-authenticate", b"cookie", b"set-cookie", b"range", b"if-match", b"if-none-match",
    b"if-modified-since", b"if-unmodified-since", b"if-range", b"cache-control", b"pragma", b"age",
    b"date", b"expires", b"location", b"content-location", b"refresh", b"retry-after", b"vary",
    b"warning", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"forwarded",
])


def wants_trailers(te_values):
    """
    Whether C{TE} header values (a list of bytes, or L{None}) accept
    trailers: the C{trailers} token, in any case.
    """
    return te_values is not None and b"trailers" in token_set(te_values)


def allowed_trailers(fields, declared=None, hidden=frozenset()):
    """
    The C{(name, value)} pairs of C{fields} that may be passed on: none of
    L{FORBIDDEN_TRAILERS} nor of C{hidden} (lower-case names), and, when
    C{declared} (a set of lower-case names) is given, only those it names.
    """
    out = []
    for name, value in fields:
        lower = name.lower()
        if lower in FORBIDDEN_TRAILERS or lower in hidden:
            continue
        if declared is not None and lower not in declared:
            continue
        out.append((name, value))
    return out


def last_chunk(fields=()):
    """
    The bytes that end a chunked body: the last chunk, the trailer
    C{fields} (C{(name, value)} pairs, already checked), the empty line.
    """
    if not fields:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    add = parts.extend
    for name, value in fields:
        add((name, b": ", value, b"\r\n"))
    parts.append(b"\r\n")
    return b"".join(parts)
