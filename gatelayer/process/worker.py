"""
A worker process: adopts the listening sockets the master bound, serves HTTP
through the gateway, reports to the master and drains on request.

L{Worker} is a tree of named services (L{gatelayer.process.worker_services}),
started in this order and stopped in the reverse one, each once the one
after it has stopped:

 - C{stores}: the rate-limit store registry the filters share;
 - C{access_log};
 - C{tracing}: span export, if configured (flushed at stop);
 - C{upstreams}: the upstream pools and balancing states;
 - C{gateway}: routes and filters (with their background timers);
 - C{ports}: the adopted listening ports; stopping them is the drain;
 - C{heartbeat}: the reports to the master.
"""

import os
import socket

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gatelayer.http.factory import GatewayHTTPFactory
from gatelayer.http.gateway import Gateway
from gatelayer.http.proxy import UpstreamTerminal
from gatelayer.l4.listener import L4Listener, L4Settings, l4_heartbeat
from gatelayer.transports import adopt_stream_port
from gatelayer.observe.accesslog import AccessLog
from gatelayer.process.control import Drain, Heartbeat, heartbeat_interval
from gatelayer.process.limits import ConnectionLimits
from gatelayer.process.worker_metrics import TlsHandshakeCounter, worker_metrics
from gatelayer.process.worker_reload import WorkerReload
from gatelayer.process.worker_services import (
    AccessLogService, GatewayService, HeartbeatService, PortsService, StoresService, TracingService,
    UpstreamsService,
)
from gatelayer.service import OrderedMultiService


def new_pool(spec, reactor, tls_creator_for=None):
    """
    A new L{gatelayer.upstream.pool.UpstreamPool} for the upstream C{spec}.

    @param tls_creator_for: a function of an L{UpstreamSpec} returning the
        C{tls_creator} for its pool (or L{None} for plain TCP).
    """
    from gatelayer.upstream.pool import UpstreamPool

    creator = tls_creator_for(spec) if tls_creator_for is not None and spec.tls else None
    return UpstreamPool(
        reactor, connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout,
        keepalive=spec.keepalive, keepalive_timeout=spec.keepalive_timeout,
        max_connections=spec.max_connections, max_pending=spec.max_pending,
        tls_creator=creator,
    )


def build_upstreams(config, reactor, tls_creator_for=None):
    """
    One L{UpstreamTerminal} (pool + balancing state) per upstream.

    @param tls_creator_for: a function of an L{UpstreamSpec} returning the
        C{tls_creator} for its pool (or L{None} for plain TCP).
    """
    from gatelayer.upstream.state import UpstreamState

    return {name: UpstreamTerminal(spec, new_pool(spec, reactor, tls_creator_for),
                                   UpstreamState(spec, reactor))
            for name, spec in config.upstreams.items()}


class Worker(OrderedMultiService):
    """
    The serving side of one worker process, as a tree of services (see the
    module docstring).

    @ivar slot: the worker's slot number (0..workers-1), stable across
        respawns, which owns one SO_REUSEPORT socket per listener address.
    @ivar limits: the L{ConnectionLimits} shared by all its listeners.
    @ivar open_files: the worker's L{gatelayer.process.rlimits.OpenFilesLimit}
        (reported to the master), or L{None}.
    """

    log = Logger()

    def __init__(self, reactor, config, slot, sockets, master=None, exit=None,
                 tls_wrapper=None, tls_creator_for=None, open_files=None, stores=None):
        """
        @param sockets: a list of C{(listener_spec, fd, family)} to adopt.
        @param master: the L{ControlProtocol} to the master, or L{None}.
        @param exit: called with no argument when the worker is done (the
            entry point stops the reactor).
        @param tls_wrapper: a function C{(listener_spec, factory) -> factory}
            wrapping a TLS listener's factory; required when a listener has
            C{tls}.
        @param open_files: the L{gatelayer.process.rlimits.OpenFilesLimit}
            the entry point set, reported in heartbeats.
        @param stores: the L{gatelayer.ratelimit.registry.StoreRegistry} the
            filters share (a new one by default).
        """
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.slot = slot
        self.sockets = sockets
        self.master = master
        self._exit = exit
        self._tls_wrapper = tls_wrapper
        self._tls_creator_for = tls_creator_for
        self._draining = None
        self._prepared = False
        self.metrics = self.metrics_reporter = None
        self.open_files = open_files
        self.limits = ConnectionLimits(
            reactor, config.gateway.max_connections, config.gateway.max_connections_per_ip)
        self.stores = StoresService(stores)
        self.access_log = AccessLogService()
        self.tracing = TracingService()
        self.upstream_pools = UpstreamsService()
        self.gateway_service = GatewayService()
        self.ports_service = PortsService(reactor, slot, self.limits, self._listen,
                                          config.gateway.drain_timeout)
        self.heartbeat = HeartbeatService(
            reactor, heartbeat_interval(config.gateway.heartbeat_timeout), self.send_heartbeat)
        for child in (self.stores, self.access_log, self.tracing, self.upstream_pools, self.gateway_service,
                      self.ports_service):
            child.setServiceParent(self)
        if master is not None:
            self.heartbeat.setServiceParent(self)
        self.reloads = WorkerReload(self)

    # Views of the children.

    @property
    def gateway(self):
        """
        The L{Gateway}, once prepared.
        """
        return self.gateway_service.gateway

    @property
    def upstreams(self):
        """
        Upstream name to L{UpstreamTerminal}.
        """
        return self.upstream_pools.terminals

    @property
    def tls_creator_for(self):
        """
        The function giving an upstream spec's TLS creator, or L{None}.
        """
        return self._tls_creator_for

    @property
    def draining(self):
        """
        Whether the worker is draining.
        """
        return self._draining is not None

    @property
    def ports(self):
        """
        The adopted listening ports.
        """
        return self.ports_service.ports

    @property
    def factories(self):
        """
        The HTTP factory of each adopted port.
        """
        return self.ports_service.factories

    def prepare(self):
        """
        Build the gateway (upstream pools and states, filters, routes) so
        the master can send the initial health verdicts and certificates
        before the worker accepts anything.
        """
        config = self.config
        self._prepared = True
        self.upstream_pools.terminals = build_upstreams(config, self.reactor, self._tls_creator_for)
        if config.gateway.access_log:
            self.access_log.access_log = AccessLog(
                config.gateway.access_log, self.reactor, format=config.gateway.access_log_format)
        if config.gateway.metrics:
            self.metrics, self.metrics_reporter = worker_metrics(self)
        self.gateway_service.gateway = self.ports_service.gateway = Gateway(
            config, self.reactor, master=self.master, upstreams=self.upstreams,
            access_log=self.access_log.access_log, stores=self.stores.registry, metrics=self.metrics,
            spans=self._span_recorder(config))

    def reopen_logs(self):
        """
        The master's C{ReopenLogs}: reopen the access log file. A file that
        cannot be opened is logged and the old one kept.
        """
        try:
            self.access_log.reopen()
        except OSError as e:
            self.log.error("cannot reopen the access log: {error}", error=str(e))
        return {}

    def _span_recorder(self, config):
        """
        The L{gatelayer.observe.otel.SpanRecorder} of C{[tracing]} (the SDK
        is imported only then), kept by the C{tracing} service; L{None}
        without span export.
        """
        if config.tracing.exporter != "otlp":
            return None
        if self.tracing.spans is None:
            from gatelayer.observe.otel import SpanRecorder
            self.tracing.spans = SpanRecorder(config.tracing, self.reactor)
        return self.tracing.spans

    def upstream_states(self):
        """
        The current upstream name -> L{UpstreamState} mapping.
        """
        return {name: terminal.state for name, terminal in self.upstreams.items()}

    def start(self):
        """
        Start accepting on every adopted socket (L{startService}).
        """
        self.startService()

    def startService(self):
        """
        Start the children in order: the ports accept, the heartbeat begins.
        """
        if not self._prepared:
            self.prepare()
        if self.master is not None:
            self.master.register(Drain, self._drain_command)
        super().startService()
        self.log.info("worker {slot} serving {count} socket(s)", slot=self.slot, count=len(self.ports))

    def _listen(self):
        config = self.config
        adopted = []
        for listener, fd, family in self.sockets:
            if listener.mode != "http":
                factory = L4Listener(self.reactor, L4Settings.from_config(listener, config.gateway),
                                     self.upstream_states(), limits=self.limits)
                port = adopt_stream_port(self.reactor, fd, family, self.limits.wrap(factory))
                os.close(fd)
                adopted.append((port, factory))
                continue
            scheme = "https" if listener.tls else "http"
            extra = ()
            if listener.tls:
                hsts = config.tls[listener.tls].hsts
                if hsts:
                    extra = ((b"strict-transport-security", hsts.encode("ascii")),)
            factory = GatewayHTTPFactory(self.gateway, listener, self.reactor, scheme, extra,
                                         limits=self.limits)
            wrapped = factory
            if listener.tls:
                # Only a worker with TLS listeners loads OpenSSL (see footprint.py).
                from gatelayer.tls.policy import ALPN_HTTP1, ALPN_PROTOCOLS
                wrapped = self._tls_wrapper(listener, factory)
                wrapped.alpn_protocols = ALPN_PROTOCOLS if listener.http2 else ALPN_HTTP1
                if self.metrics is not None:
                    wrapped.on_handshake = TlsHandshakeCounter(self.metrics, listener.name)
            # The limits decide before any protocol (TLS included) is built.
            port = adopt_stream_port(self.reactor, fd, family, self.limits.wrap(wrapped))
            os.close(fd)
            adopted.append((port, factory))
        return adopted

    def send_heartbeat(self):
        """
        Tell the master this worker is alive, with its counters, and send
        it the metrics snapshot.
        """
        if self.master is None or not self.master.connected:
            return
        gateway = self.gateway
        limits = self.limits
        extra = {}
        if self.open_files is not None and self.open_files.soft is not None:
            extra["open_files"] = self.open_files.soft
        self.master.callRemote(
            Heartbeat, pid=os.getpid(), connections=gateway.connections,
            requests=gateway.requests, active=gateway.active + self.reloads.active(), paused=limits.paused,
            refused_full=limits.refused_full, refused_per_ip=limits.refused_per_ip,
            accept_errors=limits.accept_errors, unanswered=limits.unanswered, **extra,
            **l4_heartbeat(self.factories))
        if self.metrics_reporter is not None:
            self.metrics_reporter.send()

    def _drain_command(self, timeout):
        self.drain(timeout)
        return {}

    def stopService(self):
        """
        Drain with the config's C{drain_timeout} (L{drain}).
        """
        return self.drain()

    def drain(self, timeout=None):
        """
        Stop accepting, let in-flight requests finish (at most C{timeout}
        seconds, default the config's C{drain_timeout}), stop every child
        in reverse order and call C{exit}. Returns a Deferred firing when
        done; calling it again returns the same outcome.
        """
        if self._draining is not None:
            done = Deferred()
            self._draining.append(done)
            return done
        self._draining = []
        if timeout is None:
            timeout = self.config.gateway.drain_timeout
        self.log.info("worker {slot} draining ({timeout}s at most)", slot=self.slot, timeout=timeout)
        self.ports_service.drain_timeout = timeout

        def drained(_):
            self.log.info("worker {slot} drained", slot=self.slot)
            waiting, self._draining = self._draining, []
            for d in waiting:
                d.callback(None)
            if self._exit is not None:
                self._exit()
        return super().stopService().addCallback(drained)


def family_of(name):
    """
    The socket family for C{"inet"} / C{"inet6"}.
    """
    return socket.AF_INET6 if name == "inet6" else socket.AF_INET


__all__ = ["Worker", "build_upstreams", "family_of", "new_pool"]
