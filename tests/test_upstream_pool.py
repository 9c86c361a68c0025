"""
Tests for L{gatelayer.upstream.pool}: connection reuse, limits, queueing,
retries and timeouts over a L{MemoryReactorClock}, and whole exchanges with
in-memory servers through L{iosim}.
"""

import io

import twisted.test
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gatelayer.config.model import ServerSpec
from gatelayer.upstream.pool import ServerStats, UpstreamPool

from tests.test_upstream_client import FRAMING_CASES, HOSTILE_HEAD_CASES, RecordingSink

A = ServerSpec("10.0.0.1", 8001)
B = ServerSpec("10.0.0.2", 8002)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class PoolCase(SynchronousTestCase):
    """
    Helpers: a pool on a L{MemoryReactorClock}; connection attempts are
    completed by hand with L{StringTransport}s.
    """

    def pool(self, **kwargs):
        self.reactor = MemoryReactorClock()
        options = dict(connect_timeout=1.0, read_timeout=5.0)
        options.update(kwargs)
        self.upstreams = UpstreamPool(self.reactor, **options)
        return self.upstreams

    def request(self, server=A, method=b"GET", target=b"/", body=None, idempotent=True):
        sink = RecordingSink()
        handle = self.upstreams.request(
            server, method, target, [(b"Host", b"example.com")], body, sink, idempotent)
        return handle, sink

    def connect(self):
        """
        Complete the oldest pending connection attempt; return the
        protocol and its transport.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients.pop(0)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def attempts(self):
        return [(host, port, timeout) for host, port, _, timeout, _ in self.reactor.tcpClients]


class ReuseTests(PoolCase):
    """
    Keep-alive reuse and idle connections.
    """

    def test_connects_and_sends(self):
        """
        The first request opens a connection to the server and is written
        once it is up.
        """
        self.pool()
        handle, sink = self.request(target=b"/x?y=1")
        self.assertEqual(self.attempts(), [("10.0.0.1", 8001, 1.0)])
        self.assertEqual(self.upstreams.active(A), 1)
        protocol, transport = self.connect()
        self.assertEqual(transport.value(),
                         b"GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        protocol.dataReceived(OK)
        self.assertEqual((sink.status, sink.body, sink.outcome), (200, b"ok", "end"))
        self.assertEqual(self.upstreams.active(A), 0)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_reused(self):
        """
        The next request goes out on the idle connection: no new attempt.
        """
        self.pool()
        self.request()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        transport.clear()
        handle, sink = self.request(target=b"/again")
        self.assertEqual(self.attempts(), [])
        self.assertTrue(transport.value().startswith(b"GET /again "))
        protocol.dataReceived(OK)
        self.assertEqual(sink.outcome, "end")

    def test_lifo(self):
        """
        The most recently used idle connection is reused first.
        """
        self.pool()
        self.request()
        self.request()
        first, first_transport = self.connect()
        second, second_transport = self.connect()
        first.dataReceived(OK)
        second.dataReceived(OK)
        first_transport.clear()
        second_transport.clear()
        self.request()
        self.assertEqual(first_transport.value(), b"")
        self.assertNotEqual(second_transport.value(), b"")

    def test_per_server(self):
        """
        Servers have separate connections and counts.
        """
        self.pool()
        self.request(A)
        self.request(B)
        self.request(B)
        self.assertEqual([a[:2] for a in self.attempts()],
                         [("10.0.0.1", 8001), ("10.0.0.2", 8002), ("10.0.0.2", 8002)])
        self.assertEqual((self.upstreams.active(A), self.upstreams.active(B)), (1, 2))
        self.assertEqual(self.upstreams.active(ServerSpec("10.9.9.9", 1)), 0)

    def test_keepalive_limit(self):
        """
        At most C{keepalive} connections stay idle per server.
        """
        self.pool(keepalive=1)
        self.request()
        self.request()
        first, first_transport = self.connect()
        second, second_transport = self.connect()
        first.dataReceived(OK)
        second.dataReceived(OK)
        self.assertFalse(first_transport.disconnecting)
        self.assertTrue(second_transport.disconnecting)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_no_keepalive(self):
        """
        C{keepalive=0}: requests ask the server to close and no connection
        is kept.
        """
        self.pool(keepalive=0)
        self.request()
        protocol, transport = self.connect()
        self.assertIn(b"Connection: close", transport.value())
        protocol.dataReceived(OK)
        self.assertTrue(transport.disconnecting)

    def test_idle_timeout(self):
        """
        An idle connection is closed after keepalive_timeout.
        """
        self.pool(keepalive_timeout=30)
        self.request()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.reactor.advance(29)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_server_closes_idle(self):
        """
        An idle connection the server closes leaves the pool; the next
        request opens a new one.
        """
        self.pool()
        self.request()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.request()
        self.assertEqual(len(self.attempts()), 1)

    def test_not_reused_after_failure(self):
        """
        A connection whose exchange failed is closed, never reused.
        """
        self.pool()
        self.request()
        protocol, transport = self.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        self.request()
        self.assertEqual(len(self.attempts()), 1)


class RetryTests(PoolCase):
    """
    A pooled connection that turns out dead.
    """

    def reused(self, **kwargs):
        self.pool()
        self.request()
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        handle, sink = self.request(**kwargs)
        protocol.connectionLost(Failure(ConnectionDone()))
        return handle, sink

    def test_idempotent_retried(self):
        """
        An idempotent request is sent again, once, on a fresh connection.
        """
        handle, sink = self.reused()
        self.assertEqual(len(self.attempts()), 1)
        self.assertIsNone(sink.outcome)
        protocol, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"GET / HTTP/1.1"))
        protocol.dataReceived(OK)
        self.assertEqual(sink.outcome, "end")
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_retry_with_file_body(self):
        """
        A file body is sent whole again on the retry.
        """
        handle, sink = self.reused(method=b"PUT", body=io.BytesIO(b"payload"))
        protocol, transport = self.connect()
        self.assertTrue(transport.value().endswith(b"\r\n\r\npayload"))

    def test_retry_fails_too(self):
        """
        The fresh connection dying too is a failure: no second retry.
        """
        handle, sink = self.reused()
        protocol, transport = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sink.outcome, ("response_failed", "connection_lost"))
        self.assertEqual(self.attempts(), [])

    def test_non_idempotent_fails(self):
        """
        A non-idempotent request is not re-sent.
        """
        handle, sink = self.reused(method=b"POST", idempotent=False)
        self.assertEqual(sink.outcome, ("response_failed", "connection_lost"))
        self.assertEqual(self.attempts(), [])
        self.assertEqual(self.upstreams.active(A), 0)


class ConnectFailureTests(PoolCase):
    """
    Connection attempts that fail.
    """

    def test_refused(self):
        """
        A refused connection is a connect error.
        """
        self.pool()
        handle, sink = self.request()
        host, port, factory, timeout, bind = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(self.reactor.connectors[0],
                                       Failure(ConnectionRefusedError()))
        self.assertEqual(sink.outcome, ("connect_failed", "connect_error"))
        self.assertIn("refused", sink.detail)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connect_timeout(self):
        """
        No connection within connect_timeout: a timeout, and the attempt is
        stopped.
        """
        self.pool(connect_timeout=2.5)
        handle, sink = self.request()
        self.reactor.advance(2.4)
        self.assertIsNone(sink.outcome)
        self.reactor.advance(0.1)
        self.assertEqual(sink.outcome, ("connect_failed", "timeout"))
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_reactor_timeout(self):
        """
        The reactor's own connect timeout is a timeout too.
        """
        self.pool()
        handle, sink = self.request()
        self.reactor.tcpClients[0][2].clientConnectionFailed(
            self.reactor.connectors[0], Failure(TimeoutError()))
        self.assertEqual(sink.outcome, ("connect_failed", "timeout"))

    def test_cancel_while_connecting(self):
        """
        A request cancelled while its connection is being made leaves the
        connection to the pool.
        """
        self.pool()
        handle, sink = self.request()
        handle.cancel()
        self.assertEqual(self.upstreams.active(A), 0)
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(sink.calls, 0)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))


class LimitTests(PoolCase):
    """
    max_connections and max_pending.
    """

    def test_queued_until_free(self):
        """
        Over max_connections a request waits, and gets the first connection
        that frees up.
        """
        self.pool(max_connections=1)
        first, first_sink = self.request()
        second, second_sink = self.request(target=b"/second")
        self.assertEqual(len(self.attempts()), 1)
        self.assertEqual(self.upstreams.stats(A), ServerStats(2, 1, 0, 1))
        protocol, transport = self.connect()
        transport.clear()
        protocol.dataReceived(OK)
        self.assertEqual(first_sink.outcome, "end")
        self.assertTrue(transport.value().startswith(b"GET /second "))
        protocol.dataReceived(OK)
        self.assertEqual(second_sink.outcome, "end")
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_queue_full(self):
        """
        With max_pending requests waiting, the next one is overloaded at
        once, but not from within request().
        """
        self.pool(max_connections=1, max_pending=1)
        self.request()
        self.request()
        handle, sink = self.request()
        self.assertIsNone(sink.outcome)
        self.reactor.advance(0)
        self.assertEqual(sink.outcome, ("connect_failed", "overloaded"))
        self.assertEqual(self.upstreams.stats(A), ServerStats(2, 1, 0, 1))

    def test_no_queue(self):
        """
        max_pending 0: over max_connections is overloaded.
        """
        self.pool(max_connections=1, max_pending=0)
        self.request()
        handle, sink = self.request()
        self.reactor.advance(0)
        self.assertEqual(sink.outcome, ("connect_failed", "overloaded"))

    def test_cancel_overloaded(self):
        """
        A request cancelled before its overload is reported hears nothing.
        """
        self.pool(max_connections=1, max_pending=0)
        self.request()
        handle, sink = self.request()
        handle.cancel()
        self.reactor.advance(0)
        self.assertEqual(sink.calls, 0)

    def test_queue_wait_limit(self):
        """
        A request that waited connect_timeout in the queue is overloaded.
        """
        self.pool(max_connections=1, connect_timeout=1.0)
        self.request()
        self.connect()
        handle, sink = self.request()
        self.reactor.advance(1.0)
        self.assertEqual(sink.outcome, ("connect_failed", "overloaded"))
        self.assertEqual(self.upstreams.stats(A), ServerStats(1, 1, 0, 0))

    def test_cancel_queued(self):
        """
        A cancelled waiting request leaves the queue quietly.
        """
        self.pool(max_connections=1)
        self.request()
        handle, sink = self.request()
        handle.cancel()
        self.assertEqual(self.upstreams.stats(A), ServerStats(1, 1, 0, 0))
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.assertEqual(sink.calls, 0)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_failed_connection_serves_queue(self):
        """
        When a connection fails, a waiting request gets a new attempt.
        """
        self.pool(max_connections=1)
        first, first_sink = self.request()
        second, second_sink = self.request()
        self.reactor.tcpClients.pop(0)[2].clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.assertEqual(first_sink.outcome, ("connect_failed", "connect_error"))
        self.assertEqual(len(self.attempts()), 1)
        protocol, transport = self.connect()
        protocol.dataReceived(OK)
        self.assertEqual(second_sink.outcome, "end")


class FlowTests(PoolCase):
    """
    Back-pressure and cancellation through the handle.
    """

    def test_pause_resume(self):
        """
        Pausing the handle pauses reading from the upstream socket.
        """
        self.pool()
        handle, sink = self.request()
        handle.pauseProducing()
        protocol, transport = self.connect()
        self.assertEqual(transport.producerState, "paused")
        handle.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        handle.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_cancel_sent(self):
        """
        Cancelling a sent request closes its connection; the pool forgets it.
        """
        self.pool()
        handle, sink = self.request()
        protocol, transport = self.connect()
        handle.cancel()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sink.calls, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_read_timeout(self):
        """
        No response head within read_timeout: a timeout.
        """
        self.pool(read_timeout=3)
        handle, sink = self.request()
        self.connect()
        self.reactor.advance(3)
        self.assertEqual(sink.outcome, ("response_failed", "timeout"))
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))


class CloseTests(PoolCase):
    """
    Closing the pool at drain or stop.
    """

    def test_close_empty(self):
        """
        A pool without connections closes at once.
        """
        self.pool()
        self.successResultOf(self.upstreams.close())

    def test_close_waits_for_connections(self):
        """
        Idle connections close at once, busy ones after their response; the
        Deferred fires when none is left, with no timer left behind.
        """
        self.pool()
        self.request()
        self.request()
        idle, idle_transport = self.connect()
        busy, busy_transport = self.connect()
        idle.dataReceived(OK)
        d = self.upstreams.close()
        self.assertTrue(idle_transport.disconnecting)
        idle.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(d)
        busy.dataReceived(OK)
        self.assertTrue(busy_transport.disconnecting)
        busy.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# -- whole exchanges over iosim ---------------------------------------------


class Echo(Resource):
    """
    Answers GET with a fixed body, POST with the request body, and
    /stream with a body written in pieces (chunked).
    """

    isLeaf = True

    def render_GET(self, request):
        if request.path == b"/stream":
            for i in range(10):
                request.write(b"piece %d;" % (i,))
            request.finish()
            return NOT_DONE_YET
        request.setHeader(b"X-Path", request.uri)
        return b"hello from " + request.getHeader(b"host")

    def render_POST(self, request):
        return b"got " + request.content.read()


class ScriptedServer(Protocol):
    """
    Answers the first request head with a scripted response, then closes
    if told to. With C{response} L{None} it answers nothing: the test
    writes through C{transport} itself (byte by byte, say).
    """

    def __init__(self, response, close):
        self.response = response
        self.close = close
        self.received = b""

    def dataReceived(self, data):
        self.received += data
        if b"\r\n\r\n" in self.received and self.response is not None:
            response, self.response = self.response, None
            self.transport.write(response)
            if self.close:
                self.transport.loseConnection()


class Refuser(Protocol):
    """
    A plain HTTP server's answer to bytes it cannot parse (a TLS hello).
    """

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        self.transport.loseConnection()


class MemoryExchangeTests(PoolCase):
    """
    The client against real protocol implementations, in memory.
    """

    def serve(self, server_factory):
        """
        Complete the oldest connection attempt against C{server_factory}
        over iosim; return the pump.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients.pop(0)
        client = factory.buildProtocol(None)
        server = server_factory.buildProtocol(None)
        return iosim.connect(server, iosim.makeFakeServer(server),
                             client, iosim.makeFakeClient(client), clock=self.reactor)

    def test_site(self):
        """
        A GET and a POST to a twisted.web Site over one kept-alive
        connection.
        """
        self.pool()
        site = Site(Echo(), reactor=MemoryReactorClock())
        handle, sink = self.request(target=b"/a?b=1")
        pump = self.serve(site)
        pump.flush()
        self.assertEqual((sink.status, sink.body, sink.outcome),
                         (200, b"hello from example.com", "end"))
        self.assertIn((b"X-Path", b"/a?b=1"), sink.head[2])
        handle, sink = self.request(method=b"POST", body=b"some data")
        pump.flush()
        self.assertEqual((sink.status, sink.body, sink.outcome), (200, b"got some data", "end"))
        handle, sink = self.request(method=b"POST", body=io.BytesIO(b"f" * 300000))
        pump.flush()
        self.assertEqual((sink.status, sink.body, sink.outcome),
                         (200, b"got " + b"f" * 300000, "end"))
        self.assertEqual(self.attempts(), [])
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 1, 1, 0))

    def test_site_chunked(self):
        """
        A body the Site writes in pieces comes chunked and is de-chunked.
        """
        self.pool()
        handle, sink = self.request(target=b"/stream")
        pump = self.serve(Site(Echo(), reactor=MemoryReactorClock()))
        pump.flush()
        self.assertIn((b"Transfer-Encoding", b"chunked"), sink.head[2])
        self.assertEqual(sink.body, b"".join(b"piece %d;" % (i,) for i in range(10)))
        self.assertEqual(sink.outcome, "end")

    def test_site_over_tls(self):
        """
        With a TLS creator the request goes through a real TLS handshake.
        """
        pem = FilePath(twisted.test.__file__).sibling("server.pem").getContent()
        certificate = PrivateCertificate.loadPEM(pem)
        servers = []
        client_options = CertificateOptions()
        self.pool(tls_creator=lambda server: servers.append(server) or client_options)
        handle, sink = self.request()
        site = Site(Echo(), reactor=MemoryReactorClock())
        pump = self.serve(TLSMemoryBIOFactory(certificate.options(), False, site,
                                             clock=self.reactor))
        pump.flush()
        self.assertEqual(servers, [A])
        self.assertEqual((sink.status, sink.body, sink.outcome),
                         (200, b"hello from example.com", "end"))

    def test_tls_to_plain_server(self):
        """
        A TLS handshake with a server that does not speak TLS is a connect
        error: nothing was sent.
        """
        self.pool(tls_creator=lambda server: CertificateOptions())
        handle, sink = self.request()
        pump = self.serve(Factory.forProtocol(Refuser))
        pump.flush()
        self.assertEqual(sink.outcome, ("connect_failed", "connect_error"))
        self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0))

    def test_scripted_framing(self):
        """
        Every framing case against a scripted server protocol: the same
        outcomes as read by the connection alone.
        """
        for name, response, ending, outcome, status, body, usable in FRAMING_CASES:
            self.pool()
            method = b"HEAD" if name.startswith("head") else b"GET"
            handle, sink = self.request(method=method)
            server = ScriptedServer(response, ending is not None)
            factory = Factory.forProtocol(lambda: server)
            pump = self.serve(factory)
            pump.flush()
            if ending == "lost":
                # iosim closes cleanly; the unclean case is covered by the
                # connection's own tests.
                continue
            self.assertEqual((sink.outcome, sink.status, sink.body), (outcome, status, body), name)
            self.assertTrue(server.received.startswith(method + b" / HTTP/1.1\r\n"), name)
            stats = self.upstreams.stats(A)
            self.assertEqual(stats.idle, 1 if usable else 0, name)
            closed = self.upstreams.close()
            pump.flush()
            self.successResultOf(closed)
            self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0), name)

    def test_scripted_hostile_heads(self):
        """
        Every hostile head and framing case from a scripted server, written
        whole and then one byte per write (each delivered in its own read):
        the same outcome either way, a refused head never reaches the sink,
        and a connection that carried one is closed, never pooled.
        """
        for case in FRAMING_CASES + HOSTILE_HEAD_CASES:
            name, response, ending, outcome, status, body, usable = case
            if ending is not None:
                continue
            for split in (False, True):
                label = "%s (%s)" % (name, "byte by byte" if split else "whole")
                self.pool()
                method = b"HEAD" if name.startswith("head") else b"GET"
                handle, sink = self.request(method=method)
                server = ScriptedServer(None, False)
                pump = self.serve(Factory.forProtocol(lambda: server))
                pump.flush()
                self.assertTrue(server.received.endswith(b"\r\n\r\n"), label)
                pieces = [response[i:i + 1] for i in range(len(response))] if split else [response]
                for piece in pieces:
                    server.transport.write(piece)
                    pump.flush()
                self.assertEqual((sink.outcome, sink.status, sink.body), (outcome, status, body), label)
                self.assertEqual(self.upstreams.stats(A).idle, 1 if usable else 0, label)
                closed = self.upstreams.close()
                pump.flush()
                self.successResultOf(closed)
                self.assertEqual(self.upstreams.stats(A), ServerStats(0, 0, 0, 0), label)
