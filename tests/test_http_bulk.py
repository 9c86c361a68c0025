"""
Tests for L{gatelayer.http.bulk}: how much of a response a client connection
takes at once.
"""

import socket

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http.bulk import SEND_LIMIT, WRITE_BUFFER, tune_client_writes
from gatelayer.testing.server import InMemoryGateway

CONFIG = """
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /
respond = 200 hello
"""


class _Accepted(tcp.Connection):
    """
    A TCP transport over a socket pair, with the addresses an accepted
    connection has.
    """

    def getPeer(self):
        """
        The client's address.
        """
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self):
        """
        The listener's address.
        """
        return IPv4Address("TCP", "127.0.0.1", 8080)


class TuneClientWritesTests(SynchronousTestCase):
    """
    L{tune_client_writes} on the transports a client connection can have.
    """

    def tcp_transport(self):
        """
        A real TCP transport over one end of a socket pair.
        """
        client, server = socket.socketpair()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return _Accepted(client, None, MemoryReactorClock())

    def test_socket_transport(self):
        """
        A socket transport lets 256 KB wait before pausing its producer and
        sends up to 512 KB per call (Twisted: 64 and 128 KB).
        """
        transport = self.tcp_transport()
        tune_client_writes(transport)
        self.assertEqual((transport.bufferSize, transport.SEND_LIMIT), (WRITE_BUFFER, SEND_LIMIT))
        self.assertEqual((WRITE_BUFFER, SEND_LIMIT), (256 * 1024, 512 * 1024))
        self.assertEqual(tcp.Connection.SEND_LIMIT, 128 * 1024)

    def test_other_transports(self):
        """
        A transport that is not one of Twisted's socket transports (in
        memory, or TLS over one) is left as it is.
        """
        transport = StringTransport()
        tune_client_writes(transport)
        self.assertFalse(hasattr(transport, "SEND_LIMIT"))
        self.assertFalse(hasattr(transport, "bufferSize"))

    def test_lean_channel(self):
        """
        The lean channel tunes its connection's transport when it starts.
        """
        gate = InMemoryGateway(CONFIG)
        channel = gate.factory.buildProtocol(None)
        transport = self.tcp_transport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        self.assertEqual((transport.bufferSize, transport.SEND_LIMIT), (WRITE_BUFFER, SEND_LIMIT))
