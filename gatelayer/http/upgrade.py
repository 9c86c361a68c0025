"""
Upgraded connections (C{Upgrade: websocket} and the other protocols a
route's C{upgrades} lists): which requests upgrade, the handshake through
the proxy, and the byte relay that replaces HTTP on both connections after
a C{101 Switching Protocols}.

A request with C{Upgrade} is one of three things (L{upgrade_plan}):

  - a plain request, when C{Connection} does not name C{upgrade} (then
    C{Upgrade} means nothing, RFC 9110 7.8), when a protocol it asks for is
    not in the route's C{upgrades}, or when it asks for C{h2c} (never
    proxied: a gateway that tunnels h2c lets the client speak HTTP/2 to the
    server past the routes and filters). It is proxied as today, without
    C{Upgrade};
  - a refused one (400, connection closed): an upgrade that is not HTTP/1.1,
    carries a body, or is a WebSocket handshake without C{GET}, one
    C{Sec-WebSocket-Key} and one C{Sec-WebSocket-Version};
  - an upgrade: the handshake goes upstream on a connection of its own
    (L{gatelayer.upstream.upgrade}); a 101 naming a protocol the client
    asked for switches both connections to a L{Relay}; any other answer is
    relayed as a response, and the client connection closes after it.
"""

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.http.headers import downstream_headers, upstream_headers
from gatelayer.http.proxy import ProxiedRequest, upstream_target
from gatelayer.http1 import token_set
from gatelayer.upstream.upgrade import IUpgradeSink, open_upgrade

__all__ = ["PLAIN", "Relay", "UpgradeProxy", "serve_upgrade", "upgrade_plan"]

PLAIN = "plain"
_CLOSE = ((b"connection", b"close"),)


def upgrade_plan(method, version, headers, body_length, allowed):
    """
    What to do with a request carrying C{Upgrade}.

    @param method: the method (bytes).
    @param version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @param headers: the request's L{twisted.web.http_headers.Headers}.
    @param body_length: the request body's length.
    @param allowed: the route's C{upgrades} (lower-case str).
    @return: L{PLAIN} (proxy it without C{Upgrade}), a frozenset of the
        protocols asked for (lower-case bytes: upgrade), or a C{str} saying
        why the handshake is refused (400).
    """
    if b"upgrade" not in token_set(headers.getRawHeaders(b"connection")):
        return PLAIN
    tokens = frozenset(token_set(headers.getRawHeaders(b"upgrade")))
    if not tokens or any(token.split(b"/")[0] == b"h2c" for token in tokens):
        return PLAIN
    for token in tokens:
        if token.decode("latin-1") not in allowed:
            return PLAIN
    if version != b"HTTP/1.1":
        return "an upgrade needs HTTP/1.1"
    if body_length or headers.hasHeader(b"transfer-encoding") or any(
            value != b"0" for value in headers.getRawHeaders(b"content-length", ())):
        return "an upgrade request cannot carry a body"
    if b"websocket" in tokens:
        if method != b"GET":
            return "a WebSocket handshake must be a GET"
        keys = headers.getRawHeaders(b"sec-websocket-key")
        if not keys or len(keys) != 1 or not keys[0]:
            return "a WebSocket handshake needs one Sec-WebSocket-Key"
        versions = headers.getRawHeaders(b"sec-websocket-version")
        if not versions or len(versions) != 1:
            return "a WebSocket handshake needs one Sec-WebSocket-Version"
    return tokens


def serve_upgrade(terminal, route_spec, exchange, origin=None):
    """
    Serve C{exchange}, a request with C{Upgrade}, on the route
    C{route_spec} of the upstream C{terminal} (a
    L{gatelayer.http.proxy.UpstreamTerminal}): as a plain request, a
    refusal or an upgrade (see L{upgrade_plan}).

    @param origin: the route's L{gatelayer.http.origin.OriginPolicy}, or
        L{None}: applied to an answer relayed as a plain response, and to
        the 101's headers.
    """
    request = exchange.request
    plan = upgrade_plan(exchange.method, request.clientproto, exchange.headers,
                        exchange.body_length(), route_spec.upgrades)
    if plan is PLAIN:
        ProxiedRequest(terminal, route_spec, exchange, origin).start()
    elif isinstance(plan, str):
        exchange.reply_error(400, plan, _CLOSE)
    else:
        UpgradeProxy(terminal, route_spec, exchange, plan, origin).start()


@implementer(IUpgradeSink)
class UpgradeProxy(ProxiedRequest):
    """
    One upgrade handshake on its way through an upstream: a
    L{ProxiedRequest} (server choice, failures, a non-101 answer relayed)
    sent on a dedicated connection, which a 101 turns into a L{Relay}.
    """

    __slots__ = ("tokens", "upgrade")

    def __init__(self, terminal, route_spec, exchange, tokens, origin=None):
        """
        @param tokens: the protocols asked for (lower-case bytes).
        """
        super().__init__(terminal, route_spec, exchange, origin)
        self.tokens = tokens

    def start(self):
        """
        Build the handshake sent upstream (the request's headers as for any
        request, with its C{Upgrade}) and send it.
        """
        exchange = self.exchange
        headers = exchange.headers
        host = headers.getRawHeaders(b"host")
        self.host_header = host[0] if host else None
        self.upgrade = b", ".join(headers.getRawHeaders(b"upgrade"))
        # A handshake has no body, so no request trailers; a refusal
        # relayed instead of a 101 is answered without trailers.
        self.trailers_wanted = False
        self.request_trailers = ()
        self.headers = upstream_headers(
            headers.getAllRawHeaders(), exchange.peer_ip, exchange.scheme, self.host_header, b"")
        self.headers.append((b"Upgrade", self.upgrade))
        self.target = upstream_target(self.spec, exchange)
        self.body = None
        # Only what never reached a server is tried again.
        self.retryable = False
        exchange.on_client_lost(self.client_lost)
        self.attempt()

    def send(self, server):
        """
        Open a connection of its own to C{server} for the handshake.
        """
        return open_upgrade(self.terminal.pool, server, self.exchange.method, self.target,
                            self.headers, self, self.tokens)

    def response_head(self, status, reason, headers):
        """
        The server answered without switching: relay the response, and
        close the client connection after it (bytes the client may have
        sent after its handshake are not HTTP).
        """
        self.exchange.response_headers.append(_CLOSE[0])
        super().response_head(status, reason, headers)

    def switched(self, headers, connection, data):
        """
        The server switched: send the 101 to the client and relay bytes
        both ways from now on.
        """
        self._end_attempt()
        self.terminal.state.report_success(self.server)
        exchange = self.exchange
        if exchange.disconnected:
            connection.close()
            return
        self.head_sent = True
        relay = Relay(connection, self.spec.upgrade_timeout)
        exchange.on_client_lost(relay.client_lost)
        if self.origin is None:
            out = downstream_headers(headers)
        else:
            out = downstream_headers(headers, self.origin, exchange.scheme, self.host_header)
        out.append((b"Upgrade", b", ".join(
            value for name, value in headers if name.lower() == b"upgrade")))
        out.append((b"Connection", b"upgrade"))
        exchange.switch(out, relay)
        if data:
            relay.from_upstream(data)


@implementer(IPushProducer)
class _Reading:
    """
    The push producer that pauses and resumes reading from one transport:
    registered with the other connection, whose full write buffer then
    stops what fills it.
    """

    __slots__ = ("transport",)

    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        """
        Stop reading.
        """
        self.transport.pauseProducing()

    def resumeProducing(self):
        """
        Read again.
        """
        self.transport.resumeProducing()

    def stopProducing(self):
        """
        The relay closes the connections itself.
        """


class Relay:
    """
    The bytes of an upgraded connection, both ways, between the client's
    transport and the upstream's L{gatelayer.upstream.upgrade.UpgradeConnection}.

    Each direction has back-pressure: the upstream's reading is the push
    producer of the client connection (a client reading slowly pauses the
    upstream socket) and the client's reading that of the upstream
    connection. Either side closing closes the other once what was
    written to it is sent (a half-close is a close). Nothing of the relay's
    own ever goes into the stream: an idle connection (C{timeout} seconds
    without a byte either way) or a worker's drain just closes both.

    @ivar sent_down: bytes relayed to the client.
    @ivar sent_up: bytes relayed to the upstream.
    @ivar upstream_reading: the push producer pausing the upstream's reading.
    """

    log = Logger()

    def __init__(self, upstream, timeout):
        """
        @param upstream: the switched L{UpgradeConnection}.
        @param timeout: seconds without a byte either way before closing.
        """
        self.upstream = upstream
        self.timeout = timeout
        self.sent_down = 0
        self.sent_up = 0
        self.closed = False
        self.upstream_reading = _Reading(upstream.transport)
        self._client = None
        self._close_client = None
        self._timer = None
        upstream.relay = self

    def attach_client(self, transport, close, call_later):
        """
        The client connection switched (its 101 is written): relay from now
        on.

        @param transport: the client's transport.
        @param close: closes the client connection (after what was
            written is sent).
        @param call_later: the client connection's C{callLater}, for the
            idle timer.
        """
        self._client = transport
        self._close_client = close
        self.upstream.transport.registerProducer(_Reading(transport), True)
        self._timer = call_later(self.timeout, self._idle)

    def from_client(self, data):
        """
        Bytes from the client, for the upstream.
        """
        if self.closed:
            return
        self.sent_up += len(data)
        self.upstream.transport.write(data)
        self._timer.reset(self.timeout)

    def from_upstream(self, data):
        """
        Bytes from the upstream, for the client.
        """
        if self.closed:
            return
        self.sent_down += len(data)
        self._client.write(data)
        timer = self._timer
        if timer is not None:
            timer.reset(self.timeout)

    def client_lost(self):
        """
        The client connection is gone: close the upstream's.
        """
        if not self.closed:
            self._stop()
            self._close_upstream()

    def upstream_lost(self):
        """
        The upstream connection is gone: close the client's.
        """
        if not self.closed:
            self._stop()
            self._close_client()

    def close(self):
        """
        Close both connections (what was written to each is sent first).
        """
        if not self.closed:
            self._stop()
            self._close_upstream()
            self._close_client()

    def _idle(self):
        self._timer = None
        self.log.info("upgraded connection idle for {timeout}s: closed", timeout=self.timeout)
        self.close()

    def _stop(self):
        self.closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _close_upstream(self):
        transport = self.upstream.transport
        if self._client is not None:
            transport.unregisterProducer()
        self.upstream.close()
