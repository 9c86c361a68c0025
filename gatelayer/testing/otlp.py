"""
A small OTLP/HTTP trace receiver for tests: a twisted.web server on a free
loopback port that decodes each C{ExportTraceServiceRequest} (protobuf,
from the C{opentelemetry-proto} package the exporter brings) and keeps its
spans.
"""

import gzip

from twisted.web import resource, server

__all__ = ["OtlpReceiver", "ReceivedSpan"]


class ReceivedSpan:
    """
    One span as the collector got it: ids as lower-case hex text, the
    attributes as a dict of plain values, the service name of its resource.
    """

    def __init__(self, span, service):
        self.name = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.kind = span.kind
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.status_code = span.status.code
        self.events = [event.name for event in span.events]
        self.service = service
        self.attributes = {a.key: _value(a.value) for a in span.attributes}

    def __repr__(self):
        return "<ReceivedSpan %s %s/%s parent %s>" % (self.name, self.trace_id, self.span_id, self.parent_span_id)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class _TracesResource(resource.Resource):
    isLeaf = True

    def __init__(self, receiver):
        super().__init__()
        self.receiver = receiver

    def render_POST(self, request):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        )
        body = request.content.read()
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.receiver.requests += 1
        for resource_spans in message.resource_spans:
            service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.receiver.spans.append(ReceivedSpan(span, service))
        request.setHeader(b"content-type", b"application/x-protobuf")
        return ExportTraceServiceResponse().SerializeToString()


class OtlpReceiver:
    """
    Receives OTLP/HTTP trace exports on C{url}.

    @ivar spans: every L{ReceivedSpan} so far, in arrival order.
    @ivar requests: how many export requests arrived.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.spans = []
        self.requests = 0
        self.port = None

    def start(self):
        """
        Listen on a free loopback port.
        """
        root = resource.Resource()
        v1 = resource.Resource()
        root.putChild(b"v1", v1)
        v1.putChild(b"traces", _TracesResource(self))
        site = server.Site(root)
        site.noisy = False
        self.port = self.reactor.listenTCP(0, site, interface="127.0.0.1")

    @property
    def url(self):
        """
        The traces URL to configure as C{[tracing] endpoint}.
        """
        return "http://127.0.0.1:%d/v1/traces" % (self.port.getHost().port,)

    def trace(self, trace_id):
        """
        The spans received of the trace C{trace_id} (hex text).
        """
        return [span for span in self.spans if span.trace_id == trace_id]

    def stop(self):
        """
        Stop listening.
        """
        return self.port.stopListening()
