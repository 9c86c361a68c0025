"""
Tests for the worker's HTTP server side (gatelayer.http) in memory: limits,
routing answers, the direct terminal, filters (the static terminal is tested
in test_http_static).
"""

import json

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.chain import IFilter, ITerminal, Reply
from gatelayer.http.contract import IGatewayRequest, RequestRouting
from gatelayer.http.lean_request import LeanRequest
from gatelayer.http.request import GatewayRequest
from gatelayer.testing.server import InMemoryGateway, error_document, parse_response, set_filters, with_server



CONFIG = """
[gateway]
max_body_size = 1KB
header_timeout = 5s
idle_timeout = 30s
body_timeout = 12s
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /hello
respond = 200 hello
[route:small]
path = /small
respond = 201 made
max_body_size = 10
[route:ro]
path = /ro
methods = GET
respond = 200 ro
"""


class ServerLimitsTests(SynchronousTestCase):
    """
    Malformed and oversized requests get the right status, as JSON, and the
    connection closes.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server))

    def assertRejected(self, data, status):
        channel, transport = self.gate.connect()
        channel.dataReceived(data)
        code, headers, body = parse_response(transport.value())
        self.assertEqual(code, status)
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(json.loads(body)["status"], status)
        self.assertTrue(transport.disconnecting)

    def test_malformed(self):
        """
        A request line that is not HTTP is 400.
        """
        self.assertRejected(b"HELLO\r\n\r\n", 400)

    def test_bad_content_length(self):
        """
        Conflicting framing (two different Content-Length) is 400.
        """
        self.assertRejected(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400)

    def test_request_line_too_long(self):
        """
        A request line over 8 KB is 414.
        """
        self.assertRejected(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414)

    def test_request_line_without_end(self):
        """
        A request line that never ends is cut at the line limit with 414.
        """
        self.assertRejected(b"GET /" + b"a" * 70000, 414)

    def test_header_too_large(self):
        """
        Headers over the total size are 431.
        """
        self.assertRejected(b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431)

    def test_headers_too_large_in_total(self):
        """
        Headers each under the line limit but over 32 KB together are 431.
        """
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 4000) for i in range(10))
        self.assertRejected(b"GET /hello HTTP/1.1\r\n" + headers + b"\r\n", 431)

    def test_too_many_headers(self):
        """
        More than 100 headers is 431.
        """
        headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
        self.assertRejected(b"GET /hello HTTP/1.1\r\n" + headers + b"\r\n", 431)

    def test_body_too_large_declared(self):
        """
        A declared body over max_body_size is 413 before it is read.
        """
        self.assertRejected(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n", 413)

    def test_body_too_large_per_route(self):
        """
        A route's own max_body_size applies.
        """
        self.assertRejected(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", 413)

    def test_body_too_large_chunked(self):
        """
        A chunked body is counted as it arrives and refused once too large.
        """
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        self.assertRejected(b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2, 413)

    def test_slow_headers(self):
        """
        A client trickling its headers is cut with 408 at the absolute
        deadline, however often it sends a byte.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\n")
        for _ in range(9):
            self.gate.reactor.advance(0.5)
            channel.dataReceived(b"X")
        self.assertEqual(transport.value(), b"")
        self.gate.reactor.advance(0.6)
        self.assertEqual(parse_response(transport.value())[0], 408)
        self.assertTrue(transport.disconnecting)

    def test_slow_body(self):
        """
        A request body that stops arriving for body_timeout (12 s here, the
        idle timeout being 30 s) is cut with a JSON 408 and the connection
        closes; each read pushes the deadline back.
        """
        for framing, piece in [(b"Content-Length: 100\r\n\r\n", b"0123456789"),
                               (b"Transfer-Encoding: chunked\r\n\r\n", b"a\r\n0123456789\r\n")]:
            with self.subTest(framing=framing):
                channel, transport = self.gate.connect()
                channel.dataReceived(b"POST /hello HTTP/1.1\r\nHost: x\r\n" + framing + piece)
                self.gate.reactor.advance(11)
                channel.dataReceived(piece)
                self.gate.reactor.advance(11.9)
                self.assertEqual(transport.value(), b"")
                self.gate.reactor.advance(0.2)
                status, headers, body = parse_response(transport.value())
                self.assertEqual(status, 408)
                self.assertEqual(headers[b"content-type"], [b"application/json"])
                self.assertEqual(error_document(body, headers), {"error": "request body not received in time",
                                                    "status": 408})
                self.assertTrue(transport.disconnecting)
                self.assertEqual(self.gate.gateway.active, 0, "the request's bookkeeping is done")

    def test_body_timeout_after_continue(self):
        """
        With Expect: 100-continue the body timeout runs from the 100
        Continue.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 4\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.gate.reactor.advance(12.1)
        self.assertEqual(parse_response(transport.value().split(b"\r\n\r\n", 1)[1])[0], 408)

    def test_no_continue_after_refusal(self):
        """
        A body declared too large is refused with 413 and no 100 Continue.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 5000\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[0], 413)
        self.assertNotIn(b"100 Continue", transport.value())

    def test_http10_two_hosts(self):
        """
        An HTTP/1.0 request with two Host headers is 400, as an HTTP/1.1
        one; HTTP/1.0 without Host is served.
        """
        self.assertRejected(b"GET /hello HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", 400)
        self.assertEqual(parse_response(self.gate.exchange(b"GET /hello HTTP/1.0\r\n\r\n"))[0], 200)

    def test_bare_lf_chunk_line(self):
        """
        A chunk-size line ended by a bare LF is 400 at once: no CRLF is
        waited for, no time passes.
        """
        for body in [b"5\n", b"5\r\nhello\n0\n\n", b"0\n\n"]:
            with self.subTest(body=body):
                self.assertRejected(b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    + body, 400)

    def test_one_timer_per_connection(self):
        """
        Keep-alive requests move the connection's one timer instead of
        scheduling new ones.
        """
        channel, transport = self.gate.connect()
        timer = channel._timer
        for _ in range(5):
            channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIs(channel._timer, timer)
        self.assertEqual(len([c for c in self.gate.reactor.getDelayedCalls() if c.active()]), 1)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200"), 5)

    def test_deadline_per_request(self):
        """
        The header deadline restarts with each request of a keep-alive
        connection and does not fire on an idle connection.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[0], 200)
        self.gate.reactor.advance(20)
        self.assertFalse(transport.disconnecting)
        self.gate.reactor.advance(11)
        self.assertTrue(transport.disconnecting, "idle_timeout closes the idle connection")


class ServerRoutingTests(SynchronousTestCase):
    """
    Direct responses, 404/405, keep-alive.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server))

    def test_direct(self):
        """
        A respond route answers with its status and body.
        """
        status, headers, body = parse_response(self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(headers[b"content-length"], [b"5"])

    def test_not_found(self):
        """
        No route: 404 JSON.
        """
        status, headers, body = parse_response(self.gate.exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"], "no route matches this request")

    def test_method_not_allowed(self):
        """
        A method the route refuses: 405 with Allow.
        """
        status, headers, _ = parse_response(self.gate.exchange(b"DELETE /ro HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual((status, headers[b"allow"]), (405, [b"GET"]))

    def test_drain_mid_head(self):
        """
        A request whose head is arriving when the worker starts draining is
        still answered; the connection closes after it.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        self.gate.factory.drain()
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"\r\n")
        status, _, body = parse_response(transport.value())
        self.assertEqual((status, body), (200, b"hello"))
        self.assertTrue(transport.disconnecting)

    def test_keep_alive_pipelined(self):
        """
        Several requests on one connection are answered in order.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /ro HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 200"), 2)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.gate.gateway.requests, 2)
        self.assertEqual(self.gate.gateway.active, 0)


@implementer(IFilter)
class RecordingFilter:
    """
    A filter that records its calls and answers as told.
    """

    def __init__(self, name, calls, answer=None):
        self.name = name
        self.calls = calls
        self.answer = answer

    def on_request(self, exchange):
        self.calls.append(("request", self.name))
        exchange.response_headers.append((b"x-filter", self.name.encode()))
        return self.answer

    def on_response(self, exchange):
        self.calls.append(("response", self.name))


class FilterChainTests(SynchronousTestCase):
    """
    Filters run in order, may answer at once, and see the response phase
    in reverse.
    """

    http_server = "twisted"

    def gate(self, *filters):
        gate = InMemoryGateway(with_server(CONFIG, self.http_server))
        route = gate.table_route = gate.gateway.table.match("", b"/hello", "GET").route
        set_filters(gate.gateway, route, filters)
        return gate

    def test_order(self):
        """
        Request phase in order, response phase reversed, headers added.
        """
        calls = []
        a, b = RecordingFilter("a", calls), RecordingFilter("b", calls)
        verifyObject(IFilter, a)
        gate = self.gate(a, b)
        status, headers, _ = parse_response(gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 200)
        self.assertEqual(calls, [("request", "a"), ("request", "b"), ("response", "b"), ("response", "a")])
        self.assertEqual(headers[b"x-filter"], [b"a", b"b"])

    def test_answer_at_once(self):
        """
        A filter's Reply is the response; later filters do not run.
        """
        calls = []
        gate = self.gate(RecordingFilter("a", calls, Reply(429, b"slow down", ((b"retry-after", b"3"),))),
                         RecordingFilter("b", calls))
        status, headers, body = parse_response(gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual((status, body, headers[b"retry-after"]), (429, b"slow down", [b"3"]))
        self.assertEqual(calls, [("request", "a"), ("response", "a")])

    def test_deferred(self):
        """
        A filter answering with a Deferred holds the request until it fires.
        """
        calls = []
        d = Deferred()
        gate = self.gate(RecordingFilter("a", calls, d), RecordingFilter("b", calls))
        channel, transport = gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        d.callback(None)
        self.assertEqual(parse_response(transport.value())[0], 200)
        self.assertEqual(len(calls), 4)

    def test_failing_filter(self):
        """
        A filter that raises gives a JSON 500, never a traceback.
        """
        class Broken(RecordingFilter):
            def on_request(self, exchange):
                raise ZeroDivisionError("bug")
        gate = self.gate(Broken("x", []))
        status, _, body = parse_response(gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 500)
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


@implementer(ITerminal)
class HoldingTerminal:
    """
    A terminal that keeps each exchange unanswered, for tests to look at
    the request behind it.
    """

    def __init__(self):
        self.exchanges = []

    def serve(self, exchange):
        """
        Keep C{exchange}.
        """
        self.exchanges.append(exchange)


class RequestContractTests(SynchronousTestCase):
    """
    Both server channels' requests provide the gateway's request contract,
    with the routing record the gateway made.
    """

    http_server = "twisted"
    request_class = GatewayRequest

    def test_contract(self):
        """
        The request behind an exchange provides L{IGatewayRequest}; its
        routing record has the match, the canonical host, the body limit
        and the gateway; the exchange reaches what a terminal needs.
        """
        gate = InMemoryGateway(with_server(CONFIG, self.http_server))
        route = gate.gateway.table.match("", b"/small", "POST").route
        terminal = HoldingTerminal()
        object.__setattr__(route, "terminal", terminal)
        channel, transport = gate.connect()
        channel.dataReceived(b"POST /small?a=1 HTTP/1.1\r\nHost: Example.COM\r\nContent-Length: 3\r\n\r\nabc")
        exchange, = terminal.exchanges
        request = exchange.request
        self.assertIsInstance(request, self.request_class)
        verifyObject(IGatewayRequest, request)
        routing = request.routing
        self.assertIsInstance(routing, RequestRouting)
        self.assertEqual((routing.match.route, routing.host, routing.body_limit, routing.gateway),
                         (route, "example.com", 10, gate.gateway))
        self.assertEqual((exchange.host, exchange.path, exchange.query), ("example.com", b"/small", b"a=1"))
        self.assertEqual((exchange.body_length(), exchange.body.read()), (3, b"abc"))
        self.assertFalse(exchange.disconnected)
        lost = []
        exchange.on_client_lost(lambda: lost.append(True))
        self.assertEqual(gate.gateway.active, 1)
        channel.connectionLost(None)
        self.assertTrue(request.disconnected and exchange.disconnected)
        self.assertEqual((lost, gate.gateway.active), ([True], 0))


class LeanRequestContractTests(RequestContractTests):
    """
    The request contract, with the lean server channel.
    """

    http_server = "gatelayer"
    request_class = LeanRequest


class LeanServerLimitsTests(ServerLimitsTests):
    """
    The limits, with the lean server channel.
    """

    http_server = "gatelayer"


class LeanServerRoutingTests(ServerRoutingTests):
    """
    Routing answers, with the lean server channel.
    """

    http_server = "gatelayer"


class LeanFilterChainTests(FilterChainTests):
    """
    The filter chain, with the lean server channel.
    """

    http_server = "gatelayer"
