"""
The C{[tracing]} section (span export to an OpenTelemetry collector) and
C{[gateway] trace_sample_rate}, read with section and key errors.
"""

import importlib.util
from urllib.parse import urlsplit

from attrs import frozen

from gatelayer.config import values as v

__all__ = ["TracingSpec", "otel_installed", "parse_sample_rate", "parse_tracing"]

EXPORTERS = ("otlp", "none")
#: The modules the C{otlp} exporter needs (the C{gatelayer[otel]} extra).
OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


@frozen
class TracingSpec:
    """
    The C{[tracing]} section: where a worker exports the spans of sampled
    requests, if anywhere.

    @ivar exporter: C{"otlp"} (OTLP over HTTP, protobuf) or C{"none"}.
    @ivar endpoint: the collector's traces URL.
    @ivar service_name: the C{service.name} resource attribute.
    @ivar timeout: seconds one export (retries included) may take.
    @ivar batch_size: spans sent per export request at most.
    @ivar queue_size: spans waiting for export at most (more are dropped).
    @ivar flush_interval: seconds between exports of a partial batch.
    """

    exporter: str = "none"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "gatelayer"
    timeout: float = 5.0
    batch_size: int = 512
    queue_size: int = 2048
    flush_interval: float = 5.0


def parse_sample_rate(text):
    """
    Parse a share from C{0.0} to C{1.0}.
    """
    try:
        rate = float(text)
    except ValueError:
        raise ValueError("is not a number from 0.0 to 1.0") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError("is not a number from 0.0 to 1.0")
    return rate


def _endpoint(text):
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL with a host")
    try:
        parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    return text


def otel_installed():
    """
    Whether the OpenTelemetry SDK and OTLP/HTTP exporter are installed
    (found without importing them).
    """
    try:
        return all(importlib.util.find_spec(name) is not None for name in OTEL_MODULES)
    except ImportError:
        return False


def parse_tracing(r):
    """
    The L{TracingSpec} of the C{[tracing]} section read through C{r} (a
    L{gatelayer.config.reader.SectionReader}).
    """
    default = TracingSpec()
    exporter = r.choice("exporter", EXPORTERS, "otlp") or "none"
    spec = TracingSpec(
        exporter=exporter,
        endpoint=r.get("endpoint", _endpoint, default.endpoint) or default.endpoint,
        service_name=r.get("service_name", None, default.service_name),
        timeout=r.get("timeout", _positive_duration, default.timeout) or default.timeout,
        batch_size=r.get("batch_size", lambda t: v.parse_int(t, 1, 65536), default.batch_size)
        or default.batch_size,
        queue_size=r.get("queue_size", lambda t: v.parse_int(t, 1, 1048576), default.queue_size)
        or default.queue_size,
        flush_interval=r.get("flush_interval", _positive_duration, default.flush_interval)
        or default.flush_interval,
    )
    if spec.batch_size > spec.queue_size:
        r.error("batch_size", f"is larger than queue_size ({spec.queue_size})", spec.batch_size)
    if exporter == "otlp" and not otel_installed():
        r.error("exporter", "needs the OpenTelemetry SDK and OTLP exporter, not installed here "
                "(pip install 'gatelayer[otel]')", exporter)
    return spec


def _positive_duration(text):
    seconds = v.parse_duration(text)
    if seconds <= 0:
        raise ValueError("is not a duration above zero")
    return seconds
