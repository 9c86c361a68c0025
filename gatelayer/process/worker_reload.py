"""
A worker taking a new configuration while it serves
(L{gatelayer.process.reconfigure} carries it from the master).

L{WorkerReload.prepare} builds the new gateway beside the running one: a
route table, filters and terminals of its own, and the upstreams carried
over (L{carry_upstreams}). L{WorkerReload.commit} points every listening
port's factory at it: requests that arrive from then on use it, requests
already routed finish on the gateway they started on (their
C{routing.gateway}), and the old gateway is retired once its last request
ended: its filters' timers stop and the pools no longer used close.
"""

from twisted.logger import Logger

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.http.gateway import Gateway
from gatelayer.http.proxy import UpstreamTerminal

__all__ = ["WorkerReload", "carry_upstreams", "pool_settings"]


def pool_settings(spec):
    """
    What an upstream's connection pool is built from: two specs with the
    same settings can share a pool (and its kept-alive connections).
    """
    return (spec.connect_timeout, spec.read_timeout, spec.keepalive, spec.keepalive_timeout,
            spec.max_connections, spec.max_pending, spec.tls)


def carry_upstreams(old, specs, reactor, tls_creator_for=None, build=None):
    """
    The upstream terminals of a new configuration, from those running.

    An upstream whose spec is unchanged (and plain TCP) keeps its terminal:
    pool, balancer position, health and counters. A changed one gets a new
    balancing state that adopts the verdicts and counters of the servers it
    keeps, and keeps its pool when the pool settings are the same (kept-alive
    connections to the servers that stay are reused). An upstream with
    C{tls = yes} always gets a new pool, so its C{ca} and
    C{client_certificate} files are read again.

    @param old: upstream name -> running L{UpstreamTerminal}.
    @param specs: upstream name -> L{gatelayer.config.model.UpstreamSpec}.
    @param build: builds a new pool for a spec (by default as
        L{gatelayer.process.worker.build_upstreams} does).
    @return: C{(terminals, unused)}: the new mapping, and the pools of
        C{old} no terminal of it uses (to close once idle).
    """
    from gatelayer.upstream.state import UpstreamState
    if build is None:
        def build(spec):
            from gatelayer.process.worker import new_pool
            return new_pool(spec, reactor, tls_creator_for)
    terminals = {}
    for name, spec in specs.items():
        previous = old.get(name)
        if previous is not None and previous.spec == spec and not spec.tls:
            terminals[name] = previous
            continue
        if previous is not None and not spec.tls and pool_settings(previous.spec) == pool_settings(spec):
            pool = previous.pool
        else:
            pool = build(spec)
        state = UpstreamState(spec, reactor)
        if previous is not None:
            state.adopt(previous.state)
        terminals[name] = UpstreamTerminal(spec, pool, state)
    used = {id(terminal.pool) for terminal in terminals.values()}
    unused = [terminal.pool for terminal in old.values() if id(terminal.pool) not in used]
    return terminals, unused


class WorkerReload:
    """
    One worker's configuration switch (see the module docstring).

    @ivar pending: C{(config, gateway, terminals, unused pools)} prepared
        and not yet committed, or L{None}.
    @ivar retiring: old gateways still finishing requests.
    """

    log = Logger()

    def __init__(self, worker, parse=parse_config_text):
        """
        @param worker: the L{gatelayer.process.worker.Worker}.
        """
        self.worker = worker
        self._parse = parse
        self.pending = None
        self.retiring = []

    def prepare(self, text):
        """
        Build the gateway of configuration C{text}; nothing changes for the
        requests being served.

        @return: the problems met (empty: ready to commit).
        """
        worker = self.worker
        self.discard()
        if worker.draining:
            return ["the worker is draining"]
        from gatelayer.process.footprint import reload_problem
        problem = reload_problem(text)
        if problem is not None:
            return [problem]
        try:
            config = self._parse(text, worker.config.path)
        except ConfigError as e:
            return list(e.problems)
        running = {spec.name: spec for spec in worker.config.listeners}
        if {spec.name: spec for spec in config.listeners} != running:
            return ["the listeners changed: they are bound at start only"]
        terminals, unused = carry_upstreams(
            worker.upstreams, config.upstreams, worker.reactor, worker.tls_creator_for)
        try:
            gateway = Gateway(config, worker.reactor, master=worker.master, upstreams=terminals,
                              access_log=worker.access_log.access_log, stores=worker.stores.registry,
                              metrics=worker.metrics, spans=worker.tracing.spans)
        except ConfigError as e:
            self._close_new(terminals, worker.upstreams)
            return list(e.problems)
        self.pending = (config, gateway, terminals, unused)
        return []

    def discard(self):
        """
        Drop a prepared configuration that was not committed.
        """
        if self.pending is None:
            return
        config, gateway, terminals, unused = self.pending
        self.pending = None
        gateway.stop()
        self._close_new(terminals, self.worker.upstreams)

    @staticmethod
    def _close_new(terminals, running):
        kept = {id(terminal.pool) for terminal in running.values()}
        for terminal in terminals.values():
            if id(terminal.pool) not in kept:
                terminal.pool.close()

    def incoming(self):
        """
        The gateway the master's shared state goes to: the prepared one
        while a switch is under way, else the running one.
        """
        return self.pending[1] if self.pending is not None else self.worker.gateway

    def incoming_states(self):
        """
        Upstream name -> L{gatelayer.upstream.state.UpstreamState} of
        L{incoming}'s upstreams (health verdicts are set on them).
        """
        gateway = self.incoming()
        return {name: terminal.state for name, terminal in gateway.upstreams.items()}

    def commit(self):
        """
        Switch new requests to the prepared gateway; retire the old one
        once its last request ended.
        """
        config, gateway, terminals, unused = self.pending
        self.pending = None
        worker = self.worker
        old = worker.gateway
        # The connection counters follow the factories (a connection is
        # counted when it opens and when it closes on whatever gateway its
        # factory has then); the request counters stay with the gateway a
        # request was routed on.
        gateway.connections = old.connections
        gateway.requests = old.requests
        gateway.idle_callbacks, old.idle_callbacks = old.idle_callbacks, []
        for factory in worker.factories:
            factory.gateway = gateway
        worker.gateway_service.gateway = worker.ports_service.gateway = gateway
        worker.upstream_pools.terminals = terminals
        worker.config = config
        # Layer 4 listeners take the new upstreams for new connections.
        worker.ports_service.reconfigure_l4(
            config, {name: terminal.state for name, terminal in terminals.items()})
        self.retiring.append(old)
        self.log.info("worker {slot}: configuration switched ({routes} route(s), {upstreams} upstream(s))",
                      slot=worker.slot, routes=len(config.routes), upstreams=len(config.upstreams))
        self._retire_when_idle(old, unused)

    def _retire_when_idle(self, old, unused):
        if old.active > 0:
            old.idle_callbacks.append(lambda: self._retire_when_idle(old, unused))
            return
        old.stop()
        for pool in unused:
            pool.close()
        if old in self.retiring:
            self.retiring.remove(old)

    def active(self):
        """
        Requests still in flight on retiring gateways.
        """
        return sum(gateway.active for gateway in self.retiring)
