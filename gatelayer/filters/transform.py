"""
The C{transform} filter: request and response headers, the path and the
query rewritten at the gateway, and bodies converted between JSON and XML
and edited by JSON pointer (L{gatelayer.filters.transform_bodies}).

Templates were parsed when the configuration loaded; a request only looks
up variables and joins bytes. Variables see the request as it reached this
filter: a variable with no value (no consumer, a missing claim, parameter
or header) is empty. A rendered header value containing CR, LF or NUL is
never sent: it is dropped with a log line. Request headers change in the
order remove, rename, set, add; then the path is rewritten (the result is
normalized again, and one that does not start with C{/} or climbs above
it is refused with 400); then the query changes; then the body. Response
headers change in the same order through the exchange. Only a transform
with response body keys has a response-body hook: the others cost the body
path nothing.
"""

import json
import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IBodyFilter, IFilter, json_reply
from gatelayer.config.filter_transform import Variable
from gatelayer.filters.transform_bodies import BodyTransform
from gatelayer.http.canonical import normalize_path
from gatelayer.http1 import BadRequest

REQUEST_ID_CONTEXT = "request_id"
"""The exchange context key of the gateway's request id, when one is set."""

_UNSAFE_VALUE = re.compile(rb"[\r\n\0]")
_PATH_BYTES = re.compile(rb"/[\x21-\x7e\x80-\xff]*\Z")
_log = Logger(namespace="gatelayer.filters.transform")


def query_value(query, name):
    """
    The percent-decoded value (bytes) of the first parameter called C{name}
    (bytes, decoded form) in C{query}, or L{None}.
    """
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if _decode(key) == name:
            return _decode(value)
    return None


def _decode(text):
    return unquote_to_bytes(text.replace(b"+", b" "))


def scalar_bytes(value):
    """
    The bytes of a JSON scalar (string, number, boolean), or L{None} for
    anything else (null, an object, a list).
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, (int, float)):
        return str(value).encode("ascii")
    return None


def _claim_bytes(value):
    if value is None:
        return b""
    scalar = scalar_bytes(value)
    if scalar is not None:
        return scalar
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def variable_value(variable, exchange):
    """
    The value (bytes) of C{variable} (a L{Variable}) for C{exchange}; empty
    when it has none.
    """
    kind = variable.kind
    if kind == "remote_addr":
        return exchange.client_ip.encode("ascii", "replace")
    if kind == "host":
        return exchange.host.encode("utf-8")
    if kind == "path":
        return exchange.path
    if kind == "consumer":
        consumer = exchange.context.get("consumer")
        return consumer.encode("utf-8") if consumer else b""
    if kind == "request_id":
        if exchange.request_id:
            return exchange.request_id
        known = exchange.context.get(REQUEST_ID_CONTEXT)
        if known:
            return known.encode("utf-8") if isinstance(known, str) else known
        values = exchange.headers.getRawHeaders(b"x-request-id")
        return values[0] if values else b""
    if kind == "jwt":
        claims = exchange.context.get("jwt.claims") or {}
        return _claim_bytes(claims.get(variable.qualifier))
    if kind == "query":
        value = query_value(exchange.query, variable.qualifier.encode("utf-8"))
        return b"" if value is None else value
    values = exchange.headers.getRawHeaders(variable.qualifier.encode("ascii"))
    return b", ".join(values) if values else b""


def render(parts, exchange):
    """
    Join the template C{parts} (bytes and L{Variable}s) for C{exchange}.
    """
    if len(parts) == 1 and not isinstance(parts[0], Variable):
        return parts[0]
    return b"".join(variable_value(p, exchange) if isinstance(p, Variable) else p for p in parts)


@implementer(IFilter)
class TransformFilter:
    """
    Rewrite request headers, path and query on the way in, response headers
    on the way out.
    """

    def __init__(self, name, settings, merge_slashes=True, escaped_slashes="keep"):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_transform.TransformSettings}.
        """
        self.name = name
        self.settings = settings
        # A rewritten path is normalized as the gateway normalizes a
        # client's (its [gateway] settings); escapes the operator wrote are
        # kept unless the gateway decodes them.
        self._merge_slashes = merge_slashes
        self._escaped_slashes = "decode" if escaped_slashes == "decode" else "keep"
        self._response_edits = (
            tuple((name, None) for name in settings.response_remove)
            + tuple(settings.response_rename)
            + tuple((t.name, None) for t in settings.response_set))
        self._query_names = frozenset(settings.query_remove) | frozenset(
            name for name, _ in settings.query_add)
        body = settings.body
        self._body = BodyTransform(name, body) if body is not None else None

    def _header_value(self, template, exchange, side):
        value = render(template.parts, exchange)
        if _UNSAFE_VALUE.search(value):
            _log.warn("transform {filter} dropped the {side} header {header}: its value has CR, LF or NUL",
                      filter=self.name, side=side, header=template.name.decode("ascii"),
                      route=exchange.route)
            return None
        return value

    def on_request(self, exchange):
        """
        Change the request's headers, path and query; refuse (400) a
        rewritten path that does not start with C{/} or climbs above it.
        """
        settings = self.settings
        headers = exchange.headers
        for name in settings.request_remove:
            headers.removeHeader(name)
        for old, new in settings.request_rename:
            values = headers.getRawHeaders(old)
            if values is not None:
                headers.removeHeader(old)
                headers.setRawHeaders(new, values)
        # Rendered before any is applied, so every value sees the same request.
        rendered = [(t.name, self._header_value(t, exchange, "request"), True)
                    for t in settings.request_set]
        rendered += [(t.name, self._header_value(t, exchange, "request"), False)
                     for t in settings.request_add]
        query_values = [(name, render(parts, exchange)) for name, parts in settings.query_add]
        for name, value, replace in rendered:
            if replace:
                headers.removeHeader(name)
            if value is not None:
                headers.addRawHeader(name, value)
        if settings.rewrite is not None:
            refusal = self._rewrite(exchange)
            if refusal is not None:
                return refusal
        if self._query_names:
            exchange.query = self._query(exchange.query, query_values)
        if self._body is not None:
            return self._body.on_request(exchange)
        return None

    def _rewrite(self, exchange):
        pattern, replacement = self.settings.rewrite
        rewritten = pattern.sub(replacement, exchange.path, count=1)
        if rewritten == exchange.path:
            return None
        try:
            if _PATH_BYTES.match(rewritten) is None or b"?" in rewritten:
                raise BadRequest(400, "not an absolute path")
            exchange.path = normalize_path(rewritten, self._merge_slashes, self._escaped_slashes)
        except BadRequest as e:
            _log.warn("transform {filter} refused a rewritten path ({reason}): {path!r}",
                      filter=self.name, reason=e.message, path=rewritten, route=exchange.route)
            return json_reply(400, {
                "type": "about:blank", "title": "Bad Request", "status": 400,
                "detail": "the rewritten request path is not a valid path"},
                content_type=b"application/problem+json")
        return None

    def _query(self, query, added):
        kept = []
        if query:
            names = self._query_names
            for pair in query.split(b"&"):
                if pair and _decode(pair.partition(b"=")[0]) not in names:
                    kept.append(pair)
        for name, value in added:
            kept.append(name + b"=" + quote_from_bytes(value, safe="").encode("ascii"))
        return b"&".join(kept)

    def on_response(self, exchange):
        """
        Ask the responder to remove and rename the terminal's headers, and
        add the set and added ones.
        """
        settings = self.settings
        if self._response_edits:
            exchange.response_header_edits += self._response_edits
        out = exchange.response_headers
        for template in settings.response_set + settings.response_add:
            value = self._header_value(template, exchange, "response")
            if value is not None:
                out.append((template.name, value))


@implementer(IBodyFilter)
class BodyTransformFilter(TransformFilter):
    """
    A transform filter that also transforms response bodies: it holds a
    body it transforms back, whole, and sets the head's Content-Type and
    Content-Length before the head goes out.

    Its bytes out differ in number from the bytes in, but it sets the
    right Content-Length itself (unless a later body filter changes the
    length too), so it does not ask the responder to drop it: a response
    it passes untouched keeps the upstream's framing.
    """

    preserves_length = True

    def on_response(self, exchange):
        """
        The header edits, then decide whether the body is transformed.
        """
        TransformFilter.on_response(self, exchange)
        self._body.on_response_head(exchange)

    def on_response_body(self, exchange, data):
        """
        Hold back a body being transformed; pass any other.
        """
        return self._body.on_response_body(exchange, data)

    def on_response_end(self, exchange):
        """
        The transformed body, or L{None} after a 502 answered instead.
        """
        return self._body.on_response_end(exchange)


def build_filter(spec, services):
    """
    Build the transform filter of C{spec} (a
    L{gatelayer.config.model.FilterSpec}); a rewritten path is normalized
    with the gateway's C{merge_slashes} and C{escaped_slashes = decode}. A
    filter with response body keys is a L{BodyTransformFilter}.
    """
    body = spec.settings.body
    kind = BodyTransformFilter if body is not None and body.on_responses else TransformFilter
    gateway = services.config.gateway if services is not None and services.config is not None else None
    if gateway is None:
        return kind(spec.name, spec.settings)
    return kind(spec.name, spec.settings, gateway.merge_slashes, gateway.escaped_slashes)
