"""
Request bodies of HTTP/2 streams streamed to the upstream as they arrive
(L{gatelayer.http2.upload}), in memory: an C{h2} client against a real
gateway's channel, the upstream as a memory connection. Covered: data
upstream before the stream ends, the client's window held while the
upstream's transport is paused, framing (length or chunked, trailers),
the body limit, resets and failures both ways, and the routes that still
keep the body whole first.
"""

from h2.errors import ErrorCodes
from hyperframe.frame import WindowUpdateFrame
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.config.listener_h2 import H2Settings
from gatelayer.http2.upload import BODY_BLIND_FILTERS, StreamedBody
from gatelayer.testing.config import config_problems
from gatelayer.testing.h2 import open_h2
from gatelayer.testing.server import InMemoryGateway, accept_upstream

CONFIG = """
[gateway]
max_body_size = 200KB
body_timeout = 30s
[listener:web]
bind = 127.0.0.1:8443
[upstream:app]
servers = 10.0.0.1:80
connect_timeout = 1s
read_timeout = 60s
[filter:gz]
type = compress
encodings = gzip
decompress_requests = yes
[route:inflated]
path = /inflated/
upstream = app
filters = gz
[route:api]
path = /api/
upstream = app
[route:small]
path = /small/
upstream = app
max_body_size = 1000
"""


def window_updates(client, sid):
    """
    The WINDOW_UPDATE frames the client received for stream C{sid}.
    """
    return client.stream_frames(sid, WindowUpdateFrame)


class StreamedUploadTests(SynchronousTestCase):
    """
    A proxied route's body goes upstream as it arrives.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor
        self.client = open_h2(self.gate)

    def post(self, path=b"/api/up", headers=(), body=b""):
        """
        Open a POST stream on C{path} sending C{body} without ending it;
        returns the stream id.
        """
        return self.client.request(path, method=b"POST", headers=headers, body=body or None,
                                   end=False)

    def send(self, sid, data, end=False):
        """
        Send C{data} on stream C{sid} (in frames the client may send).
        """
        for start in range(0, len(data), 16000):
            self.client.conn.send_data(sid, data[start:start + 16000])
        if end:
            self.client.conn.end_stream(sid)
        self.client.send()
        self.client.receive()

    def test_first_data_before_end(self):
        """
        With C{content-length}, the head goes upstream with that length and
        the first DATA follows before the client ended the stream; the
        rest and the upstream's response complete the exchange.
        """
        sid = self.post(headers=[(b"content-length", b"10")], body=b"abcd")
        upstream, protocol = accept_upstream(self.reactor)
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 10\r\n", head + b"\r\n")
        self.assertNotIn(b"chunked", head)
        self.assertEqual(body, b"abcd")
        self.assertFalse(self.client.answer(sid).ended)
        self.send(sid, b"efghij", end=True)
        self.assertTrue(upstream.value().endswith(b"\r\n\r\nabcdefghij"))
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.body, answer.ended), (201, b"ok", True))
        self.assertEqual(self.gate.gateway.active, 0)

    def test_chunked_without_length(self):
        """
        Without C{content-length} the body goes chunked, one chunk per DATA
        frame, DATA received before the upstream connection was up
        included.
        """
        sid = self.post(body=b"early")
        self.send(sid, b"second")
        upstream, _ = accept_upstream(self.reactor)
        self.send(sid, b"last", end=True)
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(body, b"5\r\nearly\r\n6\r\nsecond\r\n4\r\nlast\r\n0\r\n\r\n")

    def test_paused_upstream_holds_window(self):
        """
        While the upstream transport has paused its producer, received DATA
        is neither written upstream nor acknowledged (no WINDOW_UPDATE for
        the stream); on resume it is written and the window reopens.
        """
        sid = self.post(body=b"a")
        upstream, _ = accept_upstream(self.reactor)
        sent = len(upstream.value())
        upstream.producer.pauseProducing()
        self.send(sid, b"x" * 48000)
        self.assertEqual(len(upstream.value()), sent)
        self.assertEqual(window_updates(self.client, sid), [])
        self.assertEqual(self.client.conn.local_flow_control_window(sid), 65535 - 48001)
        upstream.producer.resumeProducing()
        self.client.receive()
        self.assertEqual(upstream.value().partition(b"\r\n\r\n")[2].count(b"x"), 48000)
        self.assertNotEqual(window_updates(self.client, sid), [])
        self.assertEqual(self.client.conn.local_flow_control_window(sid), 65535)

    def test_stalled_stream_spares_neighbours(self):
        """
        The connection's window holds a stream window per stream: a stream
        whose upstream is paused, its window used up, does not stop
        another stream's body.
        """
        first = self.post(body=b"a")
        upstream, _ = accept_upstream(self.reactor, 0)
        upstream.producer.pauseProducing()
        self.send(first, b"x" * 65534)
        self.assertEqual(self.client.conn.local_flow_control_window(first), 0)
        second = self.post(body=b"b")
        other, _ = accept_upstream(self.reactor, 1)
        self.send(second, b"y" * 40000, end=True)
        self.assertEqual(other.value().partition(b"\r\n\r\n")[2].count(b"y"), 40000)

    def test_reset_gives_window_back(self):
        """
        Bytes a reset stream held unacknowledged (its upstream connection
        not up yet) are given back to the connection's window: with two
        streams allowed (a 131070-byte connection window), 60000 held bytes
        and 10000 more on a second stream bring a connection WINDOW_UPDATE
        opening it whole again.
        """
        client = open_h2(self.gate, H2Settings(max_concurrent_streams=2))
        window = client.conn.outbound_flow_control_window
        self.assertEqual(window, 2 * 65535)
        first = client.request(b"/api/up", method=b"POST", body=b"x" * 10000, end=False)
        for _ in range(5):
            client.conn.send_data(first, b"x" * 10000)
        client.conn.reset_stream(first, ErrorCodes.CANCEL)
        client.send()
        second = client.request(b"/api/up", method=b"POST", body=b"y" * 10000, end=False)
        accept_upstream(self.reactor)
        client.receive()
        self.assertEqual(client.conn.outbound_flow_control_window, window)
        self.assertEqual(client.answer(second).reset, None)

    def test_trailers(self):
        """
        Trailer fields the client declared in C{trailer} go upstream after
        the last chunk, named in a C{Trailer} header; undeclared ones, and
        names that may never be trailers, are dropped.
        """
        sid = self.post(headers=[(b"trailer", b"x-check, Content-Length"), (b"content-length", b"3")],
                        body=b"abc")
        upstream, _ = accept_upstream(self.reactor)
        self.client.conn.send_headers(sid, [(b"x-check", b"ok"), (b"x-other", b"no")],
                                      end_stream=True)
        self.client.send()
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nTrailer: x-check\r\n", head + b"\r\n")
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(body, b"3\r\nabc\r\n0\r\nx-check: ok\r\n\r\n")

    def test_length_exceeded(self):
        """
        DATA beyond the client's C{content-length} is malformed: the
        connection ends with GOAWAY PROTOCOL_ERROR and the upstream request
        is abandoned.
        """
        sid = self.post(headers=[(b"content-length", b"4")], body=b"abcd")
        upstream, _ = accept_upstream(self.reactor)
        self.send(sid, b"e")
        self.assertEqual(self.client.goaway.error_code, ErrorCodes.PROTOCOL_ERROR)
        self.assertTrue(self.client.transport.disconnecting)
        self.client.channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_length_short(self):
        """
        A stream ending before its C{content-length} is malformed the same
        way: GOAWAY PROTOCOL_ERROR, upstream request abandoned.
        """
        sid = self.post(headers=[(b"content-length", b"10")], body=b"abcd")
        upstream, _ = accept_upstream(self.reactor)
        self.send(sid, b"", end=True)
        self.assertEqual(self.client.goaway.error_code, ErrorCodes.PROTOCOL_ERROR)
        self.client.channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(upstream.value().partition(b"\r\n\r\n")[2], b"abcd")

    def test_limit_after_start(self):
        """
        A body passing the route's C{max_body_size} after part of it went
        upstream resets the stream (CANCEL) and abandons the upstream
        request (its connection closed).
        """
        sid = self.post(b"/small/up", body=b"x" * 600)
        upstream, _ = accept_upstream(self.reactor)
        self.assertIn(b"x" * 600, upstream.value())
        self.send(sid, b"x" * 600)
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.reset), (None, ErrorCodes.CANCEL))
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_limit_before_start(self):
        """
        A body passing the limit before anything went upstream is answered
        413; the upstream connection, once up, carries nothing of it.
        """
        sid = self.post(b"/small/up", body=b"x" * 600)
        self.send(sid, b"x" * 600)
        self.assertEqual(self.client.answer(sid).status, 413)
        upstream, _ = accept_upstream(self.reactor)
        self.assertEqual(upstream.value(), b"")

    def test_client_reset(self):
        """
        A client resetting its stream mid-upload abandons the upstream
        request; the gateway counts the request as over.
        """
        sid = self.post(body=b"abc")
        upstream, _ = accept_upstream(self.reactor)
        self.client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        self.client.send()
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_upstream_fails_mid_upload(self):
        """
        The upstream connection lost mid-upload, before any response head:
        the stream is answered 502 (a streamed body is never resent) and
        the rest of its body refused with RST_STREAM NO_ERROR.
        """
        sid = self.post(body=b"abc")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.reset), (502, ErrorCodes.NO_ERROR))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_early_response(self):
        """
        The upstream answering before the body ended: the response is
        relayed, the rest of the body refused with RST_STREAM NO_ERROR, and
        the upstream connection (out of step) closed.
        """
        sid = self.post(body=b"abc")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        self.client.receive()
        answer = self.client.answer(sid)
        self.assertEqual((answer.status, answer.body, answer.reset), (403, b"no", ErrorCodes.NO_ERROR))
        self.assertTrue(upstream.disconnecting)

    def test_body_timeout(self):
        """
        A streamed body pausing past C{body_timeout} resets its stream and
        abandons the upstream request.
        """
        sid = self.post(body=b"abc")
        upstream, _ = accept_upstream(self.reactor)
        self.reactor.advance(31)
        self.client.receive()
        self.assertEqual(self.client.answer(sid).reset, ErrorCodes.CANCEL)
        self.assertTrue(upstream.disconnecting)

    def test_body_reading_filter_buffers(self):
        """
        A route with a filter that reads the request body keeps it whole
        first: nothing goes upstream before the stream ends, then the body
        with its length.
        """
        sid = self.post(b"/inflated/up", body=b"abc")
        self.assertEqual(self.reactor.tcpClients, [])
        self.send(sid, b"def", end=True)
        upstream, _ = accept_upstream(self.reactor)
        head, _, body = upstream.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 6", head)
        self.assertEqual(body, b"abcdef")

    def test_request_buffering(self):
        """
        A route saying C{request_buffering = yes} keeps the body whole
        first though it could stream it.
        """
        gate = InMemoryGateway(CONFIG.replace("path = /api/\n", "path = /api/\nrequest_buffering = yes\n"),
                               with_upstreams=True)
        client = open_h2(gate)
        sid = client.request(b"/api/up", method=b"POST", body=b"abc", end=False)
        self.assertEqual(gate.reactor.tcpClients, [])
        client.conn.send_data(sid, b"def", end_stream=True)
        client.send()
        upstream, _ = accept_upstream(gate.reactor)
        self.assertTrue(upstream.value().endswith(b"\r\nContent-Length: 6\r\n\r\nabcdef"))

    def test_body_blind_filter_streams(self):
        """
        A route whose filters never read the body (an C{ip_filter}) still
        streams it.
        """
        text = CONFIG.replace("[route:api]\n", "[filter:lan]\ntype = ip_filter\nallow = 127.0.0.0/8\n"
                                                "[route:api]\nfilters = lan\n")
        gate = InMemoryGateway(text, with_upstreams=True)
        client = open_h2(gate)
        client.request(b"/api/up", method=b"POST", body=b"abc", end=False)
        upstream, _ = accept_upstream(gate.reactor)
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n3\r\nabc\r\n"))

    def test_connect_failure_before_start(self):
        """
        A connect failure before anything of the request went upstream
        still tries another server, which gets the whole body (what arrived
        meanwhile waited, unacknowledged).
        """
        gate = InMemoryGateway(CONFIG.replace("servers = 10.0.0.1:80", "servers = 10.0.0.1:80, 10.0.0.2:80"),
                               with_upstreams=True)
        client = open_h2(gate)
        sid = client.request(b"/api/up", method=b"POST", body=b"abc", end=False)
        gate.reactor.tcpClients[0][2].clientConnectionFailed(
            gate.reactor.connectors[0], Failure(ConnectionRefusedError()))
        client.conn.send_data(sid, b"def", end_stream=True)
        client.send()
        self.assertEqual(len(gate.reactor.tcpClients), 2)
        upstream, _ = accept_upstream(gate.reactor, 1)
        self.assertTrue(upstream.value().endswith(b"\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"))

    def test_filter_answers(self):
        """
        A filter answering the stream itself (an C{ip_filter} refusing the
        client) while the body streams: the answer goes out, the rest of
        the body is refused with RST_STREAM NO_ERROR, nothing goes upstream.
        """
        text = CONFIG.replace("[route:api]\n", "[filter:lan]\ntype = ip_filter\ndeny = 127.0.0.0/8\n"
                                                "[route:api]\nfilters = lan\n")
        gate = InMemoryGateway(text, with_upstreams=True)
        client = open_h2(gate)
        sid = client.request(b"/api/up", method=b"POST", body=b"abc", end=False)
        answer = client.answer(sid)
        self.assertEqual((answer.status, answer.ended, answer.reset), (403, True, ErrorCodes.NO_ERROR))
        self.assertEqual(gate.reactor.tcpClients, [])
        self.assertEqual(gate.gateway.active, 0)

    def test_body_blind_filters(self):
        """
        Only built-in filter types that never look at the body are taken
        as blind; the body-reading ones are not.
        """
        for kind in ("validate", "transform", "waf", "compress", "cache"):
            self.assertNotIn(kind, BODY_BLIND_FILTERS)
        for kind in ("rate_limit", "jwt", "api_key", "cors", "ip_filter"):
            self.assertIn(kind, BODY_BLIND_FILTERS)


class StreamedBodyTests(SynchronousTestCase):
    """
    L{StreamedBody} against a fake connection.
    """

    def test_failed_acknowledges(self):
        """
        DATA arriving after the upload was given up is acknowledged (the
        client's window is not held for nothing) and never written.
        """
        acked = []
        body = StreamedBody(acked.append, None, frozenset())
        body.receive(b"ab", 2)
        body.fail()
        body.receive(b"cd", 3)
        self.assertEqual(acked, [2, 3])
        self.assertTrue(body.failed)

    def test_abort_callback_once(self):
        """
        Giving the upload up calls C{on_abort} once; a quiet failure (the
        connection's own) calls nothing.
        """
        calls = []
        body = StreamedBody(lambda flow: None, 3, frozenset())
        body.on_abort = lambda: calls.append(1)
        body.fail()
        body.fail()
        quiet = StreamedBody(lambda flow: None, 3, frozenset())
        quiet.on_abort = lambda: calls.append(2)
        quiet.fail_quietly()
        self.assertEqual(calls, [1])


class RequestBufferingConfigTests(SynchronousTestCase):
    """
    The route key C{request_buffering}.
    """

    BASE = ("[gateway]\n[listener:web]\nbind = 127.0.0.1:8443\n[upstream:app]\nservers = 10.0.0.1:80\n"
            "[route:r]\npath = /\n")

    def test_parsed(self):
        """
        C{yes} and C{no} are read; the default is C{no} (stream where
        possible).
        """
        for value, expected in (("yes", True), ("no", False)):
            config = parse_config_text(self.BASE + "upstream = app\nrequest_buffering = %s\n" % (value,),
                                       "/etc/gate/gate.ini")
            self.assertIs(config.routes[0].request_buffering, expected)
        config = parse_config_text(self.BASE + "upstream = app\n", "/etc/gate/gate.ini")
        self.assertIs(config.routes[0].request_buffering, False)

    def test_refused(self):
        """
        A value that is not a boolean, and the key on a route without
        C{upstream}, are errors naming the section, key and value.
        """
        cases = [
            ("upstream = app\nrequest_buffering = sometimes\n",
             "[route:r] request_buffering: 'sometimes' is not yes or no"),
            ("upstream = app\nrequest_buffering = 2\n", "[route:r] request_buffering: '2' is not yes or no"),
            ("respond = 200 ok\nrequest_buffering = yes\n",
             "[route:r] request_buffering: only applies to a route with upstream"),
        ]
        for body, expected in cases:
            with self.subTest(body=body):
                text = config_problems(self, self.BASE + body, "/etc/gate/gate.ini")
                self.assertIn(expected, text)
