"""
The C{compress} filter: responses compressed with C{gzip}, C{br} or
C{zstd} as the client's C{Accept-Encoding} and the configured preference
choose, streamed chunk by chunk with the terminal's back-pressure intact;
optionally, compressed request bodies decoded, with a bound on their size
and ratio, before later filters and the upstream see them.

The decision is made once, when the response head is made: a response
already encoded, partial (C{206}, C{Content-Range}), without a body
(C{HEAD}, 1xx, C{204}, C{304}), marked C{Cache-Control: no-transform},
of a media type not listed or with a C{Content-Length} under
C{min_length} goes out as it is, and the filter leaves its body alone (no
per-chunk cost). A response it would compress gets C{Vary:
Accept-Encoding} whether this client accepts a coding or not, so a cache
keeps the versions apart. A compressed one gets C{Content-Encoding}, loses
its C{Content-Length} (chunked framing) and C{Accept-Ranges}, and a strong
C{ETag} becomes weak.

What the client's C{Accept-Encoding} says goes upstream untouched (as
nginx does): an upstream that compresses itself is relayed as it is,
never compressed twice.
"""

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IBodyFilter, json_reply
from gatelayer.config.filter_compress import installed
from gatelayer.filters.codings import DECODABLE, AcceptEncoding, DecodeError, DecodeTooLarge, decode_body, \
    new_encoder

__all__ = ["CompressFilter", "build_filter"]

PROBLEM_JSON = b"application/problem+json"

_STREAM_TYPES = frozenset([b"text/event-stream"])
_NO_BODY = frozenset([204, 304])
_TITLES = {400: "Bad Request", 413: "Content Too Large", 415: "Unsupported Media Type"}
_log = Logger(namespace="gatelayer.filters.compress")


class _Stream:
    """
    The state of one response being compressed.

    @ivar flush: whether each chunk is flushed to the client as it comes
        (streams: event streams and bodies of unknown length) rather than
        left to the encoder's own blocks (bodies of known length).
    """

    __slots__ = ("encoder", "flush")

    def __init__(self, encoder, flush):
        self.encoder = encoder
        self.flush = flush


def _media_type(values):
    if not values or len(values) > 1:
        return None
    return values[0].partition(b";")[0].strip().lower()


def _tokens(values):
    return [token.strip().lower() for value in values for token in value.split(b",") if token.strip()]


def _problem(status, detail, headers=()):
    return json_reply(status, {"type": "about:blank", "title": _TITLES[status], "status": status,
                               "detail": detail}, headers, content_type=PROBLEM_JSON)


def _read(content):
    if hasattr(content, "getvalue"):
        return content.getvalue()
    content.seek(0)
    data = content.read()
    content.seek(0)
    return data


@implementer(IBodyFilter)
class CompressFilter:
    """
    Compress responses for the clients that accept a configured coding,
    and decode compressed request bodies when asked to.
    """

    preserves_length = False

    def __init__(self, name, settings, body_limits=None, default_body_limit=10 * 1024 * 1024):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_compress.CompressSettings}.
        @param body_limits: C{{route name: max_body_size}}: the default bound
            of a decoded request body, per route.
        @param default_body_limit: that bound on a route not in C{body_limits}.
        """
        self.name = name
        self.settings = settings
        self._key = "compress." + name
        self._negotiation = AcceptEncoding(settings.encodings)
        self._levels = dict(settings.levels)
        self._body_limits = dict(body_limits or {})
        self._default_body_limit = default_body_limit
        self._decodable = tuple(c for c in DECODABLE if c not in ("br", "zstd") or installed(c))
        self._accepted = ", ".join(self._decodable).encode("ascii")

    # -- requests ------------------------------------------------------------

    def on_request(self, exchange):
        """
        Choose the response coding from the client's C{Accept-Encoding}
        (before any later filter changes the request's headers), and decode
        a compressed request body when C{decompress_requests} is on.

        @return: L{None}, or a problem+json refusal: 415 for a coding not
            decoded, 400 for a corrupt or truncated body, 413 for one that
            decodes past C{max_decompressed_size} or C{max_ratio}.
        """
        headers = exchange.headers
        exchange.context[self._key] = self._negotiation.choose(headers.getRawHeaders(b"accept-encoding"))
        if not self.settings.decompress_requests:
            return None
        values = headers.getRawHeaders(b"content-encoding")
        if values is None:
            return None
        return self._decode_request(exchange, values)

    def _decode_request(self, exchange, values):
        headers = exchange.headers
        codings = [t for t in _tokens(values) if t != b"identity"]
        if not codings:
            headers.removeHeader(b"content-encoding")
            return None
        accept = ((b"accept-encoding", self._accepted),)
        if len(codings) > 1:
            return self._refuse(exchange, 415, "the request body has several content codings ("
                                + b", ".join(codings).decode("latin-1") + "); one is decoded", accept)
        coding = codings[0].decode("latin-1")
        if coding == "x-gzip":
            coding = "gzip"
        if coding not in self._decodable:
            return self._refuse(exchange, 415, f"the request body's content coding {coding!r} is not decoded "
                                f"(only {self._accepted.decode('ascii')})", accept)
        length = exchange.body_length()
        if length == 0:
            headers.removeHeader(b"content-encoding")
            return None
        settings = self.settings
        size_limit = settings.max_decompressed_size
        if size_limit is None:
            size_limit = self._body_limits.get(exchange.route, self._default_body_limit)
        ratio_limit = settings.max_ratio * length
        try:
            data = decode_body(coding, _read(exchange.body), min(size_limit, ratio_limit))
        except DecodeTooLarge:
            if ratio_limit < size_limit:
                detail = (f"the {coding} request body decompresses to more than {settings.max_ratio} times "
                          f"its {length} bytes")
            else:
                detail = f"the {coding} request body decompresses to more than {size_limit} bytes"
            return self._refuse(exchange, 413, detail)
        except DecodeError as e:
            return self._refuse(exchange, 400, f"the {coding} request body {e}")
        exchange.replace_body(data)
        headers.removeHeader(b"content-encoding")
        headers.setRawHeaders(b"content-length", [b"%d" % (len(data),)])
        return None

    def _refuse(self, exchange, status, detail, headers=()):
        _log.warn("compress {filter} refused a request body with {status}: {detail}", filter=self.name,
                  status=status, detail=detail, route=exchange.route)
        return _problem(status, detail, headers)

    # -- responses -----------------------------------------------------------

    def on_response(self, exchange):
        """
        Decide whether this response is compressed; if it is, set its head
        and keep an encoder for its body, and if not, decline its body.
        """
        coding = exchange.context.pop(self._key, None)
        raw = exchange.request.responseHeaders
        if not self._compressible(exchange, raw):
            exchange.body_declined += (self,)
            return
        _vary(raw)
        if coding is None:
            exchange.body_declined += (self,)
            return
        flush = not raw.hasHeader(b"content-length") or \
            _media_type(raw.getRawHeaders(b"content-type")) in _STREAM_TYPES
        raw.setRawHeaders(b"content-encoding", [coding.encode("ascii")])
        raw.removeHeader(b"content-length")
        raw.removeHeader(b"accept-ranges")
        tags = raw.getRawHeaders(b"etag")
        if tags:
            raw.setRawHeaders(b"etag", [b"W/" + tag if tag.startswith(b'"') else tag for tag in tags])
        exchange.context[self._key] = _Stream(new_encoder(coding, self._levels[coding]), flush)

    def _compressible(self, exchange, raw):
        """
        Whether the response being made may be compressed, whatever this
        client accepts.
        """
        status = exchange.status
        if status < 200 or status in _NO_BODY or status == 206 or exchange.method == b"HEAD":
            return False
        encodings = raw.getRawHeaders(b"content-encoding")
        if encodings is not None:
            if any(t != b"identity" for t in _tokens(encodings)):
                return False
            raw.removeHeader(b"content-encoding")
        if raw.hasHeader(b"content-range"):
            return False
        media_type = _media_type(raw.getRawHeaders(b"content-type"))
        if media_type is None or not self.settings.types.matches(media_type):
            return False
        control = raw.getRawHeaders(b"cache-control")
        if control is not None and b"no-transform" in _tokens(control):
            return False
        lengths = raw.getRawHeaders(b"content-length")
        if lengths is not None:
            try:
                if int(lengths[0]) < self.settings.min_length:
                    return False
            except ValueError:
                return False
        return True

    def on_response_body(self, exchange, data):
        """
        Compress C{data}; a stream's chunk is flushed so the client can
        decode everything sent so far. L{None} while the encoder has
        nothing to send yet.
        """
        stream = exchange.context[self._key]
        out = stream.encoder.compress(data, stream.flush)
        return out or None

    def on_response_end(self, exchange):
        """
        The encoder's last bytes and the coding's trailer.
        """
        stream = exchange.context.pop(self._key, None)
        if stream is None:
            return b""
        return stream.encoder.finish()


def _vary(raw):
    """
    Add C{Accept-Encoding} to the response's C{Vary} (one merged line),
    unless it is there or the response varies on everything.
    """
    values = raw.getRawHeaders(b"vary")
    if values is None:
        raw.setRawHeaders(b"vary", [b"Accept-Encoding"])
        return
    tokens = _tokens(values)
    if b"accept-encoding" in tokens or b"*" in tokens:
        return
    raw.setRawHeaders(b"vary", [b", ".join(v.strip() for v in values) + b", Accept-Encoding"])


def build_filter(spec, services):
    """
    Build the compression filter of C{spec} (a
    L{gatelayer.config.model.FilterSpec}); a decoded request body is
    bounded by default by each route's C{max_body_size}.
    """
    config = services.config if services is not None else None
    if config is None:
        return CompressFilter(spec.name, spec.settings)
    default = config.gateway.max_body_size
    limits = {route.name: route.max_body_size if route.max_body_size is not None else default
              for route in config.routes}
    return CompressFilter(spec.name, spec.settings, limits, default)
