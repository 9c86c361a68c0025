"""
Tests of trace context in a worker's gateway, in memory, on both server
channels: the traceparent the upstream and a mirror copy are sent, the
request's trace context, and the log phase handing sampled requests to the
span recorder.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response, with_server

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"
CLIENT = b"Traceparent: 00-" + TRACE + b"-" + PARENT + b"-01\r\n"
_SENT = re.compile(rb"\r\nTraceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])\r\n", re.I)

CONFIG = """
[gateway]
trace_sample_rate = 1.0
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[upstream:shadow]
servers = 10.0.0.2:80
[route:api]
path = /api/
upstream = app
filters = local
[route:copied]
path = /copied/
upstream = app
mirror = shadow
[route:hello]
path = /hello
respond = 200 hello
[filter:local]
type = ip_filter
allow = 127.0.0.1
"""


class RecordingSpans:
    """
    A span recorder keeping what it is given: C{(request, ended)} pairs.
    """

    def __init__(self, fail=False):
        self.recorded = []
        self.fail = fail

    def record(self, request, ended, new_span_id):
        if self.fail:
            raise RuntimeError("recorder broken")
        self.recorded.append((request, ended, new_span_id()))


class GatewayTraceTests(SynchronousTestCase):
    """
    The gateway makes each request's trace context once and every upstream
    call carries it.
    """

    http_server = "gatelayer"

    def gate(self, spans=None, config=CONFIG):
        """
        An in-memory gateway on this class's server channel.
        """
        gate = InMemoryGateway(with_server(config, self.http_server), with_upstreams=True, spans=spans)
        self.reactor = gate.reactor
        return gate

    def sent_traceparent(self, sent):
        """
        The one traceparent in the bytes an upstream was sent, read.
        """
        found = _SENT.findall(sent)
        self.assertEqual(len(found), 1, sent)
        return found[0]

    def test_continued_upstream(self):
        """
        The upstream gets the client's trace id with the gateway's span
        id, which is the request's trace context; tracestate goes on.
        """
        gate = self.gate()
        channel, client = gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + CLIENT + b"Tracestate: rojo=1\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        trace_id, span_id, flags = self.sent_traceparent(upstream.value())
        self.assertEqual((trace_id, flags), (TRACE, b"01"))
        self.assertNotEqual(span_id, PARENT)
        self.assertIn(b"\r\nTracestate: rojo=1\r\n", upstream.value())
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(parse_response(client.value())[0], 200)

    def test_new_trace_upstream(self):
        """
        Without a traceparent the upstream gets a new sampled one, and a
        client's lone tracestate is not sent.
        """
        gate = self.gate()
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: a\r\nTracestate: rojo=1\r\n\r\n")
        upstream, _ = accept_upstream(self.reactor)
        trace_id, _, flags = self.sent_traceparent(upstream.value())
        self.assertNotEqual(trace_id, TRACE)
        self.assertEqual(flags, b"01")
        self.assertNotIn(b"racestate", upstream.value())

    def test_unsampled_by_rate(self):
        """
        With trace_sample_rate 0, new traces go upstream unsampled, while
        a client's sampled flag is kept.
        """
        gate = self.gate(config=CONFIG.replace("trace_sample_rate = 1.0", "trace_sample_rate = 0"))
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n")
        upstream, _ = accept_upstream(self.reactor)
        self.assertEqual(self.sent_traceparent(upstream.value())[2], b"00")
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /api/y HTTP/1.1\r\nHost: a\r\n" + CLIENT + b"\r\n")
        upstream, _ = accept_upstream(self.reactor)
        self.assertEqual(self.sent_traceparent(upstream.value())[2], b"01")

    def test_mirror_copy_carries_the_trace(self):
        """
        A mirror copy is sent the same traceparent as the proxied request.
        """
        gate = self.gate()
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /copied/x HTTP/1.1\r\nHost: a\r\n" + CLIENT + b"\r\n")
        sent = [accept_upstream(self.reactor, index)[0].value() for index in range(len(self.reactor.tcpClients))]
        self.assertEqual(len(sent), 2)
        first, second = (self.sent_traceparent(s) for s in sent)
        self.assertEqual(first, second)
        self.assertEqual(first[0], TRACE)

    def test_spans_recorded_once_finished(self):
        """
        A sampled request is handed to the span recorder when it is over,
        with its filter chain's times; an unsampled one is not.
        """
        spans = RecordingSpans()
        gate = self.gate(spans)
        channel, _ = gate.connect()
        self.reactor.advance(5)
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + CLIENT + b"\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        self.assertEqual(spans.recorded, [])
        self.reactor.advance(2)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        (request, ended, child_id), = spans.recorded
        trace = request.routing.trace
        self.assertEqual((trace.trace_id, trace.parent_id), (TRACE, PARENT))
        self.assertEqual(self.sent_traceparent(upstream.value())[1], trace.span_id)
        self.assertEqual((trace.filters_started, trace.filters_ended), (5.0, 5.0))
        self.assertEqual(ended, 7.0)
        self.assertEqual((request.routing.started, request.routing.upstream_started), (5.0, 5.0))
        self.assertRegex(child_id, rb"\A[0-9a-f]{16}\Z")
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: a\r\nTraceparent: 00-" + TRACE + b"-" + PARENT
                             + b"-00\r\n\r\n")
        self.assertEqual(len(spans.recorded), 1)

    def test_no_recorder_no_filter_times(self):
        """
        Without span export the filter chain's times are not taken, and
        the request still has its trace context.
        """
        gate = self.gate()
        finished = []
        original = gate.gateway.request_finished
        gate.gateway.request_finished = lambda request: (finished.append(request), original(request))
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: a\r\n" + CLIENT + b"\r\n")
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        (request,) = finished
        trace = request.routing.trace
        self.assertEqual(trace.trace_id, TRACE)
        self.assertIsNone(trace.filters_started)
        self.assertIsNone(trace.filters_ended)

    def test_recorder_failure_is_not_the_clients(self):
        """
        A span recorder that raises is logged; the client gets its answer
        and the connection serves the next request.
        """
        gate = self.gate(RecordingSpans(fail=True))
        channel, client = gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(client.value().count(b"hello"), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class TwistedChannelGatewayTraceTests(GatewayTraceTests):
    """
    The same on twisted.web's server channel.
    """

    http_server = "twisted"
