"""
The gateway's own error responses: short JSON, never a traceback.
"""

from twisted.logger import Logger
from twisted.web.http import RESPONSES

from gatelayer.chain import error_body
from gatelayer.http1 import build_response_head, status_line

_log = Logger()

_REASONS = {
    400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
    308: b"Permanent Redirect", 429: b"Too Many Requests", 421: b"Misdirected Request",
    422: b"Unprocessable Content", 425: b"Too Early", 428: b"Precondition Required",
    451: b"Unavailable For Legal Reasons", 511: b"Network Authentication Required",
}


_PHRASES = {**RESPONSES, **_REASONS}


def reason_phrase(status):
    """
    The reason phrase for C{status}: ours for what the gateway sends, else
    twisted.web's table, else C{b"Status"} (never "Unknown Status"). One
    dict lookup: it runs for every response.
    """
    return _PHRASES.get(status, b"Status")


def valid_status(code):
    """
    C{code} if it is a status the gateway can send (an int in 100..599),
    else 502, logged: a status line carries exactly three digits, and a
    status outside that range can only come from a broken upstream (which
    502 means) or a broken terminal.
    """
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    _log.warn("response status {status!r} is not in 100..599: answering 502", status=code)
    return 502


def raw_error_response(status, message, date=None, extra_headers=(), request_id=None):
    """
    A complete HTTP/1.1 response that closes the connection, for errors found
    before a request object exists (bad request line, headers too large,
    headers too slow, body too large).

    @param date: the C{Date} header value (an IMF-fixdate), or L{None} to
        leave it out.
    @param extra_headers: C{(name, value)} pairs the listener adds to every
        response (Strict-Transport-Security on a TLS listener).
    @param request_id: C{(header name, id)} bytes to answer with and put
        in the body, or L{None}.
    """
    body = error_body(status, message, request_id[1] if request_id else None)
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % (len(body),))]
    if date is not None:
        headers.append((b"Date", date))
    headers.extend(extra_headers)
    if request_id:
        headers.append(request_id)
    headers.append((b"Connection", b"close"))
    return build_response_head(status_line(status, reason_phrase(status)), headers, body)
