"""
Tests for the access log (L{gatelayer.observe.accesslog}): the JSON and
combined lines of requests through an in-memory gateway, hostile header
values, redaction, batching, standard output and reopening.
"""

import json
import os
import re

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.chain import IFilter
from gatelayer.observe import accesslog
from gatelayer.observe.accesslog import JSON_FIELDS, AccessLog
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, parse_response, set_filters, with_server,
)

CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[route:api]
path = /api/
upstream = app
[route:hello]
path = /hello
respond = 200 hello
"""

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")

# Hostile User-Agent values the server channels accept: quotes,
# backslashes, non-ASCII, invalid UTF-8, and what the JSON line shows.
HOSTILE = [
    (b'say "hi"', 'say "hi"'),
    (b"back\\slash", "back\\slash"),
    (b"caf\xc3\xa9", "caf\u00e9"),
    (b"bad\xff\xfeutf8", "bad\\xff\\xfeutf8"),
    (b'"}, "status": 200, {"', '"}, "status": 200, {"'),
]

# Control bytes the channels refuse in headers; the lines are safe even so.
CONTROL = [b"esc\x1b[31mred", b"bell\x07\x7f", b"tab\tnul\x00", b"cr\rlf\n"]


@implementer(IFilter)
class ConsumerFilter:
    """
    A filter that authenticates everyone as C{alice} and lets a rate limit
    decide C{allowed}.
    """

    name = "consumer"

    def on_request(self, exchange):
        """
        Note the consumer and the rate limit outcome.
        """
        exchange.context["consumer"] = "alice"
        exchange.context["ratelimit"] = "allowed"

    def on_response(self, exchange):
        """
        Nothing.
        """


class AccessLogTests(SynchronousTestCase):
    """
    Lines of requests through an in-memory gateway.
    """

    http_server = "gatelayer"
    log_format = "json"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor
        self.reactor.advance(1764547200.25)
        self.path = os.path.abspath(self.mktemp())
        self.log = AccessLog(self.path, self.reactor, format=self.log_format)
        self.log.redact = frozenset([b"api_key"])
        self.gate.gateway.access_log = self.log

    def lines(self):
        """
        Close the log and read its lines.
        """
        self.log.close()
        with open(self.path, "rb") as f:
            return f.read().splitlines(keepends=True)

    def proxied(self, request, answer=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"):
        """
        Send C{request} to the upstream route and answer it; returns the
        client's response.
        """
        channel, client = self.gate.connect(peer="192.0.2.9")
        channel.dataReceived(request)
        _, protocol = accept_upstream(self.reactor)
        self.reactor.advance(0.02)
        protocol.dataReceived(answer)
        return parse_response(client.value())


class JsonLineTests(AccessLogTests):
    """
    The JSON line: every field, in order, with the request's values.
    """

    def test_proxied_request(self):
        """
        A proxied request's line names the route, the upstream and server,
        the sizes, the durations (a new connection: its connect time) and
        the request id the client got.
        """
        route = self.gate.gateway.table.match("", b"/api/", "GET").route
        set_filters(self.gate.gateway, route, (ConsumerFilter(),))
        _, headers, _ = self.proxied(
            b"POST /api/x?api_key=secret&q=1 HTTP/1.1\r\nHost: App.Test\r\nContent-Length: 3\r\n"
            b"User-Agent: curl/8\r\nReferer: http://r.test/\r\n\r\nabc")
        [line] = self.lines()
        self.assertTrue(line.endswith(b"\n"))
        fields = json.loads(line)
        self.assertEqual(list(fields)[:len(JSON_FIELDS)], list(JSON_FIELDS))
        self.assertRegex(fields["time"], TIME)
        expected = {
            "request_id": headers[b"x-request-id"][0].decode(), "client": "192.0.2.9",
            "peer": "192.0.2.9", "consumer": "alice", "method": "POST",
            "path": "/api/x?api_key=REDACTED&q=1", "protocol": "HTTP/1.1", "host": "app.test",
            "route": "api", "upstream": "app", "upstream_server": "10.0.0.1:80", "status": 200,
            "bytes_sent": 5, "bytes_received": 3, "retries": 0, "ratelimit": "allowed",
            "tls_version": None, "sni": None, "user_agent": "curl/8", "referer": "http://r.test/",
            "upstream_connect_ms": 0.0,
        }
        self.assertEqual({k: fields[k] for k in expected}, expected)
        self.assertAlmostEqual(fields["upstream_first_byte_ms"], 20.0, places=3)
        self.assertAlmostEqual(fields["duration_ms"], 20.0, places=3)
        self.assertNotIn(b"secret", line)

    def test_connect_time(self):
        """
        C{upstream_connect_ms} is how long the new connection took to be
        usable; the next request on the kept-alive connection has 0.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(0.03)
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        channel.dataReceived(b"GET /api/b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.reactor.advance(0.01)
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(len(self.reactor.tcpClients), 1)
        first, second = [json.loads(line) for line in self.lines()]
        self.assertAlmostEqual(first["upstream_connect_ms"], 30.0, places=3)
        self.assertAlmostEqual(first["upstream_first_byte_ms"], 30.0, places=3)
        self.assertEqual(second["upstream_connect_ms"], 0.0)
        self.assertAlmostEqual(second["upstream_first_byte_ms"], 10.0, places=3)

    def test_no_upstream(self):
        """
        A 404 and a direct answer have no upstream fields (null), no route
        for the 404, and their own request ids.
        """
        self.gate.exchange(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        missing, direct = [json.loads(line) for line in self.lines()]
        self.assertEqual((missing["status"], missing["route"]), (404, None))
        self.assertEqual((direct["status"], direct["route"], direct["bytes_sent"]), (200, "hello", 5))
        for fields in (missing, direct):
            for name in ("upstream", "upstream_server", "upstream_connect_ms", "upstream_first_byte_ms",
                         "consumer", "ratelimit"):
                self.assertIsNone(fields[name], name)
        self.assertNotEqual(missing["request_id"], direct["request_id"])

    def test_hostile_values(self):
        """
        Header values with quotes, control bytes and invalid UTF-8 give one
        ASCII line of valid JSON holding them (invalid bytes as C{\\xHH}).
        """
        for raw, shown in HOSTILE:
            self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: " + raw
                               + b"\r\nReferer: " + raw + b"\r\n\r\n")
        lines = self.lines()
        self.assertEqual(len(lines), len(HOSTILE))
        for line, (raw, shown) in zip(lines, HOSTILE):
            line.decode("ascii")
            self.assertEqual(line.count(b"\n"), 1)
            fields = json.loads(line)
            self.assertEqual((fields["user_agent"], fields["referer"]), (shown, shown), raw)
            self.assertEqual(fields["status"], 200)

    def test_kept_request_ids_escaped(self):
        """
        A request id kept from a trusted proxy may hold quotes and
        backslashes (any visible ASCII): the line escapes them and stays one
        valid JSON object; the gateway's own ids are written as they are.
        """
        gate = InMemoryGateway(with_server(CONFIG.replace(
            "[gateway]\n", "[gateway]\ntrusted_proxies = 192.0.2.0/24\n"), self.http_server),
                               with_upstreams=True)
        gate.reactor.advance(1764547200.25)
        gate.gateway.access_log = self.log
        ids = [b'a"b', b"back\\slash", b'"},{"status":1', b"plain-id_1.2"]
        for value in ids:
            channel, _ = gate.connect(peer="192.0.2.9")
            channel.dataReceived(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + value + b"\r\n\r\n")
        lines = self.lines()
        self.assertEqual([json.loads(line)["request_id"] for line in lines], [v.decode() for v in ids])
        self.assertEqual([json.loads(line)["status"] for line in lines], [200] * len(ids))

    def test_path_bytes_escaped(self):
        """
        A path with escapes the canonical request keeps (C{%22}, non-ASCII
        bytes after decoding) is written as valid JSON, with or without a
        query.
        """
        for target in (b"/hello/%22quoted%22", b"/hello/caf%C3%A9", b"/hello/%FF?x=%22"):
            self.gate.exchange(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        lines = self.lines()
        self.assertEqual(len(lines), 3)
        for line in lines:
            line.decode("ascii")
            self.assertTrue(json.loads(line)["path"].startswith("/hello/"))

    def test_retries_and_refused_connection(self):
        """
        A request whose upstream connection is refused: 502, one try, no
        first byte.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        channel, _ = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        [fields] = [json.loads(line) for line in self.lines()]
        self.assertEqual((fields["status"], fields["upstream_server"], fields["retries"]),
                         (502, "10.0.0.1:80", 0))
        self.assertIsNone(fields["upstream_first_byte_ms"])
        self.assertIsNone(fields["upstream_connect_ms"])


class CombinedLineTests(AccessLogTests):
    """
    The combined format, as before, with the request id after it.
    """

    log_format = "combined"

    def test_line(self):
        """
        The combined fields, then C{request_id=ID}; credentials redacted.
        """
        _, headers, _ = self.proxied(
            b"GET /api/x?api_key=secret HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n")
        [line] = self.lines()
        self.assertRegex(line, rb'^192\.0\.2\.9 - - \[01/Dec/2025:00:00:00 \+0000\] '
                               rb'"GET /api/x\?api_key=REDACTED HTTP/1\.1" 200 5 "-" "curl/8" '
                               rb'request_id=[a-z2-7]{12}-[0-9a-f]+\n\Z')
        self.assertTrue(line.endswith(b"request_id=" + headers[b"x-request-id"][0] + b"\n"))

    def test_hostile_values(self):
        """
        Quotes, backslashes, control bytes and non-ASCII are written as
        C{\\xHH}: one line, its quoted fields unbroken.
        """
        for raw, _ in HOSTILE:
            self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: " + raw + b"\r\n\r\n")
        lines = self.lines()
        self.assertEqual(len(lines), len(HOSTILE))
        for line in lines:
            line.decode("ascii")
            self.assertEqual(line.count(b'"'), 6, line)
            self.assertIsNone(re.search(rb"[\x00-\x1f\x7f]", line[:-1]), line)
        self.assertIn(b'"say \\x22hi\\x22"', lines[0])
        self.assertIn(b'"back\\x5Cslash"', lines[1])
        self.assertIn(b'"bad\\xFF\\xFEutf8"', lines[3])


class ControlBytesTests(SynchronousTestCase):
    """
    Values with control bytes (which the server channels refuse before a
    line is made) are escaped all the same, in both formats.
    """

    def test_escaped(self):
        """
        Each format gives one ASCII line without a raw control byte.
        """
        from twisted.web.http_headers import Headers

        log = AccessLog("-", MemoryReactorClock())
        for raw in CONTROL:
            request = _StubRequest(Headers({b"user-agent": [raw], b"referer": [raw]}), raw)
            for line in (accesslog.json_line(log, request, 0.0), accesslog.combined_line(log, request, 0.0)):
                self.assertEqual(line.count(b"\n"), 1, line)
                self.assertTrue(line.endswith(b"\n"))
                self.assertIsNone(re.search(rb"[\x00-\x1f\x7f-\xff]", line[:-1]), line)
            fields = json.loads(accesslog.json_line(log, request, 0.0))
            sent = request.requestHeaders.getRawHeaders(b"user-agent")[0]
            self.assertEqual(fields["user_agent"], sent.decode("latin-1"))
            self.assertEqual(fields["path"], "/p" + raw.decode("latin-1"))


class TlsFieldsTests(SynchronousTestCase):
    """
    The TLS version and server name of a TLS connection.
    """

    def test_tls_fields(self):
        """
        A transport whose handle is a TLS connection gives its version and
        server name (an undecodable one escaped); a plain socket, a
        transport without a handle or no transport gives nulls.
        """
        from twisted.web.http_headers import Headers

        class Connection:
            def __init__(self, name):
                self.name = name

            def get_protocol_version_name(self):
                return "TLSv1.3"

            def get_servername(self):
                return self.name

        class Transport:
            def __init__(self, handle):
                self.handle = handle

            def getHandle(self):
                if self.handle is None:
                    raise AttributeError("no handle")
                return self.handle

        log = AccessLog("-", MemoryReactorClock())
        cases = [(Transport(Connection(b"api.test")), "TLSv1.3", "api.test"),
                 (Transport(Connection(None)), "TLSv1.3", None),
                 (Transport(Connection(b"\xff\"x")), "TLSv1.3", '\\xff"x'),
                 (Transport(object()), None, None), (Transport(None), None, None), (None, None, None)]
        for transport, version, sni in cases:
            request = _StubRequest(Headers(), b"")
            request.transport = transport
            fields = json.loads(accesslog.json_line(log, request, 0.0))
            self.assertEqual((fields["tls_version"], fields["sni"]), (version, sni))


class _StubChannel:
    """
    A connection of a TLS listener (the log reads TLS fields only there).
    """

    class factory:
        scheme = "https"


class _StubRequest:
    """
    What the log reads of a request, with any bytes a test wants.
    """

    def __init__(self, headers, raw):
        self.requestHeaders = headers
        self.method = b"GET"
        self.path = b"/p" + raw
        self.query = b""
        self.clientproto = b"HTTP/1.1"
        self.client = None
        self.code = 400
        self.sentLength = 0
        self.routing = None
        self.transport = None
        self.channel = _StubChannel()

    def body_length(self):
        """
        No body.
        """
        return 0


class TwistedJsonLineTests(JsonLineTests):
    """
    The JSON line through twisted.web's channel.
    """

    http_server = "twisted"


class WritingTests(SynchronousTestCase):
    """
    Batching, the clock, standard output and reopening.
    """

    def test_time_cached_per_second(self):
        """
        The time is RFC 3339 UTC with milliseconds; the second's text is
        made once per second.
        """
        log = AccessLog(os.path.abspath(self.mktemp()), MemoryReactorClock())
        self.addCleanup(log.close)
        calls = []
        original = accesslog.time.strftime
        self.patch(accesslog.time, "strftime", lambda *a: calls.append(a) or original(*a))
        self.assertEqual(log.time(1764547200.0), "2025-12-01T00:00:00.000Z")
        self.assertEqual(log.time(1764547200.999), "2025-12-01T00:00:00.999Z")
        self.assertEqual(log.time(1764547261.5), "2025-12-01T00:01:01.500Z")
        self.assertEqual(len(calls), 2)
        self.assertEqual(log.quoted_time(1764547261.5004), '"2025-12-01T00:01:01.500Z"')
        self.assertEqual(log.quoted_time(1764547261.501), '"2025-12-01T00:01:01.501Z"')
        self.assertEqual(len(calls), 2)

    def test_batched(self):
        """
        Lines are written when the timer fires, not per request; nothing
        is left scheduled after close.
        """
        reactor = MemoryReactorClock()
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, reactor)
        log._lines.append(b"one\n")
        log._call = reactor.callLater(1.0, log.flush)
        self.assertEqual(os.path.getsize(path), 0)
        reactor.advance(1.0)
        self.assertEqual(os.path.getsize(path), 4)
        log._lines.append(b"two\n")
        log._call = reactor.callLater(1.0, log.flush)
        log.close()
        self.assertEqual(reactor.getDelayedCalls(), [])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"one\ntwo\n")

    def test_lines_made_in_batches(self):
        """
        A request's end captures its values; lines are made once
        C{BATCH} requests wait (or at the flush), and written at the flush.
        """
        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, gate.reactor)
        self.addCleanup(log.close)
        gate.gateway.access_log = log
        for _ in range(accesslog.BATCH - 1):
            gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((len(log._pending), len(log._lines)), (accesslog.BATCH - 1, 0))
        gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((len(log._pending), len(log._lines)), (0, accesslog.BATCH))
        gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(os.path.getsize(path), 0)
        gate.reactor.advance(1.0)
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), accesslog.BATCH + 1)
        self.assertEqual({json.loads(line)["route"] for line in lines}, {"hello"})

    def test_values_of_the_end(self):
        """
        The line shows the request as it was when it ended, even if its
        routing record changes before the line is made.
        """
        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, gate.reactor)
        gate.gateway.access_log = log
        finished = []
        original = gate.gateway.request_finished
        gate.gateway.request_finished = lambda request: (finished.append(request), original(request))
        gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        finished[0].routing.upstream_server = "10.9.9.9:1"
        finished[0].routing.tries = 5
        log.close()
        with open(path, "rb") as f:
            line = json.loads(f.read())
        self.assertEqual((line["upstream_server"], line["retries"]), (None, 0))

    def test_unmakeable_line_counted(self):
        """
        A line that cannot be made is left out and counted; the others are
        written.
        """
        reactor = MemoryReactorClock()
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, reactor)
        log._pending.append(("not", "a", "record"))
        gate = InMemoryGateway(CONFIG, reactor=reactor, with_upstreams=True)
        gate.gateway.access_log = log
        gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        log.close()
        with open(path, "rb") as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        self.assertEqual(log.unwritable, 1)

    def test_reopen(self):
        """
        After a rename, C{reopen} writes the collected lines to the renamed
        file and later ones to a new file at the path: none lost or split.
        """
        reactor = MemoryReactorClock()
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, reactor)
        log._lines.append(b"before\n")
        os.rename(path, path + ".1")
        log._lines.append(b"pending\n")
        log.reopen()
        log._lines.append(b"after\n")
        log.close()
        with open(path + ".1", "rb") as f:
            self.assertEqual(f.read(), b"before\npending\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"after\n")

    def test_stdout_whole_lines(self):
        """
        To standard output, a batch goes in writes of whole lines of at
        most PIPE_BUF bytes (atomic on a pipe shared by the workers); a
        longer line alone.
        """
        writes = []
        self.patch(accesslog, "_write_all", lambda fd, data: writes.append((fd, data)))
        for name in ("-", "stdout"):
            del writes[:]
            log = AccessLog(name, MemoryReactorClock())
            lines = [b"%05d" % (i,) + b"x" * 94 + b"\n" for i in range(100)] + [b"y" * 5000 + b"\n"]
            log._lines.extend(lines)
            log.close()
            self.assertEqual(b"".join(data for _, data in writes), b"".join(lines))
            for fd, data in writes:
                self.assertEqual(fd, 1)
                self.assertTrue(data.endswith(b"\n"))
                self.assertTrue(len(data) <= 4096 or data.count(b"\n") == 1)

    def test_write_error_kept_quiet(self):
        """
        A failing write (a full disk) loses that batch, never the worker.
        """
        def failing(fd, data):
            raise OSError(28, "No space left on device")
        self.patch(accesslog, "_write_all", failing)
        log = AccessLog("-", MemoryReactorClock())
        log._lines.append(b"lost\n")
        log.flush()
        self.assertEqual(log._lines, [])
