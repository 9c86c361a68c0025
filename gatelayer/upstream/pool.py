"""
The upstream connection pool of one worker: per server, a LIFO list of idle
keep-alive connections, a bound on open connections and a FIFO queue of
requests waiting for one.

LIFO reuse keeps the most recently used (warmest) connections busy and lets
the others reach their idle timeout and close, so the pool shrinks after a
burst by itself.
"""

from collections import deque

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ClientFactory
from zope.interface import implementer

from gatelayer.transports import connect_tcp
from gatelayer.upstream.client import (
    HTTP11UpstreamConnection,
    IConnectionOwner,
    UpstreamRequest,
)

__all__ = ["UpstreamPool", "ServerStats"]


class _ConnectionFactory(ClientFactory):
    """
    The factory of one connection attempt: its protocol exists already.
    """

    noisy = False

    def __init__(self, connection):
        self._connection = connection

    def buildProtocol(self, addr):
        """
        Hand out the connection made for this attempt.
        """
        return self._connection

    def clientConnectionFailed(self, connector, reason):
        """
        Tell the connection its attempt failed.
        """
        self._connection.connect_error(reason)


class ServerStats:
    """
    A snapshot of the pool's state for one server (for /status).

    @ivar active: requests in flight (queued, connecting or sent).
    @ivar open: connections open or being opened.
    @ivar idle: idle keep-alive connections.
    @ivar pending: requests waiting in the queue for a connection.
    """

    __slots__ = ("active", "open", "idle", "pending")

    def __init__(self, active, open, idle, pending):
        self.active = active
        self.open = open
        self.idle = idle
        self.pending = pending

    def __repr__(self):
        return "<ServerStats active=%d open=%d idle=%d pending=%d>" % (
            self.active, self.open, self.idle, self.pending)

    def __eq__(self, other):
        if not isinstance(other, ServerStats):
            return NotImplemented
        return (self.active, self.open, self.idle, self.pending) == (
            other.active, other.open, other.idle, other.pending)


@implementer(IConnectionOwner)
class _ServerSlot:
    """
    The pool's bookkeeping for one server: its idle connections, how many
    are open, the queue of waiting requests, and the requests in flight.
    """

    def __init__(self, pool, server):
        self.pool = pool
        self.server = server
        self.host = server.host
        self.port = server.port
        try:
            self.host_header = server.address.encode("idna")
        except UnicodeError:
            self.host_header = server.address.encode("ascii", "replace")
        self.idle = []
        self.queue = deque()
        self.opened = 0
        self.active = 0

    def dispatch(self, request):
        """
        Send C{request} on an idle connection, a new one, or queue it.
        """
        idle = self.idle
        if idle:
            idle.pop().send(request)
            return
        pool = self.pool
        if self.opened < pool._max_connections:
            self.open(request)
        elif len(self.queue) < pool._max_pending:
            self.queue.append(request)
            request.waiter = pool._reactor.callLater(
                pool._connect_timeout, self._expire, request)
        else:
            # Never call the sink from within request(): the caller must
            # hold the handle first.
            request.waiter = pool._reactor.callLater(0, self._overloaded, request)

    def open(self, request):
        """
        Open a new connection for C{request}.
        """
        pool = self.pool
        self.opened += 1
        pool._sockets += 1
        creator = pool._tls_creator(self.server) if pool._tls_creator is not None else None
        connection = HTTP11UpstreamConnection(
            self, pool._reactor, pool._read_timeout, self.host_header,
            pool._keepalive > 0, creator is not None)
        factory = _ConnectionFactory(connection)
        if creator is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            # The clock matters: TLS batches small writes with callLater(0),
            # on the global reactor unless told otherwise.
            factory = TLSMemoryBIOFactory(creator, True, factory, clock=pool._reactor)
            factory.noisy = False
        connection.begin(request, pool._connect_timeout)
        connection.connector = connect_tcp(
            pool._reactor, self.host, self.port, factory, timeout=pool._connect_timeout)

    def _expire(self, request):
        request.waiter = None
        self.queue.remove(request)
        request.fail_connect(
            "overloaded", "no connection to %s free within %gs (max_connections %d)"
            % (self.server.address, self.pool._connect_timeout, self.pool._max_connections))

    def _overloaded(self, request):
        request.waiter = None
        request.fail_connect(
            "overloaded", "%d connections to %s busy and %d requests queued" % (
                self.opened, self.server.address, len(self.queue)))

    def _next_waiter(self):
        request = self.queue.popleft()
        request.waiter.cancel()
        request.waiter = None
        return request

    # -- IConnectionOwner --------------------------------------------------

    def release(self, connection):
        """
        A connection is free: the first waiting request gets it, else it
        idles (when there is room and the pool is not closing).
        """
        if self.queue:
            connection.send(self._next_waiter())
            return
        pool = self.pool
        if pool._closing or len(self.idle) >= pool._keepalive:
            connection.close()
            return
        self.idle.append(connection)
        connection.park(pool._keepalive_timeout)

    def lost(self, connection):
        """
        A connection is gone from use: it no longer counts, and a waiting
        request may open a new one.
        """
        self.opened -= 1
        idle = self.idle
        if idle and connection in idle:
            idle.remove(connection)
        if self.queue and self.opened < self.pool._max_connections:
            self.open(self._next_waiter())

    def retry(self, connection, request):
        """
        A dead pooled connection is replaced by a fresh one for C{request}.
        """
        self.opened -= 1
        self.open(request)

    def closed(self, connection):
        """
        A connection's transport is gone.
        """
        self.pool._socket_closed()

    def finished(self, request):
        """
        A request ended: it is no longer active nor waiting.
        """
        self.active -= 1
        waiter = request.waiter
        if waiter is not None:
            request.waiter = None
            waiter.cancel()
            try:
                self.queue.remove(request)
            except ValueError:
                pass


class UpstreamPool:
    """
    Pooled keep-alive HTTP/1.1 connections to the servers of upstreams, for
    one worker. Each server has its own limits: at most C{max_connections}
    open, then at most C{max_pending} requests wait (FIFO, up to
    C{connect_timeout}), then requests fail at once as C{overloaded}.
    """

    def __init__(self, reactor, *, connect_timeout, read_timeout, keepalive=32,
                 keepalive_timeout=60.0, max_connections=1000, max_pending=100,
                 tls_creator=None):
        """
        @param reactor: an L{IReactorTCP} and L{IReactorTime} provider.
        @param connect_timeout: seconds for a connection (with its TLS
            handshake), and the longest wait in the queue.
        @param read_timeout: seconds for the response head once the request
            is written, and between two reads of the body.
        @param keepalive: idle connections kept per server (0: none, and
            requests say C{Connection: close}).
        @param keepalive_timeout: seconds an idle connection is kept.
        @param max_connections: open connections per server.
        @param max_pending: requests waiting per server when all
            C{max_connections} are busy.
        @param tls_creator: L{None} for plain TCP, or a callable taking the
            server and returning an C{IOpenSSLClientConnectionCreator} (or
            L{None} for plain TCP to that server). Called once per new
            connection: return a cached creator.
        """
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive
        self._keepalive_timeout = keepalive_timeout
        self._max_connections = max_connections
        self._max_pending = max_pending
        self._tls_creator = tls_creator
        self._slots = {}
        self._sockets = 0
        self._closing = False
        self._close_waiters = []

    def _slot(self, server):
        # Keyed by the server's "host:port", made once with its spec.
        slot = self._slots.get(server.address)
        if slot is None:
            slot = self._slots[server.address] = _ServerSlot(self, server)
        return slot

    def request(self, server, method, target, headers, body, sink, idempotent, trailers=()):
        """
        Send a request to C{server} and report its response to C{sink} (an
        L{IResponseSink}), never from within this call.

        @param server: has C{.host} (str), C{.port} (int) and C{.address}.
        @param method: bytes, e.g. C{b"GET"}.
        @param target: bytes, the request target, e.g. C{b"/a?b=1"}.
        @param headers: list of C{(name, value)} bytes pairs to send as they
            are; the client adds Content-Length (and Connection: close when
            keepalive is 0) and drops any Content-Length,
            Transfer-Encoding, Connection and Expect given; Host is added
            from the server address when missing.
        @param body: L{None}, bytes, or a seekable file object holding the
            whole body (streamed with back-pressure).
        @param idempotent: whether the request may be re-sent once when a
            reused connection turns out dead before any response byte.
        @param trailers: trailer fields (C{(name, value)} pairs, already
            checked) to send after the body: the body then goes chunked.
        @return: the L{UpstreamRequest} handle (C{cancel()}, and the
            response body's push producer).
        """
        slot = self._slots.get(server.address)
        if slot is None:
            slot = self._slot(server)
        slot.active += 1
        request = UpstreamRequest(slot, server, method, target, headers, body, sink, idempotent,
                                  trailers)
        idle = slot.idle
        if idle:
            idle.pop().send(request)
        else:
            slot.dispatch(request)
        return request

    def open_dedicated(self, server, connection_class, request, **arguments):
        """
        Open a connection to C{server} for C{request} alone, outside the
        pool: never reused, never given a queued request, not counted in
        C{max_connections}. For a request that takes its connection over
        (an upgrade, see L{gatelayer.upstream.upgrade}). The pool's connect
        and read timeouts and TLS apply.

        @param connection_class: called with C{(clock, read_timeout,
            host_header, tls, **arguments)}; returns the connection
            protocol (an L{HTTP11UpstreamConnection}).
        @return: the connection.
        """
        creator = self._tls_creator(server) if self._tls_creator is not None else None
        connection = connection_class(
            self._reactor, self._read_timeout, self._slot(server).host_header,
            creator is not None, **arguments)
        factory = _ConnectionFactory(connection)
        if creator is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(creator, True, factory, clock=self._reactor)
            factory.noisy = False
        connection.begin(request, self._connect_timeout)
        connection.connector = connect_tcp(
            self._reactor, server.host, server.port, factory, timeout=self._connect_timeout)
        return connection

    def active(self, server):
        """
        Requests in flight to C{server} from this pool: queued, connecting
        or sent, not yet ended.
        """
        slot = self._slots.get(server.address)
        return 0 if slot is None else slot.active

    def stats(self, server):
        """
        A L{ServerStats} snapshot for C{server}.
        """
        slot = self._slots.get(server.address)
        if slot is None:
            return ServerStats(0, 0, 0, 0)
        return ServerStats(slot.active, slot.opened, len(slot.idle), len(slot.queue))

    def close(self):
        """
        Close the idle connections now and every other one when its
        request ends (requests in flight and queued are not cut).

        @return: a L{Deferred} that fires when no connection of the pool is
            left.
        """
        self._closing = True
        for slot in list(self._slots.values()):
            for connection in list(slot.idle):
                connection.close()
        if self._sockets == 0:
            return succeed(None)
        d = Deferred()
        self._close_waiters.append(d)
        return d

    def _socket_closed(self):
        self._sockets -= 1
        if self._closing and self._sockets == 0:
            waiters, self._close_waiters = self._close_waiters, []
            for d in waiters:
                d.callback(None)
