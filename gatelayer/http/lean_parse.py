"""
The server channels' names for the request framing of L{gatelayer.http1},
kept so that code refusing a request (C{BadRequest}) and older imports
need not change: the parsing itself lives in L{gatelayer.http1}.
"""

from gatelayer.http1 import REQUEST, BadRequest, ChunkedDecoder, HeadScanner, RequestHead
from gatelayer.http1 import parse_request_head as parse_head

__all__ = [
    "MAX_REQUEST_LINE", "MAX_HEADER_LINE", "MAX_HEADERS", "MAX_HEADERS_SIZE", "MAX_CHUNK_LINE",
    "BadRequest", "RequestHead", "HeadScanner", "parse_head", "ChunkedDecoder",
]

MAX_REQUEST_LINE = REQUEST.max_start_line
MAX_HEADER_LINE = REQUEST.max_field_line
MAX_HEADERS = REQUEST.max_fields
MAX_HEADERS_SIZE = REQUEST.max_head
MAX_CHUNK_LINE = REQUEST.max_chunk_line
