"""
The services a worker's tree is made of (see L{gatelayer.process.worker}):
each holds one kind of long-lived thing the gateway uses and closes it when
the worker stops, after everything that uses it has stopped.

What each holds is built by the worker's C{prepare()} (the master sends the
initial health verdicts and certificates between the build and the start),
so starting them does little: the ports adopt their sockets and the
heartbeat begins.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatelayer.l4.listener import L4Listener, reconfigure_listeners
from gatelayer.ratelimit.registry import StoreRegistry
from gatelayer.service import ReconfigurableService

__all__ = [
    "AccessLogService", "GatewayService", "HeartbeatService", "PortsService", "StoresService",
    "TracingService", "UpstreamsService",
]


class StoresService(ReconfigurableService):
    """
    C{stores}: the worker's L{StoreRegistry}, which the rate-limit filters
    share their stores through (one Redis connection pool per address);
    every store is closed when the worker has stopped serving.
    """

    def __init__(self, registry=None):
        self.name = "stores"
        self.registry = registry if registry is not None else StoreRegistry()

    def stopService(self):
        """
        Close every store handed out.
        """
        super().stopService()
        return self.registry.close()


class AccessLogService(ReconfigurableService):
    """
    C{access_log}: the L{gatelayer.observe.accesslog.AccessLog} (or L{None}
    without C{[gateway] access_log}), closed once no request is left.
    """

    def __init__(self):
        self.name = "access_log"
        self.access_log = None

    def reopen(self):
        """
        Open the log file again (L{gatelayer.observe.accesslog.AccessLog.reopen}).
        """
        if self.access_log is not None:
            self.access_log.reopen()

    def stopService(self):
        """
        Close the log file.
        """
        super().stopService()
        if self.access_log is not None:
            self.access_log.close()


class TracingService(ReconfigurableService):
    """
    C{tracing}: the L{gatelayer.observe.otel.SpanRecorder} (or L{None}
    without span export); at stop, once no request is left, what is queued
    is exported (bounded by the exporter's timeout) and the exporter stops.
    """

    def __init__(self):
        self.name = "tracing"
        self.spans = None

    def stopService(self):
        """
        Flush and stop the exporter; fires when done or timed out.
        """
        super().stopService()
        if self.spans is not None:
            return self.spans.stop()
        return succeed(None)


class UpstreamsService(ReconfigurableService):
    """
    C{upstreams}: one L{gatelayer.http.proxy.UpstreamTerminal} (pool and
    balancing state) per upstream; the pools' kept-alive connections are
    closed at stop.
    """

    def __init__(self):
        self.name = "upstreams"
        self.terminals = {}

    def stopService(self):
        """
        Close every pool (idle connections; none is in use any more).
        """
        super().stopService()
        closing = [terminal.pool.close() for terminal in self.terminals.values()]
        del closing


class GatewayService(ReconfigurableService):
    """
    C{gateway}: the L{gatelayer.http.gateway.Gateway} (routes and filters);
    stopping it stops what its filters run in the background (JWKS refresh
    timers).
    """

    def __init__(self):
        self.name = "gateway"
        self.gateway = None

    def stopService(self):
        """
        Stop the filters' timers.
        """
        super().stopService()
        if self.gateway is not None:
            self.gateway.stop()


class PortsService(ReconfigurableService):
    """
    C{ports}: the adopted listening ports and their
    L{gatelayer.process.limits.ConnectionLimits}. Stopping is the drain:
    stop accepting, let in-flight requests finish within C{drain_timeout}
    (then cut the connections still open), and fire.

    @ivar drain_timeout: seconds the next stop waits at most.
    """

    log = Logger()

    def __init__(self, reactor, slot, limits, listen, drain_timeout):
        """
        @param limits: the worker's L{gatelayer.process.limits.ConnectionLimits}.
        @param listen: returns C{[(port, factory)]}: adopts every socket,
            each port with its L{gatelayer.http.factory.GatewayHTTPFactory}.
        """
        self.name = "ports"
        self.reactor = reactor
        self.slot = slot
        self.limits = limits
        self._listen = listen
        self.drain_timeout = drain_timeout
        self.gateway = None
        self.ports = []
        self.factories = []

    def startService(self):
        """
        Adopt every socket and start accepting.
        """
        super().startService()
        for port, factory in self._listen():
            self.ports.append(port)
            self.factories.append(factory)
            self.limits.add_port(port)

    def stopService(self):
        """
        Drain; fires when no connection is left (or the deadline cut them).
        """
        super().stopService()
        self.limits.forget_ports()
        stopping = [port.stopListening() for port in self.ports]
        del stopping
        for factory in self.factories:
            factory.drain()
        finished = Deferred()
        deadline = self.reactor.callLater(self.drain_timeout, self._deadline, finished)
        gateway = self.gateway

        def check_idle():
            if gateway is None or gateway.connections == 0:
                # Relayed (layer 4) connections are waited for as well.
                for factory in self.factories:
                    if isinstance(factory, L4Listener) and not factory.when_idle(check_idle):
                        return
                if not finished.called:
                    finished.callback(None)
            else:
                gateway.idle_callbacks.append(check_idle)
        check_idle()

        def done(_):
            if deadline.active():
                deadline.cancel()
            self.limits.stop()
        return finished.addCallback(done)

    def reconfigure_l4(self, config, states):
        """
        Switch the layer 4 listeners to C{config} and the upstream C{states}
        for new connections (open ones keep what they started with); see
        L{gatelayer.l4.listener.reconfigure_listeners}.
        """
        return reconfigure_listeners(self.factories, config, states)

    def _deadline(self, finished):
        count = 0
        for factory in self.factories:
            for channel in list(factory.channels):
                count += 1
                channel.transport.abortConnection()
        self.log.warn("worker {slot}: drain timeout, {count} connection(s) cut", slot=self.slot,
                      count=count)
        if not finished.called:
            finished.callback(None)


class HeartbeatService(ReconfigurableService):
    """
    C{heartbeat}: calls C{beat} every C{interval} seconds from start (the
    first at once) until stop.
    """

    def __init__(self, reactor, interval, beat):
        self.name = "heartbeat"
        self.reactor = reactor
        self.interval = interval
        self._beat = beat
        self._loop = None

    def startService(self):
        """
        Start beating.
        """
        super().startService()
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self):
        """
        Stop beating.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return succeed(None)
