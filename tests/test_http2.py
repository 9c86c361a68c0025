"""
The HTTP/2 channel in memory: an C{h2} client connection against an
L{gatelayer.http2.H2Channel} of a real gateway (direct and proxied routes,
the upstream over a memory reactor): requests, bodies, flow control both
ways, trailers, and errors that end a stream but not its neighbours.
"""

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.listener_h2 import H2Settings
from gatelayer.http2.stream import PAUSE_BACKLOG
from gatelayer.testing.h2 import open_h2, raw_headers_frames
from gatelayer.testing.server import InMemoryGateway, accept_upstream

CONFIG = """
[gateway]
max_body_size = 1000
[listener:web]
bind = 127.0.0.1:8443
[upstream:app]
servers = 10.0.0.1:80
connect_timeout = 1s
read_timeout = 5s
[route:api]
path = /api/
upstream = app
[route:hello]
path = /hello
respond = 200 hello
"""

FIELDS = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com")]


def upstream_request(transport):
    """
    The head and body the gateway sent upstream, split at the blank line.
    """
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return head, body


class H2RequestTests(SynchronousTestCase):
    """
    Requests over HTTP/2 reach the same routes and terminals as HTTP/1.1.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor
        self.client = open_h2(self.gate)

    def test_direct_get(self):
        """
        A GET of a direct route is answered on its stream: status, body, a
        Date and the request id, with END_STREAM.
        """
        sid = self.client.request(b"/hello")
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.body, answer.ended), (200, b"hello", True))
        self.assertEqual(len(answer.header(b"date")), 1)
        self.assertEqual(len(answer.header(b"x-request-id")), 1)

    def test_no_route(self):
        """
        A path no route matches is the gateway's 404, and the connection
        goes on serving.
        """
        missing = self.client.request(b"/nowhere")
        found = self.client.request(b"/hello")
        self.assertEqual(self.client.answer(missing).status, 404)
        self.assertEqual(self.client.answer(found).status, 200)

    def test_proxied_get(self):
        """
        A proxied stream goes upstream as HTTP/1.1 with Host from
        C{:authority}; the response's connection-specific fields are not
        sent on HTTP/2.
        """
        sid = self.client.request(b"/api/a?x=1", headers=[(b"accept", b"text/plain")])
        upstream, protocol = accept_upstream(self.reactor)
        head, _ = upstream_request(upstream)
        self.assertTrue(head.startswith(b"GET /api/a?x=1 HTTP/1.1\r\n"), head)
        self.assertIn(b"\r\nHost: example.com", head)
        self.assertIn(b"\r\nAccept: text/plain", head)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n"
                              b"Connection: keep-alive\r\nX-App: yes\r\n\r\nok")
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.body, answer.ended), (200, b"ok", True))
        self.assertEqual(answer.header(b"x-app"), [b"yes"])
        self.assertEqual(answer.header(b"keep-alive") + answer.header(b"connection"), [])

    def test_clientproto(self):
        """
        The request the gateway sees says C{HTTP/2}, which the access log
        shows.
        """
        seen = []
        finished = self.gate.gateway.request_finished
        self.gate.gateway.request_finished = lambda request: (seen.append(request.clientproto),
                                                               finished(request))
        self.client.request(b"/hello")
        self.assertEqual(seen, [b"HTTP/2"])

    def test_request_body(self):
        """
        A body sent in several DATA frames without C{content-length} goes
        upstream chunked, a chunk per DATA frame.
        """
        sid = self.client.request(b"/api/up", method=b"POST", body=b"abc", end=False)
        self.client.conn.send_data(sid, b"def", end_stream=True)
        self.client.send()
        upstream, protocol = accept_upstream(self.reactor)
        head, body = upstream_request(upstream)
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(body, b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")

    def test_request_body_too_large(self):
        """
        A body over the route's limit gets 413 on its stream, and the
        rest of its body is refused with RST_STREAM NO_ERROR.
        """
        sid = self.client.request(b"/api/up", method=b"POST", body=b"x" * 600, end=False)
        self.client.conn.send_data(sid, b"x" * 600, end_stream=False)
        self.client.send()
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual(answer.status, 413)
        self.assertEqual(answer.reset, ErrorCodes.NO_ERROR)
        # The upstream request was abandoned before its connection was up:
        # nothing is sent on it.
        upstream, _ = accept_upstream(self.reactor)
        self.assertEqual(upstream.value(), b"")

    def test_declared_length_too_large(self):
        """
        A C{content-length} over the limit is refused before any body.
        """
        sid = self.client.request(b"/api/up", method=b"POST", end=False,
                                  headers=[(b"content-length", b"5000")])
        self.assertEqual(self.client.answer(sid).status, 413)

    def test_response_trailers(self):
        """
        A client saying C{te: trailers} gets the upstream's trailer fields
        after the body, on a HEADERS frame ending the stream.
        """
        sid = self.client.request(b"/api/t", headers=[(b"te", b"trailers")])
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
                              b"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n")
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual((answer.body, answer.trailers, answer.ended), (b"abc", [(b"x-sum", b"42")], True))

    def test_request_trailers(self):
        """
        Trailer fields a client sends after its body, declared in
        C{trailer}, go upstream after a chunked body.
        """
        sid = self.client.request(b"/api/t", method=b"POST", body=b"abc", end=False,
                                  headers=[(b"trailer", b"x-check")])
        self.client.conn.send_headers(sid, [(b"x-check", b"ok")], end_stream=True)
        self.client.send()
        upstream, _ = accept_upstream(self.reactor)
        self.assertIn(b"\r\n0\r\nx-check: ok\r\n\r\n", upstream.value())

    def test_stream_error_spares_neighbours(self):
        """
        An upstream failure on one stream is answered (502) on that stream
        while another stream of the connection is served.
        """
        first = self.client.request(b"/api/a")
        second = self.client.request(b"/api/b")
        (_, one), (_, two) = accept_upstream(self.reactor, 0), accept_upstream(self.reactor, 1)
        one.dataReceived(b"HTTP/1.1 999 Bad\r\n\r\n")
        two.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
        self.client.receive()
        self.assertEqual(self.client.answer(first).status, 502)
        self.assertEqual((self.client.answer(second).status, self.client.answer(second).body), (200, b"b"))

    def test_client_reset_stops_upstream(self):
        """
        A client resetting its stream mid-response stops the upstream side
        (the connection to it is closed), and the gateway counts the
        request as over.
        """
        sid = self.client.request(b"/api/big")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        self.client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.client.send()
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)


class H2FlowControlTests(SynchronousTestCase):
    """
    Back-pressure both ways: the client's windows pace the response and
    pause the upstream; the transport's pause does the same.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor

    def test_window_pauses_upstream(self):
        """
        With a 1000-byte stream window, only 1000 bytes go out; once the
        backlog passes the pause mark the upstream is paused, and the
        client's WINDOW_UPDATEs bring the rest and resume it.
        """
        client = open_h2(self.gate, window=1000)
        sid = client.request(b"/api/big")
        upstream, protocol = accept_upstream(self.reactor)
        size = PAUSE_BACKLOG * 2
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (size,))
        protocol.dataReceived(b"x" * (PAUSE_BACKLOG + 5000))
        client.receive(acknowledge=False)
        self.assertEqual(len(client.answer(sid).body), 1000)
        self.assertEqual(upstream.producerState, "paused")
        for _ in range(10):
            client.conn.acknowledge_received_data(1000, sid)
            client.send()
            client.receive(acknowledge=False)
        self.assertEqual(len(client.answer(sid).body), 11000)
        self.assertEqual(upstream.producerState, "producing")
        protocol.dataReceived(b"x" * (size - PAUSE_BACKLOG - 5000))
        while not client.answer(sid).ended:
            client.conn.acknowledge_received_data(1000, sid)
            client.send()
            client.receive(acknowledge=False)
        self.assertEqual(len(client.answer(sid).body), size)

    def test_transport_pause(self):
        """
        The transport pausing the channel pauses the response's producer;
        resuming resumes it.
        """
        client = open_h2(self.gate)
        client.request(b"/api/big")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        client.channel.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        client.channel.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")

    def test_request_data_acknowledged(self):
        """
        Request body bytes are acknowledged as they are kept: after 60000
        bytes the client's connection window is open again (C{h2} sends a
        WINDOW_UPDATE once half the window is used), where it would be down
        to 5535 without.
        """
        gate = InMemoryGateway(CONFIG.replace("max_body_size = 1000", "max_body_size = 100KB"),
                               with_upstreams=True)
        client = open_h2(gate)
        before = client.conn.outbound_flow_control_window
        sid = client.request(b"/api/up", method=b"POST", end=False)
        for _ in range(6):
            client.conn.send_data(sid, b"z" * 10000)
            client.send()
            client.receive()
        self.assertGreaterEqual(client.conn.outbound_flow_control_window, before // 2)


class H2LimitTests(SynchronousTestCase):
    """
    The listener's stream and header limits.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor

    def test_settings_advertised(self):
        """
        The server's SETTINGS carry the listener's limits and no push.
        """
        client = open_h2(self.gate, H2Settings(max_concurrent_streams=7, max_header_list_size=4096))
        remote = client.conn.remote_settings
        self.assertEqual(remote[SettingCodes.MAX_CONCURRENT_STREAMS], 7)
        self.assertEqual(remote[SettingCodes.MAX_HEADER_LIST_SIZE], 4096)
        self.assertEqual(remote[SettingCodes.ENABLE_PUSH], 0)

    def test_max_concurrent_streams(self):
        """
        A stream over C{max_concurrent_streams} is refused with
        REFUSED_STREAM; the open ones are served and the connection stays.
        """
        client = open_h2(self.gate, H2Settings(max_concurrent_streams=2))
        # The h2 client obeys the advertised limit: the third is sent raw.
        first, second = client.request(b"/api/1"), client.request(b"/api/2")
        third = 5
        client.send(data=raw_headers_frames(client, third, FIELDS + [(b":path", b"/api/3")]))
        client.receive()
        self.assertEqual(client.resets(), {third: ErrorCodes.REFUSED_STREAM})
        self.assertEqual(len(self.reactor.tcpClients), 2)
        _, protocol = accept_upstream(self.reactor, 0)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        client.receive()
        self.assertEqual(client.answer(first).status, 200)
        client.conn.highest_outbound_stream_id = third
        fourth = client.request(b"/hello")
        self.assertEqual(client.answer(fourth).status, 200)
        self.assertIsNone(client.goaway)
        self.assertIsNone(client.answer(second).reset)

    def test_header_list_too_large(self):
        """
        A header list over C{h2_max_header_list_size} ends the connection
        with GOAWAY ENHANCE_YOUR_CALM (HPACK state cannot be kept in step
        without decoding it).
        """
        client = open_h2(self.gate, H2Settings(max_header_list_size=1024))
        client.conn.remote_settings[SettingCodes.MAX_HEADER_LIST_SIZE] = 1 << 20
        client.request(b"/hello", headers=[(b"x-big", b"v" * 2000)])
        self.assertEqual(client.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)
