"""
Strict HTTP/1.1 request framing for the lean server channel, without I/O:
the request head (request line and header fields) and chunked bodies.

Everything here refuses what a lenient parser would guess at, because a
gateway that reads a request differently from the server behind it can be
made to smuggle a second request inside the first (RFC 9112 section 11.2).
"""

import re

from twisted.web.http_headers import Headers

__all__ = [
    "MAX_REQUEST_LINE", "MAX_HEADER_LINE", "MAX_HEADERS", "MAX_HEADERS_SIZE", "MAX_CHUNK_LINE",
    "BadRequest", "RequestHead", "HeadScanner", "parse_head", "ChunkedDecoder",
]

MAX_REQUEST_LINE = 8192
MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
MAX_HEADERS_SIZE = 32768
MAX_CHUNK_LINE = 4096
MAX_CONTENT_LENGTH_DIGITS = 18

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# method SP request-target SP HTTP-version, with exactly one space each; the
# target is visible ASCII (or obs-text bytes, which nginx also lets through).
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])")
# Every header line: a token, a colon right after it (no whitespace before
# the colon, no obs-fold continuation lines) and a value of visible
# characters, spaces and tabs (no NUL, CR, LF or other controls).
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*")
_HEADER_LINE = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb'|"[^"\x00-\x08\x0a-\x1f\x7f]*"))?)*')

_VERSIONS = {b"0": b"HTTP/1.0", b"1": b"HTTP/1.1"}

try:
    from twisted.web.http_headers import _nameEncoder
    _canonical_name = _nameEncoder.encode
    Headers()._rawHeaders  # noqa: B018 -- the layout the fast path fills
except (ImportError, AttributeError):  # pragma: no cover - other Twisted versions
    _canonical_name = None


class BadRequest(Exception):
    """
    A request the channel refuses: the status to answer (400, 414, 431, 413)
    and a short reason for the JSON body. The connection is closed after.
    """

    def __init__(self, status, message):
        super().__init__(status, message)
        self.status = status
        self.message = message


class RequestHead:
    """
    A parsed request head.

    @ivar method: the method token (bytes).
    @ivar target: the request target as sent (bytes).
    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: a L{Headers} with every field.
    @ivar length: the body's Content-Length, or L{None}.
    @ivar chunked: whether the body is chunked.
    @ivar keep_alive: whether the client lets the connection persist.
    @ivar expect_continue: whether the client waits for C{100 Continue}.
    """

    __slots__ = ("method", "target", "version", "headers", "length", "chunked",
                 "keep_alive", "expect_continue")

    def __init__(self, method, target, version, headers, length, chunked, keep_alive,
                 expect_continue):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.length = length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue


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
            first = buf.find(b"\r\n", since, MAX_REQUEST_LINE + 2)
            if first < 0:
                # One byte of slack: it may be the CR of the line's CRLF.
                if size > MAX_REQUEST_LINE + 1:
                    raise BadRequest(414, "request line too long")
                return
            self.first = first
            self.line_start = since = first + 2
        elif since < first + 2:
            since = first + 2
        # The check of a complete head counts the last line's CRLF but not
        # the empty line's: one byte of slack for its CR.
        if size - first - 2 > MAX_HEADERS_SIZE + 1:
            raise BadRequest(431, "request headers too large")
        self.lines += buf.count(b"\r\n", since)
        if self.lines > MAX_HEADERS:
            raise BadRequest(431, "too many request headers")
        last = buf.rfind(b"\r\n", since)
        if last >= 0:
            self.line_start = last + 2
        if size - self.line_start > MAX_HEADER_LINE + 1:
            raise BadRequest(431, "request header too large")


def parse_head(buf, end):
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
    if first > MAX_REQUEST_LINE:
        raise BadRequest(414, "request line too long")
    if end > first:
        if end - first > MAX_HEADERS_SIZE:
            raise BadRequest(431, "request headers too large")
        lines = buf[first + 2:end].split(b"\r\n")
        if len(lines) > MAX_HEADERS:
            raise BadRequest(431, "too many request headers")
        if max(map(len, lines)) > MAX_HEADER_LINE:
            raise BadRequest(431, "request header too large")
    else:
        lines = ()
    match = _REQUEST_LINE.fullmatch(buf, 0, first)
    if match is None:
        raise BadRequest(400, "malformed request line")
    method, target, minor = match.groups()
    version = _VERSIONS[minor]
    headers = Headers()
    if lines:
        if _HEADER_BLOCK.fullmatch(buf, first + 2, end + 2) is None:
            raise BadRequest(400, "malformed request header")
        get = _fill(headers, lines)
    else:
        get = _EMPTY.get
    length = None
    values = get(b"Content-Length")
    if values is not None:
        text = values[0]
        if not text.isdigit() or len(text) > MAX_CONTENT_LENGTH_DIGITS:
            raise BadRequest(400, "invalid Content-Length")
        for other in values[1:]:
            if other != text:
                raise BadRequest(400, "conflicting Content-Length headers")
        length = int(text)
    chunked = False
    values = get(b"Transfer-Encoding")
    if values is not None:
        if version != b"HTTP/1.1":
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if length is not None:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        if len(values) != 1 or values[0].lower() != b"chunked":
            raise BadRequest(400, "unsupported Transfer-Encoding")
        chunked = True
    hosts = get(b"Host")
    if version == b"HTTP/1.1":
        if hosts is None or len(hosts) != 1:
            raise BadRequest(400, "HTTP/1.1 request needs exactly one Host header")
        keep_alive = True
    else:
        if hosts is not None and len(hosts) != 1:
            raise BadRequest(400, "request has more than one Host header")
        keep_alive = False
    values = get(b"Connection")
    if values is not None:
        tokens = _tokens(values)
        if b"close" in tokens:
            keep_alive = False
        elif b"keep-alive" in tokens:
            keep_alive = True
    expect_continue = False
    values = get(b"Expect")
    if values is not None and version == b"HTTP/1.1":
        expect_continue = b"100-continue" in _tokens(values)
    return RequestHead(method, target, version, headers, length, chunked, keep_alive,
                       expect_continue)


def _tokens(values):
    return {item.strip().lower() for value in values for item in value.split(b",")}


_EMPTY = {}
_NAMES = {}


def _fill(headers, lines):
    """
    Add C{name: value} lines (already checked by C{_HEADER_BLOCK}) to
    C{headers}; returns a function looking up the values of a header by
    its canonical name (C{b"Content-Length"}). The values cannot hold CR
    or LF, so twisted's own sanitising (a split and a join per value) is
    skipped, and names are canonicalised through a small cache.
    """
    if _canonical_name is None:  # pragma: no cover - other Twisted versions
        for line in lines:
            name, _, value = line.partition(b":")
            headers.addRawHeader(name, value.strip(b" \t"))
        return headers.getRawHeaders
    raw = headers._rawHeaders
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
    return raw.get


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


def _line_end(data, pos, size, limit):
    """
    Where the CRLF ending the line at C{data[pos:]} starts, or -1 while the
    line is incomplete. A chunk-size or trailer line cannot hold a CR or an
    LF, so the first of them must be the CR of a CRLF: a line ended by a
    bare LF (or holding a bare CR) is refused as soon as it is seen, rather
    than waiting for a CRLF that a lenient client never sends.
    """
    lf = data.find(b"\n", pos, pos + limit + 2)
    cr = data.find(b"\r", pos, pos + limit + 2)
    if lf < 0:
        if cr < 0 or cr == size - 1:
            return -1
        raise BadRequest(400, "chunked body line not ended by CRLF")
    if cr < 0 or cr != lf - 1:
        raise BadRequest(400, "chunked body line not ended by CRLF")
    return cr


class ChunkedDecoder:
    """
    Decodes a chunked request body incrementally, strictly: chunk sizes are
    1 to 16 hex digits (optionally with well-formed extensions, which are
    ignored), chunk data is followed by exactly CRLF, and trailer fields
    obey the header limits (they are read and dropped, as twisted.web does).

    Feed it bytes with L{feed}; it returns the body pieces found and, once
    the body has ended, the bytes after it (the next pipelined request).
    """

    __slots__ = ("_state", "_remaining", "_pending", "_trailers", "_trailer_size")

    def __init__(self):
        self._state = _SIZE
        self._remaining = 0
        self._pending = b""
        self._trailers = 0
        self._trailer_size = 0

    def feed(self, data):
        """
        Decode C{data}: returns C{(pieces, rest)}, C{pieces} a list of body
        bytes and C{rest} L{None} while the body goes on, else the bytes
        that follow the body. Raises L{BadRequest} on bad framing.
        """
        if self._pending:
            data = self._pending + data
            self._pending = b""
        pieces = []
        pos = 0
        size = len(data)
        while True:
            state = self._state
            if state == _DATA:
                available = size - pos
                if available <= 0:
                    return pieces, None
                take = self._remaining if self._remaining < available else available
                pieces.append(data if take == size else data[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _SIZE:
                end = _line_end(data, pos, size, MAX_CHUNK_LINE)
                if end < 0:
                    if size - pos > MAX_CHUNK_LINE + 1:
                        raise BadRequest(400, "chunk size line too long")
                    self._pending = data[pos:]
                    return pieces, None
                match = _CHUNK_SIZE.fullmatch(data, pos, end)
                if match is None:
                    raise BadRequest(400, "invalid chunk size")
                chunk = int(match.group(1), 16)
                pos = end + 2
                if chunk:
                    self._remaining = chunk
                    self._state = _DATA
                else:
                    self._state = _TRAILER
            elif state == _DATA_END:
                if size - pos < 2:
                    if size > pos and data[pos] != 13:
                        raise BadRequest(400, "chunk data not followed by CRLF")
                    self._pending = data[pos:]
                    return pieces, None
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise BadRequest(400, "chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _TRAILER:
                end = _line_end(data, pos, size, MAX_HEADER_LINE)
                if end < 0:
                    if size - pos > MAX_HEADER_LINE + 1:
                        raise BadRequest(431, "request trailer too large")
                    self._trailer_check(size - pos - 1)
                    self._pending = data[pos:]
                    return pieces, None
                if end == pos:
                    self._state = _DONE
                    return pieces, data[end + 2:]
                self._trailers += 1
                if self._trailers > MAX_HEADERS:
                    raise BadRequest(431, "too many request trailers")
                self._trailer_size += end + 2 - pos
                self._trailer_check(0)
                if _HEADER_LINE.fullmatch(data, pos, end) is None:
                    raise BadRequest(400, "malformed request trailer")
                pos = end + 2
            else:
                return pieces, data[pos:]

    def _trailer_check(self, partial):
        if self._trailer_size + partial > MAX_HEADERS_SIZE:
            raise BadRequest(431, "request trailers too large")
