"""
An in-memory harness for layer 4 relays (L{RelayHarness}): an
L{gatelayer.l4.listener.L4Listener} on a L{MemoryReactorClock}, client
connections on L{HalfCloseTransport}s, and the upstream connections the
relay asks the reactor for, completed or failed by the test.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError, TimeoutError as ConnectTimeout
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from gatelayer.config.model import ServerSpec, UpstreamSpec
from gatelayer.l4.listener import L4Listener, L4Settings
from gatelayer.testing.transports import HalfCloseTransport
from gatelayer.upstream.state import UpstreamState

__all__ = ["RelayHarness", "upstream_spec"]


def upstream_spec(name="db", servers=("10.0.1.1:5432", "10.0.1.2:5432"), **kw):
    """
    An L{UpstreamSpec} named C{name} with C{servers} (C{host:port}
    strings) and any other field in C{kw}.
    """
    parsed = tuple(ServerSpec(host=s.rpartition(":")[0], port=int(s.rpartition(":")[2])) for s in servers)
    return UpstreamSpec(name=name, servers=parsed, **kw)


class RelayHarness:
    """
    One listener and what it connects.

    @ivar reactor: the L{MemoryReactorClock} (C{tcpClients} are the upstream
        connection attempts).
    @ivar states: upstream name to L{UpstreamState}.
    """

    def __init__(self, upstreams=(), **settings):
        self.reactor = MemoryReactorClock()
        upstreams = upstreams or (upstream_spec(),)
        self.states = {spec.name: UpstreamState(spec, self.reactor) for spec in upstreams}
        settings.setdefault("name", "l4")
        if "sni" not in settings:
            settings.setdefault("upstream", upstreams[0].name)
        self.listener = L4Listener(self.reactor, L4Settings(**settings), self.states)
        self._attempts = 0

    def accept(self, peer=("10.0.0.9", 5555), host=("10.0.0.1", 7000)):
        """
        A new client connection: C{(relay, transport)}.
        """
        transport = HalfCloseTransport(peerAddress=IPv4Address("TCP", *peer),
                                       hostAddress=IPv4Address("TCP", *host))
        relay = self.listener.buildProtocol(transport.getPeer())
        relay.makeConnection(transport)
        return relay, transport

    @property
    def attempts(self):
        """
        C{(host, port, timeout)} of every upstream connection attempt so far.
        """
        return [(host, port, timeout) for host, port, _, timeout, _ in self.reactor.tcpClients]

    def _pending(self):
        client = self.reactor.tcpClients[self._attempts]
        self._attempts += 1
        return client

    def connect(self):
        """
        Complete the next connection attempt: C{(protocol, transport)} of
        the upstream side.
        """
        host, port, factory, _, _ = self._pending()
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = HalfCloseTransport(peerAddress=IPv4Address("TCP", host, port),
                                       hostAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    def fail(self, timeout=False):
        """
        Fail the next connection attempt (refused, or timed out).
        """
        _, _, factory, _, _ = self._pending()
        error = ConnectTimeout() if timeout else ConnectionRefusedError()
        factory.clientConnectionFailed(None, Failure(error))
