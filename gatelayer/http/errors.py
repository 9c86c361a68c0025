"""
The gateway's own error responses: short JSON, never a traceback.
"""

import json

from twisted.web.http import RESPONSES

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


def error_body(status, message):
    """
    The JSON body of an error the gateway produces itself.
    """
    return json.dumps({"error": message, "status": status}, separators=(",", ":")).encode("utf-8")


def raw_error_response(status, message):
    """
    A complete HTTP/1.1 response that closes the connection, for errors found
    before a request object exists (bad request line, headers too large,
    headers too slow, body too large).
    """
    body = error_body(status, message)
    reason = _REASONS.get(status, b"Error")
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, reason),
        b"Content-Type: application/json\r\n",
        b"Content-Length: %d\r\n" % (len(body),),
        b"Connection: close\r\n\r\n",
        body,
    ])
