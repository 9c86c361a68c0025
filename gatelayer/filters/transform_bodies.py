"""
The body half of the C{transform} filter: request bodies are converted
(C{xml_to_json}, C{json_to_xml}) and edited (JSON pointers) before they go
upstream; response bodies are held back, whole, and converted before they
go to the client.

Only bodies whose C{Content-Type} is the source format are touched (JSON:
C{application/json}, C{application/*+json}; XML: C{application/xml},
C{text/xml}, C{application/*+xml}); others, empty bodies and compressed
bodies pass untouched. Pointer edits apply to the JSON form of a body:
after C{xml_to_json}, before C{json_to_xml}, or to a JSON body as it is.
What cannot be transformed is answered with a problem+json body naming
what is wrong and where: 400 (413 for size) for a request, 502 for an
upstream's response, each logged.
"""

import json

from twisted.logger import Logger

from gatelayer.chain import Reply
from gatelayer.filters.bodies import TransformError, apply_edits, is_json_type, is_xml_type, json_to_xml, \
    xml_to_json
from gatelayer.filters.validate import PROBLEM_JSON, BodyRefusal, parse_json_body

__all__ = ["BodyTransform", "JSON_TYPE", "XML_TYPE"]

XML_TYPE = b"application/xml; charset=utf-8"
"""The Content-Type of a body C{json_to_xml} wrote."""

JSON_TYPE = b"application/json"
"""The Content-Type of a body C{xml_to_json} (or a pointer edit) wrote."""

# What a response transformation would make wrong: the upstream's
# validators and digests describe the bytes it sent, not ours.
_STALE_RESPONSE_HEADERS = (b"etag", b"content-md5", b"digest", b"accept-ranges")
# Asked of the upstream by clients on routes whose responses are
# transformed: a compressed or partial body cannot be transformed.
_UNWANTED_REQUEST_HEADERS = (b"accept-encoding", b"range", b"if-range")
_TITLES = {400: "Bad Request", 413: "Content Too Large", 502: "Bad Gateway"}
_log = Logger(namespace="gatelayer.filters.transform")


def _media_type(values):
    # Several Content-Type headers say nothing for sure: no type.
    if not values or len(values) > 1:
        return None
    return values[0].partition(b";")[0].strip().lower().decode("latin-1")


def _source(kind):
    if kind is None:
        return None
    if is_json_type(kind):
        return "json"
    if is_xml_type(kind):
        return "xml"
    return None


def _compressed(values):
    return any(token.strip().lower() not in (b"", b"identity")
               for value in values or () for token in value.split(b","))


def problem(status, detail):
    """
    The problem+json body (RFC 9457) of a transformation's refusal.
    """
    return json.dumps({"type": "about:blank", "title": _TITLES[status], "status": status, "detail": detail},
                      separators=(",", ":")).encode("utf-8")


class _Held:
    """
    The response body held back while it is read whole.
    """

    __slots__ = ("chunks", "size")

    def __init__(self):
        self.chunks = []
        self.size = 0


class BodyTransform:
    """
    One transform filter's body transformation, built once from its
    L{gatelayer.config.transform_bodies.BodySettings}.
    """

    def __init__(self, name, settings):
        """
        @param name: the filter's section name (for logs, and the key of
            the per-response state it keeps in the exchange's context).
        @param settings: the body settings.
        """
        self.name = name
        self.settings = settings
        self.on_requests = settings.on_requests
        self.on_responses = settings.on_responses
        self._key = "transform.body." + name

    def _wanted(self, source, direction, edits):
        """
        Whether a body of C{source} format is transformed by C{direction}
        and C{edits}.
        """
        if source == "xml":
            return direction == "xml_to_json"
        return source == "json" and (direction == "json_to_xml" or bool(edits))

    def _convert(self, data, source, direction, removes, renames, what):
        """
        The transformed C{data}: C{(body, content type)}.

        @raise TransformError: naming what is wrong (C{too_large} for size).
        @raise BodyRefusal: the JSON does not parse.
        """
        limit = self.settings.max_size
        if source == "xml":
            document = xml_to_json(data)
        else:
            document = parse_json_body(data, what)
        if removes or renames:
            document = apply_edits(document, removes, renames)
        if source == "json" and direction == "json_to_xml":
            return json_to_xml(document, self.settings.xml_root, limit), XML_TYPE
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (from a JSON \u escape) has no UTF-8: kept escaped.
            body = json.dumps(document, separators=(",", ":")).encode("ascii")
        if len(body) > limit:
            raise TransformError(f"would be larger than {limit} bytes as JSON", too_large=True)
        return body, JSON_TYPE

    # -- requests ------------------------------------------------------------

    def on_request(self, exchange):
        """
        Transform the request body of C{exchange}, if it is of the source
        format; keep the upstream from compressing or slicing a response
        that will be transformed.

        @return: L{None}, or a problem+json L{gatelayer.chain.Reply} (413 or
            400) for a body that cannot be transformed.
        """
        headers = exchange.headers
        if self.on_responses:
            for name in _UNWANTED_REQUEST_HEADERS:
                headers.removeHeader(name)
        if not self.on_requests:
            return None
        length = exchange.body_length()
        if length == 0:
            return None
        settings = self.settings
        types = headers.getRawHeaders(b"content-type")
        if types is not None and len(types) > 1:
            return self._refuse(exchange, 400, "the request has several Content-Type headers")
        source = _source(_media_type(types))
        if not self._wanted(source, settings.request, settings.request_removes or settings.request_renames):
            return None
        if _compressed(headers.getRawHeaders(b"content-encoding")):
            _log.info("transform {filter} passed a compressed request body untouched", filter=self.name,
                      route=exchange.route)
            return None
        if length > settings.max_size:
            return self._refuse(exchange, 413, f"the request body is larger than the {settings.max_size} "
                                               "bytes that are transformed")
        content = exchange.body
        if hasattr(content, "getvalue"):
            data = content.getvalue()
        else:
            content.seek(0)
            data = content.read()
            content.seek(0)
        try:
            body, content_type = self._convert(data, source, settings.request, settings.request_removes,
                                               settings.request_renames, "the request body")
        except TransformError as e:
            return self._refuse(exchange, 413 if e.too_large else 400, "the request body " + e.detail)
        except BodyRefusal as refusal:
            return self._refuse(exchange, 400, refusal.detail)
        exchange.replace_body(body)
        headers.setRawHeaders(b"content-type", [content_type])
        return None

    def _refuse(self, exchange, status, detail):
        _log.warn("transform {filter} refused a request body with {status}: {detail}", filter=self.name,
                  status=status, detail=detail, route=exchange.route)
        # The refusal is the gateway's own answer: never transformed itself.
        exchange.context[self._key] = None
        return Reply(status, problem(status, detail), ((b"content-type", PROBLEM_JSON),))

    # -- responses -----------------------------------------------------------

    def on_response_head(self, exchange):
        """
        The response head is being made: decide whether its body is
        transformed, and if so hold it back (a C{HEAD} answer only gets
        the new Content-Type, without a length).
        """
        context = exchange.context
        if self._key in context:
            return
        status = exchange.status
        if status < 200 or status == 204 or status == 304:
            return
        settings = self.settings
        raw = exchange.request.responseHeaders
        source = _source(_media_type(raw.getRawHeaders(b"content-type")))
        if not self._wanted(source, settings.response, settings.response_removes or settings.response_renames):
            return
        if _compressed(raw.getRawHeaders(b"content-encoding")):
            _log.info("transform {filter} passed a compressed response body untouched", filter=self.name,
                      route=exchange.route)
            return
        if exchange.method == b"HEAD":
            if source == "xml" or settings.response == "json_to_xml":
                raw.setRawHeaders(b"content-type", [JSON_TYPE if source == "xml" else XML_TYPE])
            raw.removeHeader(b"content-length")
            return
        context[self._key] = _Held()

    def on_response_body(self, exchange, data):
        """
        Hold C{data} back while the body is transformed (L{None}: the head
        does not go out); answer 502 once it grows over the size bound.
        """
        held = exchange.context.get(self._key)
        if held is None:
            return data
        held.size += len(data)
        if held.size > self.settings.max_size:
            exchange.context[self._key] = None
            self._fail(exchange, f"the upstream's response body is larger than the {self.settings.max_size} "
                                 "bytes that are transformed")
            return None
        held.chunks.append(data)
        return None

    def on_response_end(self, exchange):
        """
        The body is whole: return it transformed, with the head's
        Content-Type and Content-Length made to match; or answer 502 when
        it cannot be transformed (then L{None}: nothing more is sent).
        """
        held = exchange.context.pop(self._key, None)
        if held is None:
            return b""
        data = b"".join(held.chunks)
        if not data:
            return b""
        settings = self.settings
        raw = exchange.request.responseHeaders
        # Read again: a body filter nearer the terminal (another transform)
        # may have changed the type since the head was made.
        source = _source(_media_type(raw.getRawHeaders(b"content-type")))
        if not self._wanted(source, settings.response, settings.response_removes or settings.response_renames):
            return data
        try:
            body, content_type = self._convert(data, source, settings.response, settings.response_removes,
                                               settings.response_renames, "the upstream's response body")
        except TransformError as e:
            self._fail(exchange, "the upstream's response body " + e.detail)
            return None
        except BodyRefusal as refusal:
            self._fail(exchange, refusal.detail)
            return None
        raw.setRawHeaders(b"content-type", [content_type])
        for name in _STALE_RESPONSE_HEADERS:
            raw.removeHeader(name)
        if all(flt.preserves_length for flt in exchange.body_filters):
            raw.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        return body

    def _fail(self, exchange, detail):
        _log.warn("transform {filter} answered 502: {detail}", filter=self.name, detail=detail,
                  route=exchange.route)
        exchange.answer_instead(502, ((b"content-type", PROBLEM_JSON),), problem(502, detail))
