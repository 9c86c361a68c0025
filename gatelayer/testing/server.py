"""
A worker's HTTP side in memory, for tests: a Gateway and a listener factory
fed through L{StringTransport}s on a L{MemoryReactorClock}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gatelayer.config import parse_config_text
from gatelayer.http.factory import GatewayHTTPFactory
from gatelayer.http.gateway import Gateway


class InMemoryGateway:
    """
    A gateway for C{config_text} whose connections are in memory.

    @ivar reactor: the L{MemoryReactorClock} everything runs on (advance it
        to fire timeouts).
    """

    def __init__(self, config_text, path="gate.ini", reactor=None, upstreams=None, master=None,
                 with_upstreams=False):
        """
        @param with_upstreams: build the config's upstream pools on the
            memory reactor (their connections show in C{reactor.tcpClients}).
        """
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.config = parse_config_text(config_text, path, cpu_count=1)
        if with_upstreams:
            from gatelayer.process.worker import build_upstreams
            upstreams = build_upstreams(self.config, self.reactor)
        self.gateway = Gateway(self.config, self.reactor, master=master, upstreams=upstreams)
        listener = self.config.listeners[0]
        self.factory = GatewayHTTPFactory(self.gateway, listener, self.reactor)

    def connect(self, peer="127.0.0.1"):
        """
        Open a connection; returns C{(channel, transport)}.
        """
        channel = self.factory.buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", peer, 40000), hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel.makeConnection(transport)
        return channel, transport

    def exchange(self, data, peer="127.0.0.1"):
        """
        Send C{data} on a new connection; returns what the gateway wrote.
        """
        channel, transport = self.connect(peer)
        channel.dataReceived(data)
        return transport.value()


def parse_response(data):
    """
    Split one HTTP response into C{(status, headers dict of lower-case
    names to lists, body)}; chunked bodies are decoded.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2:]
        body = decoded
    return status, headers, body
