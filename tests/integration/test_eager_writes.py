"""
Transports that send at once (L{gatelayer.transports}), on real loopback
sockets with the real reactor: bytes leave without the reactor when the
socket takes them, what it refuses is buffered behind them in order, a
producer is paused and resumed as with Twisted's own transports, and a
connection that is closing or broken is left to Twisted's write path.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from gatelayer.transports import EagerClient, EagerServer, adopt_stream_port, connect_tcp, supported
from gatelayer.testing.waiting import wait_until


class _Side(Protocol):
    def __init__(self):
        self.received = []
        self.size = 0
        self.made = Deferred()
        self.lost = Deferred()

    def connectionMade(self):
        self.made.callback(self)

    def dataReceived(self, data):
        self.received.append(data)
        self.size += len(data)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(None)


@implementer(IPushProducer)
class _Producer:
    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")

    def stopProducing(self):
        self.events.append("stop")


def _small_buffers(sender, receiver):
    """
    Kernel buffers of 64 KB between C{sender} and C{receiver}, so that a
    large write fills them.
    """
    sender.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    receiver.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)


class EagerWriteTests(TestCase):
    """
    One connection through L{adopt_stream_port} and L{connect_tcp}.
    """

    @inlineCallbacks
    def setUp(self):
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        listening.setblocking(False)
        self.servers = []

        def build():
            side = _Side()
            self.servers.append(side)
            return side

        port = adopt_stream_port(reactor, listening.fileno(), socket.AF_INET, Factory.forProtocol(build))
        listening.close()
        self.addCleanup(port.stopListening)
        self.client = _Side()
        factory = ClientFactory.forProtocol(lambda: self.client)
        self.connector = connect_tcp(reactor, "127.0.0.1", port.getHost().port, factory, timeout=5)
        yield self.client.made
        yield wait_until(reactor, lambda: self.servers and self.servers[0].transport is not None,
                         what="the accepted connection")
        self.server = self.servers[0]
        self.addCleanup(self._close)

    @inlineCallbacks
    def _close(self):
        for side in (self.client, self.server):
            if side.transport.connected:
                side.transport.abortConnection()
        yield self.client.lost
        yield self.server.lost

    def test_transport_types_and_nodelay(self):
        """
        Both ends are eager transports with C{TCP_NODELAY} set.
        """
        self.assertIsInstance(self.server.transport, EagerServer)
        self.assertIsInstance(self.client.transport, EagerClient)
        for side in (self.server, self.client):
            self.assertEqual(side.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    @inlineCallbacks
    def test_small_write_leaves_at_once(self):
        """
        A write the socket takes leaves nothing in the buffer and never
        makes the reactor watch the socket for writing.
        """
        transport = self.server.transport
        transport.write(b"hello")
        transport.writeSequence([b"a", b"", b"bc"])
        self.assertEqual((transport._tempDataLen, transport.dataBuffer), (0, b""))
        self.assertNotIn(transport, reactor.getWriters())
        yield wait_until(reactor, lambda: self.client.size == 8, what="the bytes")
        self.assertEqual(b"".join(self.client.received), b"helloabc")

    @inlineCallbacks
    def test_full_socket_buffers_in_order_with_back_pressure(self):
        """
        What a full socket refuses is buffered; later writes queue behind
        it; the producer is paused until the peer has read it all, and the
        bytes arrive whole and in order.
        """
        self.client.transport.pauseProducing()
        transport = self.server.transport
        _small_buffers(self.server, self.client)
        producer = _Producer()
        transport.registerProducer(producer, True)
        block = bytes(range(256)) * 4096
        pieces = [block, b"middle", block[::-1]]
        transport.write(pieces[0])
        transport.write(pieces[1])
        transport.writeSequence([pieces[2][:1000], pieces[2][1000:]])
        self.assertTrue(transport._tempDataLen or transport.offset < len(transport.dataBuffer),
                        "the socket took 2 MB at once")
        self.assertGreater(transport._tempDataLen, len(pieces[2]), "the last pieces queue behind the rest")
        self.assertIn(transport, reactor.getWriters())
        self.assertEqual(set(producer.events), {"pause"})
        self.client.transport.resumeProducing()
        total = sum(len(p) for p in pieces)
        yield wait_until(reactor, lambda: self.client.size == total, what="every byte")
        self.assertEqual(b"".join(self.client.received), b"".join(pieces))
        yield wait_until(reactor, lambda: producer.events[-1] == "resume", what="the resume")
        self.assertEqual(producer.events.count("resume"), 1)
        transport.unregisterProducer()

    @inlineCallbacks
    def test_partial_sequence(self):
        """
        A sequence the socket takes part of continues from the exact byte
        it stopped at, through the parts that follow.
        """
        self.client.transport.pauseProducing()
        _small_buffers(self.server, self.client)
        parts = [bytes([n]) * 300000 for n in range(1, 9)]
        self.server.transport.writeSequence(parts)
        self.client.transport.resumeProducing()
        total = sum(map(len, parts))
        yield wait_until(reactor, lambda: self.client.size == total, what="every byte")
        self.assertEqual(b"".join(self.client.received), b"".join(parts))

    @inlineCallbacks
    def test_lose_connection_after_write(self):
        """
        A write then C{loseConnection} delivers the bytes, then the close.
        """
        self.server.transport.write(b"last words")
        self.server.transport.loseConnection()
        self.server.transport.write(b"ignored?")
        yield self.client.lost
        self.assertTrue(b"".join(self.client.received).startswith(b"last words"))

    @inlineCallbacks
    def test_write_after_peer_reset(self):
        """
        Writing to a connection the peer reset raises nothing; the loss is
        reported through C{connectionLost}.
        """
        self.client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.client.transport.abortConnection()
        yield self.client.lost
        for _ in range(5):
            self.server.transport.write(b"x" * 1000)
            self.server.transport.writeSequence([b"y" * 1000, b"z"])
        yield self.server.lost

    def test_not_bytes(self):
        """
        Writing text raises L{TypeError}, as Twisted's transports do.
        """
        self.assertRaises(TypeError, self.server.transport.write, "text")
        self.assertRaises(TypeError, self.server.transport.writeSequence, ["text"])


class FallbackTests(SynchronousTestCase):
    """
    Reactors without Twisted's POSIX TCP get their own methods.
    """

    def test_memory_reactor(self):
        """
        A memory reactor's adoptStreamPort and connectTCP are called with
        the same arguments; the real reactor is supported.
        """
        memory = MemoryReactor()
        self.assertFalse(supported(memory))
        self.assertTrue(supported(reactor))
        factory = Factory()
        adopt_stream_port(memory, 7, socket.AF_INET, factory)
        self.assertEqual(memory.adoptedPorts[0][:2], (7, socket.AF_INET))
        connect_tcp(memory, "127.0.0.1", 80, ClientFactory(), timeout=3)
        self.assertEqual(memory.tcpClients[0][:2], ("127.0.0.1", 80))
        self.assertEqual(memory.tcpClients[0][3], 3)
