"""
Tests for the proxy terminal (gatelayer.http.proxy) in memory: a gateway
whose upstream pool connects through a MemoryReactorClock, with upstream
connections completed by hand.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.server import InMemoryGateway, parse_response
from tests.test_http_server import with_server

CONFIG = """
[gateway]
max_body_size = 1MB
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80, 10.0.0.2:80
connect_timeout = 1s
read_timeout = 5s
[route:app]
path = /api/
upstream = app
strip_prefix = /api
[route:post]
path = /post/
upstream = app
"""


class ProxyTests(SynchronousTestCase):
    """
    Requests go upstream rewritten; responses and failures come back.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor

    def upstream(self, index=-1):
        """
        Complete the pool's latest connection attempt; returns the
        upstream-side transport and protocol.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport, protocol

    def test_request_rewritten_and_response_relayed(self):
        """
        The path prefix is stripped, forwarding headers set, hop-by-hop
        headers dropped both ways, and the response relayed.
        """
        channel, client = self.gate.connect(peer="192.0.2.7")
        channel.dataReceived(b"GET /api/users?x=1 HTTP/1.1\r\nHost: api.example\r\nConnection: keep-alive, X-Hop\r\n"
                             b"X-Hop: 1\r\nAccept: */*\r\n\r\n")
        upstream, protocol = self.upstream()
        sent = upstream.value()
        self.assertTrue(sent.startswith(b"GET /users?x=1 HTTP/1.1\r\n"), sent)
        self.assertIn(b"Host: api.example\r\n", sent)
        self.assertIn(b"X-Forwarded-For: 192.0.2.7\r\n", sent)
        self.assertIn(b"Forwarded: for=192.0.2.7;proto=http;host=\"api.example\"\r\n", sent)
        self.assertNotIn(b"X-Hop", sent)
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n"
                              b"X-App: yes\r\n\r\nok")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body, headers[b"x-app"]), (201, b"ok", [b"yes"]))
        self.assertNotIn(b"keep-alive", headers)
        self.assertFalse(client.disconnecting)

    def test_keep_alive_reuse(self):
        """
        A second request reuses the pooled upstream connection.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
        server = self.reactor.tcpClients[0][0]
        channel.dataReceived(b"GET /api/b HTTP/1.1\r\nHost: x\r\n\r\n")
        # Round robin sends the second request to the other server: a new connection.
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertNotEqual(self.reactor.tcpClients[1][0], server)
        other, other_protocol = self.upstream()
        other_protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
        channel.dataReceived(b"GET /api/c HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(self.reactor.tcpClients), 2, "third request reuses the first connection")
        self.assertIn(b"GET /c HTTP/1.1", upstream.value())

    def test_chunked_response_streams(self):
        """
        A chunked upstream body is relayed as it arrives.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertIn(b"hello", client.value())
        protocol.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        self.assertEqual(parse_response(client.value())[2], b"hello world")

    def test_connect_failure_retries_then_502(self):
        """
        A refused connection is retried once on the other server; when that
        fails too the client gets a JSON 502.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            factory = self.reactor.tcpClients[-1][2]
            factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(ConnectionRefusedError()))
            self.reactor.advance(0)
        self.assertEqual({c[0] for c in self.reactor.tcpClients}, {"10.0.0.1", "10.0.0.2"})
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(body)["status"], 502)

    def test_read_timeout_504(self):
        """
        No response head within read_timeout: 504 (after one retry of the
        idempotent GET on the other server).
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/slow HTTP/1.1\r\nHost: x\r\n\r\n")
        self.upstream()
        self.reactor.advance(5.1)
        self.upstream()
        self.reactor.advance(5.1)
        self.assertEqual(parse_response(client.value())[0], 504)

    def test_post_not_retried_after_sending(self):
        """
        A POST that timed out after being sent is not resent elsewhere.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"POST /post/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        upstream, _ = self.upstream()
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nabc"))
        self.reactor.advance(5.1)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(parse_response(client.value())[0], 504)

    def test_bad_response_502(self):
        """
        Conflicting framing from the upstream: 502, never relayed.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(parse_response(client.value())[0], 502)
        self.assertTrue(upstream.disconnecting)

    def test_client_gone_cancels_upstream(self):
        """
        A client that disconnects mid-response makes the gateway close the
        upstream connection (not reuse it).
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_failure_after_head_cuts_client(self):
        """
        The upstream dying mid-body cuts the client connection.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(client.disconnecting or client.disconnected)

    def test_back_pressure(self):
        """
        The client connection pausing pauses the upstream socket.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        channel.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")


class LeanProxyTests(ProxyTests):
    """
    The proxy terminal, with the lean server channel.
    """

    http_server = "gatelayer"
