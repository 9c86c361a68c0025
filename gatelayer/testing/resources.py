"""
twisted.web resources for tests of the resource terminal
(C{resource = gatelayer.testing.resources:tree}): one that reports what it
was given, one that answers later, one that streams with a push producer,
one that raises, one that watches for its client going away.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

__all__ = ["ChunkProducer", "tree"]


def _text(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


class Echo(Resource):
    """
    Answers JSON describing the request as the resource saw it: method,
    uri, prepath, postpath, args, body, selected headers, cookies,
    addresses; sets a header and a cookie of its own.
    """

    isLeaf = True

    def render_GET(self, request):
        """
        Describe the request.
        """
        body = request.content.read()
        client = request.getClientAddress()
        document = {
            "method": _text(request.method),
            "uri": _text(request.uri),
            "path": _text(request.path),
            "prepath": [_text(p) for p in request.prepath],
            "postpath": [_text(p) for p in request.postpath],
            "args": {_text(k): [_text(v) for v in vs] for k, vs in sorted(request.args.items())},
            "body": _text(body),
            "header": _text(request.getHeader(b"x-test")),
            "cookie": _text(request.getCookie(b"flavour")),
            "client": [client.host, client.port],
            "host_port": request.getHost().port,
            "hostname": _text(request.getRequestHostname()),
            "secure": request.isSecure(),
            "prepath_url": _text(request.prePathURL()),
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-resource", b"echo")
        if b"hop" in request.args:
            # Framing and hop-by-hop headers the gateway must not pass on.
            request.setHeader(b"connection", b"close, x-resource")
            request.setHeader(b"keep-alive", b"timeout=1")
            request.setHeader(b"transfer-encoding", b"chunked")
        request.addCookie(b"seen", b"yes", path=b"/")
        return json.dumps(document, sort_keys=True).encode("utf-8")

    render_POST = render_PUT = render_GET


class Later(Resource):
    """
    Answers C{NOT_DONE_YET} and keeps the request in C{pending}: a test
    finishes it when it likes (a deferred render).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.pending = []

    def render_GET(self, request):
        """
        Hold the request.
        """
        self.pending.append(request)
        return NOT_DONE_YET


class Watched(Resource):
    """
    Answers nothing, and records in C{outcomes} how C{notifyFinish} fired
    (C{"finished"} or the failure's exception type name).
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.outcomes = []
        self.pending = []

    def render_GET(self, request):
        """
        Hold the request and watch it.
        """
        self.pending.append(request)
        request.notifyFinish().addCallbacks(
            lambda _: self.outcomes.append("finished"),
            lambda failure: self.outcomes.append(failure.type.__name__))
        return NOT_DONE_YET


@implementer(IPushProducer)
class ChunkProducer:
    """
    A push producer writing C{count} chunks of C{size} bytes (each the
    byte of its index modulo 26, from C{a}) as fast as it is let: it
    writes until paused, goes on when resumed, and after the last chunk
    finishes the request (or, with C{finish} false, leaves that to whoever
    waits on C{done}: a Klein handler returns it).

    @ivar sent: the chunks written so far.
    @ivar stopped: whether C{stopProducing} was called.
    @ivar pauses: how many times it was paused.
    @ivar done: a L{Deferred} firing after the last chunk.
    """

    def __init__(self, request, count, size, finish=True):
        self.request = request
        self.count = count
        self.size = size
        self.finish = finish
        self.sent = 0
        self.pauses = 0
        self.paused = False
        self.stopped = False
        self.done = Deferred()

    def start(self):
        """
        Register with the request and write until paused.
        """
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self):
        """
        Write chunks until paused or done.
        """
        self.paused = False
        while not self.paused and not self.stopped and self.sent < self.count:
            chunk = bytes([97 + self.sent % 26]) * self.size
            self.sent += 1
            self.request.write(chunk)
        if self.sent == self.count and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            if self.finish:
                self.request.finish()
            self.done.callback(None)

    def pauseProducing(self):
        """
        The client is slow.
        """
        self.paused = True
        self.pauses += 1

    def stopProducing(self):
        """
        The client went away.
        """
        self.stopped = True


class Stream(Resource):
    """
    Streams C{?chunks=N&size=S} (default 4 of 1000 bytes) through a
    L{ChunkProducer}, kept in C{producers}.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.producers = []

    def render_GET(self, request):
        """
        Start the producer.
        """
        count = int(request.args.get(b"chunks", [b"4"])[0])
        size = int(request.args.get(b"size", [b"1000"])[0])
        request.setHeader(b"content-type", b"text/plain; charset=us-ascii")
        producer = ChunkProducer(request, count, size)
        self.producers.append(producer)
        producer.start()
        return NOT_DONE_YET


class Boom(Resource):
    """
    Raises while rendering.
    """

    isLeaf = True

    def render_GET(self, request):
        """
        Fail.
        """
        raise ValueError("the resource broke (secret detail)")


class Moved(Resource):
    """
    Redirects to C{echo} beside it.
    """

    isLeaf = True

    def render_GET(self, request):
        """
        Redirect.
        """
        request.redirect(request.prePathURL().rsplit(b"/", 1)[0] + b"/echo")
        return b""


class Root(Resource):
    """
    The tree's root: a short text at the route's own path, the children
    below.
    """

    def render_GET(self, request):
        """
        The index.
        """
        request.setHeader(b"content-type", b"text/plain")
        return b"root of the tree"

    def getChild(self, name, request):
        """
        The index for C{""} (the route's path with its slash).
        """
        if name == b"":
            return self
        return super().getChild(name, request)


def tree():
    """
    A new resource tree: C{/} (text), C{echo}, C{later}, C{watched},
    C{stream}, C{boom}, C{moved}; each child is an attribute of the root
    too, for tests to reach.
    """
    root = Root()
    for name, child in (("echo", Echo()), ("later", Later()), ("watched", Watched()),
                        ("stream", Stream()), ("boom", Boom()), ("moved", Moved())):
        root.putChild(name.encode("ascii"), child)
        setattr(root, name, child)
    return root


shared = Root()
"""A resource itself rather than a factory: mounted as it is."""

not_callable = 42
"""Neither a resource nor a factory (a configuration error's subject)."""


def not_a_resource():
    """
    A factory returning something that is not a resource.
    """
    return {"a": "dict"}


def broken_factory():
    """
    A factory that raises.
    """
    raise RuntimeError("the factory failed")
