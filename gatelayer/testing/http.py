"""
Small HTTP clients for integration tests (off the gateway's own path, so
twisted.web.client is fine here).
"""

import json
import platform

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.client import FileBodyProducer
from io import BytesIO


class Response:
    """
    A whole response: status, headers (L{Headers}), body bytes.
    """

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """
        The first value of header C{name} or L{None}.
        """
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        """
        The body parsed as JSON.
        """
        return json.loads(self.body)


@inlineCallbacks
def fetch(reactor, url, method=b"GET", headers=None, body=None, persistent=False, pool=None,
          context_factory=None):
    """
    Make one request; returns a L{Response}.
    """
    if pool is None:
        pool = HTTPConnectionPool(reactor, persistent=persistent)
    if context_factory is not None:
        agent = Agent(reactor, contextFactory=context_factory, pool=pool)
    else:
        agent = Agent(reactor, pool=pool)
    producer = FileBodyProducer(BytesIO(body), cooperator=_Immediate()) if body is not None else None
    response = yield agent.request(method, url, Headers(headers or {}), producer)
    data = yield readBody(response)
    returnValue(Response(response.code, response.headers, data))


class _Immediate:
    """
    A cooperator stand-in that runs body production at once, so tests need
    no global cooperator.
    """

    def cooperate(self, iterator):
        for _ in iterator:
            pass
        from twisted.internet.defer import succeed

        class _Task:
            def whenDone(self):
                return succeed(iterator)

            def stop(self):
                pass

            def pause(self):
                pass

            def resume(self):
                pass
        return _Task()


class SlowReader(Protocol):
    """
    Sends one raw request and reads the response, pausing its transport for
    C{pause} seconds after every C{chunk} bytes: a slow client that makes
    the gateway apply back-pressure.
    """

    def __init__(self, reactor, request, chunk, pause):
        self.reactor = reactor
        self.request = request
        self.chunk = chunk
        self.pause = pause
        self.received = 0
        self._since_pause = 0
        self.head = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        if not self.head:
            self.head = data[:200]
        self.received += len(data)
        self._since_pause += len(data)
        if self._since_pause >= self.chunk:
            self._since_pause = 0
            self.transport.pauseProducing()
            self.reactor.callLater(self.pause, self.transport.resumeProducing)

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(self.received)


class SlowReaderFactory(ClientFactory):
    """
    Builds one L{SlowReader}.
    """

    def __init__(self, reader):
        self.reader = reader

    def buildProtocol(self, addr):
        return self.reader

    def clientConnectionFailed(self, connector, reason):
        self.reader.done.errback(reason)


def rss_kb(pid):
    """
    Resident set size of process C{pid} in KiB (Linux /proc).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


RSS_SLACK_KB = 40 * 1024 if platform.python_implementation() == "PyPy" else 0
"""
What a worker's RSS may grow beyond a streaming test's bound on this
interpreter: PyPy's collector frees large buffers at its next major
collection, once the heap has grown by its major-collect factor (1.82 by
default), and its JIT adds the compiled path: bounded, but by 25-37 MB
measured rather than a few.
"""


def rss_growth_limit_kb(kb):
    """
    C{kb}, the most a worker's RSS may grow while streaming on CPython, for
    this interpreter: see L{RSS_SLACK_KB}.
    """
    return kb + RSS_SLACK_KB


@inlineCallbacks
def slow_read_peak_rss(reactor, address, request, pid, chunk, pause=0.05):
    """
    Send raw C{request} to C{address} (host, port) and read the answer as a
    L{SlowReader} does, sampling the resident memory of process C{pid}
    while it streams. Fires with C{(reader, before_kb, peak_kb)}.
    """
    before = rss_kb(pid)
    reader = SlowReader(reactor, request, chunk=chunk, pause=pause)
    reactor.connectTCP(address[0], address[1], SlowReaderFactory(reader))
    peak = before
    while not reader.done.called:
        peak = max(peak, rss_kb(pid))
        yield task.deferLater(reactor, 0.05, lambda: None)
    yield reader.done
    returnValue((reader, before, peak))


class RawClient(Protocol):
    """
    Sends fixed bytes (whole, or one byte per reactor turn) and collects
    everything until the server closes: for requests no HTTP client
    library would send.

    @ivar done: fires with the bytes received once the connection closed.
    @ivar connected_at: the reactor time the connection was made.
    @ivar closed_at: the reactor time it closed.
    """

    def __init__(self, reactor, data, byte_by_byte=False):
        self.reactor = reactor
        self.data = data
        self.byte_by_byte = byte_by_byte
        self.received = []
        self.done = Deferred()
        self.connected_at = self.closed_at = None

    def connectionMade(self):
        self.connected_at = self.reactor.seconds()
        if not self.byte_by_byte:
            self.transport.write(self.data)
            return
        self.transport.setTcpNoDelay(True)
        self._next(0)

    def _next(self, index):
        if index < len(self.data) and self.transport.connected:
            self.transport.write(self.data[index:index + 1])
            self.reactor.callLater(0, self._next, index + 1)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.closed_at = self.reactor.seconds()
        self.done.callback(b"".join(self.received))


class RawClientFactory(ClientFactory):
    """
    Builds one L{RawClient}; a failed connection fails its C{done}.
    """

    def __init__(self, client):
        self.client = client

    def buildProtocol(self, addr):
        return self.client

    def clientConnectionFailed(self, connector, reason):
        self.client.done.errback(reason)


def send_raw(reactor, address, data, byte_by_byte=False):
    """
    Send C{data} on a new connection to C{address} (host, port); fires with
    all that came back once the server closed.
    """
    client = RawClient(reactor, data, byte_by_byte)
    reactor.connectTCP(address[0], address[1], RawClientFactory(client))
    return client.done
