"""
HTTP/1.1 message work for the upstream client, without I/O: building a
request head in one join and parsing a response head once, strictly.
"""

import re

__all__ = [
    "BODY_METHODS", "CHUNK_SIZE", "MAX_CONTENT_LENGTH_DIGITS", "MAX_HEAD_SIZE", "BadResponse",
    "body_length", "build_request_head", "parse_head", "valid_field",
]

#: The largest response head (status line and headers) accepted, in bytes.
MAX_HEAD_SIZE = 65536


# Methods whose requests carry a body by definition: without one they are
# sent with "Content-Length: 0" (RFC 9110 8.6).
BODY_METHODS = frozenset([b"POST", b"PUT", b"PATCH"])


# Request headers the client owns: framing is derived from the body, the
# connection's persistence from the pool, and Expect is pointless because
# the body is already buffered.
_OWN_HEADERS = frozenset([b"content-length", b"transfer-encoding", b"connection", b"expect"])
_OWN_LENGTHS = frozenset(len(name) for name in _OWN_HEADERS)


def body_length(body):
    """
    The length in bytes of a request C{body}: L{None} for no body, else the
    length of the bytes or of the seekable file (which is left at 0).
    """
    if body is None:
        return None
    if isinstance(body, bytes):
        return len(body)
    body.seek(0, 2)
    length = body.tell()
    body.seek(0)
    return length


def build_request_head(method, target, headers, content_length=None, host=None,
                       close=False, body=b""):
    """
    The bytes of a request head (and C{body} appended, to go out in the same
    write).

    C{headers} are sent in order, except Content-Length,
    Transfer-Encoding, Connection and Expect, which the client decides:
    C{Content-Length: content_length} when it is not L{None}, and
    C{Connection: close} when C{close}. C{host} (bytes) is added as Host
    only when C{headers} has none.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    add = parts.extend
    own = _OWN_LENGTHS
    has_host = False
    for name, value in headers:
        size = len(name)
        if size in own and name.lower() in _OWN_HEADERS:
            continue
        if size == 4 and not has_host and name.lower() == b"host":
            has_host = True
        add((name, b": ", value, b"\r\n"))
    if not has_host and host is not None:
        add((b"Host: ", host, b"\r\n"))
    if content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % (content_length,))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)


class BadResponse(Exception):
    """
    The response cannot be trusted; the text says why (for the log line
    naming the upstream and server).
    """


# The field grammar of RFC 9110 5.1 and 5.5, as strict as the server
# channel's (gatelayer.http.lean_parse): a name is a token with the colon
# right after it, a value is visible characters, spaces, tabs and obs-text;
# no NUL, CR, LF or other control character, no obs-fold continuation lines.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
# HTTP-version SP status-code [SP reason-phrase]: status codes are 100 to
# 599 (RFC 9110 15); the reason may be empty and its space missing, as
# many servers send it.
_STATUS_LINE = rb"HTTP/1\.[01] [1-5][0-9][0-9](?: " + _VALUE + rb")?"
_HEAD = re.compile(_STATUS_LINE + rb"(?:\r\n" + _TOKEN + rb":" + _VALUE + rb")*")
_STATUS_LINE_RE = re.compile(_STATUS_LINE)
_NAME = re.compile(_TOKEN)
_VALUE_RE = re.compile(_VALUE)
_FIELD = re.compile(_TOKEN + rb":" + _VALUE)
#: A chunk-size line: 1 to 16 hex digits, then well-formed extensions
#: (ignored), as the server channel reads request bodies.
CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN
    + rb'|"[^"\x00-\x08\x0a-\x1f\x7f]*"))?)*')

#: More Content-Length digits than this is not a length a server means.
MAX_CONTENT_LENGTH_DIGITS = 18


def valid_field(line):
    """
    Whether C{line} (bytes, without its CRLF) is a well-formed C{name:
    value} field line: used for trailers, which are checked and dropped.
    """
    return _FIELD.fullmatch(line) is not None


def _diagnose(lines):
    """
    Why a head that failed the grammar is bad: the first offending line,
    described (only on the error path, so it may be slow).
    """
    if _STATUS_LINE_RE.fullmatch(lines[0]) is None:
        return "invalid status line %r" % (lines[0][:80],)
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding (a header line starting with a blank): %r" % (
                line[:80],)
        name, sep, value = line.partition(b":")
        if not sep:
            return "header line without a colon: %r" % (line[:80],)
        if _NAME.fullmatch(name) is None:
            return "invalid header name %r" % (name[:80],)
        if _VALUE_RE.fullmatch(value) is None:
            bad = next(b for b in value if not (b == 9 or 32 <= b <= 126 or b >= 128))
            return "invalid byte 0x%02x in the value of header %r" % (bad, name[:80])
    return "malformed response head"  # pragma: no cover - the grammar has no other rule


def parse_head(head):
    """
    Parse a response head (without its final empty line) into
    C{(status, reason, headers, http11, content_length, chunked, close,
    keep_alive)}; raise L{BadResponse} when it cannot be trusted.

    Strict, because what the gateway relays is what its clients trust: the
    status line and every field must match the grammar (no bytes a client
    could read differently: control characters, bare CR or LF, spaces in
    names, folded lines), and the framing must be unambiguous:
    Content-Length digits only and the same when repeated, no
    Transfer-Encoding with it nor in HTTP/1.0, and no coding but
    C{chunked}.
    """
    if _HEAD.fullmatch(head) is None:
        raise BadResponse(_diagnose(head.split(b"\r\n")))
    lines = head.split(b"\r\n")
    first = lines[0]
    http11 = first[7] == 49  # b"1"
    status = int(first[9:12])
    reason = first[13:]
    headers = []
    content_length = None
    transfer_encoding = None
    close = False
    keep_alive = False
    for index in range(1, len(lines)):
        name, _, value = lines[index].partition(b":")
        value = value.strip(b" \t")
        headers.append((name, value))
        size = len(name)
        if size == 14:
            if name.lower() == b"content-length":
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if not part.isdigit() or len(part) > MAX_CONTENT_LENGTH_DIGITS:
                        raise BadResponse("invalid Content-Length %r" % (value[:40],))
                    length = int(part)
                    if content_length is not None and content_length != length:
                        raise BadResponse("conflicting Content-Length values")
                    content_length = length
        elif size == 17:
            if name.lower() == b"transfer-encoding":
                if transfer_encoding is None:
                    transfer_encoding = value
                else:
                    transfer_encoding += b"," + value
        elif size == 10:
            if name.lower() == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip(b" \t")
                    if token == b"close":
                        close = True
                    elif token == b"keep-alive":
                        keep_alive = True
    chunked = False
    if transfer_encoding is not None:
        if not http11:
            # RFC 9112 6.1: the framing of such a message is faulty.
            raise BadResponse("Transfer-Encoding in an HTTP/1.0 response")
        if content_length is not None:
            raise BadResponse("both Content-Length and Transfer-Encoding")
        codings = [c.strip(b" \t").lower() for c in transfer_encoding.split(b",")]
        if codings != [b"chunked"]:
            raise BadResponse("unsupported Transfer-Encoding %r" % (transfer_encoding[:40],))
        chunked = True
    return status, reason, headers, http11, content_length, chunked, close, keep_alive
