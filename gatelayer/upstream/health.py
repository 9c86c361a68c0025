"""
Active health checks, run by the master once per server (not once per
worker); the master pushes each verdict change to every worker.

Every C{health_interval} the monitor sends C{GET health_check} to each server
and reads only the status line. A status listed in C{health_status} is a
pass; anything else (another status, a refused connection, no status line
within C{health_timeout}) is a failure. C{health_rise} passes in a row make
an unhealthy server healthy again, C{health_fall} failures in a row make a
healthy one unhealthy. Servers start healthy, so a fresh gateway serves at
once and a dead server is found within C{fall} checks.

The probe is a tiny HTTP/1.1 client of its own: it writes one request with
C{Connection: close}, reads up to the status line, then drops the
connection. It never reads a body, so a health endpoint that streams cannot
tie up the master. The status line is held to the upstream client's grammar
(L{gatelayer.http1.parse_status_line}): a server whose responses the proxy
would refuse does not pass.
"""

import ipaddress

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatelayer.http1 import BadResponse, parse_status_line
from gatelayer.upstream.health_tcp import CONNECTED, local_header, probe_connect

__all__ = ["HealthMonitor", "ProbeFailed", "probe_status", "tcp_probe_endpoint"]

_log = Logger(namespace="gatelayer.upstream.health")

_MAX_STATUS_LINE = 8192


class ProbeFailed(Exception):
    """
    A health probe got no usable status line; C{str()} says why, for logs.
    """


class _ProbeProtocol(Protocol):
    """
    Send one request, fire C{result} with the status code of the answer.
    """

    def __init__(self, request, result):
        self._request = request
        self._result = result
        self._buffer = b""

    def connectionMade(self):
        self.transport.write(self._request)

    def dataReceived(self, data):
        if self._result.called:
            return
        # The status line is read by the upstream client's grammar: a
        # server whose responses the proxy would refuse is not healthy.
        self._buffer += data
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > _MAX_STATUS_LINE:
                self._finish(ProbeFailed("no HTTP status line in the first 8 KB"))
            return
        line = self._buffer[:end - 1] if self._buffer[end - 1:end] == b"\r" else None
        try:
            if line is None:
                raise BadResponse("status line not ended by CRLF")
            status = parse_status_line(line)[1]
        except BadResponse as e:
            self._finish(ProbeFailed("answered something that is not HTTP/1.x (%s)" % (e,)))
            return
        self._finish(status)

    def _finish(self, outcome):
        if not self._result.called:
            if isinstance(outcome, Exception):
                self._result.errback(outcome)
            else:
                self._result.callback(outcome)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if not self._result.called:
            self._result.errback(ProbeFailed("closed the connection before a status line"))


class _ProbeFactory(Factory):
    noisy = False

    def __init__(self, request, result):
        self._request = request
        self._result = result
        self.protocol_instance = None

    def buildProtocol(self, addr):
        self.protocol_instance = _ProbeProtocol(self._request, self._result)
        return self.protocol_instance


def _describe(failure):
    if failure.check(ProbeFailed):
        return str(failure.value)
    reason = failure.getErrorMessage()
    return f"{failure.type.__name__}: {reason}" if reason else failure.type.__name__


def probe_status(clock, endpoint, host, path, timeout):
    """
    Send C{GET path} with header C{Host: host} through C{endpoint} (an
    L{twisted.internet.interfaces.IStreamClientEndpoint}) and return a
    Deferred firing with the response's status code, or failing with
    L{ProbeFailed} (a timeout after C{timeout} seconds included) or the
    connection error. Cancelling the Deferred drops the attempt.
    """
    factory = None
    connecting = None

    def cancel(result):
        abort()

    result = Deferred(cancel)

    def abort():
        if factory is not None and factory.protocol_instance is not None:
            transport = factory.protocol_instance.transport
            if transport is not None:
                transport.abortConnection()
        if connecting is not None and not connecting.called:
            connecting.cancel()

    def timed_out():
        if not result.called:
            result.errback(ProbeFailed(f"no status line within {timeout:g}s"))
            abort()

    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: gatelayer-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    factory = _ProbeFactory(request, result)
    timer = clock.callLater(timeout, timed_out)

    def stop_timer(outcome):
        if timer.active():
            timer.cancel()
        return outcome

    result.addBoth(stop_timer)

    def connect_failed(failure):
        if not result.called:
            result.errback(failure)

    connecting = endpoint.connect(factory)
    connecting.addErrback(connect_failed)
    return result


def tcp_probe_endpoint(reactor, upstream, server, tls_creator=None):
    """
    The endpoint a probe of C{server} (of C{upstream}, an
    L{gatelayer.config.model.UpstreamSpec}) connects through: TCP to the
    server, wrapped in TLS when the upstream uses TLS.

    @param tls_creator: an C{IOpenSSLClientConnectionCreator} to use for a
        TLS upstream (the one the proxy client uses, so checks verify the
        same way); required when C{upstream.tls} is set.
    """
    timeout = upstream.health.timeout if upstream.health is not None else 1.0
    try:
        is_v6 = ipaddress.ip_address(server.host).version == 6
    except ValueError:
        is_v6 = False
    endpoint_class = TCP6ClientEndpoint if is_v6 else TCP4ClientEndpoint
    endpoint = endpoint_class(reactor, server.host, server.port, timeout=timeout)
    if upstream.tls:
        if tls_creator is None:
            raise ValueError(
                f"[upstream:{upstream.name}] uses tls: health checks need its TLS client settings")
        endpoint = wrapClientTLS(tls_creator, endpoint)
    return endpoint


class _Checker:
    """
    The running check of one server and its rise/fall counters.
    """

    __slots__ = ("upstream", "server", "healthy", "passes", "fails", "last", "checks",
                 "loop", "stopped", "probe")

    def __init__(self, upstream, server, healthy=True):
        self.upstream = upstream
        self.server = server
        self.healthy = healthy
        self.passes = 0
        self.fails = 0
        self.last = None
        self.checks = 0
        self.loop = None
        self.stopped = None
        self.probe = None


class HealthMonitor(Service):
    """
    Runs the active health checks of every upstream that has a
    C{health_check}, in the master, and reports each change of a server's
    verdict to C{on_change(upstream_name, address, healthy)}.

    @param reactor: provides C{IReactorTime} and C{IReactorTCP} (probes
        connect through it; the master's reactor).
    @param upstreams: a dict of upstream name to
        L{gatelayer.config.model.UpstreamSpec}.
    @param on_change: called with (upstream name, server address, healthy)
        after each transition; the master pushes it to the workers.
    @param endpoint_factory: C{(upstream, server) -> IStreamClientEndpoint};
        by default L{tcp_probe_endpoint} on C{reactor} (which needs
        C{tls_creators} for TLS upstreams).
    @param tls_creators: for TLS upstreams, a dict of upstream name to a
        function taking a server and returning the
        C{IOpenSSLClientConnectionCreator} to probe it with (what
        L{gatelayer.tls.upstream.upstream_tls_creator} returns, so checks
        verify exactly like the proxy client).
    """

    def __init__(self, reactor, upstreams, on_change, endpoint_factory=None, tls_creators=None):
        self._reactor = reactor
        self._on_change = on_change
        creators = self._tls_creators = dict(tls_creators or {})
        if endpoint_factory is None:
            def endpoint_factory(upstream, server):
                creator_for = creators.get(upstream.name)
                creator = creator_for(server) if creator_for is not None else None
                return tcp_probe_endpoint(reactor, upstream, server, creator)
        self._endpoint_factory = endpoint_factory
        self._checkers = {}
        self._running = False
        self._configure(upstreams)

    def _configure(self, upstreams, previous=None):
        previous = previous or {}
        checkers = {}
        for name, upstream in upstreams.items():
            if upstream.health is None:
                continue
            for server in upstream.servers:
                if server.down:
                    continue
                key = (name, server.address)
                if key in checkers:
                    continue
                old = previous.get(key)
                checker = _Checker(upstream, server, old.healthy if old is not None else True)
                if old is not None and old.upstream.health == upstream.health:
                    checker.passes, checker.fails = old.passes, old.fails
                    checker.last, checker.checks = old.last, old.checks
                checkers[key] = checker
        self._checkers = checkers

    # -- service life -------------------------------------------------------

    def startService(self):
        """
        Start checking (the service's name for L{start}).
        """
        Service.startService(self)
        self.start()

    def stopService(self):
        """
        Stop checking; the Deferred fires once no probe is in flight.
        """
        Service.stopService(self)
        return self.stop()

    def start(self):
        """
        Start one check loop per server; the first check of each runs now.
        """
        if self._running:
            return
        self._running = True
        for checker in self._checkers.values():
            self._start_checker(checker)

    def _start_checker(self, checker):
        loop = LoopingCall(self._check, checker)
        loop.clock = self._reactor
        checker.loop = loop
        checker.stopped = loop.start(checker.upstream.health.interval, now=True)

    def stop(self):
        """
        Stop every check loop and drop probes in flight.

        @return: a Deferred firing when all loops have ended.
        """
        self._running = False
        return self._stop_checkers(self._checkers.values())

    def _stop_checkers(self, checkers):
        waits = []
        for checker in checkers:
            if checker.loop is not None and checker.loop.running:
                checker.loop.stop()
            if checker.probe is not None:
                checker.probe.cancel()
            if checker.stopped is not None:
                waits.append(checker.stopped)
            checker.loop = checker.stopped = None
        if not waits:
            return succeed(None)
        return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def set_tls_creators(self, tls_creators):
        """
        A configuration reload: probe TLS upstreams with C{tls_creators}
        (as for the constructor) from now on.
        """
        self._tls_creators.clear()
        self._tls_creators.update(tls_creators)

    def reconfigure(self, upstreams):
        """
        Switch to a new set of upstreams (a configuration reload): servers
        kept under the same upstream name keep their verdict; checks of
        removed servers stop and new servers start healthy.

        @return: a Deferred firing when the old loops have ended.
        """
        old = self._checkers
        stopped = self._stop_checkers(old.values())
        self._configure(upstreams, old)
        if self._running:
            for checker in self._checkers.values():
                self._start_checker(checker)
        return stopped

    # -- one check ----------------------------------------------------------

    def _check(self, checker):
        health = checker.upstream.health
        server = checker.server
        try:
            endpoint = self._endpoint_factory(checker.upstream, server)
            if health.kind == "tcp":
                probe = probe_connect(self._reactor, endpoint, health.timeout,
                                      local_header(checker.upstream))
            else:
                probe = probe_status(self._reactor, endpoint, health.host or server.address,
                                     health.path, health.timeout)
        except Exception as e:
            _log.failure("upstream {upstream} server {address}: cannot start a health check",
                         upstream=checker.upstream.name, address=server.address)
            self._record(checker, False, f"cannot start a check: {e}")
            return None
        checker.probe = probe

        def done(status):
            checker.probe = None
            if not self._running or checker.loop is None:
                return
            if status == CONNECTED:
                self._record(checker, True, "connected")
            elif status in health.status:
                self._record(checker, True, f"status {status}")
            else:
                self._record(checker, False, f"status {status}")

        def failed(failure):
            checker.probe = None
            if not self._running or checker.loop is None:
                return None
            self._record(checker, False, _describe(failure))
            return None

        probe.addCallbacks(done, failed)
        probe.addErrback(lambda f: _log.failure(
            "health check bookkeeping failed", failure=f, upstream=checker.upstream.name,
            address=server.address))
        return probe

    def _record(self, checker, passed, result):
        checker.checks += 1
        checker.last = result
        health = checker.upstream.health
        if passed:
            checker.passes += 1
            checker.fails = 0
            if checker.healthy or checker.passes < health.rise:
                return
            checker.healthy = True
            count = checker.passes
        else:
            checker.fails += 1
            checker.passes = 0
            if not checker.healthy or checker.fails < health.fall:
                return
            checker.healthy = False
            count = checker.fails
        name, address = checker.upstream.name, checker.server.address
        if checker.healthy:
            _log.info(
                "upstream {upstream} server {address} is healthy again after {count} passing "
                "checks (last: {result})",
                upstream=name, address=address, healthy=True, count=count, result=result,
                event="health_change")
        else:
            _log.warn(
                "upstream {upstream} server {address} is unhealthy after {count} failed "
                "checks (last: {result})",
                upstream=name, address=address, healthy=False, count=count, result=result,
                event="health_change")
        try:
            self._on_change(name, address, checker.healthy)
        except Exception:
            _log.failure("upstream {upstream} server {address}: reporting a health change failed",
                         upstream=name, address=address)

    # -- state ------------------------------------------------------------------

    def states(self):
        """
        The current verdicts: upstream name -> {server address: healthy},
        for every checked server. A newly spawned worker starts from this.
        """
        result = {}
        for (name, address), checker in self._checkers.items():
            result.setdefault(name, {})[address] = checker.healthy
        return result

    def status(self):
        """
        Details for the admin /status: upstream name -> {server address:
        dict with C{healthy}, C{passes} and C{fails} (the current streak),
        C{checks} (the number run) and C{last} (the last result, e.g.
        C{"status 200"} or C{"no status line within 1s"}, or L{None})}.
        """
        result = {}
        for (name, address), checker in self._checkers.items():
            result.setdefault(name, {})[address] = {
                "healthy": checker.healthy,
                "passes": checker.passes,
                "fails": checker.fails,
                "checks": checker.checks,
                "last": checker.last,
            }
        return result
