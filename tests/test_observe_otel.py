"""
Tests for gatelayer.observe.otel: the spans a finished request is exported
as (ids, parents, times, attributes), the throttled report of failing
exports, and the bounded stop.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import RouteSpec
from gatelayer.config.tracing import TracingSpec
from gatelayer.http.contract import RequestRouting
from gatelayer.observe.otel import ReportingExporter, SpanRecorder
from gatelayer.observe.tracecontext import TRACEPARENT_KEY, TracePropagator
from gatelayer.routing import RouteMatch

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class ThreadedClock(Clock):
    """
    A L{Clock} whose C{callFromThread} runs the call at once (the test has
    no other thread).
    """

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class ListProcessor:
    """
    A span processor keeping what it is given.
    """

    def __init__(self, shutdown=lambda: None):
        self.spans = []
        self.shutdown = shutdown

    def on_end(self, span):
        self.spans.append(span)


class _Route:
    def __init__(self, spec):
        self.spec = spec


class _Peer:
    host = "192.0.2.7"


class _Factory:
    scheme = "https"


class _Channel:
    factory = _Factory()


class FinishedRequest:
    """
    What the log phase reads of a finished request.
    """

    client = _Peer()
    channel = _Channel()
    disconnected = False

    def __init__(self, routing, code, method=b"GET", path=b"/api/users"):
        self.routing = routing
        self.code = code
        self.method = method
        self.path = path


def routed(traceparent=None, filters=("auth",), upstream=True):
    """
    A L{RequestRouting} of a request on route C{api} routed at the clock's
    time 10, filtered from 11 to 12, upstream from 12.5 (first byte at 13),
    tried twice.
    """
    spec = RouteSpec(name="api", path="/api/", filters=filters)
    routing = RequestRouting(RouteMatch(_Route(spec), 200), "api.example", 1024, None, started=10.0)
    raw = {TRACEPARENT_KEY: [traceparent]} if traceparent else {}
    routing.trace = TracePropagator(seed=5, recording=True).start(raw)
    if filters:
        routing.trace.filters_started, routing.trace.filters_ended = 11.0, 12.0
    if upstream:
        routing.upstream_server = "10.0.0.5:9001"
        routing.upstream_started = 12.5
        routing.upstream_first_byte = 13.0
        routing.tries = 2
    return routing


class SpanRecorderTests(SynchronousTestCase):
    """
    L{SpanRecorder.record} turns a finished request into its spans.
    """

    def setUp(self):
        self.clock = ThreadedClock()
        self.clock.advance(100)
        self.processor = ListProcessor()
        self.recorder = SpanRecorder(TracingSpec(exporter="otlp", service_name="edge"), self.clock,
                                     self.processor)
        self.ids = iter([b"%016x" % (i,) for i in range(1, 10)])

    def record(self, routing, code=200):
        self.recorder.record(FinishedRequest(routing, code), 14.0, lambda: next(self.ids))
        return {span.name: span for span in self.processor.spans}

    def test_server_span_continues_the_client_trace(self):
        """
        The server span has the propagated ids: the client's trace id, the
        gateway's span id (what went upstream), the client's span as
        parent; with the request's attributes and times.
        """
        routing = routed(f"00-{TRACE}-{PARENT}-01".encode("ascii"))
        spans = self.record(routing)
        server = spans["GET /api/"]
        self.assertEqual("%032x" % server.context.trace_id, TRACE)
        self.assertEqual(b"%016x" % server.context.span_id, routing.trace.span_id)
        self.assertEqual("%016x" % server.parent.span_id, PARENT)
        self.assertTrue(server.parent.is_remote)
        self.assertEqual(server.kind.name, "SERVER")
        self.assertEqual(server.resource.attributes["service.name"], "edge")
        attributes = dict(server.attributes)
        self.assertEqual(attributes["http.request.method"], "GET")
        self.assertEqual(attributes["http.route"], "/api/")
        self.assertEqual(attributes["gatelayer.route"], "api")
        self.assertEqual(attributes["http.response.status_code"], 200)
        self.assertEqual(attributes["client.address"], "192.0.2.7")
        self.assertEqual(attributes["url.scheme"], "https")
        self.assertEqual(attributes["gatelayer.upstream.server"], "10.0.0.5:9001")
        self.assertEqual(server.status.status_code.name, "UNSET")
        # Clock time 10 is 90 s before the wall-clock time of the start.
        self.assertEqual(server.end_time - server.start_time, 4 * 10**9)

    def test_child_spans(self):
        """
        The filter chain and the upstream call are children of the server
        span, with their own ids, times, tries and a first-byte event.
        """
        routing = routed(f"00-{TRACE}-{PARENT}-01".encode("ascii"))
        spans = self.record(routing)
        server = spans["GET /api/"]
        filters = spans["filters"]
        upstream = spans["upstream 10.0.0.5:9001"]
        for child in (filters, upstream):
            self.assertEqual(child.parent.span_id, server.context.span_id)
            self.assertEqual(child.context.trace_id, server.context.trace_id)
            self.assertNotEqual(child.context.span_id, server.context.span_id)
        self.assertEqual(list(filters.attributes["gatelayer.filters"]), ["auth"])
        self.assertEqual(filters.start_time - server.start_time, 1 * 10**9)
        self.assertEqual(filters.end_time - filters.start_time, 1 * 10**9)
        self.assertEqual(upstream.kind.name, "CLIENT")
        self.assertEqual(upstream.attributes["gatelayer.upstream.tries"], 2)
        self.assertEqual(upstream.attributes["gatelayer.upstream.retries"], 1)
        self.assertEqual(upstream.attributes["server.port"], 9001)
        self.assertEqual([e.name for e in upstream.events], ["first byte"])
        self.assertEqual(upstream.events[0].timestamp - upstream.start_time, 5 * 10**8)

    def test_new_trace_and_error(self):
        """
        A request that started its trace has a root server span; a 5xx
        marks it an error, and an upstream that never answered marks the
        upstream span one too. Without filters there is no filter span.
        """
        routing = routed(None, filters=())
        routing.upstream_first_byte = None
        spans = self.record(routing, code=504)
        self.assertEqual(sorted(spans), ["GET /api/", "upstream 10.0.0.5:9001"])
        self.assertIsNone(spans["GET /api/"].parent)
        self.assertEqual(spans["GET /api/"].status.status_code.name, "ERROR")
        self.assertEqual(spans["upstream 10.0.0.5:9001"].status.status_code.name, "ERROR")

    def test_request_id(self):
        """
        A request id on the request's routing becomes an attribute (when
        the routing has one).
        """
        routing = routed(None, upstream=False)

        class WithId:
            pass
        request = FinishedRequest(routing, 404)
        request.routing = WithId()
        for name in ("match", "host", "started", "upstream_server", "upstream_started", "trace", "tries"):
            setattr(request.routing, name, getattr(routing, name))
        request.routing.request_id = b"req-1"
        self.recorder.record(request, 14.0, lambda: next(self.ids))
        self.assertEqual(self.processor.spans[0].attributes["gatelayer.request_id"], "req-1")


class SpanRecorderReportTests(SynchronousTestCase):
    """
    Failing exports are reported once in a while, and stopping is bounded.
    """

    def test_failures_logged_once_a_minute(self):
        """
        Many failed exports in a minute make one log event, counting them.
        """
        events = []
        clock = ThreadedClock()
        recorder = SpanRecorder(TracingSpec(exporter="otlp"), clock, ListProcessor())
        recorder.log = Logger(observer=events.append)
        for _ in range(5):
            recorder.export_failed("connection refused")
            clock.advance(10)
        self.assertEqual(recorder.failures, 5)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["failures"], 1)
        self.assertEqual(events[0]["endpoint"], "http://127.0.0.1:4318/v1/traces")
        clock.advance(20)
        recorder.export_failed("connection refused")
        self.assertEqual([e["failures"] for e in events], [1, 6])

    def test_stop_flushes(self):
        """
        Stopping shuts the processor down (it exports what is queued) and
        fires once that is done.
        """
        shut = []
        clock = ThreadedClock()
        recorder = SpanRecorder(TracingSpec(exporter="otlp"), clock,
                                ListProcessor(lambda: shut.append(True)), start_thread=lambda f: f())
        self.successResultOf(recorder.stop())
        self.assertEqual(shut, [True])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_is_bounded(self):
        """
        A shutdown that does not come back (a collector hanging) does not
        hold the stop longer than the export timeout.
        """
        clock = ThreadedClock()
        threads = []
        recorder = SpanRecorder(TracingSpec(exporter="otlp", timeout=2.0), clock, ListProcessor(),
                                start_thread=threads.append)
        stopping = recorder.stop()
        self.assertEqual(len(threads), 1)
        clock.advance(1.9)
        self.assertNoResult(stopping)
        clock.advance(0.1)
        self.successResultOf(stopping)
        self.assertIs(recorder.stop(), stopping)


class ReportingExporterTests(SynchronousTestCase):
    """
    L{ReportingExporter} tells the recorder of failed exports.
    """

    def test_failures_reported(self):
        """
        A failed export and an exporter raising are both reported (and a
        failure); a successful export is not.
        """
        from opentelemetry.sdk.trace.export import SpanExportResult
        failures = []

        class Recorder:
            def export_failed(self, detail):
                failures.append(detail)

        class Inner:
            results = [SpanExportResult.SUCCESS, SpanExportResult.FAILURE]

            def export(self, spans):
                if not self.results:
                    raise OSError("boom")
                return self.results.pop(0)

        exporter = ReportingExporter(Inner(), Recorder(), SpanExportResult)
        self.assertIs(exporter.export([1, 2]), SpanExportResult.SUCCESS)
        self.assertEqual(failures, [])
        self.assertIs(exporter.export([1, 2]), SpanExportResult.FAILURE)
        self.assertIs(exporter.export([1]), SpanExportResult.FAILURE)
        self.assertEqual(len(failures), 2)
        self.assertIn("2 span(s) dropped", failures[0])
        self.assertIn("OSError('boom')", failures[1])


class SdkImportTests(SynchronousTestCase):
    """
    A worker without span export never imports the OpenTelemetry packages.
    """

    def test_not_imported_without_tracing(self):
        """
        Loading a config without [tracing] and building its gateway leaves
        every opentelemetry module unimported (checked in a fresh
        interpreter).
        """
        import subprocess
        import sys
        program = (
            "import sys\n"
            "from twisted.internet.testing import MemoryReactorClock\n"
            "from gatelayer.config import parse_config_text\n"
            "from gatelayer.process.worker import Worker\n"
            "config = parse_config_text('[listener:web]\\nbind = 127.0.0.1:0\\n"
            "[route:r]\\npath = /\\nrespond = 200 ok\\n', cpu_count=1)\n"
            "Worker(MemoryReactorClock(), config, 1, []).prepare()\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "[]")

