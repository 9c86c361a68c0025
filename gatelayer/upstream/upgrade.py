"""
The upstream side of an upgrade (C{Upgrade: websocket}): the handshake on a
connection of its own, and, after a C{101 Switching Protocols}, that
connection's bytes handed to whoever relays them.

An upgrade request never travels on a pooled keep-alive connection: after a
101 the connection no longer speaks HTTP, and one that answered otherwise
was told C{Connection: upgrade} rather than kept alive. So each handshake
opens a fresh connection (L{UpstreamPool.open_dedicated}) that is never
returned to the pool. Reading the answer is the pooled client's own strict
reader: a non-101 response is relayed as any response is, and then the
connection is closed.
"""

from zope.interface import implementer

from gatelayer.http1 import build_request_head, token_set
from gatelayer.upstream.client import HTTP11UpstreamConnection
from gatelayer.upstream.interfaces import IConnectionOwner, IResponseSink
from gatelayer.upstream.request import UpstreamRequest
from gatelayer.upstream.response import _CLOSED, _HEAD

__all__ = ["IUpgradeSink", "UpgradeConnection", "open_upgrade"]

# The connection's state once it switched protocols (beyond the reader's).
_SWITCHED = 10


class IUpgradeSink(IResponseSink):
    """
    An L{IResponseSink} for an upgrade request: a 101 ends the exchange
    with C{switched} instead of C{response_head}/C{response_end}.
    """

    def switched(headers, connection, data):
        """
        The server switched protocols: C{headers} are the 101's C{(name,
        value)} pairs as received, C{connection} the
        L{UpgradeConnection} (now a plain byte stream: set its C{relay}),
        C{data} the bytes that came after the 101's head in the same read
        (the new protocol's first bytes, never to be lost).
        """


@implementer(IConnectionOwner)
class _OneOff:
    """
    The owner of a dedicated connection: nothing to pool, so a connection
    that could be reused is closed instead.
    """

    def release(self, connection):
        """
        Never kept: close it.
        """
        connection.close()

    def lost(self, connection):
        """
        Nothing counts it.
        """

    def retry(self, connection, request):  # pragma: no cover - a fresh connection is never retried
        """
        Not reached: only a reused connection is retried.
        """

    def closed(self, connection):
        """
        Nothing counts it.
        """

    def finished(self, request):
        """
        Nothing counts it.
        """


_ONE_OFF = _OneOff()


class UpgradeConnection(HTTP11UpstreamConnection):
    """
    One upstream connection carrying one upgrade handshake and, after a
    101 whose C{Upgrade} names a protocol the client asked for, the bytes of
    the new protocol.

    Before the switch it is the pooled client's connection (its timeouts,
    its strict response reader); after it, what arrives goes to C{relay}'s
    C{from_upstream(data)} and the end of the connection to its
    C{upstream_lost()}, and nothing times out here (the relay keeps its own
    idle timer).

    @ivar relay: what takes the bytes after the switch, or L{None}.
    """

    relay = None

    def __init__(self, clock, read_timeout, host, tls, tokens):
        """
        @param tokens: the protocols the client asked for (lower-case
            bytes): a 101 must name one of them.
        """
        super().__init__(_ONE_OFF, clock, read_timeout, host, True, tls)
        self._tokens = tokens

    def send(self, request):
        """
        Send the handshake: the request's headers, then C{Connection:
        upgrade} (the client's own Connection header is never copied), no
        body.
        """
        self._request = request
        request.connection = self
        self.served += 1
        self._state = _HEAD
        self._scanned = 0
        self._got_bytes = False
        self._reusable = False
        self._no_body = False
        head = build_request_head(request.method, request.target, request.headers, None, self._host)
        self.transport.write(head[:-2] + b"Connection: upgrade\r\n\r\n")
        if request.paused:
            self.pause()
        self._arm(self._read_timeout)

    def _switching(self, request, headers, data):
        """
        A 101: switch when it names a protocol the client asked for (else it
        is a broken response: 502).
        """
        offered = token_set(value for name, value in headers if name.lower() == b"upgrade")
        if not offered or not offered <= self._tokens:
            self._fail("bad_response", "101 Switching Protocols to %s, which was not asked for"
                       % (b", ".join(sorted(offered)).decode("latin-1") or "nothing",))
            return
        self._disarm()
        self._state = _SWITCHED
        self._request = None
        request.connection = None
        if self._paused:
            # The relay manages reading from now on.
            self._paused = False
            self.transport.resumeProducing()
        request.switch(headers, self, data)

    def dataReceived(self, data):
        """
        Before the switch, the response; after it, bytes for the relay.
        """
        if self._state == _SWITCHED:
            self.relay.from_upstream(data)
            return
        super().dataReceived(data)

    def close(self):
        """
        Close gracefully (after what was written is sent), before or after
        the switch.
        """
        if self._state == _SWITCHED:
            self._state = _CLOSED
            self.transport.loseConnection()
            return
        super().close()

    def connectionLost(self, reason):
        """
        After the switch, tell the relay; before it, the pooled client's
        handling (a failed handshake).
        """
        if self._state == _SWITCHED or (self._state == _CLOSED and self.relay is not None):
            self._state = _CLOSED
            self._closed()
            relay, self.relay = self.relay, None
            if relay is not None:
                relay.upstream_lost()
            return
        super().connectionLost(reason)


class _UpgradeRequest(UpstreamRequest):
    """
    The handle of an upgrade handshake: an L{UpstreamRequest} whose
    exchange may also end with C{switched}.
    """

    __slots__ = ()

    def switch(self, headers, connection, data):
        """
        End the exchange with C{sink.switched}.
        """
        if self.done:
            connection.close()
            return
        self.done = True
        self.connection = None
        self.sink.switched(headers, connection, data)


def open_upgrade(pool, server, method, target, headers, sink, tokens):
    """
    Send an upgrade handshake to C{server} on a new connection of its own
    (see L{UpstreamPool.open_dedicated}) and report to C{sink} (an
    L{IUpgradeSink}), never from within this call.

    @param headers: the C{(name, value)} pairs to send, C{Upgrade}
        included; C{Connection: upgrade} is added.
    @param tokens: the protocols asked for (lower-case bytes).
    @return: the request handle (C{cancel()}, push producer).
    """
    request = _UpgradeRequest(_ONE_OFF, server, method, target, headers, None, sink, False)
    pool.open_dedicated(server, UpgradeConnection, request, tokens=frozenset(tokens))
    return request
