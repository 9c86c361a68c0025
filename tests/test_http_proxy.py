"""
Tests for the proxy terminal (gatelayer.http.proxy) in memory: a gateway
whose upstream pool connects through a MemoryReactorClock, with upstream
connections completed by hand.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.logger import capturedLogs
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http.headers import downstream_headers
from gatelayer.testing.server import InMemoryGateway, parse_response
from gatelayer.testing.server import with_server

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
[upstream:single]
servers = 10.0.0.9:80
connect_timeout = 1s
read_timeout = 5s
retries = 3
retry_on = connect_error, timeout, 503
[route:single]
path = /single/
upstream = single
[upstream:pair]
servers = 10.0.0.1:80, 10.0.0.2:80
connect_timeout = 1s
read_timeout = 5s
retries = 3
retry_on = connect_error, timeout, 503
[route:pair]
path = /pair/
upstream = pair
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
        # Aborted, not closed gracefully: a graceful close after a
        # Content-Length framed head would look like a complete response
        # to a client reading until close. (StringTransport sets
        # disconnected only in abortConnection.)
        self.assertTrue(client.disconnected)

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



UNAVAILABLE = (b"HTTP/1.1 503 Busy Right Now\r\nRetry-After: 7\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 14\r\n\r\ncome back at 7")


class OutcomeTests(SynchronousTestCase):
    """
    What the client gets when an attempt fails: a retry only where an
    untried server exists, else the real outcome of the last attempt.
    """

    http_server = "twisted"

    setUp = ProxyTests.setUp
    upstream = ProxyTests.upstream

    def send(self, path, method=b"GET", body=b""):
        """
        Send one request on a new client connection; returns the channel
        and the client-side transport.
        """
        channel, client = self.gate.connect()
        head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
        if body:
            head += b"Content-Length: %d\r\n" % (len(body),)
        channel.dataReceived(head + b"\r\n" + body)
        return channel, client

    def error(self, client):
        """
        The status and JSON error message of the gateway's own answer.
        """
        status, headers, body = parse_response(client.value())
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        return status, json.loads(body)["error"]

    def state(self, name):
        """
        The per-server counters of upstream C{name}, by address.
        """
        terminal = self.gate.gateway.upstreams[name]
        return {row["address"]: row for row in terminal.state.snapshot()}

    def test_single_server_read_timeout_504(self):
        """
        One server and C{retries = 3}: a read timeout is not retried (there
        is nowhere else to go) and the client gets 504 "did not answer in
        time", not 502 "no upstream server answered".
        """
        channel, client = self.send(b"/single/slow")
        self.upstream()
        self.reactor.advance(5.1)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.error(client), (504, "upstream server did not answer in time"))

    def test_retries_outnumber_servers_504(self):
        """
        Two servers and C{retries = 3}: both time out, the request is tried
        on each once and the client gets 504.
        """
        channel, client = self.send(b"/pair/slow")
        self.upstream()
        self.reactor.advance(5.1)
        self.upstream()
        self.reactor.advance(5.1)
        self.assertEqual({c[0] for c in self.reactor.tcpClients}, {"10.0.0.1", "10.0.0.2"})
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.error(client), (504, "upstream server did not answer in time"))

    def test_single_server_connect_timeout_504(self):
        """
        A connect timeout on the only server: 504, not a retry to nowhere.
        """
        channel, client = self.send(b"/single/x")
        self.reactor.advance(1.1)
        self.assertEqual(
            self.error(client), (504, "upstream server did not accept the connection in time"))

    def test_single_server_refused_502(self):
        """
        A refused connection on the only server: 502 "unreachable".
        """
        channel, client = self.send(b"/single/x")
        factory = self.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(ConnectionRefusedError()))
        self.reactor.advance(0)
        self.assertEqual(self.error(client), (502, "upstream server unreachable"))

    def test_unhealthy_other_server_not_retried(self):
        """
        The other server is unhealthy: the timeout's own 504 at once.
        """
        self.gate.gateway.upstreams["pair"].state.set_healthy("10.0.0.2:80", False)
        channel, client = self.send(b"/pair/slow")
        self.upstream()
        self.reactor.advance(5.1)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.error(client)[0], 504)

    def test_retry_on_status_single_server_relayed_whole(self):
        """
        A 503 with Retry-After from the only server, C{retry_on} listing
        503: relayed as it is (status, Retry-After, body), not replaced by a
        gateway-made 502, and counted as the server's failure.
        """
        channel, client = self.send(b"/single/x")
        upstream, protocol = self.upstream()
        protocol.dataReceived(UNAVAILABLE[:-5])
        protocol.dataReceived(UNAVAILABLE[-5:])
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, headers[b"retry-after"], headers[b"content-type"], body),
                         (503, [b"7"], [b"text/plain"], b"come back at 7"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.state("single")["10.0.0.9:80"]["failures"], 1)
        self.assertFalse(upstream.disconnecting, "the connection stays reusable")

    def test_retry_on_status_last_server_relayed_whole(self):
        """
        Two servers both answering 503 (C{retries = 3}): the first response
        is discarded for the retry, the second, with no untried server
        left, is relayed whole.
        """
        channel, client = self.send(b"/pair/x")
        first, protocol = self.upstream()
        protocol.dataReceived(UNAVAILABLE.replace(b"7", b"1"))
        self.assertEqual(client.value(), b"")
        second, protocol = self.upstream()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        protocol.dataReceived(UNAVAILABLE)
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, headers[b"retry-after"], body), (503, [b"7"], b"come back at 7"))

    def test_retry_on_status_then_success(self):
        """
        A 503 from one server, a 200 from the other: the client gets only
        the 200.
        """
        channel, client = self.send(b"/pair/x")
        _, protocol = self.upstream()
        protocol.dataReceived(UNAVAILABLE)
        _, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body), (200, b"ok"))
        self.assertNotIn(b"retry-after", headers)

    def test_discarded_response_breaking_off_still_retried(self):
        """
        A 503 that will be retried whose body breaks off: the retry goes
        ahead; nothing of it reaches the client.
        """
        channel, client = self.send(b"/pair/x")
        _, protocol = self.upstream()
        protocol.dataReceived(UNAVAILABLE[:-5])
        protocol.connectionLost(Failure(ConnectionDone()))
        _, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[::2], (200, b"ok"))

    def test_post_status_relayed_not_retried(self):
        """
        A POST's 503 is relayed whole: the request reached a server and
        its method is not idempotent, so it is never resent.
        """
        channel, client = self.send(b"/pair/x", method=b"POST", body=b"abc")
        _, protocol = self.upstream()
        protocol.dataReceived(UNAVAILABLE)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(parse_response(client.value())[2], b"come back at 7")

    def test_reason_phrase_is_ours(self):
        """
        The upstream's reason phrase is never relayed: the client gets the
        standard one for the status (C{Status} for an unregistered code).
        """
        for response, line in [
                (b"HTTP/1.1 200 Whatever You Like\r\nContent-Length: 0\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n"),
                (b"HTTP/1.1 404 \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
                 b"HTTP/1.1 404 Not Found\r\n"),
                (b"HTTP/1.1 299\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 299 Status\r\n")]:
            channel, client = self.send(b"/single/x")
            _, protocol = self.upstream()
            protocol.dataReceived(response)
            self.assertTrue(client.value().startswith(line), client.value())

    def test_invalid_header_502_logged_and_served_after(self):
        """
        An upstream header with a NUL in its value or a space in its name:
        502 "sent an invalid response" with a warning naming the upstream,
        the server and the fault; the upstream connection is dropped, the
        client connection is kept and its next request is served.
        """
        channel, client = self.gate.connect()
        for bad, fault in [(b"X-Evil: a\x00b", "invalid byte 0x00 in the value of header b'X-Evil'"),
                           (b"X Evil: 1", "invalid header name b'X Evil'")]:
            client.clear()
            with capturedLogs() as events:
                channel.dataReceived(b"GET /single/x HTTP/1.1\r\nHost: x\r\n\r\n")
                upstream, protocol = self.upstream()
                protocol.dataReceived(b"HTTP/1.1 200 OK\r\n" + bad + b"\r\nContent-Length: 0\r\n\r\n")
            self.assertEqual(self.error(client), (502, "upstream server sent an invalid response"))
            self.assertTrue(upstream.disconnecting)
            self.assertFalse(client.disconnecting)
            warnings = [e for e in events if e.get("upstream") == "single"]
            self.assertEqual(len(warnings), 1)
            self.assertEqual(warnings[0]["log_level"].name, "warn")
            self.assertEqual(warnings[0]["address"], "10.0.0.9:80")
            self.assertEqual(warnings[0]["detail"], fault)
            self.assertEqual(warnings[0]["what"], "sent an invalid response")
        client.clear()
        channel.dataReceived(b"GET /single/y HTTP/1.1\r\nHost: x\r\n\r\n")
        _, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[::2], (200, b"ok"))

    def test_repeated_content_length_relayed_once(self):
        """
        A Content-Length repeated (or listed twice) with the same value
        reaches the client once, as one number.
        """
        channel, client = self.send(b"/single/x")
        _, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, headers[b"content-length"], body), (200, [b"2"], b"ok"))


DEFAULTS_CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:plain]
servers = 10.0.0.5:80
[route:plain]
path = /
upstream = plain
"""


class DefaultTimeoutTests(SynchronousTestCase):
    """
    The upstream timeouts as they are when C{gate.ini} says nothing:
    connect_timeout 5s, read_timeout 60s.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(DEFAULTS_CONFIG, self.http_server),
                                    with_upstreams=True)
        self.reactor = self.gate.reactor

    upstream = ProxyTests.upstream

    def test_retransmitted_syn_is_not_an_error(self):
        """
        A connection that takes 3s (a dropped SYN is sent again after 1s,
        then 2s later) still carries the request: no 502, no 504.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(3)
        self.assertEqual(client.value(), b"")
        upstream, protocol = self.upstream()
        self.assertTrue(upstream.value().startswith(b"GET /x HTTP/1.1\r\n"))
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[::2], (200, b"ok"))

    def test_connect_timeout_5s(self):
        """
        No connection within 5s: 504.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(4.9)
        self.assertEqual(client.value(), b"")
        self.reactor.advance(0.2)
        self.assertEqual(parse_response(client.value())[0], 504)

    def test_read_timeout_60s(self):
        """
        A response head may take up to 60s; after that, 504.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.upstream()
        self.reactor.advance(59.9)
        self.assertEqual(client.value(), b"")
        self.reactor.advance(0.2)
        self.assertEqual(parse_response(client.value())[0], 504)


class LeanDefaultTimeoutTests(DefaultTimeoutTests):
    """
    The default timeouts with the lean server channel.
    """

    http_server = "gatelayer"


class DownstreamHeadersTests(SynchronousTestCase):
    """
    L{downstream_headers}: what of an upstream response's head is relayed.
    """

    def test_table(self):
        """
        Hop-by-hop headers and those Connection names go; Content-Length is
        relayed once, as a single number; the rest keep order and case.
        """
        cases = [
            ([(b"X-A", b"1"), (b"Content-Length", b"3")], [(b"X-A", b"1"), (b"Content-Length", b"3")]),
            ([(b"Content-Length", b"3, 3")], [(b"Content-Length", b"3")]),
            ([(b"content-length", b"3"), (b"Content-Length", b"3")], [(b"content-length", b"3")]),
            ([(b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"x"),
              (b"Trailer", b"X"), (b"Upgrade", b"h2c"), (b"Proxy-Connection", b"x"), (b"X", b"y")],
             [(b"X", b"y")]),
            ([(b"X-Hop", b"1"), (b"Connection", b"x-hop"), (b"connection", b"X-Other"),
              (b"X-Other", b"2"), (b"X-Keep", b"3")], [(b"X-Keep", b"3")]),
        ]
        for given, expected in cases:
            self.assertEqual(downstream_headers(given), expected, given)


class LeanOutcomeTests(OutcomeTests):
    """
    The same outcomes with the lean server channel.
    """

    http_server = "gatelayer"


class LeanProxyTests(ProxyTests):
    """
    The proxy terminal, with the lean server channel.
    """

    http_server = "gatelayer"
