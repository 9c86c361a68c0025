"""
Finding, removing and refusing credentials in a request: the parts of the
JWT and API key filters that are about HTTP rather than about keys.

Everything works on bytes as received and never raises on odd input: a
malformed cookie or query string just yields no credential.
"""

import re
from urllib.parse import unquote_to_bytes

from gatelayer.chain import json_reply

_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def header_safe(value):
    """
    Whether C{value} (bytes) can be sent as a header value as it is: no
    control characters (CR and LF above all).
    """
    return _UNSAFE_VALUE.search(value) is None


def _query_pairs(query):
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        yield part, unquote_to_bytes(name.replace(b"+", b" ")), value


def query_values(query, name):
    """
    The decoded values of parameter C{name} (bytes) in the query string
    C{query} (bytes, without C{?}), in order.
    """
    if not query:
        return []
    return [unquote_to_bytes(value.replace(b"+", b" "))
            for _, key, value in _query_pairs(query) if key == name]


def without_query_param(query, name):
    """
    C{query} with every C{name} parameter removed; the other parameters are
    kept byte for byte, in order.
    """
    if not query:
        return query
    return b"&".join(part for part, key, _ in _query_pairs(query) if key != name)


def cookie_values(headers, name):
    """
    The values of cookie C{name} (bytes) in the C{Cookie} headers of
    C{headers} (a L{twisted.web.http_headers.Headers}).
    """
    found = []
    for header in headers.getRawHeaders(b"cookie", ()):
        for pair in header.split(b";"):
            key, sep, value = pair.strip().partition(b"=")
            if sep and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                    value = value[1:-1]
                found.append(value)
    return found


def remove_cookie(headers, name):
    """
    Remove cookie C{name} from the C{Cookie} headers, keeping the others
    (and dropping the header when nothing is left).
    """
    kept = []
    for header in headers.getRawHeaders(b"cookie", ()):
        pairs = [pair.strip() for pair in header.split(b";") if pair.strip()]
        pairs = [pair for pair in pairs if pair.partition(b"=")[0].strip() != name]
        if pairs:
            kept.append(b"; ".join(pairs))
    headers.removeHeader(b"cookie")
    if kept:
        headers.setRawHeaders(b"cookie", kept)


def bearer_tokens(headers):
    """
    The tokens of every C{Authorization: Bearer} header (RFC 6750 2.1), in
    order; other schemes are left out.
    """
    tokens = []
    for value in headers.getRawHeaders(b"authorization", ()):
        scheme, _, credentials = value.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            tokens.append(credentials.strip())
    return tokens


def _quoted(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


def challenge(scheme, error, description, extra=()):
    """
    A C{WWW-Authenticate} value: C{Bearer error="...", error_description="..."}
    plus C{extra} C{(name, value)} parameters.
    """
    params = [("error", error), ("error_description", description), *extra]
    text = scheme + " " + ", ".join(f'{name}="{_quoted(value)}"' for name, value in params)
    return text.encode("latin-1", "replace")


def refusal(status, scheme, error, description, extra=()):
    """
    The short JSON reply refusing a request, with its challenge header.
    """
    return json_reply(
        status,
        {"error": error, "error_description": description},
        headers=(
            (b"www-authenticate", challenge(scheme, error, description, extra)),
            (b"cache-control", b"no-store"),
        ),
    )
