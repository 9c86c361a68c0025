"""
An upstream test server in a process of its own, so integration tests can
crash it (SIGKILL), hang it (SIGSTOP) and start it again on the same port.

Run as C{python -m gatelayer.testing.upstream_process NAME [PORT]}: it serves
an L{gatelayer.testing.upstreams.UpstreamServer} named NAME on 127.0.0.1:PORT
(0 or omitted: any free port), writes C{listening PORT} on stdout once it
accepts connections, and then reads commands, one a line, on stdin:
C{healthy} and C{unhealthy} switch what its C{/healthz} answers (each is
acknowledged with C{ok COMMAND}); C{requests} is answered with
C{ok requests N}, how many requests it has answered. It exits when stdin closes, so it never
outlives the test that started it. L{gatelayer.testing.upstreams.UpstreamProcess}
is the test-side handle.

Besides the server's own paths it answers two more, for tests of what a
gateway does with an upstream's answers:

  - C{/unavailable?retry_after=S}: 503 with C{Retry-After: S} (default 7)
    and the usual JSON echo body;
  - C{/raw/NAME}: the bytes of L{RAW_RESPONSES}C{[NAME]} written to the
    socket as they are (no HTTP library would send them), then the
    connection is closed, as their framing cannot be trusted;
  - C{/json/echo}: a JSON API answering with the JSON value of the request
    body, re-indented (so equal in meaning, not in bytes), and the
    request's Content-Type in C{X-Received-Type}; a body that is not JSON
    gets 415 or 400;
  - C{/json/pad?bytes=N}: C{{"pad": "xxx..."}} of N characters;
  - C{/redirect}: a 302 to the server's own C{http://127.0.0.1:PORT}, as an
    application behind a proxy answers, in C{Location},
    C{Content-Location} and C{Refresh}, with an C{X-Powered-By} header.
  - C{/text?bytes=N}: N bytes of L{text_body} as C{text/plain}, with a
    Content-Length;
  - C{/events}: a C{text/event-stream} of unknown length that sends
    L{event}C{(0)} at once and each next event only when C{/events/next}
    is requested (which answers with how many streams got it), so a test
    decides when the upstream writes, not a timer; C{/events/next?end=1}
    ends the streams instead.
"""

import json
import sys

from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver
from twisted.web import resource, server

from gatelayer.testing.upstreams import UpstreamServer

__all__ = ["RAW_RESPONSES", "event", "main", "text_body"]

RAW_RESPONSES = {
    "nul-value": b"HTTP/1.1 200 OK\r\nX-Evil: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "space-name": b"HTTP/1.1 200 OK\r\nX Evil: 1\r\nContent-Length: 2\r\n\r\nok",
    "lf-value": b"HTTP/1.1 200 OK\r\nX-Evil: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-Evil: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    "bad-status": b"HTTP/1.1 999 Nine\r\nContent-Length: 2\r\n\r\nok",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\n\r\n",
    "conflicting-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
}
"""
Upstream responses no well-behaved server sends, by the name C{/raw/NAME}
serves them under: a NUL in a value, a space in a name, a bare LF in a
value, an obs-fold line, a status code outside 100-599, and ambiguous
framing.
"""


def text_body(size):
    """
    The C{size} bytes C{/text?bytes=SIZE} answers: numbered lines of text,
    repetitive enough to compress well.
    """
    lines = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % (i,)
                     for i in range(size // 50 + 1))
    return lines[:size]


def event(index):
    """
    The C{index}th event of C{/events}.
    """
    return b"id: %d\ndata: event number %d\n\n" % (index, index)


class _Answers(resource.Resource):
    """
    The test upstream's resource: L{RAW_RESPONSES} and C{/unavailable}
    here, every other path answered by the server's own resource.
    """

    isLeaf = True

    def __init__(self, upstream, inner):
        super().__init__()
        self._upstream = upstream
        self._inner = inner
        self._streams = []
        self._next_event = 1

    def render(self, request):
        path = request.path
        if path.startswith(b"/raw/"):
            raw = RAW_RESPONSES.get(path[5:].decode("latin-1"))
            if raw is not None:
                self._upstream.requests += 1
                request.channel.transport.write(raw)
                request.channel.transport.loseConnection()
                return server.NOT_DONE_YET
        elif path == b"/json/echo":
            return _json_echo(request)
        elif path == b"/json/pad":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"pad": "x" * int(request.args.get(b"bytes", [b"0"])[0])}).encode("ascii")
        elif path == b"/redirect":
            return _redirect(request)
        elif path == b"/text":
            body = text_body(int(request.args.get(b"bytes", [b"0"])[0]))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"content-length", b"%d" % (len(body),))
            return body
        elif path == b"/events":
            return self._open_stream(request)
        elif path == b"/events/next":
            return self._stream_next(request)
        elif path == b"/unavailable":
            request.setResponseCode(503)
            request.setHeader(b"retry-after", request.args.get(b"retry_after", [b"7"])[0])
        return self._inner.render(request)


    def _open_stream(self, request):
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.write(event(0))
        self._streams.append(request)
        request.notifyFinish().addBoth(lambda _: request in self._streams and self._streams.remove(request))
        return server.NOT_DONE_YET

    def _stream_next(self, request):
        streams, end = list(self._streams), request.args.get(b"end") == [b"1"]
        for stream in streams:
            if end:
                stream.finish()
            else:
                stream.write(event(self._next_event))
        if not end:
            self._next_event += 1
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"streams": len(streams)}).encode("ascii")


def _redirect(request):
    own = b"http://127.0.0.1:%d" % (request.getHost().port,)
    request.setResponseCode(302)
    request.setHeader(b"location", own + b"/landing?from=redirect#top")
    request.setHeader(b"content-location", own + b"/redirect")
    request.setHeader(b"refresh", b"0; url=" + own + b"/landing")
    request.setHeader(b"x-powered-by", b"upstream-test/1.0")
    return b""


def _json_echo(request):
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
    request.setHeader(b"x-received-type", kind or b"(none)")
    if kind != b"application/json":
        request.setResponseCode(415)
        return b"not JSON\n"
    try:
        value = json.loads(request.content.read())
    except ValueError as e:
        request.setResponseCode(400)
        return f"not JSON: {e}\n".encode("utf-8")
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8")


class _Commands(LineReceiver):
    """
    The stdin/stdout side: announces the port, obeys health switches, stops
    the reactor when the parent closes stdin.
    """

    delimiter = b"\n"

    def __init__(self, reactor, upstream, port):
        self._reactor = reactor
        self._upstream = upstream
        self._port = port

    def connectionMade(self):
        self.sendLine(b"listening %d" % (self._port,))

    def lineReceived(self, line):
        command = line.strip()
        if command == b"healthy":
            self._upstream.healthy = True
        elif command == b"unhealthy":
            self._upstream.healthy = False
        elif command == b"requests":
            self.sendLine(b"ok requests %d" % (self._upstream.requests,))
            return
        else:
            self.sendLine(b"error unknown command " + command)
            return
        self.sendLine(b"ok " + command)

    def connectionLost(self, reason):
        if self._reactor.running:
            self._reactor.stop()


def main(argv, reactor):
    """
    Serve on C{reactor} until stdin closes. C{argv} is C{[NAME]} or
    C{[NAME, PORT]}. The process entry point is this package's C{__main__}.
    """
    if not 1 <= len(argv) <= 2:
        sys.stderr.write("usage: python -m gatelayer.testing.upstream_process NAME [PORT]\n")
        return 2
    name = argv[0]
    upstream = UpstreamServer(reactor, name)
    upstream.site.resource = _Answers(upstream, upstream.site.resource)
    port = upstream.start(int(argv[1]) if len(argv) == 2 else 0)
    stdio.StandardIO(_Commands(reactor, upstream, port), reactor=reactor)
    reactor.run()
    return 0
