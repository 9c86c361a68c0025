"""
Upstream servers for tests: twisted.web sites with echo, slow, big and
status-code resources, on loopback port 0 or in memory.
"""

import json
import weakref

from twisted.internet import interfaces
from twisted.web import resource, server
from zope.interface import implementer


class _Echo(resource.Resource):
    isLeaf = True

    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream

    def render(self, request):
        self.upstream.requests += 1
        path = request.path
        if path.startswith(b"/slow"):
            delay = float(request.args.get(b"delay", [b"1"])[0])
            call = self.upstream.reactor.callLater(delay, self._answer, request)
            request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
            return server.NOT_DONE_YET
        if path.startswith(b"/big"):
            megabytes = int(request.args.get(b"mb", [b"1"])[0])
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % (megabytes * 1024 * 1024,))
            _BigBody(request, megabytes * 1024 * 1024).start()
            return server.NOT_DONE_YET
        if path.startswith(b"/code/"):
            request.setResponseCode(int(path.split(b"/")[2]))
        if path.startswith(b"/healthz") and not self.upstream.healthy:
            request.setResponseCode(503)
        return self._body(request)

    def _answer(self, request):
        if not request._disconnected:
            request.write(self._body(request))
            request.finish()

    def _body(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-upstream", self.upstream.name.encode("ascii"))
        content = request.content.read() if request.content is not None else b""
        return json.dumps({
            "server": self.upstream.name,
            "method": request.method.decode("ascii"),
            "uri": request.uri.decode("latin-1"),
            "headers": {k.decode("latin-1").lower(): [x.decode("latin-1") for x in v]
                        for k, v in request.requestHeaders.getAllRawHeaders()},
            "body_length": len(content),
        }).encode("utf-8")


@implementer(interfaces.IPushProducer)
class _BigBody:
    CHUNK = b"x" * 65536

    def __init__(self, request, size):
        self.request = request
        self.left = size
        self.paused = False

    def start(self):
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.left > 0 and not self.request._disconnected:
            chunk = self.CHUNK if self.left >= len(self.CHUNK) else self.CHUNK[:self.left]
            self.left -= len(chunk)
            self.request.write(chunk)
        if self.left <= 0 and not self.request._disconnected and not self.request.finished:
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.left = 0
        self.paused = True


class UpstreamServer:
    """
    An HTTP/1.1 keep-alive server answering every path with a JSON echo of
    the request (server name, method, uri, headers, body length), plus:
    C{/slow?delay=S} answers after S seconds, C{/big?mb=N} streams N MB with
    back-pressure, C{/code/NNN} answers with status NNN, C{/healthz} answers
    503 while C{healthy} is false.
    """

    def __init__(self, reactor, name):
        self.reactor = reactor
        self.name = name
        self.requests = 0
        self.healthy = True
        self.site = server.Site(_Echo(self))
        self.site.log = lambda request: None
        self.site.noisy = False
        self.channels = weakref.WeakSet()
        build = self.site.buildProtocol

        def build_protocol(addr):
            protocol = build(addr)
            self.channels.add(protocol)
            return protocol
        self.site.buildProtocol = build_protocol
        self.port = None

    def start(self, port=0):
        """
        Listen on 127.0.0.1 (port 0: any); returns the port number.
        """
        self.port = self.reactor.listenTCP(port, self.site, interface="127.0.0.1")
        return self.port.getHost().port

    @property
    def address(self):
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port.getHost().port}"

    def stop(self):
        """
        Stop listening (and drop open connections); returns a Deferred.
        """
        port, self.port = self.port, None
        if port is None:
            from twisted.internet.defer import succeed
            return succeed(None)
        for channel in list(self.channels):
            if channel.transport is not None and channel.transport.connected:
                channel.transport.abortConnection()
        return port.stopListening()
