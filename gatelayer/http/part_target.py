"""
The request target of one part of an aggregate route, rendered from its
template (parsed at config load, L{gatelayer.config.aggregate}) for one
exchange and the documents of the parts it reads.

Every substituted value is percent-encoded (all but RFC 3986 unreserved
characters), so a claim, query value, header or part value such as
C{../admin}, C{a?b=1} or C{%2e%2e} is data inside one path segment or one
query value: it can never add a segment, a parameter or a fragment. The
path that results goes through the gateway's path normalization; a value
that would still change it (C{.} or C{..} as a whole segment) is refused,
as is a variable without a value.
"""

from urllib.parse import quote_from_bytes

from gatelayer.config.aggregate import PartValue
from gatelayer.filters.transform import scalar_bytes, variable_value
from gatelayer.http.canonical import normalize_path
from gatelayer.http1 import BadRequest

__all__ = ["PartError", "render_target", "scalar_bytes"]


class PartError(Exception):
    """
    A part that cannot be sent or whose answer is unusable.

    @ivar reason: the short reason the merged document and the access log
        give (C{"missing $jwt.sub"}, C{"status 503"}, C{"not JSON"}).
    """

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _spelling(variable):
    if isinstance(variable, PartValue):
        return variable.spelling
    if variable.qualifier:
        return f"${variable.kind}.{variable.qualifier}"
    return "$" + variable.kind


def _part_value(variable, documents):
    value = documents.get(variable.part)
    for step in variable.path:
        if isinstance(value, dict):
            value = value.get(str(step))
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            return None
    return scalar_bytes(value)


def _value(variable, exchange, documents):
    """
    The raw value (bytes) of C{variable}; empty or L{None} when it has
    none. Only a scalar claim is put into a target, where the transform
    filter would write an object or list claim as JSON.
    """
    if isinstance(variable, PartValue):
        return _part_value(variable, documents)
    if variable.kind == "jwt":
        claims = exchange.context.get("jwt.claims") or {}
        return scalar_bytes(claims.get(variable.qualifier))
    return variable_value(variable, exchange)


def _render(parts, exchange, documents):
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out.append(part)
            continue
        value = _value(part, exchange, documents)
        if not value:
            raise PartError("missing " + _spelling(part))
        out.append(quote_from_bytes(value, safe="").encode("ascii"))
    return b"".join(out)


def render_target(part, exchange, documents):
    """
    The request target (bytes) of C{part} (a
    L{gatelayer.config.aggregate.PartSpec}) for C{exchange}, reading the
    documents of earlier parts in C{documents} (part name to parsed JSON).

    @raise PartError: C{"missing $NAME"} for a variable without a value
        (absent, empty, or not a scalar), C{"unsafe path"} when a value
        would change the path's structure.
    """
    path = _render(part.path, exchange, documents)
    try:
        normal = normalize_path(path, True, "keep")
    except BadRequest:
        raise PartError("unsafe path") from None
    if normal != path:
        raise PartError("unsafe path")
    if part.has_query:
        return path + b"?" + _render(part.query, exchange, documents)
    return path
