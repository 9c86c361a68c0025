"""
One relayed layer 4 connection: the accepted client connection
(L{ClientRelay}) and the connection to the upstream server
(L{_UpstreamSide}), joined byte for byte.

Before relaying, the client side may read a PROXY header (C{accept_proxy})
and, on a pass-through listener, the TLS ClientHello (to choose the upstream
by server name); both within C{header_timeout}. Then a server is chosen by
the upstream's balancer, connected (within the upstream's
C{connect_timeout}; a failure is counted by passive health and retried on
another server up to C{retries} times), sent a PROXY header of its own when
the upstream has C{send_proxy}, sent what the client already sent, and the
two transports are registered as each other's producers: when one side's
write buffer is full, reading from the other stops until it drains. A FIN
from one side is passed on to the other with C{loseWriteConnection} while
the other direction carries on. A connection with no byte either way for
the listener's C{idle_timeout} is closed.
"""

from twisted.internet.error import NotConnectingError, TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import implementer

from gatelayer.l4.clienthello import ClientHelloError, ClientHelloReader
from gatelayer.l4.proxyproto import ProxyHeaderError, ProxyHeaderReader, encode_v1, encode_v2
from gatelayer.transports import connect_tcp
from gatelayer.upstream.state import log_server_failure

__all__ = ["ClientRelay"]


@implementer(IHalfCloseableProtocol)
class _UpstreamSide(Protocol):
    """
    The connection to the upstream server; everything it sees goes to its
    L{ClientRelay}.
    """

    read_closed = False
    write_closed = False

    def __init__(self, relay, server):
        self.relay = relay
        self.server = server

    def connectionMade(self):
        self.relay.upstream_connected(self)

    def dataReceived(self, data):
        relay = self.relay
        relay.bytes_out += len(data)
        relay.last_activity = relay.clock.seconds()
        relay.transport.write(data)

    def readConnectionLost(self):
        self.read_closed = True
        self.relay.upstream_finished_sending()

    def writeConnectionLost(self):
        self.write_closed = True
        if self.read_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.relay.upstream_lost(self)


class _UpstreamConnector(ClientFactory):
    noisy = False

    def __init__(self, relay, server):
        self.relay = relay
        self.server = server

    def buildProtocol(self, addr):
        return _UpstreamSide(self.relay, self.server)

    def clientConnectionFailed(self, connector, reason):
        self.relay.connect_failed(self.server, reason)


@implementer(IHalfCloseableProtocol)
class ClientRelay(Protocol):
    """
    An accepted client connection of a C{tcp} or C{tls_passthrough}
    listener, relayed to an upstream server.

    It keeps the L{gatelayer.l4.listener.L4Settings} it was accepted
    with for its whole life, so a new configuration only affects new
    connections.

    @ivar outcome: how the connection ended, for the log line and the
        counters: C{relayed}, C{no_server}, C{full}, C{connect_failed},
        C{no_route}, C{bad_header}, C{bad_hello}, C{header_timeout},
        C{untrusted}, C{idle_timeout} or C{closed_early}.
    """

    upstream = None
    server = None
    server_name = None
    outcome = None
    read_closed = False
    write_closed = False
    upstream_lost_already = False
    client_lost = False
    _connector = None
    _timer = None
    _finished = False

    def __init__(self, listener, settings):
        """
        @param listener: the L{gatelayer.l4.listener.L4Listener} (counters,
            log, clock, the reactor to connect with).
        @param settings: its L{gatelayer.l4.listener.L4Settings}.
        """
        self.listener = listener
        self.settings = settings
        # The upstream states of the configuration it was accepted under.
        self._states = listener.states
        self.clock = listener.reactor
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_activity = 0.0
        self._pending = []
        self._tried = []
        self._proxy_reader = None
        self._hello_reader = None

    # -- the client connection ------------------------------------------------

    def connectionMade(self):
        """
        Count it, then read the PROXY header, the ClientHello, or connect
        upstream at once.
        """
        self.started = self.clock.seconds()
        peer = self.transport.getPeer()
        self.peer = (getattr(peer, "host", "?"), getattr(peer, "port", 0))
        self.client = self.peer
        self.listener.opened(self)
        # A relay must not add Nagle's delay to what a sender wrote
        # without it: small writes go out at once on both sides.
        self.transport.setTcpNoDelay(True)
        settings = self.settings
        if settings.accept_proxy:
            if not settings.trusts(self.peer[0]):
                self.close("untrusted")
                return
            self._proxy_reader = ProxyHeaderReader()
        elif settings.sni is not None:
            self._hello_reader = ClientHelloReader(settings.max_client_hello)
        else:
            self._connect_upstream(settings.upstream)
            return
        self._timer = self.clock.callLater(settings.header_timeout, self._header_timeout)

    def dataReceived(self, data):
        """
        Relay C{data}, or read it as the PROXY header or ClientHello.
        """
        upstream = self.upstream
        if upstream is not None:
            self.bytes_in += len(data)
            self.last_activity = self.clock.seconds()
            upstream.transport.write(data)
            return
        if self.outcome is not None:
            return
        if self._proxy_reader is not None:
            try:
                parsed = self._proxy_reader.feed(data)
            except ProxyHeaderError as e:
                self.close("bad_header", str(e))
                return
            if parsed is None:
                return
            header, data = parsed
            self._proxy_reader = None
            if header.addresses is not None:
                self.client = header.addresses[0]
                self.proxied_destination = header.addresses[1]
            if self.settings.sni is not None:
                self._hello_reader = ClientHelloReader(self.settings.max_client_hello)
            else:
                self._stop_timer()
                self._connect_upstream(self.settings.upstream, data)
                return
            if not data:
                return
        if self._hello_reader is not None:
            try:
                found = self._hello_reader.feed(data)
            except ClientHelloError as e:
                self.close("bad_hello", str(e))
                return
            if found is None:
                return
            self.server_name, data = found
            self._hello_reader = None
            self._stop_timer()
            upstream_name = self.settings.sni.lookup(self.server_name)
            if upstream_name is None:
                self.close("no_route")
                return
            self._connect_upstream(upstream_name, data)
            return
        self.bytes_in += len(data)
        self._pending.append(data)

    def readConnectionLost(self):
        """
        The client sent FIN: pass it on once (or as soon as) the upstream
        is connected; before that it ends the connection.
        """
        self.read_closed = True
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.unregisterProducer()
            upstream.transport.loseWriteConnection()
        elif self._upstream_name is None:
            self.close("closed_early")

    def writeConnectionLost(self):
        """
        Our FIN to the client went out; close once both directions are done.
        """
        self.write_closed = True
        if self.read_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        """
        The client connection is gone: close the upstream side (after what
        it still has to send), stop the timers, account and log.
        """
        self.client_lost = True
        self._stop_timer()
        if self._connector is not None:
            try:
                self._connector.stopConnecting()
            except NotConnectingError:
                pass
        upstream = self.upstream
        if upstream is not None and not self.upstream_lost_already:
            upstream.transport.unregisterProducer()
            upstream.transport.loseConnection()
        self.listener.closed(self)
        if upstream is None or self.upstream_lost_already:
            self._finish()

    def close(self, outcome, detail=None):
        """
        End the connection with C{outcome} (counted and logged) without
        relaying anything (more).
        """
        if self.outcome is None:
            self.outcome = outcome
        self.detail = detail
        self._stop_timer()
        self.transport.loseConnection()

    # -- the upstream side ----------------------------------------------------

    _upstream_name = None
    detail = None
    proxied_destination = None

    def _connect_upstream(self, name, first=b""):
        self._upstream_name = name
        if first:
            self.bytes_in += len(first)
            self._pending.append(first)
        self.transport.pauseProducing()
        self._attempt(self._states[name].pick(self.client[0]))

    def _attempt(self, server):
        state = self._states[self._upstream_name]
        if server is None:
            self.close("no_server" if not self._tried else "connect_failed")
            return
        spec = state.spec
        if state.active(server) >= spec.max_connections:
            self.close("full")
            return
        state.request_started(server)
        self.server = server
        self._connector = connect_tcp(self.listener.reactor, server.host, server.port,
                                      _UpstreamConnector(self, server), timeout=spec.connect_timeout)

    def connect_failed(self, server, reason):
        """
        Connecting to C{server} failed: count it for passive health and try
        another server (within C{retries}), or give up.
        """
        self._connector = None
        state = self._states[self._upstream_name]
        state.request_finished(server)
        if self.client_lost:
            # The client left while connecting: not the server's fault.
            self._finish()
            return
        kind = "timeout" if reason.check(ConnectTimeout) else "connect_error"
        state.report_failure(server, kind)
        log_server_failure(self.listener.log, self._upstream_name, server.address, kind,
                           reason.getErrorMessage())
        self._tried.append(server)
        self._attempt(state.retry_target(kind, self.client[0], self._tried))

    def upstream_connected(self, side):
        """
        The upstream accepted: send the PROXY header and what the client
        sent so far, join the two transports and resume the client.
        """
        self._connector = None
        state = self._states[self._upstream_name]
        state.report_success(side.server)
        if self.client_lost:
            side.transport.abortConnection()
            return
        self.upstream = side
        self.outcome = "relayed"
        side.transport.setTcpNoDelay(True)
        send_proxy = state.spec.send_proxy
        if send_proxy is not None:
            destination = self.proxied_destination
            if destination is None:
                host = self.transport.getHost()
                destination = (getattr(host, "host", "0.0.0.0"), getattr(host, "port", 0))
            encode = encode_v1 if send_proxy == "v1" else encode_v2
            side.transport.write(encode(self.client, destination))
        if self._pending:
            side.transport.write(b"".join(self._pending))
            self._pending = []
        self.transport.registerProducer(side.transport, True)
        side.transport.registerProducer(self.transport, True)
        if self.read_closed:
            side.transport.unregisterProducer()
            side.transport.loseWriteConnection()
        else:
            self.transport.resumeProducing()
        self.last_activity = self.clock.seconds()
        self._timer = self.clock.callLater(self.settings.idle_timeout, self._idle_check)

    def upstream_finished_sending(self):
        """
        The upstream sent FIN: pass it on to the client.
        """
        if not self.client_lost:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def upstream_lost(self, side):
        """
        The upstream connection is gone: close the client side (after what
        it still has to receive), then account and log.
        """
        self.upstream_lost_already = True
        self._states[self._upstream_name].request_finished(side.server)
        if self.client_lost:
            self._finish()
        else:
            self._stop_timer()
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    # -- timers and the end ----------------------------------------------------

    def _header_timeout(self):
        self._timer = None
        what = "PROXY header" if self._proxy_reader is not None else "TLS ClientHello"
        self.close("header_timeout", f"no complete {what} within {self.settings.header_timeout:g}s")

    def _idle_check(self):
        self._timer = None
        idle = self.clock.seconds() - self.last_activity
        timeout = self.settings.idle_timeout
        if idle >= timeout:
            self.outcome = "idle_timeout"
            self.transport.abortConnection()
            if self.upstream is not None:
                self.upstream.transport.abortConnection()
        else:
            self._timer = self.clock.callLater(timeout - idle, self._idle_check)

    def _stop_timer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _finish(self):
        if self._finished:
            return
        self._finished = True
        if self.outcome is None:
            self.outcome = "closed_early"
        self.listener.finished(self)
