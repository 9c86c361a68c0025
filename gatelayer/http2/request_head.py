"""
A stream's request head: the pseudo-header fields and regular fields the
C{h2} library decoded (and already checked: one of each pseudo-header,
before the regular fields, none unknown; lower-case names; no
connection-specific fields; C{te} only C{trailers}; no CR, LF or NUL; Host
and C{:authority} agreeing) turned into the method, target and
L{Headers} an HTTP/1.1 request would have, with what HTTP/2 adds to check.
Pure: no I/O.
"""

from twisted.web.http_headers import Headers

__all__ = ["RequestHeadError", "request_head"]

_SCHEMES = frozenset([b"https", b"http"])


class RequestHeadError(Exception):
    """
    A request head the gateway answers with an error status rather than
    serve.

    @ivar status: the status (400, 405).
    @ivar message: what is wrong, for the JSON error body.
    """

    def __init__(self, status, message):
        super().__init__(status, message)
        self.status = status
        self.message = message


def request_head(fields):
    """
    C{(method, target, headers)} of the decoded header list C{fields}
    (C{(name, value)} byte pairs): C{:authority} becomes C{Host} when the
    client sent none, C{cookie} fields are joined with C{"; "} (RFC 9113
    8.2.3).

    @raise RequestHeadError: for a C{CONNECT} (HTTP/2 tunnels and RFC
        8441 upgrades are not served: 405), an unknown C{:scheme}, a
        C{:path} neither origin-form nor C{*} (for C{OPTIONS}), or a
        request without C{:authority} nor Host (400).
    """
    pseudo = {}
    headers = Headers()
    cookies = []
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        else:
            headers.addRawHeader(name, value)
    method = pseudo.get(b":method", b"")
    if method == b"CONNECT":
        raise RequestHeadError(405, "CONNECT is not served over HTTP/2")
    if pseudo.get(b":scheme") not in _SCHEMES:
        raise RequestHeadError(400, "the :scheme pseudo-header must be https or http")
    target = pseudo.get(b":path", b"")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        raise RequestHeadError(400, "the :path pseudo-header must be an absolute path")
    authority = pseudo.get(b":authority")
    if not headers.hasHeader(b"host"):
        if not authority:
            raise RequestHeadError(400, "the request has neither :authority nor Host")
        headers.setRawHeaders(b"host", [authority])
    if cookies:
        headers.setRawHeaders(b"cookie", [b"; ".join(cookies)])
    return method, target, headers
