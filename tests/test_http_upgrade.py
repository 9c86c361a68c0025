"""
Tests for upgraded connections (gatelayer.http.upgrade,
gatelayer.upstream.upgrade) in memory: which requests upgrade, hostile
handshakes (sent whole and byte by byte), the switch, and the relay's
back-pressure, closing, timers and bookkeeping.
"""

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.chain import IFilter, Reply
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.http.upgrade import PLAIN, upgrade_plan
from gatelayer.testing.exchange import raw_headers
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, feed, parse_response, set_filters, split_responses, with_server,
)

CONFIG = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 127.0.0.1:9001
read_timeout = 5s
[route:app]
path = /
upstream = app
upgrade_timeout = 100s
[route:plain]
path = /plain/
upstream = app
upgrades = none
[route:other]
path = /other/
upstream = app
upgrades = websocket, x-custom/2
"""

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE = (b"GET /chat HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
             b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + KEY +
             b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
SWITCHED = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def handshake(path=b"/chat", extra=b"", method=b"GET", version=b"HTTP/1.1",
              upgrade=b"websocket", connection=b"Upgrade", key=True):
    """
    A WebSocket handshake's bytes, with C{extra} header lines.
    """
    lines = [method + b" " + path + b" " + version, b"Host: app.example"]
    if upgrade is not None:
        lines.append(b"Upgrade: " + upgrade)
    if connection is not None:
        lines.append(b"Connection: " + connection)
    if key:
        lines += [b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Version: 13"]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def head_lines(data):
    """
    The lower-cased header names of the request head at the start of
    C{data}, with their values.
    """
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {line.partition(b":")[0].lower(): line.partition(b":")[2].strip() for line in head}


class RecordingLog:
    """
    An access log keeping the requests it is given.
    """

    def __init__(self, logged):
        self.logged = logged

    def record(self, request):
        self.logged.append(request)


class UpgradePlanTests(SynchronousTestCase):
    """
    L{upgrade_plan}: plain request, refusal or upgrade.
    """

    def plan(self, headers, method=b"GET", version=b"HTTP/1.1", body=0,
             allowed=frozenset({"websocket"})):
        h = raw_headers(headers)
        return upgrade_plan(method, version, h, body, allowed)

    def test_table(self):
        """
        Each request gets the documented outcome.
        """
        ws = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
              (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13")]
        cases = [
            ("websocket", ws, {}, frozenset({b"websocket"})),
            ("token case", [(b"Upgrade", b"WebSocket"), (b"Connection", b"keep-alive, UPGRADE")] + ws[2:],
             {}, frozenset({b"websocket"})),
            ("no Connection: upgrade", ws[:1] + ws[2:], {}, PLAIN),
            ("Connection lists other tokens", [ws[0], (b"Connection", b"keep-alive")] + ws[2:], {}, PLAIN),
            ("h2c", [(b"Upgrade", b"h2c"), (b"Connection", b"Upgrade, HTTP2-Settings"),
                     (b"HTTP2-Settings", b"AAMAAABkAAQAoAAAAAIAAAAA")], {}, PLAIN),
            ("h2c among others", [(b"Upgrade", b"websocket, h2c")] + ws[1:], {}, PLAIN),
            ("h2c allowed by mistake", [(b"Upgrade", b"h2c"), (b"Connection", b"upgrade")],
             {"allowed": frozenset({"h2c"})}, PLAIN),
            ("not allowed", ws, {"allowed": frozenset()}, PLAIN),
            ("one of two not allowed", [(b"Upgrade", b"websocket, foo")] + ws[1:], {}, PLAIN),
            ("empty Upgrade", [(b"Upgrade", b"")] + ws[1:], {}, PLAIN),
            ("other protocol", [(b"Upgrade", b"foo/2"), (b"Connection", b"upgrade")],
             {"allowed": frozenset({"foo/2"})}, frozenset({b"foo/2"})),
            ("HTTP/1.0", ws, {"version": b"HTTP/1.0"}, "an upgrade needs HTTP/1.1"),
            ("body", ws, {"body": 5}, "an upgrade request cannot carry a body"),
            ("declared length", ws + [(b"Content-Length", b"5")], {},
             "an upgrade request cannot carry a body"),
            ("zero length", ws + [(b"Content-Length", b"0")], {}, frozenset({b"websocket"})),
            ("chunked", ws + [(b"Transfer-Encoding", b"chunked")], {},
             "an upgrade request cannot carry a body"),
            ("POST", ws, {"method": b"POST"}, "a WebSocket handshake must be a GET"),
            ("no key", ws[:2] + ws[3:], {}, "a WebSocket handshake needs one Sec-WebSocket-Key"),
            ("two keys", ws + [(b"Sec-WebSocket-Key", KEY)], {},
             "a WebSocket handshake needs one Sec-WebSocket-Key"),
            ("no version", ws[:3], {}, "a WebSocket handshake needs one Sec-WebSocket-Version"),
        ]
        for name, headers, options, expected in cases:
            with self.subTest(name=name):
                self.assertEqual(self.plan(headers, **options), expected)


class UpgradeConfigTests(SynchronousTestCase):
    """
    The route keys C{upgrades} and C{upgrade_timeout}.
    """

    base = "[listener:web]\nbind = 127.0.0.1:8080\n[upstream:app]\nservers = 127.0.0.1:1\n"

    def route(self, keys, terminal="upstream = app"):
        return parse_config_text(
            self.base + "[route:r]\npath = /\n" + terminal + "\n" + keys, "/etc/gate.ini", cpu_count=1
        ).routes[0]

    def test_defaults(self):
        """
        WebSocket is allowed by default and upgraded connections may idle an
        hour.
        """
        route = self.route("")
        self.assertEqual((route.upgrades, route.upgrade_timeout), (frozenset({"websocket"}), 3600.0))

    def test_values(self):
        """
        A list (lower-cased), C{none}, and a duration.
        """
        self.assertEqual(self.route("upgrades = WebSocket, x-proto/1\n").upgrades,
                         frozenset({"websocket", "x-proto/1"}))
        self.assertEqual(self.route("upgrades = none\n").upgrades, frozenset())
        self.assertEqual(self.route("upgrade_timeout = 5m\n").upgrade_timeout, 300.0)

    def test_refused(self):
        """
        h2c, none with protocols, a non-token and the keys on a route without
        upstream are errors naming section and key.
        """
        cases = [
            ("upgrades = h2c\n", "upstream = app", "upgrades: 'h2c' has 'h2c', which is never proxied"),
            ("upgrades = websocket, H2C\n", "upstream = app", "which is never proxied"),
            ("upgrades = none, websocket\n", "upstream = app", "lists none with protocols"),
            ("upgrades = web socket\n", "upstream = app", "which is not a protocol name"),
            ("upgrades = websocket\n", "respond = 200 x", "upgrades: only applies to a route with upstream"),
            ("upgrade_timeout = 1m\n", "respond = 200 x",
             "upgrade_timeout: only applies to a route with upstream"),
            ("upgrade_timeout = soon\n", "upstream = app", "[route:r] upgrade_timeout"),
        ]
        for keys, terminal, expected in cases:
            with self.subTest(keys=keys):
                error = self.assertRaises(ConfigError, self.route, keys, terminal)
                self.assertIn(expected, "\n".join(error.problems))
                self.assertIn("/etc/gate.ini [route:r]", "\n".join(error.problems))


class HandshakeTests(SynchronousTestCase):
    """
    Handshakes through an in-memory gateway and its upstream pool, each
    sent whole and byte by byte.
    """

    config = CONFIG

    def gateway(self):
        self.gw = InMemoryGateway(self.config, with_upstreams=True)
        return self.gw

    def connect_upstream(self):
        """
        Accept the gateway's (last) upstream connection: C{(transport,
        protocol)}.
        """
        return accept_upstream(self.gw.reactor)

    def switch(self, bytewise=False, request=HANDSHAKE, answer=SWITCHED):
        """
        Run a handshake to its 101: C{(channel, client transport, upstream
        transport, upstream protocol)}.
        """
        gw = self.gateway()
        channel, client = gw.connect()
        feed(channel, request, bytewise)
        upstream, server = self.connect_upstream()
        server.dataReceived(answer)
        return channel, client, upstream, server

    def test_websocket_switches(self):
        """
        The handshake goes upstream on a connection of its own with Upgrade
        and Connection: upgrade; the 101 reaches the client with its
        Upgrade, Connection and Sec-WebSocket-Accept; bytes then flow both
        ways.
        """
        for bytewise in (False, True):
            with self.subTest(bytewise=bytewise):
                channel, client, upstream, server = self.switch(bytewise)
                sent = head_lines(upstream.value())
                self.assertEqual(sent[b"upgrade"], b"websocket")
                self.assertEqual(sent[b"connection"], b"upgrade")
                self.assertEqual(sent[b"sec-websocket-key"], KEY)
                self.assertEqual(sent[b"x-forwarded-for"], b"127.0.0.1")
                status, headers, body = parse_response(client.value())
                self.assertEqual(status, 101)
                self.assertEqual(headers[b"upgrade"], [b"websocket"])
                self.assertEqual(headers[b"connection"], [b"upgrade"])
                self.assertEqual(headers[b"sec-websocket-accept"], [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
                self.assertNotIn(b"content-length", headers)
                self.assertNotIn(b"transfer-encoding", headers)
                upstream.clear()
                client.clear()
                feed(channel, b"\x81\x05hello", bytewise)
                self.assertEqual(upstream.value(), b"\x81\x05hello")
                server.dataReceived(b"\x81\x02ok")
                self.assertEqual(client.value(), b"\x81\x02ok")

    def test_dedicated_connection(self):
        """
        The handshake never takes an idle pooled connection, and its
        connection never goes back to the pool.
        """
        gw = self.gateway()
        channel, client = gw.connect()
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: app.example\r\n\r\n")
        upstream, server = self.connect_upstream()
        server.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(len(gw.reactor.tcpClients), 1)
        pool = gw.gateway.upstreams["app"].pool
        self.assertEqual(pool.stats(gw.config.upstreams["app"].servers[0]).idle, 1)
        other, _ = gw.connect()
        other.dataReceived(HANDSHAKE)
        self.assertEqual(len(gw.reactor.tcpClients), 2)
        self.assertEqual(pool.stats(gw.config.upstreams["app"].servers[0]).idle, 1)

    def test_bytes_around_the_switch(self):
        """
        Bytes the client sent after its handshake (in the same packet, and
        in later ones before the 101) reach the upstream right after the
        switch, in order; bytes in the same read as the 101 reach the
        client right after it.
        """
        for bytewise in (False, True):
            with self.subTest(bytewise=bytewise):
                gw = self.gateway()
                channel, client = gw.connect()
                feed(channel, HANDSHAKE + b"\x81\x01a", bytewise)
                upstream, server = self.connect_upstream()
                feed(channel, b"\x81\x01b", bytewise)
                self.assertTrue(upstream.value().endswith(b"upgrade\r\n\r\n"))
                server.dataReceived(SWITCHED + b"\x81\x05first")
                self.assertTrue(upstream.value().endswith(b"\r\n\r\n\x81\x01a\x81\x01b"))
                self.assertTrue(client.value().endswith(b"\r\n\r\n\x81\x05first"))
                self.assertEqual(parse_response(client.value())[0], 101)

    def test_plain_requests(self):
        """
        Upgrade without Connection: upgrade, a protocol the route does not
        list, and h2c are proxied as plain requests on the pool, without
        Upgrade (nor HTTP2-Settings when Connection names it); the answer
        is relayed as any response and the connection stays open.
        """
        cases = [
            ("no Connection: upgrade", handshake(connection=None)),
            ("Connection: keep-alive", handshake(connection=b"keep-alive")),
            ("route refuses upgrades", handshake(path=b"/plain/chat")),
            ("protocol not listed", handshake(upgrade=b"x-other")),
            ("h2c", handshake(upgrade=b"h2c", connection=b"Upgrade, HTTP2-Settings", key=False,
                              extra=b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n")),
            ("h2c on a route listing it all", handshake(path=b"/other/x", upgrade=b"h2c", key=False)),
        ]
        for name, request in cases:
            for bytewise in (False, True):
                with self.subTest(name=name, bytewise=bytewise):
                    gw = self.gateway()
                    channel, client = gw.connect()
                    feed(channel, request, bytewise)
                    upstream, server = self.connect_upstream()
                    sent = head_lines(upstream.value())
                    self.assertNotIn(b"upgrade", sent)
                    self.assertNotIn(b"http2-settings", sent)
                    self.assertNotIn(b"connection", sent)
                    server.dataReceived(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno")
                    status, headers, body = parse_response(client.value())
                    self.assertEqual((status, body), (426, b"no"))
                    self.assertFalse(client.disconnecting)
                    # The pooled connection went back to the pool.
                    pool = gw.gateway.upstreams["app"].pool
                    self.assertEqual(pool.stats(gw.config.upstreams["app"].servers[0]).idle, 1)

    def test_refused_handshakes(self):
        """
        An upgrade to a listed protocol that is HTTP/1.0, carries a body, or
        is a WebSocket handshake without GET or its key is answered 400 and
        the connection closed; nothing goes upstream.
        """
        cases = [
            ("HTTP/1.0", handshake(version=b"HTTP/1.0")),
            ("body", handshake(extra=b"Content-Length: 5\r\n") + b"hello"),
            ("chunked body", handshake(extra=b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n"),
            ("POST", handshake(method=b"POST", extra=b"Content-Length: 0\r\n")),
            ("no key", handshake(key=False)),
            ("other protocol with a body", handshake(path=b"/other/x", upgrade=b"x-custom/2", key=False,
                                                     extra=b"Content-Length: 2\r\n") + b"hi"),
        ]
        for name, request in cases:
            for bytewise in (False, True):
                with self.subTest(name=name, bytewise=bytewise):
                    gw = self.gateway()
                    channel, client = gw.connect()
                    feed(channel, request + b"\x81\x01a", bytewise)
                    status, headers, body = parse_response(client.value())
                    self.assertEqual(status, 400)
                    self.assertIn(b'"status":400', body)
                    self.assertTrue(client.disconnecting)
                    self.assertEqual(gw.reactor.tcpClients, [])

    def test_other_listed_protocol_switches(self):
        """
        A protocol the route lists besides websocket switches without the
        WebSocket checks.
        """
        request = handshake(path=b"/other/x", upgrade=b"x-custom/2", key=False)
        answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: X-Custom/2\r\nConnection: upgrade\r\n\r\n"
        channel, client, upstream, server = self.switch(request=request, answer=answer)
        self.assertEqual(parse_response(client.value())[0], 101)

    def test_bad_upstream_switches(self):
        """
        A 101 naming another protocol, or none, is a broken response: 502;
        so is a 101 to a request that did not ask to upgrade (on a pooled
        connection).
        """
        cases = [
            ("wrong protocol", HANDSHAKE,
             b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"),
            ("no Upgrade", HANDSHAKE, b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n"),
            ("not asked", b"GET /a HTTP/1.1\r\nHost: app.example\r\n\r\n", SWITCHED),
            ("not asked on a route refusing upgrades", handshake(path=b"/plain/x"), SWITCHED),
        ]
        for name, request, answer in cases:
            for bytewise in (False, True):
                with self.subTest(name=name, bytewise=bytewise):
                    gw = self.gateway()
                    channel, client = gw.connect()
                    feed(channel, request, bytewise)
                    upstream, server = self.connect_upstream()
                    feed(server, answer + b"\x81\x01x", bytewise)
                    status, headers, body = parse_response(client.value())
                    self.assertEqual(status, 502)
                    self.assertIn(b"invalid response", body)
                    self.assertTrue(upstream.disconnecting)
                    # Nothing of the upstream's reaches the client.
                    self.assertNotIn(b"\x81\x01x", client.value())

    def test_upstream_refuses_the_upgrade(self):
        """
        An upstream answering the handshake otherwise than 101: the response
        is relayed, and both connections close after it (early frames sent
        by the client are never read as HTTP).
        """
        for bytewise in (False, True):
            with self.subTest(bytewise=bytewise):
                gw = self.gateway()
                channel, client = gw.connect()
                feed(channel, HANDSHAKE + b"GET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n", bytewise)
                upstream, server = self.connect_upstream()
                feed(server, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope", bytewise)
                responses = split_responses(client.value())
                self.assertEqual([r[0] for r in responses], [403])
                self.assertEqual(responses[0][1][b"connection"], [b"close"])
                self.assertTrue(client.disconnecting)
                self.assertTrue(upstream.disconnecting)
                self.assertEqual(len(gw.reactor.tcpClients), 1)
                self.assertEqual(gw.gateway.active, 0)

    def test_origin_hidden_on_handshake_answers(self):
        """
        The route's origin policy applies to what an upgrade handshake gets
        back: a redirect to the upstream server's own address is rewritten
        to the client's host, and so is a Content-Location on the 101.
        """
        answers = [
            (b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9001/login\r\n"
             b"Content-Length: 0\r\n\r\n", 302, b"location"),
            (SWITCHED[:-2] + b"Content-Location: http://127.0.0.1:9001/chat\r\n\r\n", 101,
             b"content-location"),
        ]
        for answer, status, header in answers:
            with self.subTest(status=status):
                gw = self.gateway()
                channel, client = gw.connect()
                channel.dataReceived(HANDSHAKE)
                _, server = self.connect_upstream()
                server.dataReceived(answer)
                head = client.value().split(b"\r\n\r\n", 1)[0]
                self.assertTrue(head.startswith(b"HTTP/1.1 %d " % (status,)), head)
                self.assertIn(b"http://app.example/", head)
                self.assertNotIn(b"127.0.0.1:9001", head)

    def test_connect_failure(self):
        """
        No server to connect to: 502 as for any request.
        """
        gw = self.gateway()
        channel, client = gw.connect()
        channel.dataReceived(HANDSHAKE)
        from twisted.internet.error import ConnectionRefusedError
        _, _, factory, _, _ = gw.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(parse_response(client.value())[0], 502)

    def test_handshake_timeout(self):
        """
        No answer to the handshake within the upstream's read_timeout (5 s):
        504, and the upstream connection is cut.
        """
        gw = self.gateway()
        channel, client = gw.connect()
        channel.dataReceived(HANDSHAKE)
        upstream, server = self.connect_upstream()
        gw.reactor.advance(4.9)
        self.assertEqual(client.value(), b"")
        gw.reactor.advance(0.2)
        self.assertEqual(parse_response(client.value())[0], 504)
        self.assertTrue(upstream.disconnecting)

    def test_client_gone_before_the_switch(self):
        """
        The client going away while the handshake waits for its answer cuts
        the upstream connection; a 101 arriving later goes nowhere.
        """
        gw = self.gateway()
        channel, client = gw.connect()
        channel.dataReceived(HANDSHAKE)
        upstream, server = self.connect_upstream()
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(upstream.disconnecting)
        server.dataReceived(SWITCHED + b"late")
        self.assertEqual(client.value(), b"")
        self.assertEqual((gw.gateway.active, gw.gateway.connections), (0, 0))

    def test_filter_refuses_the_handshake(self):
        """
        A filter answering (an auth filter's 401) refuses the upgrade:
        nothing goes upstream.
        """
        @implementer(IFilter)
        class Refuse:
            name = "refuse"

            def on_request(self, exchange):
                return Reply(401, b"no", ((b"www-authenticate", b"ApiKey"),))

            def on_response(self, exchange):
                pass

        gw = self.gateway()
        route = gw.gateway.table.match("app.example", b"/chat", "GET", {}, b"").route
        set_filters(gw.gateway, route, [Refuse()])
        channel, client = gw.connect()
        channel.dataReceived(HANDSHAKE + b"\x81\x01a")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body), (401, b"no"))
        self.assertEqual(gw.reactor.tcpClients, [])


class RelayTests(SynchronousTestCase):
    """
    The relay after the switch: back-pressure both ways, closing, timers and
    the gateway's bookkeeping.
    """

    config = CONFIG

    def setUp(self):
        self.gw = InMemoryGateway(self.config, with_upstreams=True)
        self.logged = []
        self.gw.gateway.access_log = RecordingLog(self.logged)
        self.channel, self.client = self.gw.connect()
        self.channel.dataReceived(HANDSHAKE)
        self.upstream, self.server = accept_upstream(self.gw.reactor)
        self.server.dataReceived(SWITCHED)

    def test_slow_client_pauses_the_upstream(self):
        """
        The client's transport pausing the channel (a full write buffer)
        pauses reading from the upstream, and resuming resumes it.
        """
        self.assertEqual(self.upstream.producerState, "producing")
        self.channel.pauseProducing()
        self.assertEqual(self.upstream.producerState, "paused")
        self.channel.resumeProducing()
        self.assertEqual(self.upstream.producerState, "producing")

    def test_slow_upstream_pauses_the_client(self):
        """
        The upstream's transport pausing its producer pauses reading from the
        client, and resuming resumes it.
        """
        self.assertEqual(self.client.producerState, "producing")
        self.upstream.producer.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")
        self.upstream.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")

    def test_upstream_close_closes_the_client(self):
        """
        The upstream closing closes the client connection (after what was
        written), and the request ends then: counted, with the bytes relayed.
        """
        self.server.dataReceived(b"\x88\x02\x03\xe8")
        self.assertEqual(self.gw.gateway.active, 1)
        self.server.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(self.client.value().endswith(b"\x88\x02\x03\xe8"))
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.gw.gateway.active, self.gw.gateway.connections), (0, 0))
        self.assertEqual([request.code for request in self.logged], [101])

    def test_client_close_closes_the_upstream(self):
        """
        The client going away closes the upstream connection; the access
        log's request records 101, the bytes relayed down, and those up.
        """
        self.server.dataReceived(b"\x81\x02ok")
        self.channel.dataReceived(b"\x81\x03abc")
        self.assertEqual(self.logged, [])
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.upstream.disconnecting)
        self.assertEqual(self.gw.gateway.active, 0)
        [request] = self.logged
        self.assertEqual((request.code, request.sentLength), (101, 4))
        self.assertIn(("upgraded_up", "5"), request.routing.log_fields)
        self.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.gw.gateway.connections, 0)

    def test_idle_timeout(self):
        """
        The upstream's read_timeout and the channel's idle timeout no longer
        apply; upgrade_timeout (100 s) without a byte either way closes both
        connections, and each byte pushes it back.
        """
        reactor = self.gw.reactor
        reactor.advance(60)
        self.channel.dataReceived(b"x")
        reactor.advance(60)
        self.server.dataReceived(b"y")
        reactor.advance(99)
        self.assertFalse(self.client.disconnecting)
        self.assertFalse(self.upstream.disconnecting)
        reactor.advance(2)
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(self.upstream.disconnecting)
        # Nothing of the gateway's own (no 408) went into the stream.
        self.assertTrue(self.client.value().endswith(b"\r\n\r\ny"))

    def test_drain_keeps_it_until_the_deadline(self):
        """
        A drain does not close an upgraded connection (it is busy): the
        worker's drain deadline cuts it; nothing of the gateway's own is
        written into the stream.
        """
        before = self.client.value()
        self.gw.factory.drain()
        self.assertTrue(self.channel.busy)
        self.assertFalse(self.client.disconnecting)
        self.server.dataReceived(b"\x81\x01z")
        self.assertEqual(self.client.value(), before + b"\x81\x01z")

    def test_no_timer_left(self):
        """
        Once both connections closed no delayed call is left.
        """
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([c for c in self.gw.reactor.getDelayedCalls() if c.active()], [])


class TwistedChannelHandshakeTests(HandshakeTests):
    """
    The handshakes on twisted.web's server channel (C{http_server = twisted}).
    """

    config = with_server(CONFIG, "twisted")


class TwistedChannelRelayTests(RelayTests):
    """
    The relay on twisted.web's server channel (C{http_server = twisted}).
    """

    config = with_server(CONFIG, "twisted")
