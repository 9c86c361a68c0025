"""
The per-request object filters and terminals see, and the reply a filter
can answer with.
"""

import json
from io import BytesIO

from attrs import define, field, frozen
from zope.interface import implementer

from gatelayer.chain._interfaces import IExchange
from gatelayer.chain._responder import NO_FILTERS, PROBLEM_JSON, Responder


@frozen
class Reply:
    """
    A complete response produced by a filter or a direct-response route.

    @ivar headers: a sequence of C{(name, value)} byte-string pairs.
    @ivar payload: for an error the gateway makes (L{json_reply}), the JSON
        document of C{body}; the request's id is added to it when the reply
        is sent (a constant reply serves every request).
    """

    status: int
    body: bytes = b""
    headers: tuple = ()
    payload: dict = None


def json_reply(status, payload, headers=(), content_type=b"application/json"):
    """
    A short JSON L{Reply}: the shape of every error the gateway itself
    produces (never a traceback).
    """
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Reply(status=status, body=body, headers=((b"content-type", content_type), *headers),
                 payload=payload if status >= 400 else None)


def problem_reply(status, title, detail=None, headers=(), **members):
    """
    An RFC 9457 problem details L{Reply} (C{application/problem+json}):
    C{{"type": "about:blank", "title": title, "status": status, "detail":
    detail, ...members}}; the request's id is added when it is sent, as to
    the gateway's own errors.

    @param members: further members of the document (JSON values), e.g.
        C{reason="stale timestamp"}.
    """
    payload = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        payload["detail"] = detail
    payload.update(members)
    return json_reply(status, payload, headers, content_type=PROBLEM_JSON)


@implementer(IExchange)
@define(slots=True)
class Exchange(Responder):
    """
    What the filter chain and the terminal know of one request, and how it
    is answered. Mutable on purpose: filters pass facts to later filters
    and to the upstream through it.

    Terminals answer through it (see L{Responder}): C{respond(status,
    headers, length)} returns the body sink, C{send(status, headers, body)}
    answers with a whole body in one call, C{reply_error} sends the
    gateway's JSON error, C{reply} a complete L{Reply}; the filters'
    response phases run there, so terminals know no filters.

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
    @ivar response_header_edits: C{(name, new_name)} pairs of lower-case
        bytes a filter's C{on_response} asks for: the responder renames the
        terminal's C{name} headers to C{new_name} (removes them when
        C{new_name} is L{None}), once, after every C{on_response} ran and
        before C{response_headers} are added (so what filters add stays).
    @ivar status: the response status once known (for C{on_response}).
    @ivar request: the request being answered (provides
        L{gatelayer.http.contract.IGatewayRequest}); L{None} for an
        exchange that is only filtered, never answered (filter tests).
    @ivar chain: the route's L{RouteChain} (filters, body hooks, Server
        header).
    @ivar ran: how many of C{chain.filters} ran their request phase (their
        response phases run, in reverse order).
    @ivar body_filters: the filters whose response-body hooks the body
        goes through, set when the head is made.
    @ivar body_declined: the body filters whose C{on_response} declined
        this response's body (compression deciding not to compress): they
        are left out of C{body_filters}, so their hooks cost the body
        nothing and their C{preserves_length} does not count.
    @ivar lost_callback: what the terminal asked to be called when the
        client goes away (L{on_client_lost}); the responder calls it too
        when a body filter answers instead of the terminal.
    @ivar new_body: the request body a filter put in place of the client's
        (L{replace_body}), or L{None}.
    @ivar request_id: the request's id (bytes; empty for none): returned in
        every answer's C{chain.request_id_header}, put in the gateway's
        error bodies, read by C{$request_id} and the WAF's log lines.
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
    response_header_edits: tuple = ()
    status: int = 0
    request: object = None
    chain: object = NO_FILTERS
    ran: int = 0
    body_filters: tuple = ()
    body_declined: tuple = ()
    lost_callback: object = None
    new_body: object = None
    request_id: bytes = b""

    # -- what a terminal needs of the request ------------------------------

    @property
    def disconnected(self):
        """
        Whether the client went away.
        """
        return self.request.disconnected

    def on_client_lost(self, callback):
        """
        Call C{callback()} if the client goes away before the response is
        finished (one callback per request; cheaper than a Deferred).
        """
        self.lost_callback = callback
        self.request.on_lost(callback)

    def body_length(self):
        """
        How many request body bytes were received (or are in the body a
        filter put in their place).
        """
        if self.new_body is not None:
            return len(self.new_body)
        return self.request.body_length()

    @property
    def body(self):
        """
        The request body: a file object positioned at its start (a
        L{io.BytesIO} or, for large bodies, a temporary file).
        """
        if self.new_body is not None:
            return BytesIO(self.new_body)
        return self.request.content

    @property
    def trailers(self):
        """
        The trailer fields of the client's chunked request body,
        C{(name, value)} byte pairs as received; empty for none (and once a
        filter replaced the body: they described the client's).
        """
        if self.new_body is not None:
            return ()
        return self.request.trailers

    def replace_body(self, data):
        """
        Send C{data} (bytes) upstream instead of the client's request body
        (a transformation's result); the terminal frames it with its own
        length.
        """
        self.new_body = data
