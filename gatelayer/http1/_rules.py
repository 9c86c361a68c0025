"""
The rules of HTTP/1.1 framing that both directions share, in one place: the
grammar of tokens, field lines and chunk-size lines, the errors a framing
fault raises, and the strictness table, whose L{Limits} are where a request
read by the server channel and a response read by the upstream client
legitimately differ.

Everything refuses what a lenient parser would guess at, because a gateway
that reads a message differently from the peer behind it can be made to
smuggle a second message inside the first (RFC 9112 section 11.2).
"""

import re
from typing import Optional

from attrs import frozen

__all__ = [
    "TOKEN", "VALUE", "FIELD_LINE", "CHUNK_SIZE", "MAX_CONTENT_LENGTH_DIGITS",
    "FramingError", "BadRequest", "BadResponse", "Limits", "REQUEST", "RESPONSE", "STRICTNESS",
    "valid_field",
]

#: A token (RFC 9110 5.6.2): a method, a header name, a coding.
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: A field value: visible characters, spaces, tabs and obs-text; no NUL, CR,
#: LF or other control character.
VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
#: One C{name: value} line without its CRLF: the colon right after the name
#: (no whitespace before it), no obs-fold continuation.
FIELD_LINE = re.compile(TOKEN + rb":" + VALUE)
#: A chunk-size line: 1 to 16 hex digits, then well-formed extensions
#: (ignored); quoted extension values hold no control character but HTAB.
CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN
    + rb'|"[^"\x00-\x08\x0a-\x1f\x7f]*"))?)*')
#: More Content-Length digits than this is not a length anyone means.
MAX_CONTENT_LENGTH_DIGITS = 18


def valid_field(line):
    """
    Whether C{line} (bytes, without its CRLF) is a well-formed C{name:
    value} field line.
    """
    return FIELD_LINE.fullmatch(line) is not None


class FramingError(Exception):
    """
    A message whose framing cannot be trusted. C{status} is the answer a
    server gives for it (400, 414, 431...), C{message} says why.

    @ivar pieces: body bytes a decoder decoded before the fault, in order:
        a reader that relays the body as it arrives hands them on first.
    """

    pieces = ()

    def __init__(self, status, message):
        super().__init__(status, message)
        self.status = status
        self.message = message


class BadRequest(FramingError):
    """
    A request the server channel refuses: the status to answer (400, 414,
    431, 413) and a short reason for the JSON body. The connection is
    closed after.
    """


class BadResponse(FramingError):
    """
    A response the upstream client cannot trust; the text (C{str()}) says
    why, for the log line naming the upstream and server.
    """

    def __init__(self, message, status=502):
        super().__init__(status, message)

    def __str__(self):
        return self.message


@frozen
class Limits:
    """
    What one direction allows: the sizes that bound what a peer can make
    the gateway buffer, and the exception its faults raise. The grammar is
    the same for both; only these differ (see L{STRICTNESS}). Frozen: the
    two instances are shared by every connection.

    @ivar side: C{"request"} or C{"response"}, as error messages name it.
    @ivar error: the L{FramingError} subclass raised.
    @ivar max_start_line: bytes of the request or status line.
    @ivar max_field_line: bytes of one header line (L{None}: only the head's
        total bounds it).
    @ivar max_fields: header lines (L{None}: only the total bounds them).
    @ivar max_head: bytes of the header lines (request) or of the whole head
        (response).
    @ivar max_chunk_line: bytes of a chunk-size line.
    @ivar max_trailer_line: bytes of one trailer line.
    @ivar max_trailers: trailer lines (L{None}: only the total bounds them).
    @ivar max_trailers_size: bytes of all trailer lines.
    """

    side: str
    error: type
    max_start_line: int
    max_field_line: Optional[int]
    max_fields: Optional[int]
    max_head: int
    max_chunk_line: int
    max_trailer_line: int
    max_trailers: Optional[int]
    max_trailers_size: int

    def fault(self, status, message):
        """
        The exception for a fault of this direction (C{status} is what a
        server answers; a response's faults all fail the exchange alike).
        """
        if self.error is BadResponse:
            return BadResponse(message, status)
        return self.error(status, message)


#: Requests read by the server channels: 8 KB lines, as nginx's header
#: buffers; 100 header lines of at most 32 KB in all.
REQUEST = Limits("request", BadRequest, max_start_line=8192, max_field_line=8192, max_fields=100,
                 max_head=32768, max_chunk_line=4096, max_trailer_line=8192, max_trailers=100,
                 max_trailers_size=32768)

#: Responses read by the upstream client: the servers are ours, their heads
#: may be larger (cookies, CSP), bounded as a whole.
RESPONSE = Limits("response", BadResponse, max_start_line=65536, max_field_line=None,
                  max_fields=None, max_head=65536, max_chunk_line=4096, max_trailer_line=65536,
                  max_trailers=None, max_trailers_size=65536)


#: The strictness table: C{(rule, request, response)} rows, what the server
#: channels (lean and twisted.web, which checks each head with the same
#: parser first) and the upstream client (and the health probe, for its
#: status line) do. Tests hold the code to each row.
STRICTNESS = (
    ("line endings", "CRLF only; a bare LF or CR is refused as soon as seen",
     "CRLF only; a bare LF ends the exchange as soon as seen"),
    ("start line", "method SP target SP HTTP/1.0 or HTTP/1.1, single spaces (400; 414 over 8 KB)",
     "HTTP/1.0 or HTTP/1.1 SP 100-599 [SP reason]; the reason may be empty or absent"),
    ("field lines", "token, colon at once, value of VCHAR/SP/HTAB/obs-text; no obs-fold (400)",
     "the same grammar"),
    ("head size", "8 KB per header line, 100 lines, 32 KB of header lines (431)",
     "64 KB for the whole head"),
    ("Content-Length", "digits only (18 at most); repeated only with the same value",
     "digits only (18 at most); repeated or listed (2, 2) only with the same value"),
    ("Transfer-Encoding", "exactly chunked, once, HTTP/1.1 only, never with Content-Length",
     "chunked as the only coding (case-insensitive), HTTP/1.1 only, never with Content-Length"),
    ("Host", "exactly one in HTTP/1.1, at most one in HTTP/1.0", "not applicable"),
    ("Connection", "comma-separated tokens, case-insensitive: close wins over keep-alive",
     "the same tokens; close or an HTTP/1.0 response without keep-alive ends reuse"),
    ("chunk size", "1-16 hex digits, well-formed extensions, 4 KB line", "the same (one decoder)"),
    ("chunk data", "followed by exactly CRLF", "the same"),
    ("trailers", "field grammar; 8 KB per line, 100 lines, 32 KB in all (431); kept, forwarded when "
     "declared in Trailer, never a forbidden field",
     "field grammar; 64 KB in all; kept, relayed to a client that sent TE: trailers, never a "
     "forbidden field"),
)
