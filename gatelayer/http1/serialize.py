"""
Serialization of HTTP/1.1 heads: request heads as the upstream client sends
them (one join per request, the framing headers decided here rather than
copied from the client's request), and the status line and header block of
the responses the gateway writes itself.
"""

__all__ = ["BODY_METHODS", "body_length", "build_request_head", "build_response_head", "status_line"]

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
                       close=False, body=b"", chunked=False):
    """
    The bytes of a request head (and C{body} appended, to go out in the same
    write).

    C{headers} are sent in order, except Content-Length,
    Transfer-Encoding, Connection and Expect, which the client decides:
    C{Content-Length: content_length} when it is not L{None}, and
    C{Connection: close} when C{close}, C{Transfer-Encoding: chunked} when
    C{chunked} (the caller then writes the chunks). A C{TE} header in
    C{headers} is named in Connection too, as RFC 9110 7.6.1 asks of a
    sender of TE. C{host} (bytes) is added as Host only when C{headers}
    has none.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    add = parts.extend
    own = _OWN_LENGTHS
    has_host = False
    te = False
    for name, value in headers:
        size = len(name)
        if size in own and name.lower() in _OWN_HEADERS:
            continue
        if size == 4 and not has_host and name.lower() == b"host":
            has_host = True
        elif size == 2 and name.lower() == b"te":
            te = True
        add((name, b": ", value, b"\r\n"))
    if not has_host and host is not None:
        add((b"Host: ", host, b"\r\n"))
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % (content_length,))
    if te:
        parts.append(b"Connection: close, TE\r\n" if close else b"Connection: TE\r\n")
    elif close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)


def status_line(code, reason):
    """
    The status line of a response with status C{code} (an int from 100 to
    599) and reason phrase C{reason} (bytes: the gateway's own, never one
    relayed from elsewhere).
    """
    return b"HTTP/1.1 %d %s\r\n" % (code, reason)


def build_response_head(line, headers, body=b""):
    """
    The bytes of a response head: the status C{line} (from L{status_line}),
    the C{(name, value)} pairs of C{headers} in order, the empty line, and
    C{body} appended to go out in the same write. The caller has decided the
    framing headers; values are the gateway's own or already checked.
    """
    parts = [line]
    add = parts.extend
    for name, value in headers:
        add((name, b": ", value, b"\r\n"))
    parts.append(b"\r\n")
    if body:
        parts.append(body)
    return b"".join(parts)
