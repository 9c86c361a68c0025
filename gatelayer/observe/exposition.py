"""
The Prometheus side of the master's metrics: a prometheus-client
C{Collector} that yields the summed worker families and the master's own,
and the text exposition of a registry holding it.
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from gatelayer.observe.metrics import DURATION_BUCKETS, FAMILIES

__all__ = ["CONTENT_TYPE", "MASTER_FAMILIES", "GatewayCollector", "exposition"]

#: The Content-Type of the text format served at C{/metrics}.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The families the master makes from its own parts: name -> (kind, help,
#: label names).
MASTER_FAMILIES = {
    "gatelayer_upstream_server_up": (
        "gauge", "1 while the master's verdict on the server is healthy (active checks), else 0.",
        ("upstream", "server")),
    "gatelayer_tls_certificate_expiry_timestamp_seconds": (
        "gauge", "When each certificate served expires (Unix time).", ("tls", "host")),
    "gatelayer_reloads_total": (
        "counter", "SIGHUP reloads by outcome (ok or failed).", ("outcome",)),
    "gatelayer_reload_last_success": (
        "gauge", "1 if the last reload succeeded (or none was asked), 0 if it failed.", ()),
    "gatelayer_worker_restarts_total": (
        "counter", "Times the slot's worker exited and was respawned.", ("slot",)),
    "gatelayer_worker_crash_loop": (
        "gauge", "1 while the slot's worker keeps exiting soon after it starts.", ("slot",)),
    "gatelayer_workers": (
        "gauge", "Worker slots serving now.", ()),
    "gatelayer_worker_requests_total": (
        "counter", "Requests answered by the slot's workers since the master started.", ("slot",)),
}


def _family(name, kind, help_text, labels):
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, help_text, labels=labels)
    return HistogramMetricFamily(name, help_text, labels=labels)


def _buckets(counts):
    """
    prometheus-client's C{[(le, cumulative count), ...]} of a histogram
    value C{[count per bucket..., above the last bound, sum]}.
    """
    out, running = [], 0
    for bound, count in zip(DURATION_BUCKETS, counts):
        running += count
        out.append((repr(bound), running))
    running += counts[len(DURATION_BUCKETS)]
    out.append(("+Inf", running))
    return out


class GatewayCollector:
    """
    A prometheus-client collector over the values C{read()} returns:
    C{{name: {labels tuple: value}}} for the families of
    L{gatelayer.observe.metrics.FAMILIES} and L{MASTER_FAMILIES}. Every
    family is yielded, empty ones too, so a dashboard finds each name.
    """

    def __init__(self, read):
        self._read = read

    def collect(self):
        """
        Yield one metric family per name.
        """
        values = self._read()
        width = len(DURATION_BUCKETS) + 2
        for table in (FAMILIES, MASTER_FAMILIES):
            for name, (kind, help_text, labels) in table.items():
                family = _family(name, kind, help_text, list(labels))
                for key, value in sorted(values.get(name, {}).items()):
                    if kind == "histogram":
                        if len(value) != width:
                            continue
                        family.add_metric(list(key), _buckets(value), value[-1])
                    else:
                        family.add_metric(list(key), value)
                yield family


def exposition(read):
    """
    The text exposition (bytes) of a registry holding a
    L{GatewayCollector} over C{read}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(read))
    return generate_latest(registry)
