"""
Tests for gatelayer.http.mirror: copies of a route's requests go to a
shadow upstream and never delay nor fail the real ones. In memory: the
gateway's upstream pools connect through a MemoryReactorClock, and the
upstream connections are completed (or failed) by hand.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, ITerminal
from gatelayer.http.mirror import LOG_INTERVAL, MirrorSampler, MirrorTerminal, ShadowCopy, shadow_host
from gatelayer.upstream.interfaces import IResponseSink
from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response

APP = "10.0.0.1"
SHADOW = "10.0.0.5"

CONFIG = f"""
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = {APP}:80
connect_timeout = 1s
read_timeout = 5s
[upstream:shadow]
servers = {SHADOW}:80
connect_timeout = 1s
read_timeout = 2s
max_connections = 1
max_pending = 0
[route:api]
path = /api/
upstream = app
strip_prefix = /api
mirror = shadow
[route:some]
path = /some/
upstream = app
mirror = shadow 25%
[route:rehost]
path = /rehost/
upstream = app
preserve_host = no
mirror = shadow
"""


class MirrorTests(SynchronousTestCase):
    """
    The shadow gets a copy of each request; the client gets the primary's
    answer whatever the shadow does.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor
        self.mirror = self.gate.gateway.table.match("x", b"/api/", "GET").route.terminal

    def attempts(self, host):
        """
        The indexes in C{reactor.tcpClients} of the connection attempts to
        C{host}.
        """
        return [i for i, attempt in enumerate(self.reactor.tcpClients) if attempt[0] == host]

    def connect(self, host):
        """
        Complete the latest connection attempt to C{host}; returns the
        upstream-side transport and protocol.
        """
        return accept_upstream(self.reactor, self.attempts(host)[-1])

    def refuse(self, host):
        """
        Fail the latest connection attempt to C{host} (refused).
        """
        index = self.attempts(host)[-1]
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def test_copy_sent_with_same_request(self):
        """
        The copy has the method, stripped path, query, forwarding headers,
        request id and body of the real request, and a Host with
        C{-shadow}.
        """
        channel, client = self.gate.connect(peer="192.0.2.7")
        channel.dataReceived(b"POST /api/orders?x=1 HTTP/1.1\r\nHost: api.example:8080\r\n"
                             b"Content-Length: 5\r\nX-Trace: t1\r\n\r\nhello")
        shadow, _ = self.connect(SHADOW)
        app, _ = self.connect(APP)
        copy, real = shadow.value(), app.value()
        self.assertTrue(copy.startswith(b"POST /orders?x=1 HTTP/1.1\r\n"), copy)
        self.assertIn(b"Host: api.example-shadow:8080\r\n", copy)
        self.assertIn(b"Host: api.example:8080\r\n", real)
        request_id = b"X-Request-Id: %s-1\r\n" % (self.gate.gateway.request_ids.prefix,)
        for line in [b"X-Trace: t1\r\n", b"X-Forwarded-For: 192.0.2.7\r\n", b"Content-Length: 5\r\n",
                     request_id]:
            self.assertIn(line, copy)
            self.assertIn(line, real)
        self.assertTrue(copy.endswith(b"\r\n\r\nhello"))
        self.assertEqual(copy.replace(b"api.example-shadow", b"api.example"), real)

    def test_host_without_preserve_host(self):
        """
        With C{preserve_host = no} the copy's Host is the shadow server's
        address with C{-shadow}.
        """
        channel, _ = self.gate.connect()
        channel.dataReceived(b"GET /rehost/ HTTP/1.1\r\nHost: api.example\r\n\r\n")
        shadow, _ = self.connect(SHADOW)
        self.assertIn(b"Host: 10.0.0.5-shadow:80\r\n", shadow.value())

    def test_client_answered_before_shadow(self):
        """
        The primary's answer reaches the client while the shadow has not
        even connected; the shadow's later 500 changes nothing.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        _, app = self.connect(APP)
        app.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
        status, _, body = parse_response(client.value())
        self.assertEqual((status, body), (200, b"real"))
        answered = client.value()
        _, shadow = self.connect(SHADOW)
        shadow.dataReceived(b"HTTP/1.1 500 Oops\r\nContent-Length: 6\r\n\r\nbroken")
        self.assertEqual(client.value(), answered)
        self.assertEqual((self.mirror.sent, self.mirror.answered, self.mirror.failed), (1, 1, 0))

    def test_shadow_refused_changes_nothing(self):
        """
        A shadow refusing connections: the client gets the real answer,
        the copy counts as failed, and the route's upstream records no
        failure.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.refuse(SHADOW)
        _, app = self.connect(APP)
        app.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[0], 200)
        self.assertEqual((self.mirror.sent, self.mirror.failed), (1, 1))
        app_state = self.gate.gateway.upstreams["app"].state.snapshot()[0]
        shadow_state = self.gate.gateway.upstreams["shadow"].state.snapshot()[0]
        self.assertEqual((app_state["failures"], app_state["requests"]), (0, 1))
        self.assertEqual((shadow_state["failures"], shadow_state["active"]), (1, 0))

    def test_shadow_timeout_changes_nothing(self):
        """
        A shadow that never answers times out on its own read_timeout; the
        client's answer came long before.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.connect(SHADOW)
        _, app = self.connect(APP)
        app.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[2], b"ok")
        self.reactor.advance(2.1)
        self.assertEqual((self.mirror.answered, self.mirror.failed), (0, 1))

    def test_full_shadow_drops_copies(self):
        """
        With the shadow's one connection busy and no queue, further copies
        are dropped at once (never queued), counted, and logged once per
        interval; every client is answered.
        """
        clients = []
        with capturedLogs() as events:
            for _ in range(4):
                channel, client = self.gate.connect()
                channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(client)
            self.reactor.advance(0)
        self.assertEqual(len(self.attempts(SHADOW)), 1)
        self.assertEqual((self.mirror.sent, self.mirror.dropped), (4, 3))
        lost = [e for e in events if "mirror of route" in e.get("log_format", "")]
        self.assertEqual(len(lost), 1)
        self.assertEqual((lost[0]["what"], lost[0]["route"], lost[0]["upstream"]),
                         ("dropped", "api", "shadow"))
        for index in self.attempts(APP):
            _, port, factory, _, _ = self.reactor.tcpClients[index]
            protocol = factory.buildProtocol(IPv4Address("TCP", APP, port))
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual([parse_response(c.value())[0] for c in clients], [204] * 4)
        # The shadow's connection attempt times out meanwhile (one more
        # copy lost, unlogged); after the interval the next loss is logged
        # with the count of those not logged.
        self.reactor.advance(1.0)
        self.assertEqual(self.mirror.failed, 1)
        self.reactor.advance(LOG_INTERVAL)
        with capturedLogs() as events:
            for _ in range(2):
                channel, _ = self.gate.connect()
                channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
            self.reactor.advance(0)
        self.assertEqual((self.mirror.sent, self.mirror.dropped), (6, 4))
        lost = [e for e in events if "mirror of route" in e.get("log_format", "")]
        self.assertEqual([e["unlogged"] for e in lost], [3])

    def test_large_body_copied_from_file(self):
        """
        A body large enough to be held in a file reaches both upstreams
        whole.
        """
        body = bytes(range(256)) * 800
        channel, client = self.gate.connect()
        channel.dataReceived(b"PUT /api/blob HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % (len(body),) + body)
        shadow, _ = self.connect(SHADOW)
        app, _ = self.connect(APP)
        self.assertTrue(shadow.value().endswith(b"\r\n\r\n" + body))
        self.assertTrue(app.value().endswith(b"\r\n\r\n" + body))

    def test_sampled_share(self):
        """
        C{mirror = shadow 25%} copies one request in four.
        """
        some = self.gate.gateway.table.match("x", b"/some/", "GET").route.terminal
        for _ in range(8):
            channel, _ = self.gate.connect()
            channel.dataReceived(b"GET /some/ HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(some.sent, 2)
        self.assertEqual(len(self.attempts(SHADOW)), 1)

    def test_describe(self):
        """
        describe() names the upstream, the shadow, the share and the counts.
        """
        verifyObject(ITerminal, self.mirror)
        self.assertEqual(self.mirror.describe(), {
            "upstream": "app",
            "mirror": {"upstream": "shadow", "percent": 100.0, "sent": 0, "answered": 0,
                       "failed": 0, "dropped": 0},
        })


class MirrorFaultTests(SynchronousTestCase):
    """
    Whatever goes wrong with the copy, the real request is served.
    """

    def test_no_usable_shadow_server(self):
        """
        A shadow whose servers are all down: the copy is dropped at once,
        nothing connects to it.
        """
        config = CONFIG.replace(f"servers = {SHADOW}:80", f"servers = {SHADOW}:80 down")
        gate = InMemoryGateway(config, with_upstreams=True)
        channel, _ = gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        mirror = gate.gateway.table.match("x", b"/api/", "GET").route.terminal
        self.assertEqual((mirror.sent, mirror.dropped), (0, 1))
        self.assertEqual([attempt[0] for attempt in gate.reactor.tcpClients], [APP])

    def test_copy_error_never_reaches_client(self):
        """
        An unexpected error while making the copy is logged; the request is
        still served by the route's own terminal.
        """
        class Broken:
            spec = type("Spec", (), {"name": "shadow"})

            @property
            def state(self):
                raise RuntimeError("boom")

        served = []

        class Primary:
            def serve(self, exchange):
                served.append(exchange)

        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        route = gate.gateway.table.match("x", b"/api/", "GET").route
        terminal = MirrorTerminal(Primary(), Broken(), route.spec, gate.reactor)
        with capturedLogs() as events:
            terminal.serve(Exchange(method=b"GET", path=b"/api/a", query=b"", headers=Headers(),
                                    client_ip="192.0.2.1"))
        self.assertEqual(len(served), 1)
        self.assertEqual([e["log_failure"].value.args for e in events if "log_failure" in e],
                         [("boom",)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


    def test_pool_error_releases_copy(self):
        """
        A pool refusing the copy with an error: the shadow's server slot is
        given back, the error logged, and the client served.
        """
        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        shadow = gate.gateway.upstreams["shadow"]

        def refuse(*args):
            raise RuntimeError("pool closed")
        shadow.pool.request = refuse
        channel, client = gate.connect()
        channel.dataReceived(b"POST /api/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(shadow.state.snapshot()[0]["active"], 0)
        _, port, factory, _, _ = gate.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", APP, port))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[2], b"ok")


class SplitMirrorTests(SynchronousTestCase):
    """
    A split route may mirror too: the copy goes to the shadow, the request
    to its version.
    """

    def test_split_and_mirror(self):
        """
        The mirror wraps the split terminal; describe() shows both.
        """
        config = CONFIG + "[upstream:v2]\nservers = 10.0.0.2:80\n" + (
            "[route:canary]\npath = /canary/\nupstream = app:1, v2:1\nmirror = shadow 50%\n")
        gate = InMemoryGateway(config, with_upstreams=True)
        terminal = gate.gateway.table.match("x", b"/canary/", "GET").route.terminal
        self.assertIsInstance(terminal, MirrorTerminal)
        self.assertEqual(terminal.describe(), {
            "versions": [{"upstream": "app", "weight": 1}, {"upstream": "v2", "weight": 1}],
            "split_key": "ip",
            "mirror": {"upstream": "shadow", "percent": 50.0, "sent": 0, "answered": 0,
                       "failed": 0, "dropped": 0},
        })


class SamplerTests(SynchronousTestCase):
    """
    The share of copied requests is exact and evenly spread.
    """

    def test_table(self):
        """
        Of N requests, exactly the share is copied, evenly.
        """
        for percent, count, expected in [(100, 10, 10), (50, 10, 5), (10, 100, 10), (25, 8, 2),
                                         (0.5, 1000, 5), (33.3, 1000, 333), (0.001, 100000, 1)]:
            with self.subTest(percent=percent):
                sampler = MirrorSampler(percent)
                self.assertEqual(sum(sampler.take() for _ in range(count)), expected)
        sampler = MirrorSampler(10)
        self.assertEqual([sampler.take() for _ in range(20)].index(True), 9)


class ShadowHostTests(SynchronousTestCase):
    """
    C{-shadow} goes after the host name, before any port.
    """

    def test_table(self):
        """
        Names, ports, IPv6 literals.
        """
        for host, expected in [
            (b"api.example.com", b"api.example.com-shadow"),
            (b"api.example.com:8080", b"api.example.com-shadow:8080"),
            (b"10.0.0.5:80", b"10.0.0.5-shadow:80"),
            (b"[::1]:8080", b"[::1]-shadow:8080"),
            (b"[::1]", b"[::1]-shadow"),
            (b"host:", b"host:-shadow"),
            (b"", b"-shadow"),
        ]:
            with self.subTest(host=host):
                self.assertEqual(shadow_host(host), expected)


class ShadowCopyTests(SynchronousTestCase):
    """
    The sink of a copy.
    """

    def test_provides_sink(self):
        """
        It is an L{IResponseSink}.
        """
        verifyObject(IResponseSink, ShadowCopy(None, None, None))
