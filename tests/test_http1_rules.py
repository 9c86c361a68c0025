"""
Tests for the facade and shared rules of L{gatelayer.http1}: the strictness
table, the two directions' limits, token lists and the names the server
channels and the upstream client still import from their old modules.
"""

from attrs.exceptions import FrozenInstanceError
from twisted.trial.unittest import SynchronousTestCase

import gatelayer.http1
from gatelayer.http.headers import connection_tokens
from gatelayer.http1 import (
    REQUEST, RESPONSE, STRICTNESS, BadRequest, BadResponse, FramingError, connection_flags,
    parse_request_head, parse_response_head, parse_status_line, token_set,
)
from gatelayer.testing.server import split_responses
from gatelayer.upstream import client


class FacadeTests(SynchronousTestCase):
    """
    The package's public names.
    """

    def test_all_exported(self):
        """
        Every name in C{__all__} exists, has a docstring unless it is a
        constant, and no public function or class is left out.
        """
        for name in gatelayer.http1.__all__:
            value = getattr(gatelayer.http1, name)
            if callable(value):
                self.assertTrue(value.__doc__, name)
        public = {name for name, value in vars(gatelayer.http1).items()
                  if not name.startswith("_") and (callable(value) or name.isupper())
                  and getattr(value, "__module__", "gatelayer.http1").startswith("gatelayer.http1")}
        self.assertEqual(public - set(gatelayer.http1.__all__), set())

    def test_shared_names(self):
        """
        The upstream client re-exports the package's objects, not copies,
        and the request limits are the documented ones.
        """
        self.assertEqual((REQUEST.max_start_line, REQUEST.max_field_line, REQUEST.max_fields,
                          REQUEST.max_head, REQUEST.max_chunk_line), (8192, 8192, 100, 32768, 4096))
        self.assertIs(client.build_request_head, gatelayer.http1.build_request_head)
        self.assertEqual(client.MAX_HEAD_SIZE, RESPONSE.max_head)


class StrictnessTableTests(SynchronousTestCase):
    """
    The strictness table and the limits it describes.
    """

    def test_rows_name_both_sides(self):
        """
        Each row of the table says what requests and responses are held
        to, and names each rule once.
        """
        names = [row[0] for row in STRICTNESS]
        self.assertEqual(len(names), len(set(names)))
        for row in STRICTNESS:
            self.assertEqual(len(row), 3, row)
            self.assertTrue(all(row), row)

    def test_limits(self):
        """
        The two directions differ only where the table says: 8 KB lines,
        100 fields and 32 KB of headers for requests, a 64 KB head for
        responses; the same 4 KB chunk-size line.
        """
        self.assertEqual(
            (REQUEST.max_start_line, REQUEST.max_field_line, REQUEST.max_fields,
             REQUEST.max_head, REQUEST.max_trailer_line, REQUEST.max_trailers,
             REQUEST.max_trailers_size), (8192, 8192, 100, 32768, 8192, 100, 32768))
        self.assertEqual((RESPONSE.max_head, RESPONSE.max_trailers_size), (65536, 65536))
        self.assertEqual(REQUEST.max_chunk_line, RESPONSE.max_chunk_line)

    def test_limits_frozen(self):
        """
        The two limits are shared by every connection: they cannot be
        changed in place.
        """
        self.assertRaises(FrozenInstanceError, setattr, REQUEST, "max_head", 1)
        self.assertEqual(REQUEST.max_head, 32768)

    def test_errors(self):
        """
        A side's fault is its own exception, both L{FramingError}s: a
        request's with the status to answer, a response's whose text is the
        reason.
        """
        request = REQUEST.fault(431, "too many")
        response = RESPONSE.fault(400, "bad")
        self.assertIsInstance(request, BadRequest)
        self.assertEqual((request.status, request.message), (431, "too many"))
        self.assertIsInstance(response, BadResponse)
        self.assertEqual(str(response), "bad")
        self.assertIsInstance(response, FramingError)

    def test_host_only_for_requests(self):
        """
        Host rules hold for requests (exactly one in HTTP/1.1) and not for
        responses, as the table says.
        """
        head = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b"
        self.assertEqual(self.assertRaises(BadRequest, parse_request_head,
                                           head + b"\r\n\r\n", len(head)).status, 400)
        self.assertEqual(parse_response_head(b"HTTP/1.1 200 OK\r\nHost: a\r\nHost: b")[0], 200)

    def test_content_length_list(self):
        """
        A list of equal Content-Lengths is accepted from an upstream (as
        the table says) and refused from a client.
        """
        head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2"
        self.assertRaises(BadRequest, parse_request_head, head + b"\r\n\r\n", len(head))
        self.assertEqual(parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2")[4], 2)


class StatusLineTests(SynchronousTestCase):
    """
    L{parse_status_line}, the health probe's reading.
    """

    def test_valid(self):
        """
        Version, status and reason; the reason may be empty or absent.
        """
        self.assertEqual(parse_status_line(b"HTTP/1.1 200 OK"), (True, 200, b"OK"))
        self.assertEqual(parse_status_line(b"HTTP/1.0 404"), (False, 404, b""))
        self.assertEqual(parse_status_line(b"HTTP/1.1 599 "), (True, 599, b""))

    def test_invalid(self):
        """
        What the upstream client refuses in a head is refused here.
        """
        for line in [b"HTTP/1.1 700 OK", b"HTTP/1.1 20 OK", b"HTTP/2 200", b"HTTP/1.1  200",
                     b"http/1.1 200 OK", b"HTTP/1.1 200 O\x00K", b"ICY 200 OK"]:
            self.assertRaises(BadResponse, parse_status_line, line)
            self.assertRaises(BadResponse, parse_response_head, line)


class TokenTests(SynchronousTestCase):
    """
    Comma-separated token lists, one reading everywhere.
    """

    def test_token_set(self):
        """
        Items are split on commas, stripped and lower-cased; empty ones
        are dropped.
        """
        self.assertEqual(token_set([b"Close, X-Foo", b" ,keep-ALIVE ,"]),
                         {b"close", b"x-foo", b"keep-alive"})
        self.assertEqual(token_set(None), set())

    def test_connection_flags(self):
        """
        Whether C{close} and C{keep-alive} are listed.
        """
        self.assertEqual(connection_flags([b"Keep-Alive, Upgrade"]), (False, True))
        self.assertEqual(connection_flags([b"upgrade", b"CLOSE"]), (True, False))

    def test_same_everywhere(self):
        """
        The proxy's hop-by-hop reading, the request parser and the
        response parser agree on which options a Connection header lists.
        """
        value = b" Close ,X-Hop"
        self.assertEqual(connection_tokens([value]), {b"close", b"x-hop"})
        head = b"GET / HTTP/1.1\r\nHost: a\r\nConnection:" + value
        self.assertFalse(parse_request_head(head + b"\r\n\r\n", len(head)).keep_alive)
        self.assertTrue(parse_response_head(b"HTTP/1.1 200 OK\r\nConnection:" + value)[6])


class SplitResponsesTests(SynchronousTestCase):
    """
    L{gatelayer.testing.server.split_responses}, the test helper reading a
    connection's pipelined responses with the framing package.
    """

    def test_framed_by_length_and_chunks(self):
        """
        Responses framed by Content-Length, by chunks and without a body
        are told apart; a malformed head is an error, not a guess.
        """
        data = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        self.assertEqual(split_responses(data), [
            (200, {b"content-length": [b"2"]}, b"ok"),
            (200, {b"transfer-encoding": [b"chunked"]}, b"hi"),
            (204, {b"x-a": [b"1"]}, b""),
        ])
        self.assertRaises(BadResponse, split_responses, b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n")


class ResponseSerializationTests(SynchronousTestCase):
    """
    The response side of the framing package's serialization.
    """

    def test_status_line_and_head(self):
        """
        A status line and a head written in order, with the body in the
        same bytes; what the package writes, it parses back.
        """
        from gatelayer.http1 import build_response_head, status_line
        data = build_response_head(status_line(404, b"Not Found"),
                                   [(b"Content-Length", b"2"), (b"X-A", b"1")], b"no")
        self.assertEqual(data, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nno")
        status, headers, body = split_responses(data)[0]
        self.assertEqual((status, headers[b"x-a"], body), (404, [b"1"], b"no"))
