"""
An origin for tests of the response cache: it answers with the caching
headers each request's query asks for, counts the requests it gets per
path, and answers a matching C{If-None-Match} with 304.
"""

import json
from collections import Counter

from twisted.web import resource, server

__all__ = ["CacheableOrigin", "origin_path"]

_HEADERS = {"cc": b"cache-control", "etag": b"etag", "vary": b"vary", "age": b"age",
            "last_modified": b"last-modified", "cookie": b"set-cookie"}


def origin_path(path, **asked):
    """
    The request target of C{path} asking L{CacheableOrigin} for the
    response headers C{asked} (C{cc}, C{etag}, C{vary}, C{age},
    C{last_modified}, C{cookie}), with C{refreshed_cc} the Cache-Control
    of its 304s instead of C{cc}, and, with C{delay}, an answer after so
    many seconds; the values are percent-encoded.
    """
    from urllib.parse import urlencode
    return (path + ("?" + urlencode(asked) if asked else "")).encode("ascii")


class CacheableOrigin(resource.Resource):
    """
    Answers every path with a JSON body naming the path, how many requests
    for it came so far (so a test tells a cached body from a new one) and
    the values of the request headers a C{vary} asks for; its response
    headers come from the query (see L{origin_path}). With C{etag} set, a
    request whose C{If-None-Match} names it gets 304 with the same
    headers and no body.

    @ivar requests: a L{Counter} of requests received per path (bytes).
    @ivar not_modified: a L{Counter} of 304s sent per path.
    @ivar failing: while true, every request is answered 503 (an origin
        in trouble).
    """

    isLeaf = True

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.requests = Counter()
        self.not_modified = Counter()
        self.failing = False

    def render(self, request):
        path = request.path
        self.requests[path] += 1
        if self.failing:
            request.setResponseCode(503)
            return b"origin failing\n"
        asked = {k.decode("ascii", "replace"): v[0] for k, v in request.args.items()}
        delay = float(asked.pop("delay", b"0") or 0)
        if delay > 0:
            call = self.reactor.callLater(delay, self._answer, request, asked)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return server.NOT_DONE_YET
        return self._body(request, asked)

    def _answer(self, request, asked):
        body = self._body(request, asked)
        request.write(body)
        request.finish()

    def _body(self, request, asked):
        for key, name in _HEADERS.items():
            if key in asked:
                request.setHeader(name, asked[key])
        etag = asked.get("etag")
        if etag is not None and request.getHeader(b"if-none-match") == etag:
            self.not_modified[request.path] += 1
            if "refreshed_cc" in asked:
                request.setHeader(b"cache-control", asked["refreshed_cc"])
            request.setResponseCode(304)
            return b""
        varied = {}
        for name in (asked.get("vary") or b"").split(b","):
            name = name.strip()
            if name:
                varied[name.decode("ascii")] = (request.getHeader(name) or b"").decode("latin-1")
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"path": request.path.decode("latin-1"), "count": self.requests[request.path],
                           "varied": varied}).encode("utf-8")
