"""
Request and response heads, parsed strictly and without I/O: the request
head the server channels read (with L{HeadScanner} bounding one still
incomplete), the response head the upstream client reads, and the status
line alone, which is all the health probe needs.

Both sides share the grammar of L{gatelayer.http1._rules}; they differ where
the strictness table says (size limits, Host, Content-Length lists), and in
what they build: a request's fields go straight into a twisted.web
L{Headers} (the request object's type), a response's into C{(name, value)}
pairs in order (which the proxy relays as received).
"""

import re
from collections import namedtuple

from twisted.web.http_headers import Headers

from gatelayer.http1._rules import (
    MAX_CONTENT_LENGTH_DIGITS, REQUEST, TOKEN, VALUE, BadRequest, BadResponse,
)
from gatelayer.http1.tokens import connection_flags, token_set

__all__ = [
    "RequestHead", "HeadScanner", "parse_request_head", "parse_response_head",
    "parse_status_line",
]

# method SP request-target SP HTTP-version, with exactly one space each; the
# target is visible ASCII (or obs-text bytes, which nginx also lets through).
_REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])")
# Every header line of a request head, CRLF included, in one match.
_HEADER_BLOCK = re.compile(rb"(?:" + TOKEN + rb":" + VALUE + rb"\r\n)*")
# HTTP-version SP status-code [SP reason-phrase]: status codes are 100 to
# 599 (RFC 9110 15); the reason may be empty and its space missing, as many
# servers send it.
_STATUS_LINE = rb"HTTP/1\.[01] [1-5][0-9][0-9](?: " + VALUE + rb")?"
_RESPONSE_HEAD = re.compile(_STATUS_LINE + rb"(?:\r\n" + TOKEN + rb":" + VALUE + rb")*")
_STATUS_LINE_RE = re.compile(_STATUS_LINE)
_NAME = re.compile(TOKEN)
_VALUE_RE = re.compile(VALUE)

_VERSIONS = {b"0": b"HTTP/1.0", b"1": b"HTTP/1.1"}

# A Headers made without its __init__ (a Python call), its mapping filled
# directly.
_new_headers = object.__new__
try:
    from twisted.web.http_headers import _nameEncoder
    _canonical_name = _nameEncoder.encode
    Headers()._rawHeaders  # noqa: B018 -- the layout the fast path fills
except (ImportError, AttributeError):  # pragma: no cover - other Twisted versions
    def _canonical_name(name):
        return b"-".join(word.capitalize() for word in name.split(b"-"))


class RequestHead(namedtuple("RequestHead", (
        "method", "target", "version", "headers", "length", "chunked", "keep_alive",
        "expect_continue"))):
    """
    A parsed request head (a named tuple: made in one step, once per
    request).

    @ivar method: the method token (bytes).
    @ivar target: the request target as sent (bytes).
    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: a L{Headers} with every field.
    @ivar length: the body's Content-Length, or L{None}.
    @ivar chunked: whether the body is chunked.
    @ivar keep_alive: whether the client lets the connection persist.
    @ivar expect_continue: whether the client waits for C{100 Continue}.
    """

    __slots__ = ()


_new_tuple = tuple.__new__


class HeadScanner:
    """
    Checks a request head while it is still incomplete (no empty line yet)
    against the size limits, so a client cannot make the gateway buffer
    more than a bounded head: 414 for a request line over 8 KB, 431 for a
    header line over 8 KB, more than 100 header lines or more than 32 KB of
    them. It remembers how far it looked, so a head trickled byte by byte
    costs linear time, not quadratic.
    """

    __slots__ = ("first", "lines", "line_start", "scanned")

    def __init__(self):
        self.first = -1
        self.lines = 0
        self.line_start = 0
        self.scanned = 0

    def check(self, buf):
        """
        Look at the bytes of C{buf} not seen yet; raise L{BadRequest} when a
        limit is already exceeded or a line ends otherwise than with CRLF (a
        bare LF or CR could only end in a refusal once the head is
        complete, which a head of bare-LF lines never is).
        """
        size = len(buf)
        scanned = self.scanned
        since = scanned - 1 if scanned else 0
        self.scanned = size
        # Every LF seen for the first time follows a CR, and every CR is
        # followed by an LF (the last byte may be a CR whose LF is to come).
        crlf = buf.count(b"\r\n", since)
        if buf.count(b"\n", scanned) != crlf or buf.count(b"\r", since, size - 1) != crlf:
            raise BadRequest(400, "request head line not ended by CRLF")
        first = self.first
        if first < 0:
            first = buf.find(b"\r\n", since, REQUEST.max_start_line + 2)
            if first < 0:
                # One byte of slack: it may be the CR of the line's CRLF.
                if size > REQUEST.max_start_line + 1:
                    raise BadRequest(414, "request line too long")
                return
            self.first = first
            self.line_start = since = first + 2
        elif since < first + 2:
            since = first + 2
        # The check of a complete head counts the last line's CRLF but not
        # the empty line's: one byte of slack for its CR.
        if size - first - 2 > REQUEST.max_head + 1:
            raise BadRequest(431, "request headers too large")
        self.lines += buf.count(b"\r\n", since)
        if self.lines > REQUEST.max_fields:
            raise BadRequest(431, "too many request headers")
        last = buf.rfind(b"\r\n", since)
        if last >= 0:
            self.line_start = last + 2
        if size - self.line_start > REQUEST.max_field_line + 1:
            raise BadRequest(431, "request header too large")


_MAX_REQUEST_LINE = REQUEST.max_start_line
_MAX_HEADERS_SIZE = REQUEST.max_head
_MAX_HEADERS = REQUEST.max_fields
_MAX_HEADER_LINE = REQUEST.max_field_line


def parse_request_head(buf, end):
    """
    Parse the request head C{buf[:end]} (C{buf[end:end + 4]} is the CRLF
    CRLF that ends it) into a L{RequestHead}, or raise L{BadRequest}.

    Limits come first (414, 431), then syntax (400), then the framing rules:
    Content-Length is digits only and, when repeated, the same each time;
    Transfer-Encoding is exactly C{chunked}, only in HTTP/1.1 and never with
    Content-Length; HTTP/1.1 needs exactly one Host and HTTP/1.0 at most one.
    """
    first = buf.find(b"\r\n", 0, end)
    if first < 0:
        first = end
    if first > _MAX_REQUEST_LINE:
        raise BadRequest(414, "request line too long")
    if end > first:
        size = end - first
        if size > _MAX_HEADERS_SIZE:
            raise BadRequest(431, "request headers too large")
        lines = buf[first + 2:end].split(b"\r\n")
        if len(lines) > _MAX_HEADERS:
            raise BadRequest(431, "too many request headers")
        # No line can be longer than all of them together.
        if size > _MAX_HEADER_LINE and max(map(len, lines)) > _MAX_HEADER_LINE:
            raise BadRequest(431, "request header too large")
    else:
        lines = ()
    match = _REQUEST_LINE.fullmatch(buf, 0, first)
    if match is None:
        raise BadRequest(400, "malformed request line")
    method, target, minor = match.groups()
    version11 = minor == b"1"
    raw = {}
    if lines:
        if _HEADER_BLOCK.fullmatch(buf, first + 2, end + 2) is None:
            raise BadRequest(400, "malformed request header")
        # The values cannot hold CR or LF (the grammar above), so twisted's
        # own sanitising (a split and a join per value) is skipped, and
        # names are canonicalised through a small cache.
        names = _NAMES
        for line in lines:
            name, _, value = line.partition(b":")
            key = names.get(name)
            if key is None:
                key = _canonical_name(name)
                if len(names) < 1000:
                    names[name] = key
            value = value.strip(b" \t")
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)
    headers = _new_headers(Headers)
    headers._rawHeaders = raw
    hosts = raw.get(b"Host")
    if _FRAMING.isdisjoint(raw):
        # No field this function reads but Host (most requests): one test
        # instead of four lookups.
        if version11 if hosts is None else len(hosts) != 1:
            raise BadRequest(400, _HOST_ERRORS[version11])
        return _new_tuple(RequestHead, (method, target, _VERSIONS[minor], headers, None, False, version11,
                                        False))
    length = None
    values = raw.get(b"Content-Length")
    if values is not None:
        text = values[0]
        if not text.isdigit() or len(text) > MAX_CONTENT_LENGTH_DIGITS:
            raise BadRequest(400, "invalid Content-Length")
        for other in values[1:]:
            if other != text:
                raise BadRequest(400, "conflicting Content-Length headers")
        length = int(text)
    chunked = False
    values = raw.get(b"Transfer-Encoding")
    if values is not None:
        if not version11:
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if length is not None:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        if len(values) != 1 or values[0].lower() != b"chunked":
            raise BadRequest(400, "unsupported Transfer-Encoding")
        chunked = True
    if version11 if hosts is None else len(hosts) != 1:
        raise BadRequest(400, _HOST_ERRORS[version11])
    keep_alive = version11
    values = raw.get(b"Connection")
    if values is not None:
        tokens = token_set(values)
        if b"close" in tokens:
            keep_alive = False
        elif b"keep-alive" in tokens:
            keep_alive = True
    expect_continue = False
    values = raw.get(b"Expect")
    if values is not None and version11:
        expect_continue = b"100-continue" in token_set(values)
    return _new_tuple(RequestHead, (method, target, _VERSIONS[minor], headers, length, chunked,
                                    keep_alive, expect_continue))


_NAMES = {}
# The fields parse_request_head reads besides Host, by their keys in the
# raw mapping.
_FRAMING = frozenset([b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect"])
# An HTTP/1.1 request needs exactly one Host, an HTTP/1.0 one at most one.
_HOST_ERRORS = {True: "HTTP/1.1 request needs exactly one Host header",
                False: "request has more than one Host header"}


def _diagnose(lines):
    """
    Why a response head that failed the grammar is bad: the first offending
    line, described (only on the error path, so it may be slow).
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


def parse_status_line(line):
    """
    Parse a status line (without its CRLF) into C{(http11, status,
    reason)}, by the grammar the upstream client holds responses to; raise
    L{BadResponse} otherwise.
    """
    if _STATUS_LINE_RE.fullmatch(line) is None:
        raise BadResponse("invalid status line %r" % (line[:80],))
    return line[7] == 49, int(line[9:12]), line[13:]


def parse_response_head(head):
    """
    Parse a response head (without its final empty line) into
    C{(status, reason, headers, http11, content_length, chunked, close,
    keep_alive)}; raise L{BadResponse} when it cannot be trusted.

    Strict, because what the gateway relays is what its clients trust: the
    status line and every field must match the grammar (no bytes a client
    could read differently: control characters, bare CR or LF, spaces in
    names, folded lines), and the framing must be unambiguous:
    Content-Length digits only and the same when repeated or listed, no
    Transfer-Encoding with it nor in HTTP/1.0, and no coding but
    C{chunked}. The caller bounds the head's size (C{RESPONSE.max_head}).

    An upstream sends the same lines again and again (its Server,
    Content-Type and Connection lines, its Date for a whole second): a
    status line or field line that passed the grammar is remembered with
    what it says (L{_LINES}), so a head made only of such lines costs one
    lookup per line. Any other head is checked whole, as the first time.
    """
    lines = head.split(b"\r\n")
    start = _STATUS_LINES.get(lines[0])
    if start is None:
        return _parse_new(head, lines)
    known = _LINES
    headers = []
    append = headers.append
    framing = None
    rest = iter(lines)
    next(rest)
    try:
        for line in rest:
            field, meaning = known[line]
            append(field)
            if meaning is not None:
                if framing is None:
                    framing = [meaning]
                else:
                    framing.append(meaning)
    except KeyError:
        return _parse_new(head, lines)
    status, reason, http11 = start
    content_length = None
    close = keep_alive = False
    if framing is not None:
        for kind, value in framing:
            if kind == _CONNECTION:
                close = close or value[0]
                keep_alive = keep_alive or value[1]
            elif kind == _LENGTH and (content_length is None or content_length == value):
                content_length = value
            else:
                # A coding, or lengths that differ: the full reading.
                return (status, reason, headers, http11) + _framing(framing, http11)
    return status, reason, headers, http11, content_length, False, close, keep_alive


# Status lines and field lines that passed the grammar, as they were sent:
# a status line -> (status, reason, http11); a field line -> ((name,
# value), meaning), the meaning being None or what the line says about
# framing (see _field). At most _MAX_LINES lines of at most _MAX_LINE bytes
# each are kept (an upstream's few hundred KB at worst): when full, the
# table starts again empty.
_STATUS_LINES = {}
_LINES = {}
_MAX_LINES = 1024
_MAX_LINE = 256
_LENGTH, _CODING, _CONNECTION = 1, 2, 3


def _remember(table, line, entry):
    if len(line) <= _MAX_LINE:
        if len(table) >= _MAX_LINES:
            table.clear()
        table[line] = entry


def _parse_new(head, lines):
    """
    L{parse_response_head} for a head with a line not seen before: the
    whole head against the grammar, then each line read and remembered.
    """
    if _RESPONSE_HEAD.fullmatch(head) is None:
        raise BadResponse(_diagnose(lines))
    first = lines[0]
    start = (int(first[9:12]), first[13:], first[7] == 49)  # b"1"
    _remember(_STATUS_LINES, first, start)
    known = _LINES
    headers = []
    framing = []
    for index in range(1, len(lines)):
        line = lines[index]
        entry = known.get(line)
        if entry is None:
            entry = _field(line)
            _remember(known, line, entry)
        headers.append(entry[0])
        if entry[1] is not None:
            framing.append(entry[1])
            # Conflicting lengths fail at the line that conflicts, before
            # what later lines hold is read.
            _framing(framing, start[2], partial=True)
    return (start[0], start[1], headers, start[2]) + _framing(framing, start[2])


def _field(line):
    """
    C{((name, value), meaning)} of a field line that passed the grammar:
    the value without surrounding blanks, and what the line says about
    framing: C{(_LENGTH, n)}, C{(_CODING, value)}, C{(_CONNECTION, (close,
    keep_alive))} or L{None}. Raise L{BadResponse} for a Content-Length
    that is not digits or lists differing lengths.
    """
    name, _, value = line.partition(b":")
    value = value.strip(b" \t")
    meaning = None
    size = len(name)
    if size == 14:
        if name.lower() == b"content-length":
            length = None
            for part in value.split(b","):
                part = part.strip(b" \t")
                if not part.isdigit() or len(part) > MAX_CONTENT_LENGTH_DIGITS:
                    raise BadResponse("invalid Content-Length %r" % (value[:40],))
                if length is not None and length != int(part):
                    raise BadResponse("conflicting Content-Length values")
                length = int(part)
            meaning = (_LENGTH, length)
    elif size == 17:
        if name.lower() == b"transfer-encoding":
            meaning = (_CODING, value)
    elif size == 10:
        if name.lower() == b"connection":
            meaning = (_CONNECTION, connection_flags((value,)))
    return (name, value), meaning


def _framing(meanings, http11, partial=False):
    """
    C{(content_length, chunked, close, keep_alive)} from the C{meanings}
    of a head's framing lines, in order; raise L{BadResponse} for
    ambiguous framing. With C{partial}, only the lengths seen so far are
    checked.
    """
    content_length = None
    transfer_encoding = None
    close = keep_alive = False
    for kind, value in meanings:
        if kind == _LENGTH:
            if content_length is not None and content_length != value:
                raise BadResponse("conflicting Content-Length values")
            content_length = value
        elif partial:
            continue
        elif kind == _CODING:
            if transfer_encoding is None:
                transfer_encoding = value
            else:
                transfer_encoding += b"," + value
        else:
            close = close or value[0]
            keep_alive = keep_alive or value[1]
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
    return content_length, chunked, close, keep_alive
