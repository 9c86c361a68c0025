"""
HTTP/1.1 message work for the upstream client, without I/O: building a
request head in one join and parsing a response head once.
"""

__all__ = ["BODY_METHODS", "MAX_HEAD_SIZE", "BadResponse", "body_length", "build_request_head", "parse_head"]

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
    The response cannot be framed; the text says why.
    """


def parse_head(head):
    """
    Parse a response head (without its final empty line) into
    C{(status, reason, headers, http11, content_length, chunked, close,
    keep_alive)}; raise L{_BadResponse} when it cannot be trusted.
    """
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        raise BadResponse("bad status line %r" % (lines[0][:80],))
    code = rest[:3]
    if len(code) != 3 or not code.isdigit() or (len(rest) > 3 and rest[3:4] != b" ") \
            or code[0:1] == b"0":
        raise BadResponse("bad status line %r" % (lines[0][:80],))
    status = int(code)
    reason = rest[4:]
    headers = []
    content_length = None
    transfer_encoding = None
    close = False
    keep_alive = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1] in b" \t" or name[0] in b" \t":
            raise BadResponse("bad header line %r" % (line[:80],))
        value = value.strip(b" \t")
        headers.append((name, value))
        size = len(name)
        if size == 14:
            if name.lower() == b"content-length":
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if not part.isdigit():
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
        codings = [c.strip(b" \t").lower() for c in transfer_encoding.split(b",")]
        if codings != [b"chunked"]:
            raise BadResponse("unsupported Transfer-Encoding %r" % (transfer_encoding[:40],))
        chunked = True
    return status, reason, headers, http11, content_length, chunked, close, keep_alive
