"""
Tests for the lean HTTP/1.1 server channel (gatelayer.http.lean) in memory:
strict framing (each request-smuggling case fed in one piece and byte by
byte), limits, pipelining, keep-alive, response framing, timers, drain and
back-pressure.
"""

import json
from io import BytesIO

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.config import ConfigError
from gatelayer.http.factory import DRAIN_IDLE_GRACE
from gatelayer.http.lean import LeanChannel, LeanRequest
from gatelayer.http1 import BadRequest, ChunkedDecoder, HeadScanner
from gatelayer.http1 import parse_request_head as parse_head
from gatelayer.testing.server import InMemoryGateway, feed, parse_response

CONFIG = """
[gateway]
http_server = gatelayer
max_body_size = 1KB
header_timeout = 5s
idle_timeout = 30s
body_timeout = 7s
[listener:web]
bind = 127.0.0.1:8080
[route:any]
path = /
respond = 200 x
"""


class RecordingTerminal:
    """
    A route terminal for tests: records each request and answers with its
    body (Content-Length framed), or holds it when C{hold} is set so the
    test can answer later.
    """

    def __init__(self, hold=False):
        self.requests = []
        self.bodies = []
        self.hold = hold

    def serve(self, exchange):
        request = exchange.request
        self.requests.append(request)
        body = request.content.read()
        self.bodies.append(body)
        if not self.hold:
            answer(request, body)


def answer(request, body, headers=()):
    """
    Answer C{request} with C{body} and a Content-Length.
    """
    for name, value in headers:
        request.responseHeaders.setRawHeaders(name, [value])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
    request.write(body)
    request.finish()


class LeanGateway(InMemoryGateway):
    """
    An in-memory gateway with the lean channel (or, with C{http_server =
    "twisted"}, twisted.web's) whose only route answers with a
    L{RecordingTerminal}.
    """

    def __init__(self, hold=False, config=CONFIG, http_server="gatelayer"):
        super().__init__(config.replace("http_server = gatelayer", "http_server = " + http_server))
        self.terminal = RecordingTerminal(hold)
        route = self.gateway.table.match("", b"/", "GET").route
        object.__setattr__(route, "terminal", self.terminal)


class CountingTransportMixin:
    """
    Count the writes reaching a transport.
    """

    def counted(self, transport):
        writes = []
        original = transport.write

        def write(data):
            writes.append(data)
            original(data)
        transport.write = write
        return writes


GOOD = b"GET / HTTP/1.1\r\nHost: x\r\n"

# Requests the channel must refuse: (name, bytes, status).
REFUSED = [
    ("obs-fold", GOOD + b"X-A: 1\r\n  folded\r\n\r\n", 400),
    ("obs-fold with tab", GOOD + b"X-A: 1\r\n\tfolded\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("tab before colon", GOOD + b"X-A\t: 1\r\n\r\n", 400),
    ("space in name", GOOD + b"X A: 1\r\n\r\n", 400),
    ("invalid token char in name", GOOD + b"X(A): 1\r\n\r\n", 400),
    ("empty name", GOOD + b": 1\r\n\r\n", 400),
    ("no colon", GOOD + b"X-A 1\r\n\r\n", 400),
    ("NUL in value", GOOD + b"X-A: a\x00b\r\n\r\n", 400),
    ("bare CR in value", GOOD + b"X-A: a\rb\r\n\r\n", 400),
    ("bare LF in value", GOOD + b"X-A: a\nb\r\n\r\n", 400),
    ("control char in value", GOOD + b"X-A: a\x01b\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: x\n\n\r\n\r\n", 400),
    # Heads whose lines end with a bare LF (or hold a bare CR) and never
    # with CRLF CRLF: refused at once, not left to the header deadline.
    ("bare LF head, nothing after", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare LF after the request line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare LF header line ends", b"GET / HTTP/1.1\r\nHost: x\n\n", 400),
    ("bare LF empty line", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare CR line ends", b"GET / HTTP/1.1\rHost: x\r\r", 400),
    ("bare CR in request line", b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare LF in request line, unfinished", b"GET /a\nb HTTP/1.1", 400),
    ("not HTTP", b"HELLO\r\n\r\n", 400),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 400),
    ("HTTP/0.9 style", b"GET /\r\n\r\n", 400),
    ("lower-case version", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    ("two spaces", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("tab separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("trailing space", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
    ("invalid method char", b"GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control char in target", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Host", b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("two Host in HTTP/1.0", b"GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("two equal Host in HTTP/1.0", b"GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n", 400),
    ("non-digit Content-Length", GOOD + b"Content-Length: abc\r\n\r\n", 400),
    ("negative Content-Length", GOOD + b"Content-Length: -1\r\n\r\n", 400),
    ("signed Content-Length", GOOD + b"Content-Length: +1\r\n\r\na", 400),
    ("hex Content-Length", GOOD + b"Content-Length: 0x1\r\n\r\na", 400),
    ("Content-Length list", GOOD + b"Content-Length: 1, 1\r\n\r\na", 400),
    ("empty Content-Length", GOOD + b"Content-Length:\r\n\r\n", 400),
    ("huge Content-Length", GOOD + b"Content-Length: 1" + b"0" * 30 + b"\r\n\r\n", 400),
    ("differing Content-Length", GOOD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("Content-Length and chunked", GOOD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunked and Content-Length", GOOD + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    ("gzip encoding", GOOD + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("identity encoding", GOOD + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("chunked twice in a list", GOOD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("gzip then chunked", GOOD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    ("two Transfer-Encoding", GOOD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("xchunked", GOOD + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("chunked in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("non-hex chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\ng\r\n", 400),
    ("empty chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n\r\n", 400),
    ("negative chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    ("0x chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("space in chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5 5\r\n", 400),
    ("chunk size too long", GOOD + b"Transfer-Encoding: chunked\r\n\r\n" + b"0" * 17 + b"1\r\n", 400),
    ("chunk size overflow", GOOD + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n", 400),
    ("chunk line never ends", GOOD + b"Transfer-Encoding: chunked\r\n\r\n1;a=" + b"b" * 5000, 400),
    ("bad chunk extension", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n", 400),
    ("no CRLF after chunk data", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("LF only after chunk data", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400),
    # Chunked-body lines ended by a bare LF: refused as soon as the LF is
    # there (nothing follows in these cases).
    ("bare LF chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\n", 400),
    ("bare LF chunk size, data after", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("bare LF everywhere", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\n\n", 400),
    ("bare LF last chunk", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\n", 400),
    ("bare LF after chunk extension", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\n", 400),
    ("bare LF second chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n", 400),
    ("bare LF ending the trailers", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\n", 400),
    ("bare LF ending a trailer", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n", 400),
    ("bare CR in chunk size line", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\rhello", 400),
    ("CR CR LF after chunk size", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\r\n", 400),
    ("malformed trailer", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", 400),
    ("too many trailers", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
     + b"".join(b"T%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
    ("trailer line too long", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nT: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("trailers too large", GOOD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n"
     + b"".join(b"T%d: %s\r\n" % (i, b"a" * 4000) for i in range(10)) + b"\r\n", 431),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("request line never ends", b"GET /" + b"a" * 9000, 414),
    ("header line too long", GOOD + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("header line never ends", GOOD + b"X-Big: " + b"a" * 9000, 431),
    ("headers too large", GOOD + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 4000) for i in range(9)) + b"\r\n", 431),
    ("too many headers", GOOD + b"".join(b"X-H%d: 1\r\n" % i for i in range(100)) + b"\r\n", 431),
    ("body too large", GOOD + b"Content-Length: 1025\r\n\r\n", 413),
    ("chunked body too large", GOOD + b"Transfer-Encoding: chunked\r\n\r\n401\r\n" + b"a" * 1025 + b"\r\n0\r\n\r\n", 413),
]

# Requests the channel must accept: (name, bytes, body the terminal sees).
ACCEPTED = [
    ("plain GET", GOOD + b"\r\n", b""),
    ("Content-Length body", GOOD + b"Content-Length: 5\r\n\r\nhello", b"hello"),
    ("same Content-Length twice", GOOD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi", b"hi"),
    ("chunked", GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ("chunked, any case", GOOD + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", b"hi"),
    ("chunk extensions", GOOD + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5;a=b;c\r\nhello\r\n1 ; q=\"x y\"\r\n!\r\n0\r\n\r\n", b"hello!"),
    ("trailers", GOOD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Sum: 1\r\n\r\n", b"hi"),
    ("upper-case hex", GOOD + b"Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("empty line before request", b"\r\n" + GOOD + b"\r\n", b""),
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", b""),
    ("value with tabs and obs-text", GOOD + b"X-A: \ta\tb\xe9 \r\n\r\n", b""),
    ("no space after colon", GOOD + b"X-A:1\r\n\r\n", b""),
    ("100 headers", GOOD + b"".join(b"X-H%d: 1\r\n" % i for i in range(99)) + b"\r\n", b""),
]


class FramingTableTests(SynchronousTestCase):
    """
    The smuggling table: every malformed or ambiguous framing is refused
    with its status, as JSON, and the connection closes; every valid one is
    read exactly. Each case is fed in one piece and byte by byte, with no
    time passing: a refusal never waits on a timer.
    """

    http_server = "gatelayer"
    # Valid framings this channel refuses all the same (RFC 9112 allows it).
    refused_valid = frozenset()

    def check_refused(self, bytewise):
        for name, data, status in REFUSED:
            with self.subTest(case=name, bytewise=bytewise):
                gate = LeanGateway(http_server=self.http_server)
                channel, transport = gate.connect()
                feed(channel, data, bytewise)
                code, headers, body = parse_response(transport.value())
                self.assertEqual(code, status, transport.value()[:200])
                self.assertEqual(json.loads(body)["status"], status)
                self.assertEqual(headers[b"connection"], [b"close"])
                self.assertIn(b"date", headers)
                self.assertTrue(transport.disconnecting)
                self.assertEqual(gate.terminal.requests, [], "never reaches the terminal")
                channel.dataReceived(GOOD + b"\r\n")
                self.assertEqual(transport.value().count(b"\r\n\r\n"), 1, "nothing read after")
                self.assertEqual(gate.gateway.active, 0)
                self.assertEqual([c for c in gate.reactor.getDelayedCalls() if c.active()], [])

    def check_accepted(self, bytewise):
        for name, data, expected in ACCEPTED:
            with self.subTest(case=name, bytewise=bytewise):
                gate = LeanGateway(http_server=self.http_server)
                channel, transport = gate.connect()
                feed(channel, data, bytewise)
                status, _, body = parse_response(transport.value())
                if name in self.refused_valid:
                    self.assertEqual(status, 400)
                    continue
                self.assertEqual((status, body), (200, expected))
                self.assertEqual(gate.terminal.bodies, [expected])

    def test_refused_in_one_piece(self):
        """
        Each refused case, sent in one piece.
        """
        self.check_refused(False)

    def test_refused_byte_by_byte(self):
        """
        Each refused case, sent one byte at a time: the same answer.
        """
        self.check_refused(True)

    def test_accepted_in_one_piece(self):
        """
        Each valid framing, sent in one piece, is read exactly.
        """
        self.check_accepted(False)

    def test_accepted_byte_by_byte(self):
        """
        Each valid framing, sent one byte at a time, is read exactly.
        """
        self.check_accepted(True)

    def test_smuggled_request_not_seen(self):
        """
        The classic CL.TE attack: refused, so the "smuggled" second request
        is never answered.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)
        self.assertEqual(parse_response(transport.value())[0], 400)
        self.assertEqual(gate.terminal.requests, [])


class TwistedFramingTableTests(FramingTableTests):
    """
    The smuggling table with twisted.web's channel (C{http_server =
    twisted}): the same refusals, because the lean channel's framing module
    checks each head and decodes chunked bodies before twisted.web's parser
    acts on them.
    """

    http_server = "twisted"
    # twisted.web refuses a repeated Content-Length even when the values
    # agree (RFC 9112 section 6.3 lets a recipient reject it).
    refused_valid = frozenset(["same Content-Length twice"])


class ParserTests(SynchronousTestCase):
    """
    The pure parts: head parsing, the incremental head limits, the chunked
    decoder.
    """

    def test_head_fields(self):
        """
        The request line, the headers (canonical names, values stripped),
        the framing and persistence are parsed.
        """
        data = b"POST /a?b=c HTTP/1.1\r\nhost: x\r\nX-Two: 1\r\nx-two:  2 \r\nContent-Length: 3\r\n\r\n"
        head = parse_head(data, data.index(b"\r\n\r\n"))
        self.assertEqual((head.method, head.target, head.version), (b"POST", b"/a?b=c", b"HTTP/1.1"))
        self.assertEqual((head.length, head.chunked, head.keep_alive), (3, False, True))
        expected = Headers()
        for name, value in [(b"host", b"x"), (b"X-Two", b"1"), (b"x-two", b"2"), (b"Content-Length", b"3")]:
            expected.addRawHeader(name, value)
        self.assertEqual(head.headers, expected)
        self.assertEqual(head.headers.getRawHeaders(b"x-two"), [b"1", b"2"])

    def test_persistence(self):
        """
        HTTP/1.1 persists unless Connection: close; HTTP/1.0 only with
        Connection: keep-alive.
        """
        cases = [
            (b"GET / HTTP/1.1\r\nHost: x", True),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close", False),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: te, close", False),
            (b"GET / HTTP/1.0", False),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive", True),
        ]
        for data, keep in cases:
            with self.subTest(data=data):
                self.assertEqual(parse_head(data + b"\r\n\r\n", len(data)).keep_alive, keep)

    def test_scanner_linear(self):
        """
        The incremental limits look at each byte a bounded number of times:
        a 30 KB head of short lines trickled byte by byte passes, one more
        line than allowed fails.
        """
        data = GOOD + b"".join(b"X-%03d: %s\r\n" % (i, b"a" * 280) for i in range(99))
        scanner = HeadScanner()
        for i in range(1, len(data) + 1):
            scanner.check(data[:i])
        self.assertEqual(scanner.lines, 100)
        with self.assertRaises(BadRequest) as caught:
            scanner.check(data + b"X: 1\r\n")
        self.assertEqual(caught.exception.status, 431)

    def test_scanner_bare_line_ends(self):
        """
        The incremental check refuses a bare LF or a CR not followed by LF
        as soon as it is seen, wherever the pieces split; a CR that is the
        last byte so far waits for its LF.
        """
        for data, bad_at in [(b"GET / HTTP/1.1\n", 15), (b"GET / HTTP/1.1\r\nHost: x\n", 25),
                             (b"GET / HTTP/1.1\rX", 16), (b"GET /\r\r\n", 6),
                             (b"GET / HTTP/1.1\r\nA: b\r\n", None)]:
            for step in (1, 2, 3, len(data)):
                with self.subTest(data=data, step=step):
                    scanner = HeadScanner()
                    failed = None
                    for end in range(step, len(data) + step, step):
                        try:
                            scanner.check(data[:end])
                        except BadRequest as refusal:
                            self.assertEqual(refusal.status, 400)
                            failed = min(end, len(data))
                            break
                    if bad_at is None:
                        self.assertIsNone(failed)
                    else:
                        self.assertIsNotNone(failed)
                        self.assertLessEqual(failed - step, bad_at, "refused once the byte is there")

    def test_http10_hosts(self):
        """
        HTTP/1.0 needs no Host, but two are refused as in HTTP/1.1.
        """
        self.assertIsNotNone(parse_head(b"GET / HTTP/1.0\r\n\r\n", 14))
        data = b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"
        with self.assertRaises(BadRequest) as caught:
            parse_head(data, data.index(b"\r\n\r\n"))
        self.assertEqual((caught.exception.status, caught.exception.message),
                         (400, "request has more than one Host header"))

    def test_chunked_decoder_bare_lf(self):
        """
        A chunk-size or trailer line ended by a bare LF is refused with 400
        by the feed that brings the LF, not left pending.
        """
        for prefix, rest in [(b"", b"5\n"), (b"5\r\nhello\r\n", b"0\n"), (b"0\r\n", b"\n"),
                             (b"0\r\n", b"X: 1\n"), (b"", b"5;e=1\n"), (b"0\r\nX: 1\r\n", b"\n")]:
            with self.subTest(prefix=prefix, rest=rest):
                decoder = ChunkedDecoder()
                decoder.feed(prefix)
                for byte in rest[:-1]:
                    decoder.feed(bytes([byte]))
                with self.assertRaises(BadRequest) as caught:
                    decoder.feed(b"\n")
                self.assertEqual(caught.exception.status, 400)

    def test_chunked_decoder_pieces(self):
        """
        The decoder returns body pieces as they come and, at the end, the
        bytes after the body.
        """
        decoder = ChunkedDecoder()
        self.assertEqual(decoder.feed(b"5\r\nhel"), ([b"hel"], None))
        self.assertEqual(decoder.feed(b"lo\r"), ([b"lo"], None))
        self.assertEqual(decoder.feed(b"\n0\r\n"), ([], None))
        self.assertEqual(decoder.feed(b"\r\nGET"), ([], b"GET"))


class PipeliningTests(SynchronousTestCase, CountingTransportMixin):
    """
    Requests on one connection are answered one at a time, in order.
    """

    def test_in_order_one_at_a_time(self):
        """
        Pipelined requests wait in the buffer until the response before them
        is finished.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"X-N: 1\r\n\r\n" + GOOD + b"X-N: 2\r\n\r\n" + GOOD + b"X-N: 3\r\n")
        self.assertEqual(len(gate.terminal.requests), 1)
        answer(gate.terminal.requests[0], b"one")
        self.assertEqual(len(gate.terminal.requests), 2)
        self.assertEqual(gate.terminal.requests[1].requestHeaders.getRawHeaders(b"x-n"), [b"2"])
        answer(gate.terminal.requests[1], b"two")
        self.assertEqual(len(gate.terminal.requests), 2, "the third head is incomplete")
        channel.dataReceived(b"\r\n")
        answer(gate.terminal.requests[2], b"three")
        data = transport.value()
        self.assertLess(data.index(b"one"), data.index(b"two"))
        self.assertLess(data.index(b"two"), data.index(b"three"))
        self.assertFalse(transport.disconnecting)

    def test_many_pipelined_synchronous(self):
        """
        Hundreds of pipelined requests answered at once do not recurse.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.dataReceived((GOOD + b"\r\n") * 2000)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2000)
        self.assertEqual(gate.gateway.active, 0)

    def test_pipeline_bound_pauses_reading(self):
        """
        While a response is in progress, buffering more than the bound of
        pipelined bytes stops reading from the socket; finishing resumes it.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        channel.dataReceived((GOOD + b"X-Pad: " + b"p" * 1000 + b"\r\n\r\n") * 70)
        self.assertEqual(transport.producerState, "paused")
        for _ in range(70):
            answer(gate.terminal.requests[-1], b"ok")
        self.assertEqual(len(gate.terminal.requests), 71)
        self.assertEqual(transport.producerState, "producing")

    def test_slow_reader_stops_new_requests(self):
        """
        A client that does not read its responses (the transport paused the
        channel) gets no new request answered until it catches up.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.pauseProducing()
        channel.dataReceived(GOOD + b"\r\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(transport.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(parse_response(transport.value())[0], 200)
        self.assertEqual(transport.producerState, "producing")

    def test_one_write_per_small_response(self):
        """
        Status line, headers and a small body leave in one write.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        writes = self.counted(transport)
        channel.dataReceived(GOOD + b"\r\n")
        self.assertEqual(len(writes), 1)
        self.assertEqual(parse_response(writes[0])[2], b"x")


class PersistenceTests(SynchronousTestCase):
    """
    Keep-alive and closing, per HTTP version and Connection header.
    """

    def exchange(self, data, keep_open):
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        channel.dataReceived(data)
        status, headers, body = parse_response(transport.value())
        self.assertEqual((status, body), (200, b"x"))
        self.assertEqual(transport.disconnecting, not keep_open)
        return headers

    def test_http11_keeps_alive(self):
        """
        HTTP/1.1 stays open by default, without a Connection header.
        """
        self.assertNotIn(b"connection", self.exchange(GOOD + b"\r\n", True))

    def test_http11_close(self):
        """
        Connection: close is answered with Connection: close, then closed.
        """
        headers = self.exchange(GOOD + b"Connection: close\r\n\r\n", False)
        self.assertEqual(headers[b"connection"], [b"close"])

    def test_http10_closes(self):
        """
        HTTP/1.0 closes after the response.
        """
        headers = self.exchange(b"GET / HTTP/1.0\r\n\r\n", False)
        self.assertEqual(headers[b"connection"], [b"close"])

    def test_http10_keep_alive(self):
        """
        HTTP/1.0 with Connection: keep-alive stays open and says so.
        """
        headers = self.exchange(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True)
        self.assertEqual(headers[b"connection"], [b"keep-alive"])

    def test_response_connection_close(self):
        """
        A response that says Connection: close closes the connection.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n" + GOOD + b"\r\n")
        answer(gate.terminal.requests[0], b"bye", [(b"connection", b"close")])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(gate.terminal.requests), 1)

    def test_drain(self):
        """
        Draining closes a busy connection after its response (which says
        Connection: close) and an idle one after a grace; a request
        arriving on an idle one within the grace is answered first.
        """
        gate = LeanGateway(hold=True)
        idle_channel, idle = gate.connect()
        busy_channel, busy = gate.connect()
        busy_channel.dataReceived(GOOD + b"\r\n")
        self.assertTrue(busy_channel.busy)
        self.assertFalse(idle_channel.busy)
        late_channel, late = gate.connect()
        gate.factory.drain()
        self.assertFalse(idle.disconnecting)
        self.assertFalse(busy.disconnecting)
        answer(gate.terminal.requests[0], b"last")
        self.assertEqual(parse_response(busy.value())[1][b"connection"], [b"close"])
        self.assertTrue(busy.disconnecting)
        late_channel.dataReceived(GOOD + b"\r\n")
        gate.reactor.advance(DRAIN_IDLE_GRACE)
        self.assertTrue(idle.disconnecting)
        self.assertFalse(late.disconnecting)
        answer(gate.terminal.requests[1], b"late")
        self.assertEqual(parse_response(late.value())[1][b"connection"], [b"close"])
        self.assertTrue(late.disconnecting)

    def test_factory_registry(self):
        """
        The factory counts the channel while it is open.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        self.assertIsInstance(channel, LeanChannel)
        self.assertEqual(gate.gateway.connections, 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(gate.gateway.connections, 0)
        self.assertEqual(gate.factory.channels, set())


class ResponseFramingTests(SynchronousTestCase):
    """
    Content-Length when known, else chunked (HTTP/1.1) or close-delimited
    (HTTP/1.0); no body where HTTP forbids one.
    """

    def streamed(self, request_line):
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(request_line)
        request = gate.terminal.requests[0]
        request.write(b"hello ")
        request.write(b"")
        request.write(b"world")
        request.finish()
        return transport

    def test_chunked_out(self):
        """
        An HTTP/1.1 response without Content-Length is chunked and the
        connection stays open.
        """
        transport = self.streamed(GOOD + b"\r\n")
        status, headers, body = parse_response(transport.value())
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertEqual(body, b"hello world")
        self.assertTrue(transport.value().endswith(b"0\r\n\r\n"))
        self.assertFalse(transport.disconnecting)

    def test_close_delimited_for_http10(self):
        """
        An HTTP/1.0 response without Content-Length is delimited by closing.
        """
        transport = self.streamed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = parse_response(transport.value())
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(body, b"hello world")
        self.assertTrue(transport.disconnecting)

    def test_empty_response(self):
        """
        A response finished without a body says Content-Length: 0.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        gate.terminal.requests[0].finish()
        self.assertEqual(parse_response(transport.value())[1][b"content-length"], [b"0"])

    def test_head(self):
        """
        HEAD gets the headers (Content-Length included) and no body.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.dataReceived(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GOOD + b"\r\n")
        first, _, second = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 0", first)
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), "the next response follows at once")

    def test_head_without_length(self):
        """
        A HEAD response written without Content-Length is not chunked.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        request = gate.terminal.requests[0]
        request.write(b"ignored")
        request.finish()
        self.assertEqual(transport.value().count(b"\r\n\r\n"), 1)
        self.assertNotIn(b"chunked", transport.value())
        self.assertNotIn(b"ignored", transport.value())

    def test_no_body_statuses(self):
        """
        204 and 304 carry no body and no chunked framing.
        """
        for code in (204, 304):
            with self.subTest(code=code):
                gate = LeanGateway(hold=True)
                channel, transport = gate.connect()
                channel.dataReceived(GOOD + b"\r\n")
                request = gate.terminal.requests[0]
                request.setResponseCode(code)
                request.write(b"nope")
                request.finish()
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 %d " % (code,)))
                self.assertTrue(transport.value().endswith(b"\r\n\r\n"))
                self.assertNotIn(b"chunked", transport.value())

    def test_reason_phrase_cannot_split(self):
        """
        A reason phrase with CR or LF is replaced by the standard one.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        request = gate.terminal.requests[0]
        request.setResponseCode(502, b"Bad\r\nX-Evil: 1")
        request.finish()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_large_body_not_copied(self):
        """
        A large first body write goes to the transport as its own buffer.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        answer(gate.terminal.requests[0], b"L" * 100000)
        self.assertEqual(len(parse_response(transport.value())[2]), 100000)

    def test_expect_continue(self):
        """
        Expect: 100-continue is answered before the body is read.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        channel.dataReceived(b"body")
        self.assertEqual(parse_response(transport.value().split(b"\r\n\r\n", 1)[1])[2], b"body")

    def test_expect_continue_too_large(self):
        """
        A body over the limit is refused with 413 instead of 100 Continue.
        """
        gate = LeanGateway()
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        self.assertEqual(parse_response(transport.value())[0], 413)
        self.assertNotIn(b"100 Continue", transport.value())

    def test_large_body_spills_to_file(self):
        """
        A request body over 100 KB is kept in a temporary file.
        """
        config = CONFIG.replace("max_body_size = 1KB", "max_body_size = 1MB")
        for framing in (b"Content-Length: 200000\r\n\r\n" + b"b" * 200000,
                        b"Transfer-Encoding: chunked\r\n\r\n30d40\r\n" + b"b" * 200000 + b"\r\n0\r\n\r\n"):
            with self.subTest(framing=framing[:30]):
                gate = LeanGateway(config=config)
                channel, transport = gate.connect()
                channel.dataReceived(GOOD + framing)
                request = gate.terminal.requests[0]
                self.assertNotIsInstance(request.content, BytesIO)
                self.assertEqual(gate.terminal.bodies, [b"b" * 200000])
                self.assertEqual(request.body_length(), 200000)


class TimerTests(SynchronousTestCase):
    """
    One timer per connection: idle keep-alive, the absolute header deadline
    and the body idle timeout.
    """

    def test_header_deadline_byte_by_byte(self):
        """
        A head trickled a byte at a time is cut with 408 at the deadline.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        for i in range(49):
            channel.dataReceived(b"GET / HTTP/1.1\r\nX-Slow: " + b"s" * 200)
            gate.reactor.advance(0.1)
        self.assertEqual(transport.value(), b"")
        gate.reactor.advance(0.2)
        self.assertEqual(parse_response(transport.value())[0], 408)
        self.assertTrue(transport.disconnecting)

    def test_body_idle(self):
        """
        A body that stops arriving is cut with 408 after body_timeout (not
        idle_timeout).
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"Content-Length: 10\r\n\r\nabc")
        gate.reactor.advance(6)
        channel.dataReceived(b"d")
        gate.reactor.advance(6.9)
        self.assertEqual(transport.value(), b"")
        gate.reactor.advance(0.2)
        self.assertEqual(parse_response(transport.value())[0], 408)

    def test_idle_closes(self):
        """
        A kept-alive connection with no request closes after idle_timeout.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        gate.reactor.advance(29.9)
        self.assertFalse(transport.disconnecting)
        gate.reactor.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1, "no 408 for an idle connection")

    def test_slow_response_not_timed_out(self):
        """
        A response taking longer than the timeouts is not cut; the idle
        timeout starts again after it.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        gate.reactor.advance(100)
        self.assertFalse(transport.disconnecting)
        answer(gate.terminal.requests[0], b"late")
        self.assertEqual([c for c in gate.reactor.getDelayedCalls() if c.active()], [channel._timer])
        gate.reactor.advance(31)
        self.assertTrue(transport.disconnecting)

    def test_no_timer_left(self):
        """
        A closed connection leaves no delayed call behind.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([c for c in gate.reactor.getDelayedCalls() if c.active()], [])


@implementer(IPushProducer)
class RecordingProducer:
    """
    A push producer recording what it is told.
    """

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


class ProducerTests(SynchronousTestCase):
    """
    Back-pressure and the client going away.
    """

    def held(self):
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        return gate, channel, transport, gate.terminal.requests[0]

    def test_interfaces(self):
        """
        The channel is the transport's push producer.
        """
        gate, channel, transport, request = self.held()
        verifyObject(IPushProducer, channel)
        verifyObject(IPushProducer, RecordingProducer())
        self.assertIs(transport.producer, channel)
        self.assertIsInstance(request, LeanRequest)

    def test_pause_resume_relayed(self):
        """
        The transport's pause and resume reach the response's producer.
        """
        gate, channel, transport, request = self.held()
        producer = RecordingProducer()
        request.registerProducer(producer, True)
        channel.pauseProducing()
        channel.resumeProducing()
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_registered_while_paused(self):
        """
        A producer registered while the client is slow starts paused.
        """
        gate, channel, transport, request = self.held()
        channel.pauseProducing()
        producer = RecordingProducer()
        request.registerProducer(producer, True)
        self.assertEqual(producer.calls, ["pause"])

    def test_pull_producer_refused(self):
        """
        Pull producers are not supported.
        """
        gate, channel, transport, request = self.held()
        self.assertRaises(ValueError, request.registerProducer, RecordingProducer(), False)

    def test_client_lost(self):
        """
        The client going away calls the on_lost callback, stops the producer
        and ends the request's bookkeeping.
        """
        gate, channel, transport, request = self.held()
        lost = []
        request.on_lost(lambda: lost.append(True))
        producer = RecordingProducer()
        request.registerProducer(producer, True)
        finished = request.notifyFinish()
        request.write(b"partial")
        self.assertEqual(gate.gateway.active, 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((lost, producer.calls), ([True], ["stop"]))
        self.assertTrue(request._disconnected)
        self.assertEqual(gate.gateway.active, 0)
        self.failureResultOf(finished)
        request.write(b"ignored")
        request.finish()

    def test_request_fields(self):
        """
        The fields the gateway and its terminals read.
        """
        gate = LeanGateway(hold=True)
        channel, transport = gate.connect(peer="192.0.2.9")
        channel.dataReceived(b"GET /p/a?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n")
        request = gate.terminal.requests[0]
        self.assertEqual((request.method, request.uri, request.path, request.query, request.clientproto),
                         (b"GET", b"/p/a?q=1", b"/p/a", b"q=1", b"HTTP/1.1"))
        self.assertEqual((request.client.host, request.getHost().port), ("192.0.2.9", 8080))
        self.assertEqual(request.routing.host, "example.com")
        # The gateway forwards the canonical Host: lower case.
        self.assertEqual(request.getHeader(b"host"), b"example.com:8080")
        self.assertIs(request.channel.factory, gate.factory)
        self.assertFalse(request.isSecure())
        self.assertEqual(request.routing.match.route.spec.name, "any")
        answer(request, b"abc")
        self.assertEqual((request.sentLength, request.code, request.finished), (3, 200, True))
        self.successResultOf(request.notifyFinish())


class ConfigTests(SynchronousTestCase):
    """
    The [gateway] http_server key.
    """

    def test_default_and_choice(self):
        """
        gatelayer (the lean channel) by default; twisted selects
        twisted.web's; anything else is an error naming section and key.
        """
        base = CONFIG.replace("http_server = gatelayer\n", "")
        self.assertEqual(InMemoryGateway(base).config.gateway.http_server, "gatelayer")
        self.assertIsInstance(InMemoryGateway(base).connect()[0], LeanChannel)
        twisted = CONFIG.replace("= gatelayer", "= twisted")
        self.assertNotIsInstance(InMemoryGateway(twisted).connect()[0], LeanChannel)
        with self.assertRaises(ConfigError) as caught:
            InMemoryGateway(CONFIG.replace("= gatelayer", "= nginx"))
        self.assertIn("gate.ini [gateway] http_server: 'nginx' is not one of twisted, gatelayer",
                      str(caught.exception))


class ClosingTests(SynchronousTestCase):
    """
    Closing a connection after a response.
    """

    def test_unregistered_before_closing(self):
        """
        The channel unregisters from the transport before closing it: a
        transport does not close while a producer is registered, and would
        resume a paused one instead.
        """
        gate = InMemoryGateway(CONFIG)
        channel, transport = gate.connect()
        channel.pauseProducing()
        channel.resumeProducing()
        channel.dataReceived(GOOD + b"Connection: close\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)
