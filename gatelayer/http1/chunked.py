"""
The one chunked-body decoder (RFC 9112 section 7.1), for request bodies read
by the server channels and response bodies read by the upstream client:
one reading, so the two sides of the gateway cannot drift into two
strictness levels. What differs between the directions is only the size
limits and the exception raised (L{gatelayer.http1._rules.Limits}).
"""

from gatelayer.http1._rules import CHUNK_SIZE, FIELD_LINE, REQUEST

__all__ = ["ChunkedDecoder"]

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


def _line_end(data, pos, size, limit, limits):
    """
    Where the CRLF ending the line at C{data[pos:]} starts, or -1 while the
    line is incomplete. A chunk-size or trailer line cannot hold a CR or an
    LF, so the first of them must be the CR of a CRLF: a line ended by a
    bare LF (or holding a bare CR) is refused as soon as it is seen, rather
    than waiting for a CRLF that a lenient peer never sends. (A complete
    line holding one is refused by the grammar it fails.)
    """
    lf = data.find(b"\n", pos, pos + limit + 2)
    cr = data.find(b"\r", pos, pos + limit + 2)
    if lf < 0:
        if cr < 0 or cr == size - 1:
            return -1
        raise limits.fault(400, "chunked body line not ended by CRLF")
    if cr < 0 or cr != lf - 1:
        raise limits.fault(400, "chunked body line not ended by CRLF")
    return cr


class ChunkedDecoder:
    """
    Decodes a chunked body incrementally, strictly: chunk sizes are 1 to 16
    hex digits (optionally with well-formed extensions, which are ignored),
    chunk data is followed by exactly CRLF, and trailer fields obey the
    field grammar and the direction's limits. The trailer fields are kept
    in C{trailers} for whoever passes them on
    (L{gatelayer.http1.trailers} says which may be).

    Feed it bytes with L{feed}; it returns the body pieces found and, once
    the body has ended, the bytes after it (the next pipelined message).

    @ivar limits: the direction's L{gatelayer.http1._rules.Limits}
        (L{REQUEST} by default); its C{fault} makes the exceptions.
    @ivar trailers: the trailer fields read, C{(name, value)} byte pairs
        in order (the value without surrounding whitespace); empty for none.
    """

    __slots__ = ("limits", "trailers", "_state", "_remaining", "_pending", "_trailer_size")

    def __init__(self, limits=REQUEST):
        self.limits = limits
        self._state = _SIZE
        self._remaining = 0
        self._pending = b""
        self.trailers = ()
        self._trailer_size = 0

    @property
    def done(self):
        """
        Whether the body (its last chunk and trailers) has ended.
        """
        return self._state == _DONE

    def feed(self, data):
        """
        Decode C{data}: returns C{(pieces, rest)}, C{pieces} a list of body
        bytes and C{rest} L{None} while the body goes on, else the bytes
        that follow the body. Raises the direction's
        L{gatelayer.http1._rules.FramingError} on bad framing, with the
        pieces decoded before the fault in its C{pieces}.
        """
        if self._state == _DATA and len(data) < self._remaining and not self._pending:
            # The common read of a large body: inside a chunk, no copies.
            self._remaining -= len(data)
            return [data], None
        pieces = []
        try:
            return pieces, self._feed(data, pieces)
        except Exception as error:
            error.pieces = pieces
            raise

    def _feed(self, data, pieces):
        if self._pending:
            data = self._pending + data
            self._pending = b""
        limits = self.limits
        pos = 0
        size = len(data)
        while True:
            state = self._state
            if state == _DATA:
                available = size - pos
                if available <= 0:
                    return None
                remaining = self._remaining
                if available <= remaining:
                    pieces.append(data if pos == 0 else data[pos:])
                    self._remaining = remaining - available
                    if available == remaining:
                        self._state = _DATA_END
                    return None
                pieces.append(data[pos:pos + remaining])
                pos += remaining
                self._remaining = 0
                if size - pos >= 2 and data[pos] == 13 and data[pos + 1] == 10:
                    # The CRLF after the data, at once (the usual case).
                    pos += 2
                    self._state = _SIZE
                else:
                    self._state = _DATA_END
            elif state == _SIZE:
                # A CR or LF inside the line fails the grammar below: only
                # an unfinished line needs the look for a bare one.
                end = data.find(b"\r\n", pos, pos + limits.max_chunk_line + 2)
                if end < 0:
                    _line_end(data, pos, size, limits.max_chunk_line, limits)
                    if size - pos > limits.max_chunk_line + 1:
                        raise limits.fault(400, "chunk size line too long")
                    self._pending = data[pos:]
                    return None
                match = CHUNK_SIZE.fullmatch(data, pos, end)
                if match is None:
                    raise limits.fault(400, "invalid chunk size")
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
                        raise limits.fault(400, "chunk data not followed by CRLF")
                    self._pending = data[pos:]
                    return None
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise limits.fault(400, "chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _TRAILER:
                end = data.find(b"\r\n", pos, pos + limits.max_trailer_line + 2)
                if end < 0:
                    _line_end(data, pos, size, limits.max_trailer_line, limits)
                    if size - pos > limits.max_trailer_line + 1:
                        raise limits.fault(431, "%s trailer too large" % (limits.side,))
                    self._trailer_check(size - pos - 1)
                    self._pending = data[pos:]
                    return None
                if end == pos:
                    self._state = _DONE
                    return data[end + 2:]
                if not self.trailers:
                    self.trailers = []
                if limits.max_trailers is not None and len(self.trailers) >= limits.max_trailers:
                    raise limits.fault(431, "too many %s trailers" % (limits.side,))
                self._trailer_size += end + 2 - pos
                self._trailer_check(0)
                if FIELD_LINE.fullmatch(data, pos, end) is None:
                    raise limits.fault(400, "malformed %s trailer" % (limits.side,))
                colon = data.find(b":", pos, end)
                self.trailers.append((data[pos:colon], data[colon + 1:end].strip(b" \t")))
                pos = end + 2
            else:
                return data[pos:]

    def _trailer_check(self, partial):
        if self._trailer_size + partial > self.limits.max_trailers_size:
            raise self.limits.fault(431, "%s trailers too large" % (self.limits.side,))
