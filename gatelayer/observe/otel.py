"""
Span export to an OpenTelemetry collector (OTLP over HTTP), the optional
C{gatelayer[otel]} extra.

Spans are made in the log phase, once a request is over, from the times
its L{gatelayer.http.contract.RequestRouting} recorded: no span lives
across callbacks, and the span ids are the ones the request's
L{gatelayer.observe.tracecontext.TraceContext} sent upstream, so the
upstream's own spans hang under the gateway's. The SDK's batch processor
queues them (dropping when its queue is full) and exports from a thread of
its own, so a slow or absent collector never touches the request path.

The SDK is imported only when a worker builds a L{SpanRecorder}.
"""

import logging
import threading
import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger

__all__ = ["ReportingExporter", "SpanRecorder"]

_NS = 1000000000
# How often, at most, a failing export is logged.
_FAILURE_LOG_INTERVAL = 60.0


class SpanRecorder:
    """
    Makes the spans of each finished, sampled request and hands them to a
    batch processor exporting over OTLP/HTTP.

    Per request: one server span (the gateway's hop), a child span for the
    filter chain when the route has filters, and a client span for the
    upstream call (its attempts) when one was made.
    """

    log = Logger()

    def __init__(self, spec, reactor, processor=None, start_thread=None):
        """
        @param spec: the L{gatelayer.config.tracing.TracingSpec}.
        @param reactor: an L{twisted.internet.interfaces.IReactorTime} (and
            C{callFromThread}): its seconds are the requests' times.
        @param processor: the span processor (by default a
            C{BatchSpanProcessor} over an C{OTLPSpanExporter} built from
            C{spec}).
        @param start_thread: runs a function in a new daemon thread (by
            default a L{threading.Thread}).
        """
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import Event, ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        import gatelayer
        self.spec = spec
        self._reactor = reactor
        self._span = ReadableSpan
        self._event = Event
        self._context = SpanContext
        self._sampled = TraceFlags(TraceFlags.SAMPLED)
        self._server = SpanKind.SERVER
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._unset = Status(StatusCode.UNSET)
        self._resource = Resource.create({"service.name": spec.service_name})
        self._scope = InstrumentationScope("gatelayer", getattr(gatelayer, "__version__", None))
        # Reactor seconds to wall-clock nanoseconds, worked out once.
        self._offset = time.time() - reactor.seconds()
        self.failures = 0
        self._failures_logged = None
        if processor is None:
            processor = _batch_processor(spec, self)
        self.processor = processor
        self._start_thread = start_thread or _start_daemon_thread
        self._stopped = None

    def _ns(self, seconds):
        return int((seconds + self._offset) * _NS)

    def record(self, request, ended, new_span_id):
        """
        Export the spans of C{request}, over at C{ended} (reactor seconds);
        C{new_span_id()} makes the child spans' ids.
        """
        routing = request.routing
        trace = routing.trace
        trace_id = int(trace.trace_id, 16)
        span_id = int(trace.span_id, 16)
        context = self._context(trace_id, span_id, False, self._sampled)
        parent = None
        if trace.parent_id is not None:
            parent = self._context(trace_id, int(trace.parent_id, 16), True, self._sampled)
        route = routing.match.route
        method = request.method.decode("ascii", "replace")
        status = getattr(request, "code", 0) or 0
        attributes = {
            "http.request.method": method,
            "url.path": request.path.decode("utf-8", "replace"),
            "url.scheme": request.channel.factory.scheme,
            "http.response.status_code": status,
            "server.address": routing.host,
        }
        if request.client is not None:
            attributes["client.address"] = getattr(request.client, "host", "")
        if route is not None:
            attributes["http.route"] = route.spec.path
            attributes["gatelayer.route"] = route.spec.name
            name = "%s %s" % (method, route.spec.path)
        else:
            name = method
        if routing.upstream_server is not None:
            attributes["gatelayer.upstream.server"] = routing.upstream_server
        request_id = getattr(routing, "request_id", None)
        if request_id is not None:
            attributes["gatelayer.request_id"] = (
                request_id.decode("ascii", "replace") if isinstance(request_id, bytes) else str(request_id))
        if request.disconnected:
            attributes["gatelayer.client_gone"] = True
        on_end = self.processor.on_end
        started = self._ns(routing.started)
        end = self._ns(ended)
        on_end(self._span(
            name, context, parent, self._resource, attributes, kind=self._server,
            status=self._error if status >= 500 else self._unset, start_time=started, end_time=end,
            instrumentation_scope=self._scope))
        if trace.filters_started is not None and route is not None:
            on_end(self._span(
                "filters", self._context(trace_id, int(new_span_id(), 16), False, self._sampled), context,
                self._resource, {"gatelayer.filters": list(route.spec.filters)},
                start_time=self._ns(trace.filters_started),
                end_time=self._ns(trace.filters_ended if trace.filters_ended is not None else ended),
                status=self._unset, instrumentation_scope=self._scope))
        if routing.upstream_started is not None:
            self._record_upstream(routing, trace_id, context, new_span_id, ended, status)

    def _record_upstream(self, routing, trace_id, parent, new_span_id, ended, status):
        Event = self._event
        server = routing.upstream_server or ""
        host, _, port = server.rpartition(":")
        attributes = {
            "server.address": host.strip("[]"),
            "gatelayer.upstream.tries": routing.tries,
            "gatelayer.upstream.retries": max(routing.tries - 1, 0),
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        events = ()
        if routing.upstream_first_byte is not None:
            attributes["http.response.status_code"] = status
            events = (Event("first byte", {}, self._ns(routing.upstream_first_byte)),)
        self.processor.on_end(self._span(
            "upstream " + server, self._context(trace_id, int(new_span_id(), 16), False, self._sampled),
            parent, self._resource, attributes, events, kind=self._client,
            status=self._error if routing.upstream_first_byte is None else self._unset,
            start_time=self._ns(routing.upstream_started), end_time=self._ns(ended),
            instrumentation_scope=self._scope))

    def export_failed(self, detail):
        """
        An export failed (called from the exporting thread): counted, and
        logged at most once a minute in the reactor thread.
        """
        self.failures += 1
        now = self._reactor.seconds()
        if self._failures_logged is not None and now - self._failures_logged < _FAILURE_LOG_INTERVAL:
            return
        self._failures_logged = now
        self._reactor.callFromThread(
            self.log.warn, "span export to {endpoint} failing ({failures} failed exports so far): {detail}",
            endpoint=self.spec.endpoint, failures=self.failures, detail=detail)

    def stop(self):
        """
        Export what is queued and stop the exporter, in a thread of its
        own; the Deferred fires when that is done or after the export
        timeout, whichever is first (the worker then exits, abandoning
        what was not sent).
        """
        if self._stopped is not None:
            return self._stopped
        done = self._stopped = Deferred()
        reactor = self._reactor
        timer = reactor.callLater(self.spec.timeout, _fire, done, None)

        def shut_down():
            try:
                self.processor.shutdown()
            finally:
                reactor.callFromThread(_fire, done, timer)

        self._start_thread(shut_down)
        return done


def _start_daemon_thread(function):
    threading.Thread(target=function, name="gatelayer-span-export-stop", daemon=True).start()


def _fire(done, timer):
    if timer is not None and timer.active():
        timer.cancel()
    if not done.called:
        done.callback(None)


class ReportingExporter:
    """
    A span exporter that tells the L{SpanRecorder} of each failed export
    of the exporter it wraps (the SDK's batch processor calls it from its
    thread).
    """

    def __init__(self, inner, recorder, results):
        """
        @param results: the SDK's C{SpanExportResult} enumeration.
        """
        self.inner = inner
        self.recorder = recorder
        self.results = results

    def export(self, spans):
        """
        Export C{spans} through the wrapped exporter; a failure or an
        exception is reported, and is a C{FAILURE}.
        """
        try:
            result = self.inner.export(spans)
        except Exception as e:
            self.recorder.export_failed(repr(e))
            return self.results.FAILURE
        if result is not self.results.SUCCESS:
            self.recorder.export_failed(
                "%d span(s) dropped: the collector is unreachable, too slow or refused them" % (len(spans),))
        return result

    def shutdown(self):
        """
        Stop the wrapped exporter.
        """
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        """
        Flush the wrapped exporter.
        """
        return self.inner.force_flush(timeout_millis)


def _batch_processor(spec, recorder):
    """
    A C{BatchSpanProcessor} over an OTLP/HTTP exporter for C{spec}, whose
    failed exports C{recorder} is told of; the SDK's own per-batch log lines
    are kept out of the worker's log.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    for name in ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    exporter = OTLPSpanExporter(endpoint=spec.endpoint, timeout=spec.timeout)
    return BatchSpanProcessor(
        ReportingExporter(exporter, recorder, SpanExportResult), max_queue_size=spec.queue_size,
        schedule_delay_millis=spec.flush_interval * 1000, max_export_batch_size=spec.batch_size,
        export_timeout_millis=spec.timeout * 1000)
