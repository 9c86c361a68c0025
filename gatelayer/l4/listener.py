"""
A C{tcp} or C{tls_passthrough} listener in a worker: L{L4Listener}, the
factory a worker adopts the listener's socket with (instead of the HTTP
channel's), with its counters and the one log line per closed connection.

What a connection needs from the configuration is compiled once into
L{L4Settings}; each L{gatelayer.l4.relay.ClientRelay} keeps the settings it
was accepted with, and L{L4Listener.reconfigure} swaps them for new
connections only.
"""

import ipaddress
import json

from attrs import frozen
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from gatelayer.l4.clienthello import MAX_CLIENT_HELLO, SniTable
from gatelayer.l4.relay import ClientRelay

__all__ = ["L4Listener", "L4Settings", "OUTCOMES", "heartbeat_counters", "l4_heartbeat", "reconfigure_listeners"]

OUTCOMES = ("relayed", "no_server", "full", "connect_failed", "no_route", "bad_header", "bad_hello",
            "header_timeout", "untrusted", "idle_timeout", "closed_early")
"""How a relayed connection can end (see L{ClientRelay.outcome})."""


@frozen
class L4Settings:
    """
    One listener's layer 4 settings, compiled from the configuration.

    @ivar upstream: the upstream of a C{tcp} listener (L{None} for
        pass-through).
    @ivar sni: the L{SniTable} of a pass-through listener (L{None} for tcp).
    @ivar trusted: the networks PROXY headers are accepted from.
    """

    name: str
    upstream: str = None
    sni: object = None
    accept_proxy: bool = False
    trusted: tuple = ()
    header_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_client_hello: int = MAX_CLIENT_HELLO

    @classmethod
    def from_config(cls, listener, gateway):
        """
        The settings of C{listener} (a L{gatelayer.config.model.ListenerSpec})
        under C{gateway} (its L{gatelayer.config.model.GatewaySpec}).
        """
        return cls(
            name=listener.name,
            upstream=listener.upstream,
            sni=SniTable(listener.sni_routes) if listener.mode == "tls_passthrough" else None,
            accept_proxy=listener.accept_proxy,
            trusted=tuple(gateway.trusted_proxies),
            header_timeout=listener.header_timeout,
            idle_timeout=listener.l4_idle_timeout,
        )

    def trusts(self, host):
        """
        Whether a PROXY header from C{host} is taken.
        """
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted if network.version == address.version)


def _address(pair):
    """
    C{host:port}, C{[host]:port} for IPv6, as servers are named.
    """
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class L4Listener(Factory):
    """
    The factory of one C{tcp}/C{tls_passthrough} listener: builds a
    L{ClientRelay} per connection, counts connections and outcomes, and logs
    a line per closed connection.

    @ivar states: upstream name to L{gatelayer.upstream.state.UpstreamState}
        (the worker's, shared with its HTTP routes and updated by the
        master's health checks).
    @ivar channels: the open connections (cut at a drain's deadline).
    @ivar counters: C{accepted}, C{active}, C{bytes_in}, C{bytes_out} and one
        count per outcome.
    """

    log = Logger(namespace="gatelayer.l4")
    noisy = False

    def __init__(self, reactor, settings, states, limits=None):
        self.reactor = reactor
        self.settings = settings
        self.states = states
        self.limits = limits
        self.channels = set()
        self._idle_callbacks = []
        self.counters = dict.fromkeys(("accepted", "active", "bytes_in", "bytes_out") + OUTCOMES, 0)

    def buildProtocol(self, addr):
        """
        A relay with the current settings.
        """
        relay = ClientRelay(self, self.settings)
        relay.factory = self
        return relay

    def reconfigure(self, settings, states):
        """
        Use C{settings} and C{states} for connections accepted from now on;
        open ones keep what they started with.
        """
        self.settings = settings
        self.states = states

    def opened(self, relay):
        """
        Count a new connection.
        """
        self.channels.add(relay)
        self.counters["accepted"] += 1
        self.counters["active"] += 1
        if self.limits is not None:
            self.limits.opened(relay)

    def closed(self, relay):
        """
        Forget a closed client connection.
        """
        if relay in self.channels:
            self.channels.discard(relay)
            self.counters["active"] -= 1
            if self.limits is not None:
                self.limits.closed(relay)
            if not self.channels and self._idle_callbacks:
                callbacks, self._idle_callbacks = self._idle_callbacks, []
                for callback in callbacks:
                    callback()

    def when_idle(self, callback):
        """
        Whether no connection is open; if one is, C{callback} is called
        (once) when the last one closes.
        """
        if not self.channels:
            return True
        self._idle_callbacks.append(callback)
        return False

    def finished(self, relay):
        """
        Both sides of C{relay} are closed: count its outcome and bytes, and
        log the connection's line.
        """
        counters = self.counters
        counters[relay.outcome] += 1
        counters["bytes_in"] += relay.bytes_in
        counters["bytes_out"] += relay.bytes_out
        client = relay.client
        server = relay.server.address if relay.server is not None else "-"
        self.log.info(
            "l4 {listener} {client} -> {server} {outcome} sent={bytes_in} received={bytes_out} "
            "{duration:.3f}s{extra}",
            listener=self.settings.name, client=_address(client), server=server,
            outcome=relay.outcome, bytes_in=relay.bytes_in, bytes_out=relay.bytes_out,
            duration=self.reactor.seconds() - relay.started,
            sni=relay.server_name, peer=_address(relay.peer),
            extra=(f" sni={relay.server_name}" if relay.server_name else "")
            + (f" ({relay.detail})" if relay.detail else ""),
            event="l4_connection")

    def drain(self):
        """
        A draining worker stops accepting; relayed connections carry on
        until they end or the drain deadline cuts them.
        """

    def snapshot(self):
        """
        The counters, for the heartbeat and C{/status}.
        """
        return dict(self.counters)


def l4_heartbeat(factories):
    """
    The heartbeat's C{l4} argument for a worker's listener C{factories}:
    C{{"l4": JSON of {listener: counters}}}, or nothing without layer 4
    listeners.
    """
    counters = {f.settings.name: f.snapshot() for f in factories if isinstance(f, L4Listener)}
    return {"l4": json.dumps(counters)} if counters else {}


def heartbeat_counters(text):
    """
    The per-listener counters of a heartbeat's C{l4} argument (see
    L{l4_heartbeat}), or an empty dict when it has none or they do not
    parse.
    """
    if not text:
        return {}
    try:
        counters = json.loads(text)
    except ValueError:
        return {}
    return counters if isinstance(counters, dict) else {}


def reconfigure_listeners(factories, config, states):
    """
    The reconfigure point of a worker's layer 4 listeners: give each
    L{L4Listener} among C{factories} the settings of its listener in
    C{config} (a new, validated L{gatelayer.config.model.GateConfig}) and
    the upstream C{states} (name to L{gatelayer.upstream.state.UpstreamState})
    to use for new connections. Listeners the new configuration drops, or
    turns into another mode, are left as they are (their sockets belong to
    the master's rebinding).

    @return: the names of the listeners reconfigured.
    """
    specs = {listener.name: listener for listener in config.listeners}
    done = []
    for factory in factories:
        if not isinstance(factory, L4Listener):
            continue
        spec = specs.get(factory.settings.name)
        if spec is None or spec.mode == "http":
            continue
        if (spec.mode == "tls_passthrough") != (factory.settings.sni is not None):
            continue
        factory.reconfigure(L4Settings.from_config(spec, config.gateway), states)
        done.append(spec.name)
    return done
