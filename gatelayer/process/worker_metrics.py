"""
How a worker's parts feed its L{gatelayer.observe.metrics.WorkerMetrics}:
what the subsystems already count for C{/status} (per-server failures and
ejections, rate-limit decisions and store errors, cache outcomes, open
connections) is read when a snapshot is taken, so it costs a request
nothing more; TLS handshakes are counted per listener as they end.
"""

from gatelayer.observe.control import WorkerReporter
from gatelayer.observe.metrics import WorkerMetrics

__all__ = ["TlsHandshakeCounter", "worker_metrics"]


class TlsHandshakeCounter:
    """
    The C{on_handshake(ok)} of one TLS listener's factory
    (L{gatelayer.tls.sni.wrap_server_factory}): counts completed and
    failed handshakes under the listener's name.
    """

    __slots__ = ("_ok", "_failed", "_label")

    def __init__(self, metrics, listener):
        self._ok = metrics.counter("gatelayer_tls_handshakes_total")
        self._failed = metrics.counter("gatelayer_tls_handshake_failures_total")
        self._label = (listener,)

    def __call__(self, ok):
        """
        Count one handshake that completed (C{ok}) or failed.
        """
        (self._ok if ok else self._failed).inc(self._label)


def worker_metrics(worker):
    """
    The L{WorkerMetrics} of C{worker} (a L{gatelayer.process.worker.Worker})
    with its readers of subsystem counters installed, and the
    L{WorkerReporter} sending it to the master (L{None} without a master).
    """
    metrics = WorkerMetrics(worker.reactor.seconds, worker.config)
    readers = metrics.gauges
    readers["gatelayer_open_connections"] = lambda: open_connections(worker)
    readers["gatelayer_upstream_connect_failures_total"] = lambda: upstream_counts(worker, "failures")
    readers["gatelayer_upstream_ejections_total"] = lambda: upstream_counts(worker, "ejections")
    rate_limits = [n for n, s in worker.config.filters.items() if s.type == "rate_limit"]
    if rate_limits:
        readers["gatelayer_ratelimit_decisions_total"] = lambda: ratelimit_decisions(worker, rate_limits)
        readers["gatelayer_ratelimit_store_errors_total"] = lambda: ratelimit_errors(worker, rate_limits)
        readers["gatelayer_ratelimit_breaker_open"] = lambda: ratelimit_breakers(worker, rate_limits)
    caches = [n for n, s in worker.config.filters.items() if s.type == "cache"]
    if caches:
        readers["gatelayer_cache_total"] = lambda: cache_outcomes(worker, caches)
    reporter = None
    if worker.master is not None:
        reporter = WorkerReporter(metrics, worker.master).register()
    return metrics, reporter


def open_connections(worker):
    """
    C{{(listener,): open connections}} over the worker's adopted ports.
    """
    out = {}
    for factory in worker.factories:
        label = (factory.listener.name,)
        out[label] = out.get(label, 0) + len(factory.channels)
    for listener, _, _ in worker.sockets:
        out.setdefault((listener.name,), 0)
    return out


def upstream_counts(worker, field):
    """
    C{{(upstream, server): count}} of a per-server counter of the worker's
    upstream states (C{failures} or C{ejections}).
    """
    out = {}
    for name, state in worker.upstream_states().items():
        for row in state.snapshot():
            out[(name, row["address"])] = row[field]
    return out


def _filters(worker, names):
    gateway = worker.gateway
    filters = gateway.filters if gateway is not None else {}
    return [(name, filters[name]) for name in names if name in filters]


def ratelimit_decisions(worker, names):
    """
    C{{(filter, outcome): count}}: C{allowed}, C{limited} (429),
    C{shadow_limited} (would have been, in shadow mode) and C{store_error}
    (decided by C{on_store_error} because the store failed).
    """
    out = {}
    for name, flt in _filters(worker, names):
        c = flt.counters
        out[(name, "allowed")] = c["allowed"]
        out[(name, "limited")] = c["rejected"]
        out[(name, "shadow_limited")] = c["shadow_rejected"]
        out[(name, "store_error")] = c["fallback_open"] + c["fallback_closed"] + c["fallback_local"]
    return out


def ratelimit_errors(worker, names):
    """
    C{{(filter,): failed store calls}} (errors and timeouts of the primary
    store).
    """
    out = {}
    for name, flt in _filters(worker, names):
        stats = flt.stats()
        out[(name,)] = stats.get("store_errors", 0) + stats.get("store_timeouts", 0)
    return out


def ratelimit_breakers(worker, names):
    """
    C{{(filter,): 1 or 0}}: whether the breaker before the store is open.
    """
    return {(name,): int(flt.stats().get("store_breaker") == "open")
            for name, flt in _filters(worker, names)}


def cache_outcomes(worker, names):
    """
    C{{(filter, outcome): count}} of each cache filter's C{X-Cache}
    outcomes, lower case (C{hit}, C{miss}, C{stale}, ...).
    """
    out = {}
    for name, flt in _filters(worker, names):
        for outcome, count in flt.counts.items():
            out[(name, outcome.lower())] = count
    return out
