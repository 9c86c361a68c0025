"""
How a worker's parts feed its L{gatelayer.observe.metrics.WorkerMetrics}:
what the subsystems already count for C{/status} (per-server failures and
ejections, rate-limit decisions and store errors, cache outcomes, open
connections) is read when a snapshot is taken, so it costs a request
nothing more; TLS handshakes are counted per listener as they end.
"""

from gatelayer.observe.control import WorkerReporter
from gatelayer.observe.metrics import WorkerMetrics

__all__ = ["CarriedCounts", "TlsHandshakeCounter", "worker_metrics"]


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
    decisions = CarriedCounts(lambda: _filters(worker, "rate_limit"), ratelimit_decisions)
    errors = CarriedCounts(lambda: _filters(worker, "rate_limit"), ratelimit_errors)
    readers["gatelayer_ratelimit_decisions_total"] = decisions
    readers["gatelayer_ratelimit_store_errors_total"] = errors
    readers["gatelayer_ratelimit_breaker_open"] = lambda: ratelimit_breakers(_filters(worker, "rate_limit"))
    readers["gatelayer_cache_total"] = CarriedCounts(lambda: _filters(worker, "cache"), cache_outcomes)
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


def _filters(worker, kind):
    """
    C{[(name, filter)]} of the running gateway's filters of type C{kind}
    (the configuration a reload switched to, once it did).
    """
    gateway = worker.gateway
    if gateway is None:
        return []
    filters = gateway.filters
    return [(name, filters[name]) for name, spec in worker.config.filters.items()
            if spec.type == kind and name in filters]


class CarriedCounts:
    """
    A reader of counters kept by filter objects, which a configuration
    reload replaces with new ones counting from zero: when the object behind
    a filter name changes, the old one's last counts are carried, so a
    counter never goes down.
    """

    def __init__(self, filters, read):
        """
        @param filters: returns the current C{[(name, filter)]}.
        @param read: C{read(name, filter)} -> C{{labels: count}}.
        """
        self._filters = filters
        self._read = read
        self._owners = {}
        self._last = {}
        self._carried = {}

    def __call__(self):
        """
        C{{labels: count}}: the carried counts plus the last counts of every
        filter object seen (a filter a reload removed stays counted).
        """
        for name, flt in self._filters():
            if self._owners.get(name, flt) is not flt:
                for labels, count in self._last.get(name, {}).items():
                    self._carried[labels] = self._carried.get(labels, 0) + count
            self._owners[name] = flt
            self._last[name] = self._read(name, flt)
        out = dict(self._carried)
        for counts in self._last.values():
            for labels, count in counts.items():
                out[labels] = out.get(labels, 0) + count
        return out


def ratelimit_decisions(name, flt):
    """
    C{{(filter, outcome): count}}: C{allowed}, C{limited} (429),
    C{shadow_limited} (would have been, in shadow mode) and C{store_error}
    (decided by C{on_store_error} because the store failed).
    """
    c = flt.counters
    return {
        (name, "allowed"): c["allowed"],
        (name, "limited"): c["rejected"],
        (name, "shadow_limited"): c["shadow_rejected"],
        (name, "store_error"): c["fallback_open"] + c["fallback_closed"] + c["fallback_local"],
    }


def ratelimit_errors(name, flt):
    """
    C{{(filter,): failed store calls}} (errors and timeouts of the primary
    store).
    """
    stats = flt.stats()
    return {(name,): stats.get("store_errors", 0) + stats.get("store_timeouts", 0)}


def ratelimit_breakers(filters):
    """
    C{{(filter,): 1 or 0}}: whether the breaker before the store is open.
    """
    return {(name,): int(flt.stats().get("store_breaker") == "open") for name, flt in filters}


def cache_outcomes(name, flt):
    """
    C{{(filter, outcome): count}} of a cache filter's C{X-Cache} outcomes,
    lower case (C{hit}, C{miss}, C{stale}, ...).
    """
    return {(name, outcome.lower()): count for outcome, count in flt.counts.items()}
