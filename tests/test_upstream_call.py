"""
Tests for gatelayer.upstream.call: a buffered call through a real upstream
pool and balancing state on a MemoryReactorClock, its connections
completed by hand.
"""

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config.model import ServerSpec, UpstreamSpec
from gatelayer.http.proxy import UpstreamTerminal
from gatelayer.testing.server import accept_upstream
from gatelayer.upstream.call import BufferedCall
from gatelayer.upstream.interfaces import IResponseSink
from gatelayer.upstream.pool import UpstreamPool
from gatelayer.upstream.state import UpstreamState

A = ServerSpec("10.0.0.1", 80)
B = ServerSpec("10.0.0.2", 80)
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"


class BufferedCallTests(SynchronousTestCase):
    """
    One call: the whole response or a short reason, retries and health
    bookkeeping as the proxy does them.
    """

    def call(self, servers=(A, B), max_size=100, method=b"GET", **spec):
        """
        Start a call to an upstream of C{servers}; returns it. Outcomes
        collect in C{self.outcomes}.
        """
        self.reactor = MemoryReactorClock()
        spec.setdefault("max_fails", 0)
        self.spec = UpstreamSpec(name="app", servers=tuple(servers), **spec)
        pool = UpstreamPool(self.reactor, connect_timeout=1.0, read_timeout=5.0,
                            max_connections=spec.get("max_connections", 1000),
                            max_pending=spec.get("max_pending", 100))
        self.state = UpstreamState(self.spec, self.reactor)
        self.upstream = UpstreamTerminal(self.spec, pool, self.state)
        self.outcomes = []
        call = BufferedCall(self.upstream, self.reactor, method, b"/x?y=1",
                            [(b"Host", b""), (b"X-Request-Id", b"r1")], "192.0.2.1", max_size,
                            self.outcomes.append, request_id=b"r1")
        call.start()
        return call

    def rows(self):
        """
        The state's per-server rows by address.
        """
        return {row["address"]: row for row in self.state.snapshot()}

    def test_interface(self):
        """
        A buffered call is an L{IResponseSink}.
        """
        self.assertTrue(verifyObject(IResponseSink, self.call()))

    def test_whole_response(self):
        """
        The request carries the server's address as Host and the given
        headers; the outcome holds status, headers and the whole body; the
        server's success is reported and it is no longer busy.
        """
        self.call(servers=(A,))
        transport, server = accept_upstream(self.reactor)
        sent = transport.value()
        self.assertTrue(sent.startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: 10.0.0.1:80\r\nX-Request-Id: r1\r\n"), sent)
        self.assertNotIn(b"content-length", sent.lower())
        self.assertEqual(self.outcomes, [])
        server.dataReceived(OK[:60])
        self.assertEqual(self.outcomes, [])
        server.dataReceived(OK[60:])
        (outcome,) = self.outcomes
        self.assertEqual((outcome.status, outcome.body, outcome.error, outcome.server),
                         (200, b'{"a":1}', None, "10.0.0.1:80"))
        self.assertIn((b"Content-Type", b"application/json"), outcome.headers)
        self.assertEqual((self.rows()["10.0.0.1:80"]["active"], self.rows()["10.0.0.1:80"]["requests"]), (0, 1))

    def test_method_must_be_idempotent(self):
        """
        A buffered call resends on retries: a POST is refused outright.
        """
        self.assertRaises(ValueError, self.call, method=b"POST")

    def test_no_healthy_server(self):
        """
        With no usable server the outcome is C{"no healthy server"}, on a
        later turn, never from within C{start}.
        """
        self.call(servers=(ServerSpec("10.0.0.1", 80, down=True),))
        self.assertEqual(self.outcomes, [])
        self.reactor.advance(0)
        self.assertEqual([o.error for o in self.outcomes], ["no healthy server"])
        self.assertEqual(self.reactor.tcpClients, [])

    def test_cancel(self):
        """
        A cancelled call closes its connection, reports nothing (not even
        later), frees the server, and is not counted as a failure.
        """
        call = self.call(servers=(A,))
        transport, server = accept_upstream(self.reactor)
        call.cancel()
        self.assertTrue(transport.disconnecting)
        server.dataReceived(OK)
        self.reactor.advance(10)
        self.assertEqual(self.outcomes, [])
        self.assertEqual((self.rows()["10.0.0.1:80"]["active"], self.rows()["10.0.0.1:80"]["failures"]), (0, 0))
        call.cancel()

    def test_cancel_before_no_server_answer(self):
        """
        Cancelling before the "no healthy server" outcome was delivered
        drops it.
        """
        call = self.call(servers=(ServerSpec("10.0.0.1", 80, down=True),))
        call.cancel()
        self.reactor.advance(1)
        self.assertEqual(self.outcomes, [])

    def test_too_large(self):
        """
        A body announced or sent larger than the bound ends the call as
        C{"too large"} and closes the connection; the server is not
        blamed.
        """
        responses = [
            # announced: refused at the head, before any body byte
            (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n", b"6\r\nghijkl\r\n"),
            (b"HTTP/1.1 200 OK\r\n\r\nabcdef", b"ghijk"),
        ]
        for chunks in responses:
            self.call(servers=(A,), max_size=10)
            transport, server = accept_upstream(self.reactor)
            for chunk in chunks:
                self.assertEqual(self.outcomes, [], chunks)
                server.dataReceived(chunk)
            self.assertEqual([o.error for o in self.outcomes], ["too large"], chunks)
            self.assertTrue(transport.disconnecting, chunks)
            self.assertEqual(self.rows()["10.0.0.1:80"]["failures"], 0, chunks)
            self.assertEqual(self.rows()["10.0.0.1:80"]["active"], 0, chunks)

    def test_exactly_the_bound(self):
        """
        A body of exactly C{max_size} bytes is whole.
        """
        self.call(servers=(A,), max_size=7)
        _, server = accept_upstream(self.reactor)
        server.dataReceived(OK)
        self.assertEqual([(o.error, o.body) for o in self.outcomes], [(None, b'{"a":1}')])

    def test_connect_refused_retried_then_unreachable(self):
        """
        A refused connection is retried on the other server; when that is
        refused too the outcome is C{"unreachable"}; both failures count.
        """
        self.call(retries=3)
        for index in (0, 1):
            factory = self.reactor.tcpClients[index][2]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual([o.error for o in self.outcomes], ["unreachable"])
        self.assertEqual([row["failures"] for row in self.rows().values()], [1, 1])

    def test_failure_lines_name_the_request(self):
        """
        Each server failure is logged once, naming the client's request id.
        """
        from twisted.logger import Logger

        from gatelayer.upstream import call as call_module

        events = []
        self.patch(call_module, "_log", Logger(observer=events.append))
        self.call(retries=3)
        for index in (0, 1):
            factory = self.reactor.tcpClients[index][2]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual([(e["address"], e["request_id"]) for e in events],
                         [("10.0.0.1:80", "r1"), ("10.0.0.2:80", "r1")])

    def test_broken_body_retried(self):
        """
        A response broken off in its body is retried on the other server
        (nothing of it went anywhere) and the outcome is the second
        server's whole answer.
        """
        self.call()
        _, first = accept_upstream(self.reactor, 0)
        first.dataReceived(OK[:-3])
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.outcomes, [])
        _, second = accept_upstream(self.reactor, 1)
        second.dataReceived(OK)
        self.assertEqual([(o.error, o.body) for o in self.outcomes], [(None, b'{"a":1}')])

    def test_read_timeout(self):
        """
        The upstream's read_timeout on the only server is C{"timeout"}.
        """
        self.call(servers=(A,))
        accept_upstream(self.reactor)
        self.reactor.advance(5)
        self.assertEqual([o.error for o in self.outcomes], ["timeout"])
        self.assertEqual(self.rows()["10.0.0.1:80"]["failures"], 1)

    def test_retry_on_status(self):
        """
        A status C{retry_on} lists is discarded when another server is
        left; with none left it is the outcome, and counted as a failure.
        """
        self.call(retries=3, retry_on=frozenset({"connect_error", "timeout", "503"}))
        unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno"
        _, first = accept_upstream(self.reactor, 0)
        first.dataReceived(unavailable)
        self.assertEqual(self.outcomes, [])
        _, second = accept_upstream(self.reactor, 1)
        second.dataReceived(unavailable)
        self.assertEqual([(o.status, o.body, o.error) for o in self.outcomes], [(503, b"no", None)])
        self.assertEqual([row["failures"] for row in self.rows().values()], [1, 1])

    def test_overloaded(self):
        """
        A server whose connections and queue are full is C{"overloaded"},
        not held against it.
        """
        self.call(servers=(A,), max_connections=1, max_pending=0)
        outcomes = self.outcomes
        second = BufferedCall(self.upstream, self.reactor, b"GET", b"/", [(b"Host", b"")], "192.0.2.1", 10,
                              outcomes.append)
        second.start()
        self.reactor.advance(0)
        self.assertEqual([o.error for o in outcomes], ["overloaded"])
        self.assertEqual(self.rows()["10.0.0.1:80"]["failures"], 0)
