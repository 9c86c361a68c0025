"""
Plain TCP servers and clients for layer 4 tests: L{EchoServer}, which sends
back every byte it receives (and, after the client's FIN, its own), keeping
what each connection sent, in this process; L{EchoProcess}, the same server
in a process of its own (L{gatelayer.testing.echo_process}) that a test can
kill; L{start_echo_servers}; L{SourceServer}, which streams a fixed number
of bytes to each client as fast as the client side takes them; and
L{exchange}, a client that sends, shuts down writing and reads to the end.
"""

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer

from gatelayer.testing.upstreams import LoopbackServer, UpstreamProcess

__all__ = ["EchoProcess", "EchoServer", "SourceServer", "exchange", "start_echo_servers"]


@implementer(IHalfCloseableProtocol)
class EchoProtocol(Protocol):
    """
    Echo every byte; answer a FIN with a FIN (after the echo), so a client
    that shut down writing still reads everything back.
    """

    def __init__(self, server=None):
        self.server = server
        self.received = []

    def connectionMade(self):
        if self.server is not None:
            self.server.connections.append(self)

    def dataReceived(self, data):
        self.received.append(data)
        self.transport.write(data)

    @property
    def data(self):
        """
        Every byte this connection received.
        """
        return b"".join(self.received)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()


class EchoServer(LoopbackServer):
    """
    An echo server on 127.0.0.1 (port 0) in the test's own reactor.

    @ivar connections: the L{EchoProtocol} of each connection accepted, in
        order (their C{data} is what the server received).
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.connections = []
        self.port = None

    def start(self, port=0):
        """
        Listen; returns the port number.
        """
        factory = Factory.forProtocol(lambda: EchoProtocol(self))
        factory.noisy = False
        return self._listen(factory, port)

    def stop(self):
        """
        Stop listening and drop open connections (safe to call again).
        """
        return self._stop(connection.transport for connection in self.connections)


class EchoProcess(UpstreamProcess):
    """
    An echo server in a process of its own (see
    L{gatelayer.testing.echo_process}); like L{UpstreamProcess} it can be
    killed, paused and started again on the same port.
    """

    program = "gatelayer.testing.echo_process"

    def connections(self):
        """
        A Deferred firing with how many connections the process accepted.
        """
        answer = self.protocol.wait_line("ok connections ")
        self.transport.write(b"connections\n")
        return answer.addCallback(lambda line: int(line.split()[2]))


@inlineCallbacks
def start_echo_servers(test, reactor, *names):
    """
    Start one L{EchoProcess} per name, in parallel, each stopped at
    C{test}'s cleanup; fires with the processes in the order of C{names}.
    """
    processes = [EchoProcess(reactor, name) for name in names]
    for process in processes:
        test.addCleanup(process.stop)
    yield gatherResults([process.start() for process in processes])
    return processes


@implementer(IHalfCloseableProtocol)
class _ExchangeClient(Protocol):
    def __init__(self, reactor, data, half_close):
        self.reactor = reactor
        self.data = data
        self.half_close = half_close
        self.received = []
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)
        if self.half_close:
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.append(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(b"".join(self.received))


class _ExchangeFactory(ClientFactory):
    noisy = False

    def __init__(self, client):
        self.client = client

    def buildProtocol(self, addr):
        return self.client

    def clientConnectionFailed(self, connector, reason):
        self.client.done.errback(reason)


def exchange(reactor, address, data, half_close=True, bind=None, timeout=10.0):
    """
    Connect to C{address} (C{(host, port)}, from C{bind} when given), send
    C{data}, shut down writing (C{half_close}) and read until the server
    closes; fires with every byte received (failing if the connection
    cannot be made). A connection still open after C{timeout} seconds is
    cut, so a test never hangs on it.
    """
    client = _ExchangeClient(reactor, data, half_close)
    kw = {"bindAddress": bind} if bind is not None else {}
    reactor.connectTCP(address[0], address[1], _ExchangeFactory(client), timeout=timeout, **kw)

    def cut():
        if client.transport is not None and client.transport.connected:
            client.transport.abortConnection()
    timer = reactor.callLater(timeout, cut)

    def stop(result):
        if timer.active():
            timer.cancel()
        return result
    return client.done.addBoth(stop)


@implementer(IPushProducer)
class _Source(Protocol):
    CHUNK = b"s" * 65536

    def __init__(self, server):
        self.server = server
        self.paused = False

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self):
        self.paused = False
        server = self.server
        while not self.paused and server.sent < server.total and self.transport.connected:
            chunk = self.CHUNK[:server.total - server.sent]
            server.sent += len(chunk)
            server.last_progress = server.reactor.seconds()
            self.transport.write(chunk)
        if server.sent >= server.total and not self.paused:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.paused = True


class SourceServer:
    """
    A server on 127.0.0.1 that writes C{total} bytes to each connection as
    fast as its transport takes them (a push producer), then closes.

    @ivar sent: bytes handed to the transport so far (over all connections).
    @ivar last_progress: the reactor time of the last write.
    """

    def __init__(self, reactor, total):
        self.reactor = reactor
        self.total = total
        self.sent = 0
        self.last_progress = None
        self.port = None

    def start(self):
        """
        Listen on a free port; returns the port number.
        """
        factory = Factory.forProtocol(lambda: _Source(self))
        factory.noisy = False
        self.port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        return self.port.getHost().port

    def stop(self):
        """
        Stop listening.
        """
        port, self.port = self.port, None
        return port.stopListening() if port is not None else succeed(None)
