"""
What one worker knows about one upstream's servers: which are usable, how
busy each is, and which to use next.

A server is usable when it is not marked C{down} in C{gate.ini}, the master's
active health checks last said it is healthy, and this worker has not
passively ejected it after repeated connection errors or timeouts. Backup
servers are used only when no primary server is usable. Everything here is
driven by the caller (the proxy terminal and the control channel); time is
read from an injected clock and ejections expire lazily, so no timers run.
"""

from collections import deque

from twisted.logger import Logger

from gatelayer.upstream.balancers import balancer_for

__all__ = [
    "UpstreamState", "FAILURE_KINDS", "IDEMPOTENT_METHODS", "health_failure", "log_server_failure",
    "may_retry_method",
]

_log = Logger(namespace="gatelayer.upstream")

FAILURE_KINDS = frozenset({
    "connect_error", "timeout", "invalid_response", "overloaded", "502", "503", "504"})
"""
The kinds of failure L{UpstreamState.report_failure} understands:
C{connect_error} (refused, unreachable, reset before a response started),
C{timeout} (connect or read), C{invalid_response} (the server answered
something that is not HTTP), C{overloaded} (this worker's connection limit
and queue for the server were full: the server itself did nothing wrong, so
it is never counted), or the status codes C{502}, C{503}, C{504}.
"""

_ALWAYS_COUNTED = frozenset({"connect_error", "timeout", "invalid_response"})

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
"""
Methods RFC 9110 calls idempotent: a request with one of them may be sent to
another server after a failure.
"""


def may_retry_method(method, route):
    """
    Whether a request with C{method} (bytes) on C{route} (a
    L{gatelayer.config.model.RouteSpec}) may ever be retried: idempotent
    methods always, others (POST, PATCH) only with C{retry_non_idempotent}.
    """
    return method in IDEMPOTENT_METHODS or bool(getattr(route, "retry_non_idempotent", False))


# The failure kind passive health counts, by the upstream client's kind
# when they differ (a connection lost counts as a connect error).
_HEALTH_KIND = {"connection_lost": "connect_error", "bad_response": "invalid_response"}

# What the log line says a server did, by the client's failure kind.
_FAILURE_TEXT = {
    "connect_error": "could not be connected to",
    "timeout": "timed out",
    "bad_response": "sent an invalid response",
    "connection_lost": "closed the connection",
}


def health_failure(kind):
    """
    The failure kind passive health (L{UpstreamState.report_failure})
    counts for the upstream client's failure C{kind}.
    """
    return _HEALTH_KIND.get(kind, kind)


def log_server_failure(log, upstream, address, kind, detail, request_id=None):
    """
    Log at C{log} (a L{twisted.logger.Logger}) that the server C{address}
    of the upstream named C{upstream} failed with the client's C{kind},
    for the request C{request_id} (bytes) when known.
    """
    if request_id:
        log.warn("upstream {upstream} server {address} {what}: {detail} (request {request_id})",
                 upstream=upstream, address=address, what=_FAILURE_TEXT.get(kind, kind), kind=kind,
                 detail=detail, request_id=request_id.decode("ascii", "replace"))
        return
    log.warn("upstream {upstream} server {address} {what}: {detail}",
             upstream=upstream, address=address, what=_FAILURE_TEXT.get(kind, kind), kind=kind,
             detail=detail)


class _ServerState:
    """
    Mutable bookkeeping for one server (private: read it through
    L{UpstreamState.snapshot}).
    """

    __slots__ = ("server", "healthy", "ejected_until", "probation", "recent_failures",
                 "active", "requests", "failures", "ejections")

    def __init__(self, server):
        self.server = server
        self.healthy = True
        self.ejected_until = None
        self.probation = False
        self.recent_failures = deque()
        self.active = 0
        self.requests = 0
        self.failures = 0
        self.ejections = 0


class UpstreamState:
    """
    One upstream's servers as seen by one worker, and the balancer choosing
    among them.

    @param spec: the L{gatelayer.config.model.UpstreamSpec}.
    @param clock: an L{twisted.internet.interfaces.IReactorTime}, read for
        passive ejection.
    @param balancer: an L{gatelayer.upstream.balancers.IBalancer}; by default
        the one C{spec.balance} names.
    """

    def __init__(self, spec, clock, balancer=None):
        self.spec = spec
        self._clock = clock
        self.balancer = balancer if balancer is not None else balancer_for(spec.balance)
        self._servers = {}
        for server in spec.servers:
            self._servers.setdefault(server.address, _ServerState(server))
        self._primaries = [s for s in self._servers.values() if not s.server.backup and not s.server.down]
        self._backups = [s for s in self._servers.values() if s.server.backup and not s.server.down]
        self._single = self._primaries[0] if len(self._primaries) == 1 else None
        # With a single server there is nowhere else to send a request, so
        # ejecting it would only turn slow failures into 503s (as nginx).
        self._passive = spec.max_fails > 0 and len(self._servers) > 1

    # -- choosing ---------------------------------------------------------

    def pick(self, client_ip, exclude=()):
        """
        The server the next request (or retry) should go to, or L{None} when
        no server is usable, in which case the caller answers 503 at once.

        @param client_ip: the client address string (used by C{ip_hash}).
        @param exclude: servers (or their addresses) this request has already
            tried; a retry goes elsewhere. When every usable primary has been
            tried, a usable backup is chosen.
        """
        single = self._single
        if single is not None and not exclude and single.healthy and single.ejected_until is None:
            # The usual first try on a one-server upstream: nothing to choose.
            return single.server
        now = self._clock.seconds()
        if exclude:
            skip = {getattr(s, "address", s) for s in exclude}
        else:
            skip = ()
        candidates = self._usable(self._primaries, now, skip)
        if not candidates:
            candidates = self._usable(self._backups, now, skip)
            if not candidates:
                return None
        if len(candidates) > 1:
            limit = self.spec.max_connections
            below = [s for s in candidates if s.active < limit]
            # All full: pick anyway and let the connection pool queue it.
            if below:
                candidates = below
            if len(candidates) == 1:
                return candidates[0].server
            return self.balancer.pick([s.server for s in candidates], client_ip, self.active)
        return candidates[0].server

    def _usable(self, states, now, skip):
        # The usable states of states, in order (an ejection that is over
        # readmits its server here).
        usable = []
        for state in states:
            if not state.healthy:
                continue
            if state.ejected_until is not None:
                if now < state.ejected_until:
                    continue
                self._readmit(state)
            if skip and state.server.address in skip:
                continue
            usable.append(state)
        return usable

    def _readmit(self, state):
        state.ejected_until = None
        state.probation = True
        _log.info(
            "upstream {upstream} server {address} back in rotation after its ejection "
            "(on probation: one more failure ejects it again)",
            upstream=self.spec.name, address=state.server.address, event="readmitted")

    def active(self, server):
        """
        The number of requests in progress on C{server} in this worker.
        """
        return self._servers[server.address].active

    # -- request accounting ----------------------------------------------

    def request_started(self, server):
        """
        Note that a request (or a retry) is being sent to C{server}.
        """
        state = self._servers[server.address]
        state.active += 1
        state.requests += 1

    def request_finished(self, server):
        """
        Note that a request to C{server} is over, however it ended. Call it
        exactly once per L{request_started}.
        """
        state = self._servers[server.address]
        if state.active > 0:
            state.active -= 1

    def report_success(self, server):
        """
        C{server} answered (with a status that does not count as a failure);
        a server on probation after an ejection is trusted again.
        """
        state = self._servers[server.address]
        state.probation = False

    def report_failure(self, server, kind):
        """
        A request to C{server} failed with C{kind} (one of L{FAILURE_KINDS}).

        Connection errors, timeouts and invalid responses always count;
        C{502}/C{503}/C{504} count only when the upstream's C{retry_on} lists
        them; C{overloaded} never counts. C{max_fails} counted failures within C{fail_timeout} seconds
        eject the server for C{fail_timeout} seconds; a failure right after an
        ejection ended ejects it again at once.

        @return: whether the failure was counted.
        @raise ValueError: for a C{kind} outside L{FAILURE_KINDS}.
        """
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown upstream failure kind {kind!r}")
        if kind not in _ALWAYS_COUNTED and kind not in self.spec.retry_on:
            return False
        state = self._servers[server.address]
        state.failures += 1
        if not self._passive:
            return True
        now = self._clock.seconds()
        if state.ejected_until is not None:
            if now < state.ejected_until:
                # A request sent before the ejection failing late: already counted.
                return True
            self._readmit(state)
        window = state.recent_failures
        window.append(now)
        horizon = now - self.spec.fail_timeout
        while window and window[0] <= horizon:
            window.popleft()
        if state.probation or len(window) >= self.spec.max_fails:
            self._eject(state, now, len(window), kind)
        return True

    def _eject(self, state, now, count, kind):
        state.ejected_until = now + self.spec.fail_timeout
        state.recent_failures.clear()
        state.ejections += 1
        was_probation, state.probation = state.probation, False
        _log.warn(
            "upstream {upstream} server {address} ejected for {seconds}s "
            "after {count} failure(s) within {seconds}s, the last one {kind}",
            upstream=self.spec.name, address=state.server.address, seconds=self.spec.fail_timeout,
            count=count, kind=kind, probation=was_probation, event="ejected")

    def should_retry(self, kind, attempts=1):
        """
        Whether a request that failed with C{kind} after being sent
        C{attempts} times may be sent once more (to another server), per the
        upstream's C{retries} and C{retry_on}. The caller still checks that
        no response byte reached the client and L{may_retry_method}.
        """
        return attempts <= self.spec.retries and kind in self.spec.retry_on

    def retry_target(self, kind, client_ip, tried):
        """
        Where a request that failed with C{kind} (or got a response whose
        status C{retry_on} lists, as C{"503"}) should go next: a usable
        server it has not tried yet, or L{None} when it must not be retried
        (C{retries} used up, C{kind} not in C{retry_on}, or no untried
        usable server left). With L{None} the caller answers with this
        attempt's own outcome (504 for a timeout, the server's own 503...)
        rather than a gateway-made "no server answered": a retry that cannot
        happen is never announced, and a response is never thrown away for
        one.

        @param client_ip: the client address string (for C{ip_hash}).
        @param tried: the servers this request was sent to, in order.
        """
        if not self.should_retry(kind, len(tried)):
            return None
        return self.pick(client_ip, tried)

    # -- health from the master -------------------------------------------

    def set_healthy(self, address, healthy):
        """
        Record the master's active health check verdict for the server at
        C{address}.

        @return: whether C{address} is a server of this upstream.
        """
        state = self._servers.get(address)
        if state is None:
            return False
        healthy = bool(healthy)
        if state.healthy != healthy:
            state.healthy = healthy
            _log.debug(
                "upstream {upstream} server {address} is now {verdict} (active health check)",
                upstream=self.spec.name, address=address,
                verdict="healthy" if healthy else "unhealthy", healthy=healthy, event="health")
        return True

    def adopt(self, previous):
        """
        Carry health verdicts, ejections and counters over from C{previous},
        the state of the same upstream under the configuration being
        replaced, for every server both have. Requests in flight are not
        carried: they end on C{previous}, which counts them down.
        """
        for address, state in self._servers.items():
            old = previous._servers.get(address)
            if old is None:
                continue
            state.healthy = old.healthy
            state.ejected_until = old.ejected_until
            state.probation = old.probation
            state.recent_failures = deque(old.recent_failures)
            state.requests = old.requests
            state.failures = old.failures
            state.ejections = old.ejections

    # -- reporting ---------------------------------------------------------

    def retry_after(self):
        """
        Seconds (a whole number, at least 1) a client told "no server is
        usable" should wait: until the first passive ejection ends, or the
        health check interval when servers are unhealthy.
        """
        now = self._clock.seconds()
        waits = [s.ejected_until - now for s in self._servers.values()
                 if s.ejected_until is not None and s.ejected_until > now and not s.server.down]
        if waits:
            wait = min(waits)
        elif self.spec.health is not None:
            wait = self.spec.health.interval * self.spec.health.rise
        else:
            wait = 1
        return max(1, int(-(-wait // 1)))

    def snapshot(self):
        """
        One dict per server, in configuration order, for the admin /status:
        C{address}, C{weight}, C{backup}, C{down}, C{healthy} (active
        checks), C{ejected} (passively, now), C{ejected_for} (seconds left),
        C{active}, C{requests}, C{failures}, C{ejections}.
        """
        now = self._clock.seconds()
        rows = []
        for state in self._servers.values():
            ejected = state.ejected_until is not None and now < state.ejected_until
            rows.append({
                "address": state.server.address,
                "weight": state.server.weight,
                "backup": state.server.backup,
                "down": state.server.down,
                "healthy": state.healthy,
                "ejected": ejected,
                "ejected_for": (state.ejected_until - now) if ejected else 0.0,
                "active": state.active,
                "requests": state.requests,
                "failures": state.failures,
                "ejections": state.ejections,
            })
        return rows
