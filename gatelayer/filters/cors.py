"""
The C{cors} filter: Cross-Origin Resource Sharing answered at the gateway,
as the Fetch standard describes it (and as Kong's and Envoy's CORS do).

A preflight (C{OPTIONS} with C{Origin} and C{Access-Control-Request-Method})
never reaches the upstream: it is answered 204 with the C{Access-Control-*}
headers when the origin, the method and every requested header are
allowed, and 403 (a short JSON error, no CORS headers) otherwise. An actual
request from an allowed origin goes upstream and its response gets
C{Access-Control-Allow-Origin} (the origin echoed, or C{*} for C{origins =
*}), C{Access-Control-Expose-Headers} and C{Access-Control-Allow-Credentials}.
Every response gets C{Vary: Origin}, whether the origin was allowed or
there was none, so a shared cache never serves one origin's answer to
another. A request without C{Origin} passes unchanged.
"""

from zope.interface import implementer

from gatelayer.chain import IFilter, Reply, error_body
from gatelayer.config.filter_cors import canonical_origin

PREFLIGHT_CONTEXT = "cors.preflight"
"""The exchange context key set when this filter answered a preflight."""

_ALLOWED = "cors.allowed"
_VARY = (b"vary", b"Origin")
_PREFLIGHT_VARY = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


def request_origin(headers):
    """
    The canonical origin of a request's C{Origin} header (C{"null"} for
    C{null}), L{None} when it has none, or C{""} when it is not one valid
    origin (several values, not ASCII, not an origin): such a request is
    never allowed.
    """
    values = headers.getRawHeaders(b"origin")
    if not values:
        return None
    if len(values) != 1:
        return ""
    try:
        text = values[0].decode("ascii")
    except UnicodeDecodeError:
        return ""
    if text == "null":
        return "null"
    return canonical_origin(text) or ""


@implementer(IFilter)
class CorsFilter:
    """
    Answer preflights and mark actual cross-origin responses as readable
    for the allowed origins.
    """

    def __init__(self, name, settings):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_cors.CorsSettings}.
        """
        self.name = name
        self.settings = settings
        self._methods = frozenset(m.encode("ascii") for m in settings.methods)
        self._headers = frozenset(settings.headers)
        common = []
        if settings.credentials:
            common.append((b"access-control-allow-credentials", b"true"))
        self._preflight = tuple(common) + (
            (b"access-control-allow-methods", ", ".join(settings.methods).encode("ascii")),
            *([(b"access-control-allow-headers", ", ".join(settings.headers).encode("ascii"))]
              if settings.headers else []),
            (b"access-control-max-age", b"%d" % (settings.max_age,)),
        )
        self._actual = tuple(common) + (
            ((b"access-control-expose-headers", ", ".join(settings.expose_headers).encode("ascii")),)
            if settings.expose_headers else ())

    def allows(self, origin):
        """
        Whether the canonical origin C{origin} (or C{"null"}) may read
        responses: C{null} only when listed, C{*} allows every other origin.
        """
        if not origin:
            return False
        if self.settings.any_origin and origin != "null":
            return True
        return any(rule.matches(origin) for rule in self.settings.origins)

    def _allow_origin(self, origin):
        if self.settings.any_origin and origin != "null":
            return (b"access-control-allow-origin", b"*")
        return (b"access-control-allow-origin", origin.encode("ascii"))

    def on_request(self, exchange):
        """
        Answer a preflight (204 or 403); let every other request go on,
        remembering whether its origin is allowed.
        """
        headers = exchange.headers
        origin = request_origin(headers)
        if origin is None:
            return None
        asked = headers.getRawHeaders(b"access-control-request-method")
        if exchange.method == b"OPTIONS" and asked:
            exchange.context[PREFLIGHT_CONTEXT] = True
            return self._answer_preflight(origin, asked, headers)
        if self.allows(origin):
            exchange.context[_ALLOWED] = origin
        return None

    def _answer_preflight(self, origin, asked, headers):
        if not self.allows(origin):
            return _refusal("the origin is not allowed")
        if len(asked) != 1 or asked[0] not in self._methods:
            return _refusal("the method is not allowed")
        for value in headers.getRawHeaders(b"access-control-request-headers", ()):
            for name in value.split(b","):
                name = name.strip().lower()
                if name and name.decode("latin-1") not in self._headers:
                    return _refusal("a request header is not allowed")
        return Reply(status=204, headers=(
            self._allow_origin(origin), *self._preflight, _PREFLIGHT_VARY))

    def on_response(self, exchange):
        """
        Add C{Vary: Origin} and, for an allowed origin, the CORS headers of
        an actual response (a preflight's answer carries its own).
        """
        context = exchange.context
        if context.get(PREFLIGHT_CONTEXT):
            return
        out = exchange.response_headers
        out.append(_VARY)
        origin = context.get(_ALLOWED)
        if origin is not None:
            out.append(self._allow_origin(origin))
            out.extend(self._actual)


def _refusal(description):
    return Reply(status=403, body=error_body(403, "CORS preflight refused: " + description),
                 headers=((b"content-type", b"application/json"), _PREFLIGHT_VARY))


def build_filter(spec, services):
    """
    Build the CORS filter of C{spec} (a L{gatelayer.config.model.FilterSpec});
    it needs nothing of C{services}.
    """
    return CorsFilter(spec.name, spec.settings)
