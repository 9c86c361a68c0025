"""
A worker's metrics: plain counters and histograms kept in dicts keyed by
label tuples, cheap enough for every request, and the cumulative snapshot
of them the worker sends its master (which sums the workers' snapshots and
serves them in the Prometheus text format: L{gatelayer.observe.summing}).

Nothing here builds prometheus-client objects: a request costs a few dict
updates and one C{bisect} per histogram.
"""

from bisect import bisect_left

__all__ = [
    "DURATION_BUCKETS", "FAMILIES", "METHODS", "NO_LABEL", "OVERFLOW", "SERIES_LIMIT",
    "NO_COUNTER", "CounterFamily", "HistogramFamily", "RequestMetrics", "WorkerMetrics", "counter_of",
    "routes_of", "status_class",
]

#: Upper bounds (seconds) of the duration histograms' buckets (Prometheus'
#: defaults); C{+Inf} is implied.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: The methods counted by name; any other is counted as C{OTHER}.
METHODS = {m.encode("ascii"): m for m in
           ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")}
#: The label value for "none" (no route matched, no upstream called).
NO_LABEL = "-"
#: The label value every label of a series takes once its family holds
#: L{SERIES_LIMIT} series: what is open-ended cannot grow without bound.
OVERFLOW = "_overflow"
#: The most series one family keeps in one worker.
SERIES_LIMIT = 2000

_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
# The index in _CLASSES of each status a response can have (none: 0).
_CLASS_INDEX = {code: code // 100 for code in range(100, 600)}
# Most requests take less than the first bucket's bound: no bisect for them.
_FIRST_BOUND = DURATION_BUCKETS[0]

#: Every family a worker reports: name -> (kind, help, label names).
#: C{counter} and C{gauge} values are numbers, C{histogram} values are
#: C{[count per bucket..., count above the last bound, sum]}.
FAMILIES = {
    "gatelayer_requests_total": (
        "counter", "Requests answered, by route, upstream, method and status class.",
        ("route", "upstream", "method", "code")),
    "gatelayer_request_duration_seconds": (
        "histogram", "Time in the gateway, from the routed request head to the end of the response.",
        ("route",)),
    "gatelayer_upstream_response_seconds": (
        "histogram", "Time from the first upstream attempt sent to the response head received.",
        ("route", "upstream")),
    "gatelayer_received_bytes_total": (
        "counter", "Request body bytes received from clients.", ("route",)),
    "gatelayer_sent_bytes_total": (
        "counter", "Response body bytes sent to clients.", ("route",)),
    "gatelayer_open_connections": (
        "gauge", "Client connections open now.", ("listener",)),
    "gatelayer_upstream_ejections_total": (
        "counter", "Servers taken out of rotation by passive health (in a worker).",
        ("upstream", "server")),
    "gatelayer_upstream_retries_total": (
        "counter", "Requests sent again to another server.", ("upstream",)),
    "gatelayer_upstream_connect_failures_total": (
        "counter", "Upstream attempts that failed before a response (refused, timed out, reset).",
        ("upstream", "server")),
    "gatelayer_tls_handshakes_total": (
        "counter", "TLS handshakes completed with clients.", ("listener",)),
    "gatelayer_tls_handshake_failures_total": (
        "counter", "TLS handshakes with clients that failed.", ("listener",)),
    "gatelayer_ratelimit_decisions_total": (
        "counter", "Rate-limit decisions: allowed, limited, or store_error (the store did not answer).",
        ("filter", "outcome")),
    "gatelayer_ratelimit_store_errors_total": (
        "counter", "Rate-limit store calls that failed.", ("filter",)),
    "gatelayer_ratelimit_breaker_open": (
        "gauge", "Workers whose breaker in front of the rate-limit store is open now.", ("filter",)),
    "gatelayer_auth_total": (
        "counter", "Authentication outcomes (jwt and api_key filters) with a short reason.",
        ("filter", "outcome", "reason")),
    "gatelayer_cache_total": (
        "counter", "Response cache outcomes.", ("filter", "outcome")),
}


def status_class(code):
    """
    The label of a status code: C{"2xx"} for 204; C{"0xx"} for a request
    that got no status (its client went away first).
    """
    index = code // 100 if 0 <= code < 600 else 0
    return _CLASSES[index]


class CounterFamily:
    """
    One counter (or gauge) family: label tuple -> number, at most
    L{SERIES_LIMIT} series (then one overflow series).
    """

    __slots__ = ("values", "_width")

    def __init__(self, width):
        self.values = {}
        self._width = width

    def inc(self, labels, amount=1):
        """
        Add C{amount} to the series C{labels} (a tuple of strings).
        """
        values = self.values
        try:
            values[labels] += amount
        except KeyError:
            if len(values) >= SERIES_LIMIT:
                labels = (OVERFLOW,) * self._width
            values[labels] = values.get(labels, 0) + amount

    def set(self, labels, value):
        """
        Set the series C{labels} of a gauge to C{value}.
        """
        if labels not in self.values and len(self.values) >= SERIES_LIMIT:
            labels = (OVERFLOW,) * self._width
        self.values[labels] = value


class HistogramFamily:
    """
    One histogram family: label tuple -> C{[count per bucket..., count
    above the last bound, sum]} over precomputed bounds.
    """

    __slots__ = ("values", "bounds", "_width", "_empty")

    def __init__(self, width, bounds=DURATION_BUCKETS):
        self.values = {}
        self.bounds = bounds
        self._width = width
        self._empty = [0] * (len(bounds) + 1) + [0.0]

    def observe(self, labels, value):
        """
        Count C{value} (seconds) in the series C{labels}.
        """
        series = self.values.get(labels)
        if series is None:
            series = self.series(labels)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def series(self, labels):
        """
        The series C{labels} (a list the caller may count in), made empty
        when it is new; the overflow series once the family is full.
        """
        series = self.values.get(labels)
        if series is None:
            if len(self.values) >= SERIES_LIMIT:
                labels = (OVERFLOW,) * self._width
                series = self.values.get(labels)
            if series is None:
                series = self.values[labels] = list(self._empty)
        return series


class _NoCounter:
    """
    A counter family that counts nothing (metrics are off).
    """

    __slots__ = ()

    def inc(self, labels, amount=1):
        """
        Count nothing.
        """

    def set(self, labels, value):
        """
        Keep nothing.
        """


NO_COUNTER = _NoCounter()


def counter_of(metrics, name):
    """
    The counter family C{name} of C{metrics} (a L{WorkerMetrics}), or one
    that counts nothing when C{metrics} is L{None}: a subsystem keeps it and
    calls C{inc} without asking whether metrics are on.
    """
    return NO_COUNTER if metrics is None else metrics.counter(name)


class RequestMetrics:
    """
    What the log phase needs of one route, computed once per configuration:
    its name, the upstream its requests are counted under, and the upstream
    of each server address when the route has several (a split route).

    A request adds to counts kept here, settled into the families when a
    snapshot is taken (L{WorkerMetrics.snapshot}): no label tuple is hashed
    per request (on PyPy each hash is a call into a separately compiled
    loop).

    @ivar counts: C{upstream -> method label -> [requests per status
        class]}, the C{requests_total} counts not settled yet.
    @ivar routed: routed requests not settled yet; C{sent} and C{received}
        their body bytes.
    @ivar duration: this route's series of the request duration histogram,
        bound by L{WorkerMetrics.use_config}.
    @ivar upstream_times: C{upstream -> series} of the upstream response
        histogram, filled as requests come.
    """

    __slots__ = ("route", "label", "upstream", "by_address", "counts", "routed", "sent", "received",
                 "duration", "upstream_times")

    def __init__(self, route, upstream=NO_LABEL, by_address=None):
        self.route = route
        self.label = (route,)
        self.upstream = upstream
        self.by_address = by_address or {}
        self.counts = {}
        self.routed = 0
        self.sent = 0
        self.received = 0
        self.duration = None
        self.upstream_times = {}

    def settle(self, requests, sent, received):
        """
        Add the counts kept since the last call to the families
        C{requests} (a L{CounterFamily}), C{sent} and C{received} (their
        value mappings), and start again from zero.
        """
        for upstream, methods in self.counts.items():
            for method, classes in methods.items():
                for index, count in enumerate(classes):
                    if count:
                        classes[index] = 0
                        requests.inc((self.route, upstream, method, _CLASSES[index]), count)
        if self.routed:
            label = self.label
            sent[label] = sent.get(label, 0) + self.sent
            received[label] = received.get(label, 0) + self.received
            self.routed = self.sent = self.received = 0


class WorkerMetrics:
    """
    Every family of one worker (see L{FAMILIES}), updated by the gateway's
    log phase (L{request_finished}) and by the subsystems' hooks
    (L{counter}), read as a cumulative L{snapshot}.

    @ivar requests: requests counted since the worker started.
    @ivar gauges: C{name -> callable} returning C{{labels: value}}, read at
        snapshot time (open connections, breakers).
    """

    def __init__(self, seconds, config=None):
        """
        @param seconds: the clock the request times are taken with (the
            gateway reactor's C{seconds}).
        @param config: the L{gatelayer.config.model.GateConfig} whose routes
            and upstreams name the series.
        """
        self._seconds = seconds
        self.families = {}
        for name, (kind, _, labels) in FAMILIES.items():
            if kind == "histogram":
                self.families[name] = HistogramFamily(len(labels))
            else:
                self.families[name] = CounterFamily(len(labels))
        f = self.families
        self._requests = f["gatelayer_requests_total"].values
        self._durations = f["gatelayer_request_duration_seconds"]
        self._duration_values = self._durations.values
        self._upstream_times = f["gatelayer_upstream_response_seconds"]
        self._received = f["gatelayer_received_bytes_total"].values
        self._sent = f["gatelayer_sent_bytes_total"].values
        self._retries = f["gatelayer_upstream_retries_total"]
        self.gauges = {}
        self.requests = 0
        self.routes = {}
        self._unrouted = RequestMetrics(NO_LABEL)
        if config is not None:
            self.use_config(config)

    def use_config(self, config):
        """
        Name series after the routes and upstreams of C{config} (a reload
        keeps the counts).
        """
        self._settle()
        self.routes = routes_of(config)
        self._unrouted = RequestMetrics(NO_LABEL)

    def counter(self, name):
        """
        The L{CounterFamily} C{name} (a counter of L{FAMILIES}), for a
        subsystem to keep and call C{inc} on.
        """
        return self.families[name]

    def request_finished(self, request):
        """
        The log phase: count one finished (or abandoned) request.

        Once per request, so written for cost: the counts go to the route's
        L{RequestMetrics} (settled into the families at the next snapshot)
        and its histogram series are looked up once and kept there.
        """
        self.requests += 1
        routing = request.routing
        index = _CLASS_INDEX.get(request.code, 0)
        method = request.method
        if routing is None:
            route = self._unrouted
            upstream = NO_LABEL
        else:
            matched = routing.match.route
            route = self._unrouted if matched is None else (
                self.routes.get(matched.spec.name) or self._unrouted)
            upstream = route.upstream
            if route.by_address and routing.upstream_server is not None:
                upstream = route.by_address.get(routing.upstream_server, upstream)
        label = METHODS.get(method, "OTHER")
        methods = route.counts.get(upstream)
        if methods is None:
            methods = route.counts[upstream] = {}
        classes = methods.get(label)
        if classes is None:
            classes = methods[label] = [0] * len(_CLASSES)
        classes[index] += 1
        if routing is None:
            return
        route.routed += 1
        route.sent += request.sentLength
        route.received += request.body_length()
        elapsed = self._seconds() - routing.started
        series = route.duration
        if series is None:
            series = route.duration = self._durations.series(route.label)
        series[0 if elapsed <= _FIRST_BOUND else bisect_left(DURATION_BUCKETS, elapsed)] += 1
        series[-1] += elapsed
        first = routing.upstream_first_byte
        if first is not None and routing.upstream_started is not None:
            series = route.upstream_times.get(upstream)
            if series is None:
                series = route.upstream_times[upstream] = self._upstream_times.series(
                    (route.route, upstream))
            elapsed = first - routing.upstream_started
            series[0 if elapsed <= _FIRST_BOUND else bisect_left(DURATION_BUCKETS, elapsed)] += 1
            series[-1] += elapsed
        if routing.tries > 1:
            self._retries.inc((upstream,), routing.tries - 1)

    def snapshot(self):
        """
        The cumulative values of every family, JSON-ready:
        C{{name: [[labels, value], ...]}} (histogram values are lists).
        """
        self._settle()
        out = {}
        for name, family in self.families.items():
            if family.values:
                out[name] = [[list(labels), value] for labels, value in family.values.items()]
        for name, read in self.gauges.items():
            values = read()
            if values:
                out[name] = [[list(labels), value] for labels, value in values.items()]
        return out


    def _settle(self):
        """
        Add every route's counts kept since the last snapshot to the
        families.
        """
        requests = self.families["gatelayer_requests_total"]
        for route in (*self.routes.values(), self._unrouted):
            route.settle(requests, self._sent, self._received)


def routes_of(config):
    """
    C{{route name: L{RequestMetrics}}} for every route of C{config}.
    """
    routes = {}
    for spec in config.routes:
        names = []
        if spec.upstream:
            names.append(spec.upstream)
        for version, _ in getattr(spec, "split", None) or ():
            names.append(version)
        by_address = {}
        if len(names) > 1:
            for name in names:
                upstream = config.upstreams.get(name)
                for server in (upstream.servers if upstream is not None else ()):
                    by_address.setdefault(server.address, name)
        entry = RequestMetrics(spec.name, names[0] if names else NO_LABEL, by_address)
        routes[spec.name] = entry
    return routes
