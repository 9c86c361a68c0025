"""
The per-request object filters see, and the reply a filter can answer with.
"""

import json

from attrs import define, field, frozen


@frozen
class Reply:
    """
    A complete response produced by a filter or a direct-response route.

    @ivar headers: a sequence of C{(name, value)} byte-string pairs.
    """

    status: int
    body: bytes = b""
    headers: tuple = ()


def json_reply(status, payload, headers=(), content_type=b"application/json"):
    """
    A short JSON L{Reply}: the shape of every error the gateway itself
    produces (never a traceback).
    """
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status=status, body=body, headers=((b"content-type", content_type), *headers))


@define(slots=True)
class Exchange:
    """
    What the filter chain knows of one request. Mutable on purpose: filters
    pass facts to later filters and to the upstream through it.

    @ivar method: the request method, e.g. C{b"GET"}.
    @ivar path: the request path without the query string (bytes, as sent).
    @ivar query: the query string without C{?} (bytes, may be empty).
    @ivar headers: the request headers as a L{twisted.web.http_headers.Headers};
        filters may remove or set headers, and what is left is what goes
        upstream (hop-by-hop headers are removed later by the proxy).
    @ivar client_ip: the client address as resolved through the gateway's
        C{trusted_proxies} (never taken from a client-sent header otherwise).
    @ivar peer_ip: the address of the TCP peer.
    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: the requested host name (lower case, without port) or C{""}.
    @ivar route: the name of the matched route.
    @ivar context: facts found by filters, e.g. C{"consumer": "alice"},
        C{"jwt.claims": {...}}; later filters read them (a rate limit keyed on
        C{jwt.sub} reads C{context["jwt.claims"]["sub"]}).
    @ivar response_headers: C{(name, value)} byte pairs added to the response
        sent to the client (e.g. C{RateLimit} headers).
    @ivar status: the response status once known (for C{on_response}).
    """

    method: bytes
    path: bytes
    query: bytes
    headers: object
    client_ip: str
    peer_ip: str = ""
    scheme: str = "http"
    host: str = ""
    route: str = ""
    context: dict = field(factory=dict)
    response_headers: list = field(factory=list)
    status: int = 0
