"""
Tests for L{gatelayer.upstream.client}: the HTTP/1.1 upstream connection,
driven through a L{StringTransport} and a L{Clock}.
"""

import io
import socket

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.config.model import ServerSpec
from gatelayer.http1 import BadRequest, BadResponse, valid_field
from gatelayer.http1 import parse_request_head as server_parse
from gatelayer.http1 import heads
from gatelayer.http1 import parse_response_head as parse_head
from gatelayer.testing.server import feed
from gatelayer.upstream.client import (
    MAX_HEAD_SIZE,
    READ_SIZE,
    HTTP11UpstreamConnection,
    IConnectionOwner,
    IResponseSink,
    UpstreamRequest,
    body_length,
    build_request_head,
)

SERVER = ServerSpec("10.0.0.1", 8080)


@implementer(IResponseSink)
class RecordingSink:
    """
    An L{IResponseSink} that remembers what it was told.

    @ivar outcome: L{None} while the exchange runs, then C{"end"} or
        C{(callback, kind)} for a failure.
    """

    def __init__(self):
        self.head = None
        self.body = b""
        self.pieces = 0
        self.outcome = None
        self.calls = 0
        self.on_head = None
        self.on_body = None
        self.trailers = None

    def connect_failed(self, kind, detail):
        self.calls += 1
        self.outcome = ("connect_failed", kind)
        self.detail = detail

    def response_head(self, status, reason, headers):
        self.calls += 1
        self.head = (status, reason, headers)
        if self.on_head is not None:
            self.on_head()

    def response_body(self, data):
        self.calls += 1
        self.body += data
        self.pieces += 1
        if self.on_body is not None:
            self.on_body(data)

    def response_trailers(self, fields):
        self.trailers = fields

    def response_end(self):
        self.calls += 1
        self.outcome = "end"

    def response_failed(self, kind, detail):
        self.calls += 1
        self.outcome = ("response_failed", kind)
        self.detail = detail

    @property
    def status(self):
        return None if self.head is None else self.head[0]


@implementer(IConnectionOwner)
class RecordingOwner:
    """
    An L{IConnectionOwner} that records what its connections report.
    """

    def __init__(self):
        self.events = []

    def release(self, connection):
        self.events.append("release")

    def lost(self, connection):
        self.events.append("lost")

    def retry(self, connection, request):
        self.events.append("retry")
        self.retried = request

    def closed(self, connection):
        self.events.append("closed")

    def finished(self, request):
        self.events.append("finished")


class PausingTransport(StringTransport):
    """
    A transport that pauses its streaming producer once more than C{limit}
    bytes wait to be "sent", like a socket with a full buffer.
    """

    limit = 100000

    def write(self, data):
        StringTransport.write(self, data)
        if self.producer is not None and self.streaming and len(self.io.getvalue()) > self.limit:
            self.producer.pauseProducing()

    def drain(self):
        """
        Pretend the buffered bytes went out; resume the producer.
        """
        sent = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return sent


def make_request(owner, method=b"GET", target=b"/", headers=None, body=None, idempotent=True):
    """
    An L{UpstreamRequest} with a L{RecordingSink}.
    """
    if headers is None:
        headers = [(b"Host", b"example.com")]
    return UpstreamRequest(owner, SERVER, method, target, headers, body, RecordingSink(), idempotent)


class ConnectionCase(SynchronousTestCase):
    """
    Helpers: a connection made over a L{StringTransport}.
    """

    read_timeout = 5.0

    def connection(self, transport=None, **kwargs):
        self.owner = RecordingOwner()
        self.clock = Clock()
        connection = HTTP11UpstreamConnection(
            self.owner, self.clock, self.read_timeout, host=b"10.0.0.1:8080", **kwargs)
        connection.begin(None, 1.0)
        self.transport = transport if transport is not None else StringTransport()
        connection.makeConnection(self.transport)
        self.owner.events.clear()
        return connection

    def send(self, connection, **kwargs):
        request = make_request(self.owner, **kwargs)
        connection.send(request)
        return request


class BuildRequestHeadTests(SynchronousTestCase):
    """
    L{build_request_head}.
    """

    def test_headers_in_order(self):
        """
        The request line, then the headers as given, then the framing.
        """
        head = build_request_head(
            b"GET", b"/a?b=1", [(b"Host", b"h"), (b"X-A", b"1"), (b"x-a", b"2")])
        self.assertEqual(head, b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n")

    def test_own_headers_dropped(self):
        """
        Content-Length, Transfer-Encoding, Connection and Expect given by the
        caller are dropped: the client decides framing and persistence.
        """
        head = build_request_head(
            b"POST", b"/", [(b"Host", b"h"), (b"Content-Length", b"99"),
                            (b"TRANSFER-ENCODING", b"chunked"), (b"connection", b"close"),
                            (b"Expect", b"100-continue"), (b"X-Keep", b"1")],
            content_length=3, body=b"abc")
        self.assertEqual(
            head, b"POST / HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\nContent-Length: 3\r\n\r\nabc")

    def test_host_added_when_missing(self):
        """
        Without a Host header the given host is sent.
        """
        self.assertEqual(build_request_head(b"GET", b"/", [], host=b"10.0.0.1:80"),
                         b"GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n")
        self.assertEqual(build_request_head(b"GET", b"/", [(b"HOST", b"x")], host=b"y"),
                         b"GET / HTTP/1.1\r\nHOST: x\r\n\r\n")

    def test_close(self):
        """
        C{close} asks the server to close after the response.
        """
        self.assertEqual(build_request_head(b"GET", b"/", [(b"Host", b"h")], close=True),
                         b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")

    def test_body_length(self):
        """
        L{body_length} handles no body, bytes and files (left at 0).
        """
        self.assertIsNone(body_length(None))
        self.assertEqual(body_length(b"abcd"), 4)
        f = io.BytesIO(b"x" * 10)
        f.read(3)
        self.assertEqual(body_length(f), 10)
        self.assertEqual(f.tell(), 0)


# name, response bytes, how the server ends (None: stays open, "done": a clean
# close, "lost": an unclean one), expected outcome, status, body, whether the
# connection stays usable. Method HEAD is used where the name says so.
FRAMING_CASES = [
    ("content_length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
     None, "end", 200, b"hello", True),
    ("content_length_zero", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
     None, "end", 200, b"", True),
    ("same_content_length_twice",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
     None, "end", 200, b"ok", True),
    ("content_length_list_equal", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
     None, "end", 200, b"ok", True),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
     None, "end", 200, b"hello world", True),
    ("chunked_extensions_trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
                                    b"5;name=value\r\nhello\r\nA ; x\r\n0123456789\r\n"
                                    b"0;last\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
     None, "end", 200, b"hello0123456789", True),
    ("until_close", b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nall of it",
     "done", "end", 200, b"all of it", False),
    ("until_close_cut", b"HTTP/1.1 200 OK\r\n\r\npart",
     "lost", ("response_failed", "connection_lost"), 200, b"part", False),
    ("http10_closes", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
     None, "end", 200, b"ok", False),
    ("http10_keep_alive", b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
     None, "end", 200, b"ok", True),
    ("connection_close", b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 2\r\n\r\nok",
     None, "end", 200, b"ok", False),
    ("head_no_body", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
     None, "end", 200, b"", True),
    ("no_content", b"HTTP/1.1 204 No Content\r\n\r\n", None, "end", 204, b"", True),
    ("not_modified", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
     None, "end", 304, b"", True),
    ("continue_skipped", b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
     None, "end", 200, b"x", True),
    ("early_hints_skipped", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
     None, "end", 201, b"", True),
    ("extra_bytes", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
     None, "end", 200, b"ok", False),
    ("switching_protocols", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("length_and_chunked", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("differing_lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("differing_length_list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("negative_length", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("plus_length", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("text_length", b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("empty_length", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("other_coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("identity_coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("bad_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("signed_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("huge_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"11111111111111111\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("chunk_overrun", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), 200, b"hel", False),
    ("not_http", b"ICY 200 OK\r\n\r\n", None, ("response_failed", "bad_response"), None, b"", False),
    ("http2_status_line", b"HTTP/2 200 OK\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("long_status", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("text_status", b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("header_without_colon", b"HTTP/1.1 200 OK\r\nBroken\r\nContent-Length: 0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("space_before_colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\nContent-Length: 0\r\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("closed_before_head", b"HTTP/1.1 200 O",
     "done", ("response_failed", "connection_lost"), None, b"", False),
    ("closed_mid_length_body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
     "done", ("response_failed", "connection_lost"), 200, b"half", False),
    ("closed_mid_chunked_body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n",
     "done", ("response_failed", "connection_lost"), 200, b"half", False),
]


def _bad_head(name, head):
    """
    A framing case: C{head} (the status line and fields, without the
    empty line) is refused before anything reaches the sink.
    """
    return (name, head + b"\r\n\r\n", None, ("response_failed", "bad_response"), None, b"", False)


def _good_head(name, head, status=200):
    """
    A framing case: C{head} is accepted, with an empty body.
    """
    return (name, head + b"\r\nContent-Length: 0\r\n\r\n", None, "end", status, b"", True)


# Hostile response heads: bytes a client (or a cache, or a log reader)
# behind the gateway could read differently from the gateway, status lines
# outside the grammar, and framing that is ambiguous. Each one is refused as
# a whole (502 at the proxy); the look-alikes that are valid pass.
HOSTILE_HEAD_CASES = [
    _bad_head("space_in_name", b"HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 0"),
    _bad_head("tab_in_name", b"HTTP/1.1 200 OK\r\nX\tBad: 1\r\nContent-Length: 0"),
    _bad_head("nul_in_name", b"HTTP/1.1 200 OK\r\nX\x00Bad: 1\r\nContent-Length: 0"),
    _bad_head("obs_text_in_name", b"HTTP/1.1 200 OK\r\nX\xc3\xa9: 1\r\nContent-Length: 0"),
    _bad_head("separator_in_name", b"HTTP/1.1 200 OK\r\nX(y): 1\r\nContent-Length: 0"),
    _bad_head("slash_in_name", b"HTTP/1.1 200 OK\r\nX/y: 1\r\nContent-Length: 0"),
    _bad_head("empty_name", b"HTTP/1.1 200 OK\r\n: 1\r\nContent-Length: 0"),
    _bad_head("space_before_name", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n X: 1"),
    _bad_head("tab_fold", b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\nContent-Length: 0"),
    _bad_head("nul_in_value", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0"),
    _bad_head("cr_in_value", b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0"),
    _bad_head("lf_in_value", b"HTTP/1.1 200 OK\r\nX: a\nSet-Cookie: evil=1\r\nContent-Length: 0"),
    _bad_head("trailing_cr_in_value", b"HTTP/1.1 200 OK\r\nX: a\r\r\nContent-Length: 0"),
    _bad_head("control_in_value", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0"),
    _bad_head("escape_in_value", b"HTTP/1.1 200 OK\r\nX: \x1b[31mred\r\nContent-Length: 0"),
    _bad_head("del_in_value", b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\nContent-Length: 0"),
    _bad_head("status_600", b"HTTP/1.1 600 Odd\r\nContent-Length: 0"),
    _bad_head("status_099", b"HTTP/1.1 099 Odd\r\nContent-Length: 0"),
    _bad_head("status_two_digits", b"HTTP/1.1 20 OK\r\nContent-Length: 0"),
    _bad_head("status_signed", b"HTTP/1.1 +20 OK\r\nContent-Length: 0"),
    _bad_head("status_glued_reason", b"HTTP/1.1 200OK\r\nContent-Length: 0"),
    _bad_head("status_two_spaces", b"HTTP/1.1  200 OK\r\nContent-Length: 0"),
    _bad_head("status_leading_space", b" HTTP/1.1 200 OK\r\nContent-Length: 0"),
    _bad_head("lower_case_version", b"http/1.1 200 OK\r\nContent-Length: 0"),
    _bad_head("version_1_2", b"HTTP/1.2 200 OK\r\nContent-Length: 0"),
    _bad_head("nul_in_reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0"),
    _bad_head("cr_in_reason", b"HTTP/1.1 200 O\rK\r\nContent-Length: 0"),
    _bad_head("empty_head", b""),
    _bad_head("interim_bad_field", b"HTTP/1.1 100 Continue\r\nX Y: 1\r\n\r\n"
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 0"),
    _bad_head("length_then_chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     b"Content-Length: 0"),
    _bad_head("chunked_in_http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked"),
    _bad_head("chunked_twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                               b"Transfer-Encoding: chunked"),
    _bad_head("chunked_then_identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                       b"Transfer-Encoding: identity"),
    _bad_head("empty_coding", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "),
    _bad_head("length_too_long", b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789"),
    _bad_head("hex_length", b"HTTP/1.1 200 OK\r\nContent-Length: 0x10"),
    _bad_head("spaced_length", b"HTTP/1.1 200 OK\r\nContent-Length: 1 0"),
    _bad_head("length_list_differs_later", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                           b"Content-Length: 0, 1"),
    ("lf_line_endings", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("lf_then_crlf_end", b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
     None, ("response_failed", "bad_response"), None, b"", False),
    ("chunk_size_lf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("chunk_size_space", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("chunk_extension_nul", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5;a=\"x\x00\"\r\nhello\r\n0\r\n\r\n",
     None, ("response_failed", "bad_response"), 200, b"", False),
    ("trailer_bad_name", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\nBad Trailer: 1\r\n\r\n",
     None, ("response_failed", "bad_response"), 200, b"hello", False),
    ("trailer_lf", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nX: 1\n\n",
     None, ("response_failed", "bad_response"), 200, b"hello", False),
    # Look-alikes that are valid and relayed.
    _good_head("no_reason", b"HTTP/1.1 200"),
    _good_head("empty_reason", b"HTTP/1.1 200 "),
    _good_head("obs_text_reason", b"HTTP/1.1 200 \xc3\xa7a va"),
    _good_head("status_599", b"HTTP/1.1 599 Whatever", 599),
    _good_head("token_punctuation_name", b"HTTP/1.1 200 OK\r\nX-a.b_c~d!#$%&'*+^`|: 1"),
    _good_head("tab_and_obs_text_value", b"HTTP/1.1 200 OK\r\nX: a\tb \xc3\xa9 \"q\""),
    _good_head("empty_value", b"HTTP/1.1 200 OK\r\nX:"),
    ("quoted_chunk_extension", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"5;a=\"q; x\"\r\nhello\r\n0\r\n\r\n",
     None, "end", 200, b"hello", True),
]


class FramingTests(ConnectionCase):
    """
    Response framing, table-style: every case fed at once and one byte at a
    time must give the same outcome.
    """

    def run_case(self, case, split):
        name, response, ending, outcome, status, body, usable = case
        connection = self.connection()
        method = b"HEAD" if name.startswith("head") else b"GET"
        request = self.send(connection, method=method)
        sink = request.sink
        feed(connection, response, split)
        if ending == "done":
            connection.connectionLost(Failure(ConnectionDone()))
        elif ending == "lost":
            connection.connectionLost(Failure(ConnectionLost()))
        label = "%s (%s)" % (name, "byte by byte" if split else "at once")
        self.assertEqual(sink.outcome, outcome, label)
        self.assertEqual(sink.status, status, label)
        self.assertEqual(sink.body, body, label)
        stays = ending is None and not self.transport.disconnecting
        self.assertEqual(stays, usable, label)
        self.assertEqual(self.owner.events.count("finished"), 1, label)
        if usable:
            self.assertEqual(self.owner.events, ["release", "finished"], label)
        else:
            self.assertIn("lost", self.owner.events, label)

    def test_at_once(self):
        """
        Each framing case, its response arriving in one read.
        """
        for case in FRAMING_CASES + HOSTILE_HEAD_CASES:
            self.run_case(case, split=False)

    def test_byte_by_byte(self):
        """
        Each framing case, its response arriving one byte per read.
        """
        for case in FRAMING_CASES + HOSTILE_HEAD_CASES:
            self.run_case(case, split=True)

    def test_headers_as_received(self):
        """
        The sink gets the reason and every header as received, names
        unchanged, values without surrounding blanks.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(
            b"HTTP/1.1 404 Not  Found\r\nX-Thing:  a b \r\nSet-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\ncontent-length: 0\r\n\r\n")
        self.assertEqual(request.sink.head, (404, b"Not  Found", [
            (b"X-Thing", b"a b"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
            (b"content-length", b"0")]))

    def test_head_too_large(self):
        """
        A response head over L{MAX_HEAD_SIZE} bytes is a bad response.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n")
        connection.dataReceived(b"X-Filler: " + b"a" * MAX_HEAD_SIZE)
        self.assertEqual(request.sink.outcome, ("response_failed", "bad_response"))
        self.assertTrue(self.transport.disconnecting)

    def test_size_limits(self):
        """
        A head, a chunk-size line or trailers larger than their limits are a
        bad response, whether they come in one read or in pieces.
        """
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for response in [
                b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n",
                chunked + b"1" + b" " * 5000 + b"\r\n",
                chunked + b"0\r\n" + b"X-T: " + b"t" * 70000 + b"\r\n\r\n",
                chunked + b"0\r\n" + b"X-T: t\r\n" * 10000 + b"\r\n"]:
            for size in (len(response), 1000):
                connection = self.connection()
                request = self.send(connection)
                for i in range(0, len(response), size):
                    connection.dataReceived(response[i:i + size])
                self.assertEqual(request.sink.outcome, ("response_failed", "bad_response"))
                self.assertTrue(self.transport.disconnecting)

    def test_body_streams_as_it_arrives(self):
        """
        Body bytes reach the sink read by read, not after the whole body.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        self.assertEqual(request.sink.body, b"ab")
        connection.dataReceived(b"cd")
        self.assertEqual((request.sink.body, request.sink.outcome), (b"abcd", None))
        connection.dataReceived(b"ef")
        self.assertEqual((request.sink.body, request.sink.outcome), (b"abcdef", "end"))

    def test_unsolicited_data_closes_idle(self):
        """
        Bytes on an idle connection close it: its framing is lost.
        """
        connection = self.connection()
        connection.dataReceived(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.owner.events, ["lost"])


class SendTests(ConnectionCase):
    """
    How requests are written.
    """

    def test_small_body_one_write(self):
        """
        A bytes body goes out in the same write as the head.
        """
        writes = []
        connection = self.connection()
        self.transport.write = writes.append
        self.send(connection, method=b"PUT", body=b"data")
        self.assertEqual(writes, [
            b"PUT / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\ndata"])

    def test_no_body_post(self):
        """
        A POST without a body says Content-Length: 0; a GET says nothing.
        """
        connection = self.connection()
        self.send(connection, method=b"POST")
        self.assertEqual(self.transport.value(),
                         b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")

    def test_host_fallback(self):
        """
        A request without Host gets the server's address.
        """
        connection = self.connection()
        self.send(connection, headers=[])
        self.assertEqual(self.transport.value(), b"GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n")

    def test_no_keepalive(self):
        """
        A connection made without keep-alive asks the server to close.
        """
        connection = self.connection(keepalive=False)
        request = self.send(connection)
        self.assertIn(b"\r\nConnection: close\r\n", self.transport.value())
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(request.sink.outcome, "end")
        self.assertTrue(self.transport.disconnecting)

    def test_large_bytes_body(self):
        """
        A large bytes body is written after the head, not copied into it.
        """
        writes = []
        connection = self.connection()
        self.transport.write = writes.append
        body = b"x" * 200000
        self.send(connection, method=b"POST", body=body)
        self.assertEqual(len(writes), 2)
        self.assertIs(writes[1], body)

    def test_file_body_back_pressure(self):
        """
        A file body is streamed: the client writes until the transport
        pauses it, and goes on when it drains.
        """
        transport = PausingTransport()
        connection = self.connection(transport)
        data = bytes(range(256)) * 2000
        request = self.send(connection, method=b"POST", body=io.BytesIO(data))
        self.assertTrue(transport.streaming)
        head, _, first = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 512000", head)
        self.assertLess(len(first), len(data))
        sent = first
        transport.clear()
        rounds = 0
        while transport.producer is not None:
            sent += transport.drain()
            rounds += 1
        sent += transport.value()
        self.assertEqual(sent, data)
        self.assertGreater(rounds, 2)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(request.sink.outcome, "end")
        self.assertEqual(self.owner.events, ["release", "finished"])

    def test_file_body_yields_each_turn(self):
        """
        A transport that never pushes back does not make the client write a
        large file in one reactor turn.
        """
        connection = self.connection()
        data = b"y" * (3 * 1024 * 1024)
        self.send(connection, method=b"POST", body=io.BytesIO(data))
        first = len(self.transport.value())
        self.assertLess(first, len(data))
        while self.clock.getDelayedCalls() and self.transport.producer is not None:
            self.clock.advance(0)
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.value().endswith(data))

    def test_file_body_rewound(self):
        """
        A file body is sent from its start whatever its position.
        """
        connection = self.connection()
        f = io.BytesIO(b"abcdef")
        f.read(4)
        self.send(connection, method=b"POST", body=f)
        self.assertTrue(self.transport.value().endswith(b"\r\n\r\nabcdef"))
        self.assertIsNone(self.transport.producer)

    def test_early_response_stops_body(self):
        """
        A response that comes before the whole body is sent stops the
        upload, and the connection is not reused.
        """
        transport = PausingTransport()
        connection = self.connection(transport)
        request = self.send(connection, method=b"POST", body=io.BytesIO(b"z" * 500000))
        connection.dataReceived(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertIsNone(transport.producer)
        self.assertEqual((request.sink.status, request.sink.outcome), (413, "end"))
        self.assertTrue(transport.disconnecting)

    def test_closed_during_upload(self):
        """
        A server that closes while the body is being sent fails the exchange
        and stops the upload.
        """
        transport = PausingTransport()
        connection = self.connection(transport)
        request = self.send(connection, method=b"POST", body=io.BytesIO(b"z" * 500000))
        producer = transport.producer
        connection.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(request.sink.outcome, ("response_failed", "connection_lost"))
        transport.clear()
        producer.resumeProducing()
        self.assertEqual(transport.value(), b"")

    def test_truncated_file(self):
        """
        A file body shorter than it claimed fails the exchange.
        """

        class Shrinking(io.BytesIO):
            def tell(self):
                return io.BytesIO.tell(self) * 2

        connection = self.connection()
        request = self.send(connection, method=b"POST", body=Shrinking(b"12345"))
        self.assertEqual(request.sink.outcome, ("response_failed", "connection_lost"))
        self.assertTrue(self.transport.disconnecting)


class TimeoutTests(ConnectionCase):
    """
    The read timeout.
    """

    def test_no_head(self):
        """
        No response head within read_timeout: a timeout, the connection
        closed.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.clock.advance(4.9)
        self.assertIsNone(request.sink.outcome)
        self.clock.advance(0.1)
        self.assertEqual(request.sink.outcome, ("response_failed", "timeout"))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_body_stall(self):
        """
        After the head, read_timeout counts between reads of the body.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            self.clock.advance(4)
            connection.dataReceived(b"1\r\na\r\n")
        self.assertIsNone(request.sink.outcome)
        self.clock.advance(5)
        self.assertEqual(request.sink.outcome, ("response_failed", "timeout"))
        self.assertEqual(request.sink.body, b"aaaaa")

    def test_paused_is_not_stalled(self):
        """
        While the client holds the response back, the upstream is not timed
        out; after resuming, it is again.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        request.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.clock.advance(60)
        self.assertIsNone(request.sink.outcome)
        request.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.clock.advance(5)
        self.assertEqual(request.sink.outcome, ("response_failed", "timeout"))

    def test_idle_timer_after_response(self):
        """
        After a response, the only timer left is the idle timer the pool arms.
        """
        connection = self.connection()
        self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        connection.park(60)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [60])
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.owner.events[-1], "lost")


class FlowTests(ConnectionCase):
    """
    Back-pressure, cancellation and connection loss.
    """

    def test_interfaces(self):
        """
        The handle is a push producer; the connection listens for the TLS
        handshake; the test fakes provide their interfaces.
        """
        owner = RecordingOwner()
        request = make_request(owner)
        verifyObject(IPushProducer, request)
        verifyObject(IResponseSink, request.sink)
        verifyObject(IConnectionOwner, owner)
        verifyObject(IHandshakeListener, HTTP11UpstreamConnection(owner, Clock(), 1))

    def test_pause_before_send(self):
        """
        A handle paused before its request is sent pauses the connection as
        soon as it is.
        """
        connection = self.connection()
        request = make_request(self.owner)
        request.pauseProducing()
        connection.send(request)
        self.assertEqual(self.transport.producerState, "paused")

    def test_resumed_before_reuse(self):
        """
        A response that completes while paused leaves the connection reading
        again for its next use.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        request.pauseProducing()
        connection.dataReceived(b"cd")
        self.assertEqual(request.sink.outcome, "end")
        self.assertEqual(self.transport.producerState, "producing")
        request.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_cancel(self):
        """
        Cancelling a sent request closes the connection and tells the sink
        nothing more.
        """
        connection = self.connection()
        request = self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        calls = request.sink.calls
        request.cancel()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.owner.events, ["lost", "finished"])
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(request.sink.calls, calls)
        self.assertEqual(self.owner.events, ["lost", "finished", "closed"])
        request.cancel()
        request.stopProducing()
        self.assertEqual(self.owner.events.count("finished"), 1)

    def test_cancel_from_sink(self):
        """
        A sink that cancels while being handed the head stops the parse.
        """
        connection = self.connection()
        request = self.send(connection)
        request.sink.on_head = request.cancel
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual((request.sink.body, request.sink.outcome), (b"", None))
        self.assertTrue(self.transport.disconnecting)

    def test_dead_reused_connection_retried(self):
        """
        A reused connection closed before any response byte hands an
        idempotent request back for one more try.
        """
        connection = self.connection()
        self.send(connection)
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.owner.events.clear()
        request = self.send(connection)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.owner.events, ["retry", "closed"])
        self.assertIs(self.owner.retried, request)
        self.assertTrue(request.retried)
        self.assertIsNone(request.sink.outcome)

    def test_dead_connection_not_retried(self):
        """
        No retry for a non-idempotent request, for a request already retried,
        for a connection's first request, or once a response byte came.
        """
        for first, idempotent, retried, partial in [
                (False, False, False, b""), (False, True, True, b""),
                (True, True, False, b""), (False, True, False, b"H")]:
            connection = self.connection()
            if not first:
                self.send(connection)
                connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            self.owner.events.clear()
            request = self.send(connection, idempotent=idempotent)
            request.retried = retried
            if partial:
                connection.dataReceived(partial)
            connection.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(request.sink.outcome, ("response_failed", "connection_lost"))
            self.assertEqual(self.owner.events, ["lost", "finished", "closed"])


class ConnectingTests(SynchronousTestCase):
    """
    The connection attempt, before a request is written.
    """

    def setUp(self):
        self.owner = RecordingOwner()
        self.clock = Clock()

    def test_waits_for_handshake(self):
        """
        Over TLS the request is written only after the handshake.
        """
        connection = HTTP11UpstreamConnection(self.owner, self.clock, 5, tls=True)
        request = make_request(self.owner)
        connection.begin(request, 1.0)
        transport = StringTransport()
        connection.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        connection.handshakeCompleted()
        self.assertTrue(transport.value().startswith(b"GET / HTTP/1.1\r\n"))

    def test_large_reads(self):
        """
        A plain TCP connection reads up to C{READ_SIZE} bytes at once (256
        KB, where Twisted reads 64 KB); a TLS connection's transport is left
        as it is.
        """
        for tls, expected in ((False, READ_SIZE), (True, 65536)):
            client, server = socket.socketpair()
            self.addCleanup(client.close)
            self.addCleanup(server.close)
            transport = tcp.Connection(client, None, MemoryReactorClock())
            connection = HTTP11UpstreamConnection(self.owner, self.clock, 5, tls=tls)
            connection.begin(None, 1.0)
            connection.makeConnection(transport)
            self.assertEqual(transport.bufferSize, expected, tls)
        self.assertEqual(READ_SIZE, 256 * 1024)

    def test_handshake_timeout(self):
        """
        connect_timeout covers the TLS handshake.
        """
        connection = HTTP11UpstreamConnection(self.owner, self.clock, 5, tls=True)
        request = make_request(self.owner)
        connection.begin(request, 1.0)
        transport = StringTransport()
        connection.makeConnection(transport)
        self.clock.advance(1.0)
        self.assertEqual(request.sink.outcome, ("connect_failed", "timeout"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_handshake_failure(self):
        """
        A connection lost during the handshake is a connect error: nothing
        was sent.
        """
        connection = HTTP11UpstreamConnection(self.owner, self.clock, 5, tls=True)
        request = make_request(self.owner)
        connection.begin(request, 1.0)
        connection.makeConnection(StringTransport())
        connection.connectionLost(Failure(ConnectionLost("handshake failed")))
        self.assertEqual(request.sink.outcome, ("connect_failed", "connect_error"))
        self.assertEqual(self.owner.events, ["lost", "finished", "closed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


# A response head (without its empty line) and the reason parse_head gives
# for refusing it: the text of the warning logged with the upstream and
# server names, so it must say what is wrong and where.
REFUSAL_REASONS = [
    (b"HTTP/1.1 200 OK\r\nX Bad: 1", "invalid header name b'X Bad'"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b", "invalid byte 0x00 in the value of header b'X'"),
    (b"HTTP/1.1 200 OK\r\nX: a\rb", "invalid byte 0x0d in the value of header b'X'"),
    (b"HTTP/1.1 200 OK\r\nX: a\r\n b", "obsolete line folding (a header line starting with a "
                                     "blank): b' b'"),
    (b"HTTP/1.1 200 OK\r\nBroken", "header line without a colon: b'Broken'"),
    (b"HTTP/1.1 700 OK", "invalid status line b'HTTP/1.1 700 OK'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
     "conflicting Content-Length values"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
     "both Content-Length and Transfer-Encoding"),
    (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked", "Transfer-Encoding in an HTTP/1.0 response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999",
     "invalid Content-Length b'99999999999999999999'"),
]


class ParseHeadTests(SynchronousTestCase):
    """
    L{gatelayer.http1.parse_response_head} on its own.
    """

    def test_refusals_say_why(self):
        """
        A refused head raises L{BadResponse} whose text names the offending
        line, field or rule, with hostile bytes escaped.
        """
        for head, reason in REFUSAL_REASONS:
            error = self.assertRaises(BadResponse, parse_head, head)
            self.assertEqual(str(error), reason, head)

    def test_fields(self):
        """
        A valid head gives its status, reason, fields (values without
        surrounding blanks) and framing.
        """
        self.assertEqual(
            parse_head(b"HTTP/1.0 404 Not Found\r\nX:  a b \r\nConnection: keep-alive\r\n"
                       b"Content-Length: 3, 3"),
            (404, b"Not Found", [(b"X", b"a b"), (b"Connection", b"keep-alive"),
                                 (b"Content-Length", b"3, 3")], False, 3, False, False, True))
        self.assertEqual(parse_head(b"HTTP/1.1 200"), (200, b"", [], True, None, False, False, False))

    def test_remembered_lines(self):
        """
        A head whose lines were all seen before (read from the remembered
        lines) parses as it did the first time, and a refused head is
        refused for the same reason when each of its lines was seen in an
        accepted one: the framing of the whole head is still checked.
        """
        self.patch(heads, "_LINES", {})
        self.patch(heads, "_STATUS_LINES", {})
        accepted = [
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\nConnection: keep-alive",
            b"HTTP/1.0 404 Not Found\r\nX:  a b \r\nConnection: keep-alive\r\nContent-Length: 3, 3",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, Keep-Alive",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\nX: a",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: gzip",
            b"HTTP/1.0 200 OK\r\nContent-Length: 99999999999999999999",
            b"HTTP/1.1 204",
            b"HTTP/1.1 200 OK\r\nX:",
        ]
        first = []
        for head in accepted:
            try:
                first.append(parse_head(head))
            except BadResponse as e:
                first.append(str(e))
        for head, expected in zip(accepted * 2, first * 2):
            try:
                self.assertEqual(parse_head(head), expected, head)
            except BadResponse as e:
                self.assertEqual(str(e), expected, head)
        for head, reason in REFUSAL_REASONS + [
                (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Length: 1",
                 "conflicting Content-Length values"),
                (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked",
                 "both Content-Length and Transfer-Encoding"),
                (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nX: a",
                 "Transfer-Encoding in an HTTP/1.0 response"),
                (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: gzip\r\nX: a",
                 "both Content-Length and Transfer-Encoding"),
                (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
                 "unsupported Transfer-Encoding b'chunked,gzip'")]:
            error = self.assertRaises(BadResponse, parse_head, head)
            self.assertEqual(str(error), reason, head)
        self.assertIn(b"Content-Length: 12", heads._LINES)
        self.assertNotIn(b"X Bad: 1", heads._LINES)

    def test_remembered_lines_bounded(self):
        """
        At most C{_MAX_LINES} lines are remembered (then the table starts
        again), and none longer than C{_MAX_LINE} bytes.
        """
        self.patch(heads, "_LINES", {})
        for index in range(heads._MAX_LINES + 10):
            parse_head(b"HTTP/1.1 200 OK\r\nX-N: %d" % (index,))
        self.assertLessEqual(len(heads._LINES), heads._MAX_LINES)
        long = b"X-Long: " + b"a" * heads._MAX_LINE
        self.assertEqual(parse_head(b"HTTP/1.1 200 OK\r\n" + long)[2], [(b"X-Long", b"a" * heads._MAX_LINE)])
        self.assertNotIn(long, heads._LINES)

    def test_same_grammar_as_server_channel(self):
        """
        A field line is accepted in an upstream response exactly when the
        strict server channel accepts it in a request: one field grammar on
        both sides of the gateway.
        """
        lines = [b"X: 1", b"X:", b"X-a.b_c~d!#$%&'*+^`|: v", b"X: a\tb", b"X: \x80\xff",
                 b"X Y: 1", b"X\tY: 1", b"X : 1", b" X: 1", b": 1", b"X(Y): 1", b"X@Y: 1",
                 b"X: a\x00b", b"X: a\rb", b"X: a\x01", b"X: a\x7f", b"X: a\x1f", b"\xc3\xa9: 1",
                 b"X\x00: 1", b"X"]
        for line in lines:
            try:
                server_parse(b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n",
                             len(b"GET / HTTP/1.1\r\nHost: h\r\n" + line))
            except BadRequest:
                server = False
            else:
                server = True
            try:
                parse_head(b"HTTP/1.1 200 OK\r\n" + line)
            except BadResponse:
                client = False
            else:
                client = True
            self.assertEqual(client, server, line)
            self.assertEqual(valid_field(line), server, line)
