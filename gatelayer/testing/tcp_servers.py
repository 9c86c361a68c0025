"""
Plain TCP servers for layer 4 tests: L{EchoServer}, which sends back every
byte it receives (and, after the client's FIN, its own), keeping what each
connection sent, in this process; L{EchoProcess}, the same server in a
process of its own (L{gatelayer.testing.echo_process}) that a test can kill;
and L{start_echo_servers}.
"""

from twisted.internet.defer import gatherResults, inlineCallbacks, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from gatelayer.testing.upstreams import UpstreamProcess

__all__ = ["EchoProcess", "EchoServer", "start_echo_servers"]


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


class EchoServer:
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
        self.port = self.reactor.listenTCP(port, factory, interface="127.0.0.1")
        return self.port.getHost().port

    @property
    def address(self):
        """
        C{127.0.0.1:PORT}.
        """
        return f"127.0.0.1:{self.port.getHost().port}"

    def stop(self):
        """
        Stop listening and drop open connections (safe to call again).
        """
        for connection in self.connections:
            if connection.transport is not None and connection.transport.connected:
                connection.transport.abortConnection()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening()


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
