"""
What every response of the gateway carries, on both server channels: a
Date (formatted once per second from the reactor's clock), the listener's
own headers (Strict-Transport-Security on a TLS listener) on its errors and
on the refusals written before a request exists, and a status line made
only of the gateway's own reason phrase for a valid status code.
"""

import json
import os

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http import date as date_module
from gatelayer.http.date import HTTPDate, imf_fixdate, is_imf_fixdate
from gatelayer.http.errors import raw_error_response, reason_phrase, valid_status
from gatelayer.testing.server import InMemoryGateway, parse_response
from tests.test_http_lean import GOOD, LeanGateway
from tests.test_http_proxy import CONFIG as PROXY_CONFIG
from gatelayer.testing.server import with_server

# Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110 section 5.6.7.
EXAMPLE_TIME = 784111777
EXAMPLE_DATE = b"Sun, 06 Nov 1994 08:49:37 GMT"
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")

CONFIG = """
[gateway]
max_body_size = 1KB
header_timeout = 5s
idle_timeout = 30s
body_timeout = 10s
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /hello
respond = 200 hello
[route:ro]
path = /ro
methods = GET
respond = 200 ro
"""

# Requests refused before a request is handed on, and their status: each
# answer is written whole by the channel (raw_error_response).
REFUSALS = [
    ("malformed", b"HELLO\r\n\r\n", 400),
    ("bare LF head", b"GET /hello HTTP/1.1\nHost: x\n\n", 400),
    ("bare LF chunk line", b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\n", 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    ("header too large", b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("body too large", b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n", 413),
]

# Reason phrases a terminal (relaying an upstream) might hand over: none of
# their bytes may reach the status line.
HOSTILE_REASONS = [
    b"OK\r\nX-Injected: 1",
    b"OK\nX-Injected: 1",
    b"OK\rX",
    b"\x00\x01\x7f",
    "Tr\u00e8s bien".encode("utf-8"),
    b"\xff\xfe",
    b"Totally Legit Reason",
    b"",
]


def head_lines(data):
    """
    The status line and the header lines of the first response in C{data}.
    """
    return data.partition(b"\r\n\r\n")[0].split(b"\r\n")


class HTTPDateTests(SynchronousTestCase):
    """
    The Date value: IMF-fixdate, from the injected clock, formatted at most
    once per second.
    """

    def test_format(self):
        """
        The RFC's own example, and the epoch.
        """
        self.assertEqual(imf_fixdate(EXAMPLE_TIME), EXAMPLE_DATE)
        self.assertEqual(imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertTrue(is_imf_fixdate(imf_fixdate(EXAMPLE_TIME + 0.999)))

    def test_from_clock(self):
        """
        The date follows the clock it was given, not the machine's.
        """
        clock = Clock()
        clock.advance(EXAMPLE_TIME)
        date = HTTPDate(clock)
        self.assertEqual(date(), EXAMPLE_DATE)
        clock.advance(86400)
        self.assertEqual(date(), b"Mon, 07 Nov 1994 08:49:37 GMT")

    def test_once_per_second(self):
        """
        However many responses ask within one second, the date is formatted
        once; the next second formats it again.
        """
        calls = []
        original = date_module.imf_fixdate

        def counting(seconds):
            calls.append(seconds)
            return original(seconds)
        self.patch(date_module, "imf_fixdate", counting)
        clock = Clock()
        clock.advance(EXAMPLE_TIME)
        date = HTTPDate(clock)
        first = date()
        for _ in range(1000):
            clock.advance(0.0005)
            self.assertIs(date(), first)
        self.assertEqual(calls, [EXAMPLE_TIME])
        clock.advance(0.6)
        self.assertEqual(date(), b"Sun, 06 Nov 1994 08:49:38 GMT")
        self.assertEqual(len(calls), 2)

    def test_line(self):
        """
        The whole header line is cached with the value and follows the
        clock the same way.
        """
        clock = Clock()
        clock.advance(EXAMPLE_TIME)
        date = HTTPDate(clock)
        line = date.line()
        self.assertEqual(line, b"Date: " + EXAMPLE_DATE + b"\r\n")
        self.assertIs(date.line(), line)
        clock.advance(1)
        self.assertEqual(date.line(), b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n")
        self.assertEqual(date(), b"Sun, 06 Nov 1994 08:49:38 GMT")

    def test_is_imf_fixdate(self):
        """
        Only the IMF-fixdate form is taken as well formed; the obsolete
        forms, other zones, junk and control bytes are not, before or after
        a well-formed value was checked (the last one is remembered).
        """
        self.patch(date_module, "_last_valid", None)
        for value, ok in [
                (b"", False),
                (EXAMPLE_DATE, True),
                (EXAMPLE_DATE, True),
                (b"Sunday, 06-Nov-94 08:49:37 GMT", False),
                (b"Sun Nov  6 08:49:37 1994", False),
                (b"Sun, 06 Nov 1994 08:49:37 UTC", False),
                (b"Sun, 06 Nov 1994 08:49:37 GMT\r\nX: 1", False),
                (b"Sun, 06 Nov 1994 08:49:37 GMT ", False),
                (b"sun, 06 nov 1994 08:49:37 GMT", False),
                (b"Sun, 6 Nov 1994 08:49:37 GMT", False),
                (b"", False),
                (b"yesterday", False)]:
            with self.subTest(value=value):
                self.assertEqual(is_imf_fixdate(value), ok)

    def test_raw_refusal(self):
        """
        A refusal written before a request exists names its status with the
        standard phrase and carries the Date and extra headers it is given.
        """
        data = raw_error_response(408, "request headers not received in time", EXAMPLE_DATE, (HSTS,))
        lines = head_lines(data)
        self.assertEqual(lines[0], b"HTTP/1.1 408 Request Timeout")
        self.assertIn(b"Date: " + EXAMPLE_DATE, lines)
        self.assertIn(HSTS[0] + b": " + HSTS[1], lines)
        self.assertIn(b"Connection: close", lines)
        self.assertEqual(json.loads(parse_response(data)[2])["status"], 408)

    def test_valid_status(self):
        """
        Codes 100..599 pass; anything else becomes 502, with a warning.
        """
        with capturedLogs() as events:
            self.assertEqual([valid_status(c) for c in (100, 200, 599)], [100, 200, 599])
            self.assertEqual([valid_status(c) for c in (0, 99, 600, 999, 1000, -200)], [502] * 6)
        self.assertEqual(len(events), 6)


class ResponseDateTests(SynchronousTestCase):
    """
    Every kind of response carries exactly one Date, the gateway's clock's.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server))
        self.gate.reactor.advance(EXAMPLE_TIME)

    def assertDated(self, data, expected=EXAMPLE_DATE):
        lines = head_lines(data)
        dates = [line for line in lines if line.lower().startswith(b"date:")]
        self.assertEqual(dates, [b"Date: " + expected], lines)

    def test_direct_and_errors(self):
        """
        A direct response, a 404 and a 405 are dated.
        """
        for request in [b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"DELETE /ro HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET /hello HTTP/1.0\r\n\r\n"]:
            with self.subTest(request=request):
                self.assertDated(self.gate.exchange(request))

    def test_static_file(self):
        """
        A static file, its 304 and a missing one are dated (Last-Modified is
        the file's, Date the response's).
        """
        root = self.mktemp()
        os.makedirs(root)
        with open(os.path.join(root, "a.txt"), "wb") as f:
            f.write(b"A" * 10)
        gate = InMemoryGateway(with_server(CONFIG, self.http_server)
                               + "[route:files]\npath = /files/\nstatic = %s\n" % (os.path.abspath(root),))
        gate.reactor.advance(EXAMPLE_TIME)
        status, headers, body = parse_response(gate.exchange(b"GET /files/a.txt HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual((status, body), (200, b"A" * 10))
        self.assertEqual(headers[b"date"], [EXAMPLE_DATE])
        stamp = headers[b"last-modified"][0]
        conditional = b"GET /files/a.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: " + stamp + b"\r\n\r\n"
        for request, code in [(conditional, 304), (b"GET /files/b.txt HTTP/1.1\r\nHost: x\r\n\r\n", 404)]:
            with self.subTest(code=code):
                data = gate.exchange(request)
                self.assertEqual(parse_response(data)[0], code)
                self.assertDated(data)

    def test_refusals(self):
        """
        The refusals written before a request exists are dated.
        """
        for name, data, status in REFUSALS:
            with self.subTest(case=name):
                answer = self.gate.exchange(data)
                self.assertEqual(parse_response(answer)[0], status)
                self.assertDated(answer)

    def test_timeouts(self):
        """
        408 for slow headers and for a slow body are dated with the time
        they are sent.
        """
        for data in [b"GET /hello HTTP/1.1\r\n", b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\na"]:
            with self.subTest(data=data):
                channel, transport = self.gate.connect()
                channel.dataReceived(data)
                self.gate.reactor.advance(11)
                self.assertEqual(parse_response(transport.value())[0], 408)
                self.assertDated(transport.value(), imf_fixdate(self.gate.reactor.seconds()))

    def test_clock_moves(self):
        """
        Responses on one connection a second apart carry different dates.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.gate.reactor.advance(1)
        channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data = transport.value()
        self.assertEqual(data.count(b"\r\nDate: " + EXAMPLE_DATE + b"\r\n"), 1)
        self.assertEqual(data.count(b"\r\nDate: Sun, 06 Nov 1994 08:49:38 GMT\r\n"), 1)

    def test_terminal_date(self):
        """
        A well-formed Date a terminal set (an upstream's, a cached
        response's) is kept; a malformed one, or two, are replaced.
        """
        for given, expected in [([b"Mon, 07 Nov 1994 08:49:37 GMT"], b"Mon, 07 Nov 1994 08:49:37 GMT"),
                                ([b"Sunday, 06-Nov-94 08:49:37 GMT"], EXAMPLE_DATE),
                                ([b"soon"], EXAMPLE_DATE),
                                ([b"Mon, 07 Nov 1994 08:49:37 GMT", b"Mon, 07 Nov 1994 08:49:37 GMT"],
                                 EXAMPLE_DATE)]:
            with self.subTest(given=given):
                gate = LeanGateway(hold=True, http_server=self.http_server)
                gate.reactor.advance(EXAMPLE_TIME)
                channel, transport = gate.connect()
                channel.dataReceived(GOOD + b"\r\n")
                request = gate.terminal.requests[0]
                request.responseHeaders.setRawHeaders(b"date", given)
                request.finish()
                self.assertDated(transport.value(), expected)


class ListenerHeadersTests(SynchronousTestCase):
    """
    The listener's own headers (HSTS on a TLS listener) are on every
    response: the gateway's errors and the raw refusals included.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server))
        self.gate.factory.extra_headers = (HSTS,)

    def assertHSTS(self, data):
        lines = [line.lower() for line in head_lines(data)]
        self.assertEqual([line for line in lines if line.startswith(HSTS[0] + b":")],
                         [HSTS[0] + b": " + HSTS[1].lower()], lines)

    def test_responses_and_errors(self):
        """
        A direct response, a 404, a 405 and a filter's refusal carry the
        header once.
        """
        for request in [b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"DELETE /ro HTTP/1.1\r\nHost: x\r\n\r\n"]:
            with self.subTest(request=request):
                self.assertHSTS(self.gate.exchange(request))

    def test_refusals(self):
        """
        400, 413, 414 and 431 written before a request exists carry it.
        """
        for name, data, status in REFUSALS:
            with self.subTest(case=name):
                answer = self.gate.exchange(data)
                self.assertEqual(parse_response(answer)[0], status)
                self.assertHSTS(answer)

    def test_timeout(self):
        """
        408 for slow headers carries it.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /hello HTTP/1.1\r\n")
        self.gate.reactor.advance(6)
        self.assertEqual(parse_response(transport.value())[0], 408)
        self.assertHSTS(transport.value())

    def test_terminal_without_it(self):
        """
        A terminal that writes its response without going through the
        gateway's header phase still gets it.
        """
        gate = LeanGateway(hold=True, http_server=self.http_server)
        gate.factory.extra_headers = (HSTS,)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        gate.terminal.requests[0].setResponseCode(500)
        gate.terminal.requests[0].finish()
        self.assertHSTS(transport.value())

    def test_plain_listener(self):
        """
        A listener without extra headers adds none.
        """
        gate = InMemoryGateway(with_server(CONFIG, self.http_server))
        lines = head_lines(gate.exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertFalse([line for line in lines if line.lower().startswith(HSTS[0])])


class StatusLineTests(SynchronousTestCase):
    """
    The status line is the gateway's own: the code and its standard
    reason phrase, whatever a terminal hands over.
    """

    http_server = "twisted"

    def respond(self, code, message=None):
        """
        Have a terminal answer with C{setResponseCode(code, message)}; the
        bytes the client got.
        """
        gate = LeanGateway(hold=True, http_server=self.http_server)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        request = gate.terminal.requests[0]
        request.setResponseCode(code, message)
        request.responseHeaders.setRawHeaders(b"content-length", [b"2"])
        request.write(b"ok")
        request.finish()
        self.request = request
        return transport.value()

    def test_hostile_reason_phrases(self):
        """
        CR, LF, control bytes, non-ASCII or just text of someone else's:
        never relayed.
        """
        for code in (200, 404, 502, 299):
            for message in HOSTILE_REASONS:
                with self.subTest(code=code, message=message):
                    data = self.respond(code, message)
                    self.assertEqual(head_lines(data)[0], b"HTTP/1.1 %d %s" % (code, reason_phrase(code)))
                    self.assertNotIn(b"Injected", data)
                    self.assertEqual(parse_response(data)[2], b"ok")

    def test_code_out_of_range(self):
        """
        A status outside 100..599 gives a well-formed 502 status line (with
        a warning), never a malformed one.
        """
        for code in (0, 99, 600, 999, 1000, 10 ** 6, -1):
            with self.subTest(code=code):
                with capturedLogs() as events:
                    data = self.respond(code, b"whatever")
                self.assertEqual(head_lines(data)[0], b"HTTP/1.1 502 Bad Gateway")
                self.assertEqual(self.request.code, 502)
                self.assertTrue(any("not in 100..599" in event.get("log_format", "") for event in events))

    def test_code_assigned_directly(self):
        """
        A code set on the request directly, bypassing setResponseCode, is
        checked when the head is written.
        """
        gate = LeanGateway(hold=True, http_server=self.http_server)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        request = gate.terminal.requests[0]
        request.code = 1000
        with capturedLogs():
            request.finish()
        self.assertEqual(head_lines(transport.value())[0], b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(request.code, 502)

    def test_code_not_int(self):
        """
        A status that is not an int is a programming error, refused where
        it is made (as twisted.web does).
        """
        gate = LeanGateway(hold=True, http_server=self.http_server)
        channel, transport = gate.connect()
        channel.dataReceived(GOOD + b"\r\n")
        self.assertRaises(TypeError, gate.terminal.requests[0].setResponseCode, "200")


class ProxiedHeadTests(SynchronousTestCase):
    """
    A proxied response: the upstream's reason phrase is replaced, its
    status is checked, its Date kept when well formed.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(PROXY_CONFIG, self.http_server), with_upstreams=True)
        self.gate.reactor.advance(EXAMPLE_TIME)

    def proxied(self, response):
        """
        Send a request to the single-server route and answer it upstream
        with C{response}; the bytes the client got.
        """
        reactor = self.gate.reactor
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /single/x HTTP/1.1\r\nHost: x\r\n\r\n")
        host, port, factory, _, _ = reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
        protocol.dataReceived(response)
        return client.value()

    def test_upstream_date(self):
        """
        A well-formed upstream Date is kept (it dates the response for
        caches); a malformed one is replaced; a missing one added.
        """
        for given, expected in [(b"Date: Sat, 05 Nov 1994 08:49:37 GMT\r\n", b"Sat, 05 Nov 1994 08:49:37 GMT"),
                                (b"Date: 784111777\r\n", EXAMPLE_DATE),
                                (b"", EXAMPLE_DATE)]:
            with self.subTest(given=given):
                data = self.proxied(b"HTTP/1.1 200 OK\r\n" + given + b"Content-Length: 2\r\n\r\nok")
                status, headers, body = parse_response(data)
                self.assertEqual((status, body, headers[b"date"]), (200, b"ok", [expected]))

    def test_upstream_reason(self):
        """
        The upstream's reason phrase never reaches the client.
        """
        for reason in HOSTILE_REASONS:
            if b"\n" in reason:
                continue
            with self.subTest(reason=reason):
                with capturedLogs():
                    data = self.proxied(b"HTTP/1.1 201 " + reason + b"\r\nContent-Length: 0\r\n\r\n")
                # The upstream client may refuse the response outright (502);
                # either way the status line is the gateway's.
                self.assertIn(head_lines(data)[0], (b"HTTP/1.1 201 Created", b"HTTP/1.1 502 Bad Gateway"))
                self.assertNotIn(reason or b"\x00", data)

    def test_no_content_length_on_204(self):
        """
        A 204 never carries Content-Length (RFC 9110 8.6), whether the
        upstream sent one or not, and the connection stays usable.
        """
        for given in (b"Content-Length: 0\r\n", b""):
            with self.subTest(given=given):
                data = self.proxied(b"HTTP/1.1 204 No Content\r\n" + given + b"X-A: 1\r\n\r\n")
                lines = [line.lower() for line in head_lines(data)]
                self.assertEqual(lines[0], b"http/1.1 204 no content")
                self.assertIn(b"x-a: 1", lines)
                self.assertFalse([line for line in lines if line.startswith(b"content-length")], lines)
                self.assertTrue(data.endswith(b"\r\n\r\n"), data)

    def test_upstream_status_out_of_range(self):
        """
        An upstream status of 600 or more is answered 502 with a
        well-formed status line.
        """
        with capturedLogs():
            data = self.proxied(b"HTTP/1.1 799 Odd\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(head_lines(data)[0], b"HTTP/1.1 502 Bad Gateway")


class LeanResponseDateTests(ResponseDateTests):
    """
    Dates, with the lean channel.
    """

    http_server = "gatelayer"


class LeanListenerHeadersTests(ListenerHeadersTests):
    """
    The listener's headers, with the lean channel.
    """

    http_server = "gatelayer"


class LeanStatusLineTests(StatusLineTests):
    """
    Status lines, with the lean channel.
    """

    http_server = "gatelayer"


class LeanProxiedHeadTests(ProxiedHeadTests):
    """
    Proxied response heads, with the lean channel.
    """

    http_server = "gatelayer"
