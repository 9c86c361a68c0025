"""
Upstream servers for tests: twisted.web sites with echo, slow, big and
status-code resources, on loopback port 0 or in memory, the same server
in a process of its own (L{UpstreamProcess}) for tests that crash or hang it,
and a raw server recording the exact bytes of requests (L{RecordingUpstream}).
"""

import json
import os
import signal
import sys
import weakref

from twisted.internet import interfaces
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.web import resource, server
from zope.interface import implementer

import gatelayer
from gatelayer.http1 import ChunkedDecoder, parse_request_head
from gatelayer.testing.waiting import scaled


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


def serve_quietly(reactor, resource_, port=0):
    """
    Serve the twisted.web C{resource_} on 127.0.0.1 (port 0: any free one)
    with no access log; returns the listening port (stop it with
    C{stopListening}).
    """
    site = server.Site(resource_)
    site.log = lambda request: None
    site.noisy = False
    return reactor.listenTCP(port, site, interface="127.0.0.1")


class LoopbackServer:
    """
    What the test servers in the test's own reactor share: listening on
    127.0.0.1, their address, and stopping (safe to call again). A
    subclass has C{reactor} and sets C{port} to L{None} at first.
    """

    def _listen(self, factory, port):
        self.port = self.reactor.listenTCP(port, factory, interface="127.0.0.1")
        return self.port.getHost().port

    @property
    def address(self):
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port.getHost().port}"

    def _stop(self, transports):
        """
        Drop the open connections' C{transports}, stop listening; returns a
        Deferred.
        """
        for transport in transports:
            if transport is not None and transport.connected:
                transport.abortConnection()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening()


class UpstreamServer(LoopbackServer):
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
        # The connections' transports: twisted.web's channel wrapper has no
        # transport attribute of its own. Weak, so closed ones go away (on
        # PyPy only at its next collection: stopping skips closed ones).
        self.transports = weakref.WeakSet()
        build = self.site.buildProtocol

        def build_protocol(addr):
            protocol = build(addr)
            make_connection = protocol.makeConnection

            def made(transport):
                self.transports.add(transport)
                make_connection(transport)
            protocol.makeConnection = made
            return protocol
        self.site.buildProtocol = build_protocol
        self.port = None

    def start(self, port=0):
        """
        Listen on 127.0.0.1 (port 0: any); returns the port number.
        """
        return self._listen(self.site, port)

    def stop(self):
        """
        Stop listening (and drop open connections); returns a Deferred.
        """
        return self._stop(list(self.transports))


class _UpstreamProcessProtocol(ProcessProtocol):
    """
    Reads the child's stdout line by line: the C{listening PORT} banner and
    the acknowledgements of commands.
    """

    def __init__(self):
        self.lines = []
        self.errors = []
        self.waiting = []
        self.ended = Deferred()
        self._buffer = b""

    def outReceived(self, data):
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.decode("utf-8", "replace").strip()
            self.lines.append(line)
            waiting, self.waiting = self.waiting, []
            for prefix, d in waiting:
                if line.startswith(prefix):
                    d.callback(line)
                else:
                    self.waiting.append((prefix, d))

    def errReceived(self, data):
        self.errors.append(data)

    def wait_line(self, prefix):
        """
        A Deferred firing with the next stdout line starting with C{prefix}.
        """
        d = Deferred()
        self.waiting.append((prefix, d))
        return d

    def processEnded(self, reason):
        waiting, self.waiting = self.waiting, []
        for _, d in waiting:
            d.errback(RuntimeError(
                "upstream process exited:\n" + b"".join(self.errors).decode("utf-8", "replace")))
        self.ended.callback(getattr(reason.value, "exitCode", None))


class UpstreamProcess:
    """
    An L{UpstreamServer} in a separate process (see
    L{gatelayer.testing.upstream_process}): a real upstream that a test can
    crash with L{kill}, hang with L{pause}, and start again on the same port
    with L{start}. The child exits by itself when the test process goes
    away (its stdin closes).

    @ivar port: the port it listens (or last listened) on, once started.
    @cvar program: the module run as C{python -m PROGRAM NAME PORT}; it
        writes C{listening PORT} on stdout and exits when stdin closes.
    """

    program = "gatelayer.testing.upstream_process"

    def __init__(self, reactor, name):
        self.reactor = reactor
        self.name = name
        self.port = None
        self.protocol = None
        self.transport = None

    @inlineCallbacks
    def start(self, port=None, timeout=15.0):
        """
        Start the process, listening on C{port} (by default the port it used
        before, else any free one), and wait (bounded) until it accepts
        connections. Returns the port number.
        """
        if self.running:
            raise RuntimeError(f"upstream {self.name} is already running")
        if port is None:
            port = self.port or 0
        root = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.protocol = protocol = _UpstreamProcessProtocol()
        banner = protocol.wait_line("listening ")
        self.transport = self.reactor.spawnProcess(
            protocol, sys.executable,
            [sys.executable, "-m", self.program, self.name, str(port)],
            env=env)
        timeout = scaled(timeout)
        timer = self.reactor.callLater(timeout, banner.cancel)
        try:
            line = yield banner
        except CancelledError:
            self.kill()
            raise RuntimeError(f"upstream {self.name} did not listen within {timeout:g}s")
        finally:
            if timer.active():
                timer.cancel()
        self.port = int(line.split()[1])
        return self.port

    @property
    def running(self):
        """
        Whether the process was started and has not exited yet.
        """
        return self.protocol is not None and not self.protocol.ended.called

    @property
    def address(self):
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        """
        The process id (L{None} once it has exited).
        """
        return self.transport.pid if self.transport is not None else None

    def kill(self, signal_name="KILL"):
        """
        Send C{signal_name} (default C{"KILL"}: a crash, no goodbye to open
        connections) if the process is running.
        """
        if self.running:
            try:
                # By number: signalProcess knows only a few signals by name.
                self.transport.signalProcess(getattr(signal, "SIG" + signal_name))
            except ProcessExitedAlready:
                pass

    def pause(self):
        """
        Freeze the process (SIGSTOP): the kernel still accepts connections
        for it, but nothing answers, like a hung server.
        """
        self.kill("STOP")

    def resume(self):
        """
        Undo L{pause} (SIGCONT).
        """
        self.kill("CONT")

    def set_healthy(self, healthy):
        """
        Make its C{/healthz} answer 200 (C{True}) or 503 (C{False}); the
        Deferred fires once the process has switched.
        """
        command = b"healthy" if healthy else b"unhealthy"
        acknowledged = self.protocol.wait_line("ok " + command.decode("ascii"))
        self.transport.write(command + b"\n")
        return acknowledged

    def requests(self):
        """
        A Deferred firing with how many requests the process has answered.
        """
        answer = self.protocol.wait_line("ok requests ")
        self.transport.write(b"requests\n")
        return answer.addCallback(lambda line: int(line.split()[2]))

    @inlineCallbacks
    def stop(self, timeout=10.0):
        """
        Kill the process (if running) and wait, bounded, for it to exit.
        Safe to call at any time; suited to C{addCleanup}.
        """
        if self.protocol is None or self.protocol.ended.called:
            return
        self.kill("KILL")
        timer = self.reactor.callLater(timeout, self.protocol.ended.cancel)
        try:
            yield self.protocol.ended
        except CancelledError:
            raise RuntimeError(f"upstream {self.name} (pid {self.pid}) did not exit in time")
        finally:
            if timer.active():
                timer.cancel()


class _RecordingProtocol(Protocol):
    """
    Reads requests as raw bytes (framed by L{gatelayer.http1}: a head,
    then a Content-Length or chunked body) and answers each with the
    server's canned response.
    """

    def __init__(self, server):
        self.server = server
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = parse_request_head(self.buffer, end)
            rest = self.buffer[end + 4:]
            if head.chunked:
                _, after = ChunkedDecoder().feed(rest)
                if after is None:
                    return
                size = len(rest) - len(after)
            else:
                size = head.length or 0
                if len(rest) < size:
                    return
            whole = end + 4 + size
            self.server.requests.append(self.buffer[:whole])
            self.buffer = self.buffer[whole:]
            self.transport.write(self.server.response)


class RecordingUpstream:
    """
    An HTTP/1.1 server on 127.0.0.1 that keeps the exact bytes of every
    request it receives (chunked bodies with their trailers included,
    which a twisted.web server reads and drops) and answers each with the
    fixed bytes C{response}.

    @ivar requests: the raw requests, in order.
    """

    def __init__(self, reactor, response=b"HTTP/1.1 204 No Content\r\n\r\n"):
        self.reactor = reactor
        self.response = response
        self.requests = []
        self.port = None

    def start(self):
        """
        Listen on a free port; returns the port number.
        """
        factory = Factory.forProtocol(lambda: _RecordingProtocol(self))
        factory.noisy = False
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        return self.port.getHost().port

    @property
    def address(self):
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port.getHost().port}"

    def stop(self):
        """
        Stop listening (safe to call again); returns a Deferred.
        """
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening()


@inlineCallbacks
def start_upstreams(test, reactor, *names):
    """
    Start one L{UpstreamProcess} per name, in parallel, each stopped at
    C{test}'s cleanup.

    @return: a Deferred firing with the processes, in the order of C{names}.
    """
    processes = [UpstreamProcess(reactor, name) for name in names]
    for process in processes:
        test.addCleanup(process.stop)
    yield gatherResults([process.start() for process in processes])
    return processes
