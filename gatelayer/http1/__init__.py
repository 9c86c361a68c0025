"""
HTTP/1.1 framing without I/O, for every part of the gateway that reads or
writes HTTP/1.1: the server channels (requests), the upstream client and the
health probe (responses) and the test helpers.

One grammar and one chunked decoder serve both directions; where requests
and responses legitimately differ (head sizes, Host, Content-Length lists)
it is a parameter, written down in the strictness table L{STRICTNESS} and
the two L{Limits}, L{REQUEST} and L{RESPONSE}.
"""

from gatelayer.http1._rules import (
    CHUNK_SIZE, MAX_CONTENT_LENGTH_DIGITS, REQUEST, RESPONSE, STRICTNESS, BadRequest, BadResponse,
    FramingError, Limits, valid_field,
)
from gatelayer.http1.chunked import ChunkedDecoder
from gatelayer.http1.heads import (
    HeadScanner, RequestHead, parse_request_head, parse_response_head, parse_status_line,
)
from gatelayer.http1.serialize import (
    BODY_METHODS, body_length, build_request_head, build_response_head, status_line,
)
from gatelayer.http1.tokens import connection_flags, token_set
from gatelayer.http1.trailers import FORBIDDEN_TRAILERS, allowed_trailers, last_chunk, wants_trailers

__all__ = [
    "BODY_METHODS", "CHUNK_SIZE", "FORBIDDEN_TRAILERS", "MAX_CONTENT_LENGTH_DIGITS", "REQUEST",
    "RESPONSE", "STRICTNESS", "BadRequest", "BadResponse", "ChunkedDecoder", "FramingError",
    "HeadScanner", "Limits", "RequestHead", "allowed_trailers", "body_length", "build_request_head",
    "build_response_head", "connection_flags", "last_chunk", "parse_request_head",
    "parse_response_head", "parse_status_line", "status_line", "token_set", "valid_field",
    "wants_trailers",
]
