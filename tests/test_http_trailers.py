"""
Tests for trailer fields: what the chunked decoder keeps, which fields may
be passed on (gatelayer.http1.trailers), the upstream client reporting a
response's trailers and sending a request's, and, in memory through a
whole gateway on both server channels, response trailers reaching a client
that said C{TE: trailers} and request trailers reaching the upstream.
"""

from io import BytesIO

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http1 import (
    FORBIDDEN_TRAILERS, REQUEST, RESPONSE, BadRequest, BadResponse, ChunkedDecoder,
    allowed_trailers, build_request_head, last_chunk, wants_trailers,
)
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, feed, parse_response, set_filters, with_server,
)
from gatelayer.upstream.client import HTTP11UpstreamConnection
from gatelayer.upstream.request import UpstreamRequest
from tests.test_chain_responder import UpperFilter
from tests.test_upstream_client import SERVER, RecordingOwner, RecordingSink

BODY = b"5\r\nhello\r\n0\r\n"

#: Trailer sections a peer may send, hostile ones included, with what the
#: decoder keeps or the fault it raises (its status, for requests).
DECODED = [
    (b"X-Checksum: abc\r\n\r\n", [(b"X-Checksum", b"abc")]),
    (b"X-A:1\r\nx-b: \t two words \t\r\n\r\n", [(b"X-A", b"1"), (b"x-b", b"two words")]),
    (b"X-Empty:\r\n\r\n", [(b"X-Empty", b"")]),
    (b"Content-Length: 99\r\nSet-Cookie: a=1\r\n\r\n",
     [(b"Content-Length", b"99"), (b"Set-Cookie", b"a=1")]),
    (b"\r\n", ()),
    (b"X-Bad : 1\r\n\r\n", 400),
    (b"X Bad: 1\r\n\r\n", 400),
    (b"X-Bad\r\n\r\n", 400),
    (b": no-name\r\n\r\n", 400),
    (b"X-Nul: a\x00b\r\n\r\n", 400),
    (b"X-Fold: a\r\n b\r\n\r\n", 400),
    (b"X-Lf: a\n\r\n", 400),
    (b"X-Cr: a\rb\r\n\r\n", 400),
    (b"X-Big: " + b"x" * 8200 + b"\r\n\r\n", 431),
    (b"".join(b"X-%d: 1\r\n" % (i,) for i in range(101)) + b"\r\n", 431),
    (b"".join(b"X-%d: %s\r\n" % (i, b"y" * 400) for i in range(90)) + b"\r\n", 431),
]


def _decode(data, limits, byte_by_byte):
    decoder = ChunkedDecoder(limits)
    pieces = []
    chunks = [data[i:i + 1] for i in range(len(data))] if byte_by_byte else [data]
    for index, chunk in enumerate(chunks):
        got, rest = decoder.feed(chunk)
        pieces += got
        if rest is not None:
            return b"".join(pieces), rest + b"".join(chunks[index + 1:]), decoder.trailers
    return b"".join(pieces), None, decoder.trailers


class TrailerDecodingTests(SynchronousTestCase):
    """
    The chunked decoder keeps the trailer fields it checks, within the
    direction's bounds.
    """

    def test_request_table(self):
        """
        Each trailer section of the table, sent whole and byte by byte, is
        kept as pairs or refused with its status (400 malformed, 431 over
        the bounds: 8 KB a line, 100 lines, 32 KB in all).
        """
        for section, expected in DECODED:
            for byte_by_byte in (False, True):
                data = BODY + section + b"NEXT"
                if isinstance(expected, int):
                    with self.assertRaises(BadRequest) as caught:
                        _decode(data, REQUEST, byte_by_byte)
                    self.assertEqual(caught.exception.status, expected, (section[:40], byte_by_byte))
                    continue
                body, rest, trailers = _decode(data, REQUEST, byte_by_byte)
                self.assertEqual((body, rest), (b"hello", b"NEXT"))
                self.assertEqual(list(trailers), list(expected), (section, byte_by_byte))

    def test_response_bounds(self):
        """
        A response's trailers may hold more lines but no more than 64 KB in
        all; faults are L{BadResponse}.
        """
        many = b"".join(b"X-%d: 1\r\n" % (i,) for i in range(200)) + b"\r\n"
        self.assertEqual(len(_decode(BODY + many, RESPONSE, False)[2]), 200)
        for section in (b"X-Big: " + b"x" * 70000 + b"\r\n\r\n", b"X Bad: 1\r\n\r\n"):
            for byte_by_byte in (False, True):
                self.assertRaises(BadResponse, _decode, BODY + section, RESPONSE, byte_by_byte)


class AllowedTrailersTests(SynchronousTestCase):
    """
    L{allowed_trailers}, L{wants_trailers} and L{last_chunk}.
    """

    def test_forbidden_dropped(self):
        """
        Framing, routing, authentication, cookie, caching and forwarding
        fields are never passed on, whatever their case; others are, in
        order.
        """
        for name in [b"Content-Length", b"Transfer-Encoding", b"Host", b"Authorization",
                     b"Set-Cookie", b"Cookie", b"TRAILER", b"content-type", b"Location",
                     b"X-Forwarded-For", b"Connection", b"Cache-Control", b"WWW-Authenticate"]:
            self.assertIn(name.lower(), FORBIDDEN_TRAILERS)
            self.assertEqual(allowed_trailers([(name, b"x")]), [], name)
        fields = [(b"X-Checksum", b"1"), (b"Set-Cookie", b"a"), (b"grpc-status", b"0")]
        self.assertEqual(allowed_trailers(fields), [(b"X-Checksum", b"1"), (b"grpc-status", b"0")])

    def test_declared_and_hidden(self):
        """
        With C{declared}, only the names it lists go on; C{hidden} names
        never do.
        """
        fields = [(b"X-Checksum", b"1"), (b"X-Undeclared", b"2"), (b"X-Secret", b"3")]
        self.assertEqual(allowed_trailers(fields, {b"x-checksum", b"x-secret"}, frozenset([b"x-secret"])),
                         [(b"X-Checksum", b"1")])

    def test_wants_trailers(self):
        """
        TE accepts trailers with the C{trailers} token only.
        """
        for values, expected in [(None, False), ([b"trailers"], True), ([b"gzip, Trailers"], True),
                                 ([b"gzip"], False), ([b"trailers;q=1x"], False), ([b""], False)]:
            self.assertEqual(wants_trailers(values), expected, values)

    def test_last_chunk(self):
        """
        The last chunk, the fields, the empty line.
        """
        self.assertEqual(last_chunk(), b"0\r\n\r\n")
        self.assertEqual(last_chunk([(b"A", b"1"), (b"B", b"")]), b"0\r\nA: 1\r\nB: \r\n\r\n")


def _request(owner, body, trailers, headers=((b"Host", b"h"),)):
    return UpstreamRequest(owner, SERVER, b"POST", b"/up", list(headers), body, RecordingSink(), False,
                           trailers)


class UpstreamClientTrailerTests(SynchronousTestCase):
    """
    The upstream client reports a response's trailers and sends a
    request's.
    """

    def connection(self):
        self.owner = RecordingOwner()
        connection = HTTP11UpstreamConnection(self.owner, Clock(), 5.0, host=b"10.0.0.1:8080")
        connection.begin(None, 1.0)
        self.transport = StringTransport()
        connection.makeConnection(self.transport)
        return connection

    def test_response_trailers_reported(self):
        """
        A chunked response's trailers reach the sink once, before its end,
        whole and byte by byte; one without trailers reports none.
        """
        response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"2\r\nok\r\n0\r\nX-Checksum: 1\r\nSet-Cookie: a=1\r\n\r\n")
        for byte_by_byte in (False, True):
            connection = self.connection()
            request = _request(self.owner, None, ())
            connection.send(request)
            feed(connection, response, byte_by_byte)
            sink = request.sink
            self.assertEqual((sink.outcome, sink.body), ("end", b"ok"))
            self.assertEqual(sink.trailers, [(b"X-Checksum", b"1"), (b"Set-Cookie", b"a=1")])
        connection = self.connection()
        request = _request(self.owner, None, ())
        connection.send(request)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertIsNone(request.sink.trailers)

    def test_request_sent_chunked_with_trailers(self):
        """
        A request with trailers goes chunked (bytes, empty and file bodies),
        its trailers after the last chunk, never with Content-Length.
        """
        for body, framed in [(b"hello", b"5\r\nhello\r\n"), (b"", b""), (None, b""),
                             (BytesIO(b"x" * 70000), b"10000\r\n" + b"x" * 65536 + b"\r\n"
                              + b"1170\r\n" + b"x" * 4464 + b"\r\n")]:
            connection = self.connection()
            connection.send(_request(self.owner, body, [(b"X-Sum", b"9")]))
            sent = self.transport.value()
            head, _, rest = sent.partition(b"\r\n\r\n")
            self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
            self.assertNotIn(b"Content-Length", head)
            self.assertEqual(rest, framed + b"0\r\nX-Sum: 9\r\n\r\n")

    def test_request_head_names_te(self):
        """
        A request carrying TE names it in Connection (with close when the
        connection is not kept).
        """
        head = build_request_head(b"GET", b"/", [(b"Host", b"h"), (b"TE", b"trailers")])
        self.assertIn(b"\r\nConnection: TE\r\n", head)
        head = build_request_head(b"GET", b"/", [(b"TE", b"trailers")], close=True)
        self.assertIn(b"\r\nConnection: close, TE\r\n", head)
        self.assertNotIn(b"Connection", build_request_head(b"GET", b"/", [(b"Host", b"h")]))


CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[route:app]
path = /
upstream = app
hide_headers = X-Secret
"""

UPSTREAM_TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, Set-Cookie\r\n\r\n"
                     b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nSet-Cookie: a=1\r\n"
                     b"Host: evil\r\nX-Secret: s\r\ngrpc-status: 0\r\n\r\n")


class GatewayTrailerTests(SynchronousTestCase):
    """
    Trailers through a whole gateway in memory, lean channel (the twisted
    channel runs the same tests below).
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)

    def proxied(self, request, response, byte_by_byte=False):
        """
        Send C{request}, answer it upstream with C{response}; returns what
        the upstream got and what the client got (on a gateway of its own,
        so the upstream connection is a new one).
        """
        self.setUp()
        channel, client = self.gate.connect()
        feed(channel, request, byte_by_byte)
        upstream, protocol = accept_upstream(self.gate.reactor)
        sent = upstream.value()
        feed(protocol, response, byte_by_byte)
        return sent, client.value()

    def test_response_trailers_relayed(self):
        """
        A client that said TE: trailers gets the upstream's trailer fields
        after the last chunk, less the forbidden and hidden ones, and a
        Trailer header naming what may come; the upstream got TE: trailers.
        Whole and byte by byte.
        """
        for byte_by_byte in (False, True):
            sent, data = self.proxied(b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
                                      UPSTREAM_TRAILERS, byte_by_byte)
            self.assertIn(b"\r\nTE: trailers\r\n", sent)
            self.assertIn(b"\r\nConnection: TE\r\n", sent)
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
            self.assertIn(b"\r\nTrailer: x-checksum\r\n", head)
            self.assertTrue(body.endswith(b"o\r\n0\r\nX-Checksum: abc\r\ngrpc-status: 0\r\n\r\n"), body)
            self.assertEqual(parse_response(data)[2], b"hello")

    def test_no_te_no_trailers(self):
        """
        Without TE: trailers (or with TE naming other codings) the client
        gets the body with an empty last chunk, no Trailer header, and the
        upstream no TE.
        """
        for te in (b"", b"TE: gzip\r\n"):
            sent, data = self.proxied(b"GET /t HTTP/1.1\r\nHost: gw\r\n" + te + b"\r\n", UPSTREAM_TRAILERS)
            self.assertNotIn(b"TE:", sent)
            self.assertTrue(data.endswith(b"5\r\nhello\r\n0\r\n\r\n"), data)
            self.assertNotIn(b"Trailer", data)

    def test_http10_client_gets_none(self):
        """
        An HTTP/1.0 client's response is not chunked: no trailers, whatever
        it said.
        """
        _, data = self.proxied(b"GET /t HTTP/1.0\r\nHost: gw\r\nTE: trailers\r\n\r\n", UPSTREAM_TRAILERS)
        self.assertTrue(data.endswith(b"\r\n\r\nhello"), data)
        self.assertNotIn(b"X-Checksum", data)

    def test_body_filter_drops_trailers(self):
        """
        While a response-body hook works on the body, the trailers (which
        describe the upstream's body) are dropped; the body is filtered.
        """
        self.setUp()
        route = self.gate.gateway.table.match("", b"/t", "GET").route
        set_filters(self.gate.gateway, route, [UpperFilter("upper", [])])
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\n\r\n")
        _, protocol = accept_upstream(self.gate.reactor)
        protocol.dataReceived(UPSTREAM_TRAILERS)
        data = client.value()
        self.assertEqual(parse_response(data)[2], b"HELLO")
        self.assertTrue(data.endswith(b"\r\n0\r\n\r\n"), data)

    def test_empty_body_with_trailers(self):
        """
        An empty chunked body with trailers reaches the client chunked, to
        carry them.
        """
        _, data = self.proxied(b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\n\r\n",
                               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 0\r\n\r\n")
        self.assertTrue(data.endswith(b"\r\n\r\n0\r\nX-Sum: 0\r\n\r\n"), data)

    def test_bad_response_trailers(self):
        """
        Malformed or oversized response trailers fail the exchange after
        the head went out: the client connection is cut, never given a
        complete-looking response.
        """
        for section in (b"X Bad: 1\r\n\r\n", b"X-Big: " + b"x" * 70000 + b"\r\n\r\n"):
            channel, client = self.gate.connect()
            channel.dataReceived(b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\n\r\n")
            _, protocol = accept_upstream(self.gate.reactor)
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + section)
            self.assertFalse(client.value().endswith(b"0\r\n\r\n"), section[:20])
            self.assertTrue(client.disconnecting or client.disconnected, section[:20])

    def test_request_trailers_forwarded(self):
        """
        A chunked request body's trailers that the client declared in
        Trailer go upstream after the body, sent chunked with a Trailer
        header naming them; undeclared and forbidden ones do not. Whole and
        byte by byte.
        """
        request = (b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                   b"Trailer: X-Sum, Authorization, Host\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nX-Sum: 9\r\nAuthorization: Bearer x\r\nHost: evil\r\n"
                   b"X-Undeclared: 1\r\n\r\n")
        for byte_by_byte in (False, True):
            sent, _ = self.proxied(request, b"HTTP/1.1 204 No Content\r\n\r\n", byte_by_byte)
            head, _, body = sent.partition(b"\r\n\r\n")
            self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
            self.assertIn(b"\r\nTrailer: x-sum\r\n", head)
            self.assertNotIn(b"Content-Length", head)
            self.assertEqual(body, b"5\r\nhello\r\n0\r\nX-Sum: 9\r\n\r\n")

    def test_request_trailers_undeclared_dropped(self):
        """
        Without a Trailer header the request's trailers are dropped and
        the body goes with its Content-Length, as any buffered body.
        """
        sent, _ = self.proxied(b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5\r\nhello\r\n0\r\nX-Sum: 9\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n")
        head, _, body = sent.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 5", head)
        self.assertEqual(body, b"hello")

    def test_bad_request_trailers_refused(self):
        """
        Malformed, too many or too large request trailers are refused by
        the channel (400 or 431) and never reach an upstream.
        """
        for section, status in [(b"X Bad: 1\r\n\r\n", 400), (b"Host : x\r\n\r\n", 400),
                                (b"".join(b"X-%d: 1\r\n" % (i,) for i in range(101)) + b"\r\n", 431),
                                (b"X-Big: " + b"x" * 9000 + b"\r\n\r\n", 431)]:
            for byte_by_byte in (False, True):
                data = (b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                        b"Trailer: X-Bad\r\n\r\n5\r\nhello\r\n0\r\n" + section)
                channel, client = self.gate.connect()
                feed(channel, data, byte_by_byte)
                self.assertEqual(parse_response(client.value())[0], status, (section[:20], byte_by_byte))
                self.assertEqual(self.gate.reactor.tcpClients, [])


class TwistedGatewayTrailerTests(GatewayTrailerTests):
    """
    The same through the twisted channel.
    """

    http_server = "twisted"


class ResponseFramingTrailerTests(SynchronousTestCase):
    """
    The channels write trailers only on a chunked response.
    """

    def test_content_length_response_carries_none(self):
        """
        A response framed by Content-Length (here a direct answer after
        set_trailers) gets no trailer section on either channel.
        """
        for http_server in ("gatelayer", "twisted"):
            gate = InMemoryGateway(with_server(CONFIG, http_server), with_upstreams=True)
            channel, client = gate.connect()
            channel.dataReceived(b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\n\r\n")
            _, protocol = accept_upstream(gate.reactor)
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            data = client.value()
            self.assertTrue(data.endswith(b"\r\n\r\nhello"), (http_server, data))
