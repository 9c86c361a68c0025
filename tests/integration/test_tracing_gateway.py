"""
Integration tests of trace context and span export through a real gatelayer
master and worker: what an upstream process receives as traceparent and
tracestate, the spans an OTLP/HTTP receiver in the test gets, and requests
that go on unharmed while no collector listens.
"""

import json
import re

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.otlp import OtlpReceiver
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port, wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])\Z")


def gate_config(upstream, extra=""):
    """
    A one-worker gate.ini: route C{/api/} to C{upstream} through an IP
    filter letting loopback in, plus C{extra} sections.
    """
    return f"""
[gateway]
workers = 1
admin = 127.0.0.1:0
drain_timeout = 2s

[listener:web]
bind = 127.0.0.1:0

[upstream:app]
servers = {upstream.address}

[route:api]
path = /api/
upstream = app
filters = local

[filter:local]
type = ip_filter
allow = 127.0.0.1
{extra}
"""


class TracingGatewayTests(TestCase):
    """
    Trace context and span export through real gateway and upstream
    processes.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, extra=""):
        """
        Start an upstream and a gateway in front of it.
        """
        (self.upstream,) = yield start_upstreams(self, reactor, "a")
        self.gate = yield start_gateway(self, reactor, gate_config(self.upstream, extra))

    @inlineCallbacks
    def upstream_headers(self, headers=None, path="/api/x"):
        """
        Make a request; return the request headers the upstream received.
        """
        response = yield fetch(reactor, self.gate.url("web", path), headers=headers)
        self.assertEqual(response.status, 200, response.body)
        return json.loads(response.body)["headers"]

    def traceparent(self, headers):
        """
        The upstream's one traceparent, read: C{(trace_id, span_id, flag)}.
        """
        values = headers["traceparent"]
        self.assertEqual(len(values), 1, values)
        match = _TRACEPARENT.match(values[0])
        self.assertIsNotNone(match, values)
        return match.groups()

    @inlineCallbacks
    def test_client_trace_continues(self):
        """
        A client's traceparent reaches the upstream with the same trace id
        and sampled flag but the gateway's own span id; tracestate goes on
        unchanged. The response does not carry traceparent back.
        """
        yield self.start()
        sent = {b"traceparent": [f"00-{TRACE}-{PARENT}-01".encode("ascii")],
                b"tracestate": [b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]}
        headers = yield self.upstream_headers(sent)
        trace_id, span_id, flag = self.traceparent(headers)
        self.assertEqual((trace_id, flag), (TRACE, "1"))
        self.assertNotEqual(span_id, PARENT)
        self.assertEqual(headers["tracestate"], ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"])
        response = yield fetch(reactor, self.gate.url("web", "/api/x"), headers=sent)
        self.assertIsNone(response.header(b"traceparent"))
        # Not sampled by the client: not sampled upstream either.
        headers = yield self.upstream_headers({b"traceparent": [f"00-{TRACE}-{PARENT}-00".encode("ascii")]})
        self.assertEqual(self.traceparent(headers)[2], "0")

    @inlineCallbacks
    def test_new_trace(self):
        """
        Without a traceparent, or with an invalid one (upper case, all-zero
        trace id), the upstream gets a new valid trace, and the tracestate
        that came with the invalid one is dropped; two requests get two
        traces.
        """
        yield self.start()
        first = self.traceparent((yield self.upstream_headers()))
        second = self.traceparent((yield self.upstream_headers()))
        self.assertNotEqual(first[0], second[0])
        self.assertEqual(first[2], "1")
        for bad in [f"00-{TRACE.upper()}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", "garbage"]:
            headers = yield self.upstream_headers(
                {b"traceparent": [bad.encode("ascii")], b"tracestate": [b"rojo=1"]})
            trace_id, _, _ = self.traceparent(headers)
            self.assertNotIn(trace_id, (TRACE, TRACE.lower(), "0" * 32))
            self.assertNotIn("tracestate", headers)

    @inlineCallbacks
    def test_spans_exported(self):
        """
        With [tracing] pointing at an OTLP/HTTP receiver, a request's server
        span arrives with the client's trace id and parent span, the span
        id the upstream was sent, the request's attributes, and its filter
        and upstream child spans under it.
        """
        receiver = OtlpReceiver(reactor)
        receiver.start()
        self.addCleanup(receiver.stop)
        yield self.start(f"[tracing]\nendpoint = {receiver.url}\nservice_name = edge\nflush_interval = 100ms\n")
        headers = yield self.upstream_headers(
            {b"traceparent": [f"00-{TRACE}-{PARENT}-01".encode("ascii")]}, path="/api/users?id=1")
        _, sent_span, _ = self.traceparent(headers)
        spans = yield wait_until(reactor, lambda: len(receiver.trace(TRACE)) >= 3 and receiver.trace(TRACE),
                                 timeout=15, what="three spans of the trace at the receiver")
        by_name = {span.name: span for span in spans}
        server = by_name["GET /api/"]
        self.assertEqual(server.span_id, sent_span)
        self.assertEqual(server.parent_span_id, PARENT)
        self.assertEqual(server.service, "edge")
        self.assertEqual(server.attributes["http.request.method"], "GET")
        self.assertEqual(server.attributes["http.route"], "/api/")
        self.assertEqual(server.attributes["gatelayer.route"], "api")
        self.assertEqual(server.attributes["http.response.status_code"], 200)
        self.assertEqual(server.attributes["client.address"], "127.0.0.1")
        self.assertEqual(server.attributes["url.path"], "/api/users")
        self.assertEqual(server.attributes["gatelayer.upstream.server"], self.upstream.address)
        upstream = by_name["upstream " + self.upstream.address]
        filters = by_name["filters"]
        for child in (upstream, filters):
            self.assertEqual(child.parent_span_id, server.span_id)
            self.assertGreaterEqual(child.start, server.start)
            self.assertLessEqual(child.end, server.end)
        self.assertEqual(filters.attributes["gatelayer.filters"], ["local"])
        self.assertEqual(upstream.attributes["gatelayer.upstream.tries"], 1)
        self.assertEqual(upstream.events, ["first byte"])

    @inlineCallbacks
    def test_unsampled_not_exported(self):
        """
        A request the client marked unsampled is not exported, while a
        sampled one after it is.
        """
        receiver = OtlpReceiver(reactor)
        receiver.start()
        self.addCleanup(receiver.stop)
        yield self.start(f"[tracing]\nendpoint = {receiver.url}\nflush_interval = 100ms\n")
        other = "a" * 32
        yield self.upstream_headers({b"traceparent": [f"00-{other}-{PARENT}-00".encode("ascii")]})
        yield self.upstream_headers({b"traceparent": [f"00-{TRACE}-{PARENT}-01".encode("ascii")]})
        yield wait_until(reactor, lambda: receiver.trace(TRACE), timeout=15, what="the sampled trace")
        self.assertEqual(receiver.trace(other), [])

    @inlineCallbacks
    def test_collector_down(self):
        """
        With no collector listening, requests are answered as fast as ever,
        the failing export is logged (once, not per request), and the
        gateway still stops cleanly.
        """
        yield self.start(f"[tracing]\nendpoint = http://127.0.0.1:{free_port()}/v1/traces\n"
                         "timeout = 1s\nflush_interval = 100ms\n")
        for _ in range(20):
            started = reactor.seconds()
            yield self.upstream_headers()
            self.assertLess(reactor.seconds() - started, 2.0)
        yield wait_until(reactor, lambda: "span export to" in self.gate.log(), timeout=15,
                         what="the failing export logged")
        self.assertEqual(self.gate.log().count("span export to"), 1)
        code = yield self.gate.stop()
        self.assertEqual(code, 0)

    @inlineCallbacks
    def test_aggregate_parts_carry_the_trace(self):
        """
        Every part of an aggregate route is sent the gateway's traceparent:
        the client's trace id and the one span id of the gateway's hop.
        """
        yield self.start("[route:both]\npath = /both\nmethods = GET\n"
                         "aggregate = one: app GET /one\n            two: app GET /two\n")
        response = yield fetch(reactor, self.gate.url("web", "/both"),
                               headers={b"traceparent": [f"00-{TRACE}-{PARENT}-01".encode("ascii")]})
        self.assertEqual(response.status, 200, response.body)
        document = json.loads(response.body)
        one = self.traceparent(document["one"]["headers"])
        two = self.traceparent(document["two"]["headers"])
        self.assertEqual(one, two)
        self.assertEqual(one[0], TRACE)
        self.assertNotEqual(one[1], PARENT)
