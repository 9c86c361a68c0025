"""
Tests for the exchange's responder (L{gatelayer.chain.Exchange.respond},
C{reply}, C{reply_error}) and the response-body phase of filters
(L{gatelayer.chain.IBodyFilter}), through both server channels, direct and
proxied routes.
"""

import json
import os

from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, IBodyFilter, IBodySink, IFilter, ITerminal, Reply, RouteChain, json_reply
from gatelayer.http.direct import DirectTerminal
from gatelayer.http.static import FileStreamer
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, error_document, parse_response, set_filters, split_responses, with_server)
from gatelayer.testing.transports import FillingTransport

CONFIG = """
[gateway]
server_header = gatelayer
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
connect_timeout = 1s
read_timeout = 5s
[route:api]
path = /api/
upstream = app
[route:hello]
path = /hello
respond = 200 hello
[route:static]
path = /files/
static = .
"""

STATIC_CONFIG = """
[gateway]
http_server = {server}
[listener:web]
bind = 127.0.0.1:8080
[route:files]
path = /files/
static = {root}
"""

GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


@implementer(IFilter)
class HeaderFilter:
    """
    A filter without a body hook: notes its response phase and adds a
    header.
    """

    def __init__(self, name, calls, answer=None):
        self.name = name
        self.calls = calls
        self.answer = answer

    def on_request(self, exchange):
        """
        Pass, or answer with C{answer}.
        """
        self.calls.append(("request", self.name))
        return self.answer

    def on_response(self, exchange):
        """
        Note the call and add C{x-seen}.
        """
        self.calls.append(("response", self.name, exchange.status))
        exchange.response_headers.append((b"x-seen", self.name.encode("ascii")))


@implementer(IBodyFilter)
class UpperFilter(HeaderFilter):
    """
    A body filter that upper-cases the body (one byte for one: the length
    is kept) and counts the chunks and bytes it sees.
    """

    preserves_length = True

    def __init__(self, name, calls, answer=None):
        super().__init__(name, calls, answer)
        self.chunks = []
        self.ended = 0

    def on_response_body(self, exchange, data):
        """
        Upper-case C{data}.
        """
        self.chunks.append(data)
        return data.upper()

    def on_response_end(self, exchange):
        """
        Nothing is held back.
        """
        self.ended += 1
        return b""


@implementer(IBodyFilter)
class FramingFilter(HeaderFilter):
    """
    A body filter that changes the length: each chunk is bracketed, and a
    trailer is added at the end.
    """

    preserves_length = False

    def on_response_body(self, exchange, data):
        """
        Bracket C{data} (an empty chunk stays empty).
        """
        return b"[" + data + b"]" if data else data

    def on_response_end(self, exchange):
        """
        The trailer.
        """
        return b"<end>"


@implementer(IBodyFilter)
class DecliningFramingFilter(FramingFilter):
    """
    A L{FramingFilter} that declines the body of every response its
    C{on_response} sees, noting the Content-Length it saw there.
    """

    def __init__(self, name, calls):
        super().__init__(name, calls)
        self.lengths = []

    def on_response(self, exchange):
        """
        Note the announced length; decline this response's body.
        """
        self.lengths.append(exchange.request.responseHeaders.getRawHeaders(b"content-length"))
        exchange.body_declined += (self,)


@implementer(IBodyFilter)
class BrokenBodyFilter(HeaderFilter):
    """
    A body filter whose body hook raises.
    """

    preserves_length = True

    def on_response_body(self, exchange, data):
        """
        Fail.
        """
        raise ZeroDivisionError("bug in a body filter")

    def on_response_end(self, exchange):
        """
        Never reached.
        """
        return b""


@implementer(IBodyFilter)
class HoldingFilter(HeaderFilter):
    """
    A body filter that holds the whole body back: at the end it returns it
    upper-cased, or, once C{answer_after} bytes are held, answers in the
    terminal's place.

    @ivar answered: what each C{answer_instead} call returned.
    """

    preserves_length = True

    def __init__(self, name, calls, answer_after=None):
        super().__init__(name, calls)
        self.answer_after = answer_after
        self.held = []
        self.answered = []

    def on_response_body(self, exchange, data):
        """
        Hold C{data}; answer instead once enough is held.
        """
        self.held.append(data)
        if self.answer_after is not None and len(b"".join(self.held)) >= self.answer_after:
            self.answered.append(exchange.answer_instead(
                507, ((b"content-type", b"text/plain"),), b"instead"))
        return None

    def on_response_end(self, exchange):
        """
        The held body, upper-cased.
        """
        return b"".join(self.held).upper()


class RouteChainTests(SynchronousTestCase):
    """
    A route's chain finds its body filters once, when built.
    """

    def test_body_hooks_found_at_build(self):
        """
        Only filters providing L{IBodyFilter} are body hooks, by index in
        request order; a chain without them has none.
        """
        calls = []
        plain, upper = HeaderFilter("plain", calls), UpperFilter("upper", calls)
        verifyObject(IFilter, plain)
        verifyObject(IBodyFilter, upper)
        verifyObject(IBodyFilter, FramingFilter("framing", calls))
        self.assertEqual(RouteChain.build([plain, upper, plain]).body_hooks, (1,))
        self.assertEqual(RouteChain.build([plain]).body_hooks, ())
        self.assertEqual(RouteChain.build([], b"gw").server_header, b"gw")

    def test_terminals_are_terminals(self):
        """
        The direct and proxy terminals provide L{ITerminal}.
        """
        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        for name in ("api", "hello", "static"):
            verifyObject(ITerminal, self.route(gate, name).terminal)
        self.assertIsInstance(self.route(gate, "hello").terminal, DirectTerminal)

    def route(self, gate, name):
        """
        The built route C{name} of C{gate}.
        """
        path = {"api": b"/api/x", "hello": b"/hello", "static": b"/files/x"}[name]
        return gate.gateway.table.match("", path, "GET").route


class ResponderTests(SynchronousTestCase):
    """
    Terminals answer through the exchange: the response-head phase runs
    once, reversed, for the filters that ran; body bytes pass through the
    body filters' hooks.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor
        self.calls = []

    def filters(self, path, *filters):
        """
        Put C{filters} on the route serving C{path}.
        """
        route = self.gate.gateway.table.match("", path, "GET").route
        set_filters(self.gate.gateway, route, filters)

    def test_head_phase_once_reversed(self):
        """
        A direct answer runs every filter's response phase once, in reverse
        order, with the status known; their headers and the Server header
        are on the response, and the Content-Length is the body's.
        """
        self.filters(b"/hello", HeaderFilter("a", self.calls), HeaderFilter("b", self.calls))
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(self.calls, [("request", "a"), ("request", "b"),
                                      ("response", "b", 200), ("response", "a", 200)])
        self.assertEqual(headers[b"x-seen"], [b"b", b"a"])
        self.assertEqual(headers[b"server"], [b"gatelayer"])
        self.assertEqual(headers[b"content-length"], [b"5"])

    def test_body_filter_direct(self):
        """
        A body filter that keeps the length transforms a direct answer; the
        Content-Length stays.
        """
        upper = UpperFilter("upper", self.calls)
        self.filters(b"/hello", upper)
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body, headers[b"content-length"]), (200, b"HELLO", [b"5"]))
        self.assertEqual((upper.chunks, upper.ended), ([b"hello"], 1))

    def test_body_filter_changing_length(self):
        """
        A body filter that changes the length drops the Content-Length: the
        body goes chunked, with what the filter adds at the end.
        """
        self.filters(b"/hello", FramingFilter("framing", self.calls))
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body), (200, b"[hello]<end>"))
        self.assertNotIn(b"content-length", headers)
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])

    def test_body_declined(self):
        """
        A body filter that declines a response's body in its response
        phase is left out of the body phase: the body and its
        Content-Length stay as the terminal made them, and the other body
        filters still run.
        """
        declining = DecliningFramingFilter("declining", self.calls)
        upper = UpperFilter("upper", self.calls)
        self.filters(b"/hello", declining, upper)
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body, headers[b"content-length"]), (200, b"HELLO", [b"5"]))
        self.assertEqual(upper.chunks, [b"hello"])

    def test_head_phase_sees_length(self):
        """
        The response-head phase sees the Content-Length a terminal
        announces: a direct answer's, the gateway's own error's, and a
        proxied response's.
        """
        declining = DecliningFramingFilter("declining", self.calls)
        self.filters(b"/hello", declining)
        self.gate.exchange(GET_HELLO)
        self.filters(b"/api/", declining)
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        channel.dataReceived(b"GET /api/b HTTP/1.1\r\nHost: x\r\n\r\n")
        protocol.dataReceived(b"HTTP/1.1 999 Nine\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(declining.lengths[:2], [[b"5"], [b"3"]])
        self.assertEqual(len(declining.lengths), 3)
        error = json.dumps({"error": "upstream server sent an invalid response", "status": 502,
                            "request_id": self.gate.gateway.request_ids.prefix.decode() + "-3"},
                           separators=(",", ":"))
        self.assertEqual(declining.lengths[2], [b"%d" % (len(error),)])

    def test_body_filters_reversed(self):
        """
        Body hooks run in reverse order: the filter nearest the terminal
        sees the terminal's bytes first.
        """
        upper = UpperFilter("upper", self.calls)
        self.filters(b"/hello", FramingFilter("framing", self.calls), upper)
        body = parse_response(self.gate.exchange(GET_HELLO))[2]
        self.assertEqual(body, b"[HELLO]<end>")

    def test_reply_skips_filters_that_did_not_run(self):
        """
        A filter's L{Reply} goes through the head and body phases of the
        filters that ran only.
        """
        first = UpperFilter("first", self.calls, Reply(429, b"slow down", ((b"retry-after", b"3"),)))
        later = UpperFilter("later", self.calls)
        self.filters(b"/hello", first, later)
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body, headers[b"retry-after"]), (429, b"SLOW DOWN", [b"3"]))
        self.assertEqual(headers[b"x-seen"], [b"first"])
        self.assertEqual((first.chunks, later.chunks), ([b"slow down"], []))

    def test_gateway_reply_carries_request_id(self):
        """
        An error a filter makes with C{json_reply} (a 429, a WAF's 403) gets
        the request's id in its document, the same as the response header;
        a filter's own bytes (no payload) are sent as they are.
        """
        refusing = HeaderFilter("refusing", self.calls, json_reply(
            429, {"title": "Too Many Requests", "status": 429}, content_type=b"application/problem+json"))
        self.filters(b"/hello", refusing)
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        document = json.loads(body)
        self.assertEqual(status, 429)
        self.assertEqual(document["request_id"].encode("ascii"), headers[b"x-request-id"][0])
        self.assertEqual((document["title"], headers[b"content-length"]),
                         ("Too Many Requests", [b"%d" % (len(body),)]))
        plain = HeaderFilter("plain", self.calls, Reply(403, b'{"mine":1}'))
        self.filters(b"/hello", plain)
        self.assertEqual(parse_response(self.gate.exchange(GET_HELLO))[2], b'{"mine":1}')

    def test_reply_error(self):
        """
        The gateway's own JSON error (a filter failing) runs the response
        phase of the filters that ran, and carries no Server header.
        """
        class Broken(HeaderFilter):
            """
            A filter whose request phase raises.
            """

            def on_request(self, exchange):
                """
                Fail.
                """
                raise ZeroDivisionError("bug")
        self.filters(b"/hello", HeaderFilter("a", self.calls), Broken("b", self.calls))
        status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual(status, 500)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(error_document(body, headers), {
            "type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "a filter failed"})
        self.assertEqual(headers[b"x-seen"], [b"b", b"a"])
        self.assertNotIn(b"server", headers)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_body_filter_failing_before_head_answers_500(self):
        """
        A body hook that raises before anything of the response went out
        makes the answer the gateway's 500 problem (the body is never sent
        half-transformed), and is logged.
        """
        self.filters(b"/hello", BrokenBodyFilter("broken", self.calls))
        channel, transport = self.gate.connect()
        channel.dataReceived(GET_HELLO)
        self.assertNotIn(b"hello", transport.value())
        status, headers, body = parse_response(transport.value())
        self.assertEqual(status, 500)
        self.assertEqual(error_document(body, headers)["detail"], "a filter failed")
        self.assertFalse(transport.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_body_filter_failing_mid_body_cuts(self):
        """
        A body hook that raises once the head is out can only cut the client
        connection: the client sees a truncated response, and the failure is
        logged.
        """
        class LateBroken(UpperFilter):
            """
            A body filter failing on its second chunk.
            """

            def on_response_body(self, exchange, data):
                """
                Pass the first chunk, fail on the next.
                """
                if self.chunks:
                    raise ZeroDivisionError("bug in a body filter")
                return UpperFilter.on_response_body(self, exchange, data)
        self.filters(b"/api/x", LateBroken("late", self.calls))
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertIn(b"HELLO", client.value())
        protocol.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        self.assertNotIn(b"WORLD", client.value())
        # aborted (StringTransport sets disconnected only in abortConnection)
        self.assertTrue(client.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_proxy_streams_through_body_filter(self):
        """
        A proxied, chunked response streams chunk by chunk through a body
        filter, with back-pressure still reaching the upstream connection.
        """
        upper = UpperFilter("upper", self.calls)
        self.filters(b"/api/x", upper)
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertIn(b"HELLO", client.value())
        self.assertEqual(upper.chunks, [b"hello"])
        channel.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")
        protocol.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body, headers[b"x-seen"]), (200, b"HELLO WORLD", [b"upper"]))
        self.assertEqual((upper.chunks, upper.ended), ([b"hello", b" world"], 1))

    def test_proxy_truncated_with_body_filter(self):
        """
        An upstream response broken off mid-body still cuts the client
        connection when a body filter is on the route.
        """
        self.filters(b"/api/x", UpperFilter("upper", self.calls))
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertIn(b"PART", client.value())
        self.assertTrue(client.disconnected, "a truncated response is cut by an abort")

    def test_proxy_head_request(self):
        """
        A HEAD answer relays the head through the responder: no body, the
        upstream's Content-Length kept.
        """
        self.filters(b"/api/x", UpperFilter("upper", self.calls))
        channel, client = self.gate.connect()
        channel.dataReceived(b"HEAD /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
        head = client.value()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"Content-Length: 7\r\n", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)

    def test_held_body_released_at_end(self):
        """
        A body held back whole goes out at the end, the head with it.
        """
        self.filters(b"/api/x", HoldingFilter("hold", self.calls))
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertEqual(client.value(), b"", "the head waits for the body")
        protocol.dataReceived(b"0\r\n\r\n")
        self.assertEqual(parse_response(client.value())[::2], (200, b"HELLO"))

    def test_two_holding_filters(self):
        """
        Two filters holding the body back: the outer one gets what the
        inner one releases at the end, and releases it in turn.
        """
        outer, inner = HoldingFilter("outer", self.calls), HoldingFilter("inner", self.calls)
        self.filters(b"/hello", outer, inner)
        self.assertEqual(parse_response(self.gate.exchange(GET_HELLO))[::2], (200, b"HELLO"))
        self.assertEqual((inner.held, outer.held), ([b"hello"], [b"HELLO"]))

    def test_answer_instead_at_the_end(self):
        """
        An outer filter answering in the terminal's place from its end
        hook: the answer goes out once, and nothing after it.
        """
        outer, inner = HoldingFilter("outer", self.calls, answer_after=1), HoldingFilter("inner", self.calls)
        self.filters(b"/hello", outer, inner)
        channel, client = self.gate.connect()
        channel.dataReceived(GET_HELLO)
        responses = split_responses(client.value())
        self.assertEqual([(status, body) for status, _, body in responses], [(507, b"instead")])
        self.assertEqual(outer.answered, [True])

    def test_answer_instead_stops_the_terminal(self):
        """
        A body filter that held every byte answers in the terminal's place:
        the upstream's head is replaced (what filters added stays), the
        upstream exchange is abandoned, and what it still sends is dropped;
        once answered, a second answer is refused.
        """
        holding = HoldingFilter("hold", self.calls, answer_after=3)
        self.filters(b"/api/x", holding)
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-App: yes\r\n\r\nab")
        self.assertEqual(client.value(), b"")
        protocol.dataReceived(b"cd")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body, headers[b"content-length"]), (507, b"instead", [b"7"]))
        self.assertEqual(headers[b"x-seen"], [b"hold"])
        self.assertNotIn(b"x-app", headers)
        self.assertEqual(holding.answered, [True])
        self.assertTrue(upstream.disconnecting or upstream.disconnected, "the upstream exchange is abandoned")
        state = self.gate.gateway.upstreams["app"].state
        self.assertEqual(state.active(state.pick("192.0.2.1", [])), 0, "the attempt is over")
        self.assertFalse(client.disconnecting)
        protocol.dataReceived(b"efghij")
        self.assertEqual(parse_response(client.value())[2], b"instead")
        # The same connection serves the next request.
        channel.dataReceived(GET_HELLO)
        self.assertEqual(parse_response(client.value().split(b"instead", 1)[1])[::2], (200, b"hello"))

    def test_answer_instead_refused_once_out(self):
        """
        Once bytes went out, answering instead is refused (returns False).
        """
        answers = []

        @implementer(IBodyFilter)
        class Late(UpperFilter):
            """
            Passes the body, then tries to answer instead at the end.
            """

            def on_response_end(self, exchange):
                """
                Try to answer instead.
                """
                answers.append(exchange.answer_instead(500, (), b"late"))
                return b""
        self.filters(b"/hello", Late("late", self.calls))
        status, _, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body, answers), (200, b"HELLO", [False]))

    def test_abort_while_held(self):
        """
        An upstream breaking off while a body filter holds the body: the
        client gets the gateway's 502, not a cut connection.
        """
        self.filters(b"/api/x", HoldingFilter("hold", self.calls))
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        status, _, body = parse_response(client.value())
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(body), {"error": "response broken off before it was sent", "status": 502})
        self.assertFalse(client.disconnecting)

    def test_checked_headers_taken_as_they_are(self):
        """
        A terminal may answer with a L{Headers} it checked (the proxy's
        relayed head): it becomes the response's headers, and the filters'
        response phase, the Server header and the request id are added to
        it as to pairs. Headers already on the response are kept beside
        its own.
        """
        route = self.gate.gateway.table.match("", b"/hello", "GET").route
        original = route.terminal
        self.filters(b"/hello", HeaderFilter("a", self.calls))
        given = []

        @implementer(ITerminal)
        class Checked:
            """
            Answers 200 with a L{Headers}, after a header already set on
            the second request.
            """

            def serve(self, exchange):
                """
                Answer with C{X-Own} in a L{Headers}.
                """
                if given:
                    exchange.request.responseHeaders.addRawHeader(b"X-Before", b"0")
                headers = Headers({b"X-Own": [b"1"]})
                given.append(headers)
                exchange.respond(200, headers)
                exchange.write(b"ok")
                exchange.finish()
        object.__setattr__(route, "terminal", Checked())
        self.addCleanup(object.__setattr__, route, "terminal", original)
        for before in ([], [b"0"]):
            status, headers, body = parse_response(self.gate.exchange(GET_HELLO))
            self.assertEqual((status, body), (200, b"ok"))
            self.assertEqual(headers[b"x-own"], [b"1"])
            self.assertEqual(headers[b"x-seen"], [b"a"])
            self.assertEqual(headers[b"server"], [b"gatelayer"])
            self.assertEqual(headers.get(b"x-before", []), before)
            self.assertEqual(len(headers[b"x-request-id"]), 1)

    def test_sink_is_the_exchange(self):
        """
        C{respond} returns the exchange itself as the body sink (no
        allocation per response), and it provides L{IBodySink}.
        """
        sinks = []
        route = self.gate.gateway.table.match("", b"/hello", "GET").route
        original = route.terminal

        @implementer(ITerminal)
        class Recording:
            """
            Answers 204 through the sink C{respond} returns, keeping both.
            """

            def serve(self, exchange):
                """
                Answer and keep the exchange and its sink.
                """
                sinks.append((exchange, exchange.respond(204)))
                verifyObject(IBodySink, exchange)
                exchange.finish()
        object.__setattr__(route, "terminal", Recording())
        self.addCleanup(object.__setattr__, route, "terminal", original)
        status = parse_response(self.gate.exchange(GET_HELLO))[0]
        self.assertEqual(status, 204)
        (exchange, sink), = sinks
        self.assertIs(sink, exchange)
        self.assertTrue(sink.closed)


class StaticBodyFilterTests(SynchronousTestCase):
    """
    Static answers go through the responder too: validators and ranges
    keep their statuses, and a large file streams through a body filter
    with back-pressure.
    """

    http_server = "twisted"

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.data = bytes(range(256)) * 1000
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(self.data)
        self.gate = InMemoryGateway(STATIC_CONFIG.format(server=self.http_server, root=self.root))
        self.counter = UpperFilter("counter", [])
        route = self.gate.gateway.table.match("", b"/files/big.bin", "GET").route
        set_filters(self.gate.gateway, route, [self.counter])

    def get(self, *headers):
        """
        GET the big file with C{headers}; returns C{(status, headers, body)}.
        """
        data = b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
        return parse_response(self.gate.exchange(data))

    def test_not_modified_and_range(self):
        """
        A 304 has no body (the body hook sees nothing); a 206 carries its
        range, transformed, with its Content-Length.
        """
        status, headers, _ = self.get()
        self.assertEqual(status, 200)
        status, _, body = self.get((b"If-None-Match", headers[b"etag"][0]))
        self.assertEqual((status, body), (304, b""))
        chunks = len(self.counter.chunks)
        status, headers, body = self.get((b"Range", b"bytes=0-9"))
        self.assertEqual((status, headers[b"content-length"]), (206, [b"10"]))
        self.assertEqual(body, self.data[:10].upper())
        self.assertEqual(len(self.counter.chunks), chunks + 1)

    def test_streams_with_back_pressure(self):
        """
        A large file goes through the body hook chunk by chunk; the
        streamer stops while the client's buffer is full.
        """
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=FileStreamer.CHUNK)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        rounds = 0
        while transport.paused:
            self.assertLessEqual(len(transport.value()) - transport.drained, FileStreamer.CHUNK + 1024)
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 100)
        self.assertGreaterEqual(rounds, 3)
        status, headers, body = parse_response(transport.value())
        self.assertEqual((status, body), (200, self.data.upper()))
        self.assertGreater(len(self.counter.chunks), 3)
        self.assertEqual(self.counter.ended, 1)


class LeanStaticBodyFilterTests(StaticBodyFilterTests):
    """
    Static answers through the responder, with the lean server channel.
    """

    http_server = "gatelayer"


class LeanResponderTests(ResponderTests):
    """
    The responder with the lean server channel.
    """

    http_server = "gatelayer"


class UnansweredExchangeTests(SynchronousTestCase):
    """
    An exchange made only for filtering (no request) still carries the
    filter-facing fields with their defaults.
    """

    def test_defaults(self):
        """
        No request, no filters ran, no body filters.
        """
        exchange = Exchange(method=b"GET", path=b"/", query=b"", headers=Headers(), client_ip="192.0.2.1")
        self.assertEqual((exchange.request, exchange.ran, exchange.body_filters), (None, 0, ()))
        self.assertEqual(exchange.chain.filters, ())
        self.assertEqual((exchange.lost_callback, exchange.new_body), (None, None))

    def test_replace_body(self):
        """
        A replaced request body is what the terminal reads, with its length.
        """
        exchange = Exchange(method=b"POST", path=b"/", query=b"", headers=Headers(), client_ip="192.0.2.1")
        exchange.replace_body(b'{"a":1}')
        self.assertEqual((exchange.body_length(), exchange.body.read()), (7, b'{"a":1}'))
