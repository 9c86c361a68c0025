"""
Exchanges for filter tests: the request side a filter reads (method, path,
query, headers, the buffered body) without a server.
"""

from io import BytesIO

from twisted.web.http_headers import Headers

from gatelayer.chain import Exchange

__all__ = ["BufferedRequest", "raw_headers", "request_exchange"]


class BufferedRequest:
    """
    The part of a request a filter reads of its body: the buffered body
    (a file object), its length and its trailers (none).
    """

    trailers = ()

    def __init__(self, body, content=None):
        self.content = content if content is not None else BytesIO(body)
        self._length = len(body)

    def body_length(self):
        """
        How many body bytes were received.
        """
        return self._length


def raw_headers(pairs):
    """
    L{Headers} holding C{pairs} (C{(name, value)} byte pairs) in order, as
    a client sent them.
    """
    raw = Headers()
    for name, value in pairs:
        raw.addRawHeader(name, value)
    return raw


def request_exchange(method=b"GET", path=b"/", query=b"", headers=(), body=b"", route="r", content=None):
    """
    An L{Exchange} of a request with C{headers} (C{(name, value)} byte
    pairs) and C{body}, as the filters see it (never answered).
    """
    return Exchange(method=method, path=path, query=query, headers=raw_headers(headers), client_ip="192.0.2.7", route=route,
                    request=BufferedRequest(body, content))
