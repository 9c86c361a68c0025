"""
Tests for L{gatelayer.l4.relay} and L{gatelayer.l4.listener}: a relayed
connection in memory, from accept to the log line: choosing and connecting
a server, retries and passive health, limits, back-pressure, half-close,
timeouts, PROXY headers both ways and pass-through by server name.
"""

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.values import parse_network
from gatelayer.l4.clienthello import SniTable
from gatelayer.l4.proxyproto import encode_v2
from gatelayer.testing.l4 import RelayHarness, upstream_spec
from tests.test_l4_clienthello import openssl_hello


class RelayTests(SynchronousTestCase):
    """
    A C{tcp} listener's connection relayed to an upstream server.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_relays_both_ways(self):
        """
        Bytes go to the upstream and back unchanged; the counters and one
        log line record the connection when it closes.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        upstream, server = harness.connect()
        relay.dataReceived(b"\x00ping\xff")
        upstream.dataReceived(b"pong")
        self.assertEqual((server.value(), client.value()), (b"\x00ping\xff", b"pong"))
        upstream.connectionLost(None)
        self.assertTrue(client.disconnecting)
        relay.connectionLost(None)
        counters = harness.listener.snapshot()
        self.assertEqual((counters["accepted"], counters["active"], counters["relayed"],
                          counters["bytes_in"], counters["bytes_out"]), (1, 0, 1, 6, 4))
        lines = [e for e in self.events if e.get("event") == "l4_connection"]
        self.assertEqual(len(lines), 1)
        self.assertEqual((lines[0]["client"], lines[0]["server"], lines[0]["outcome"]),
                         ("10.0.0.9:5555", "10.0.1.1:5432", "relayed"))

    def test_client_paused_until_connected(self):
        """
        The client is not read while the upstream connects; what it sent
        before is delivered first once connected.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        self.assertEqual(client.producerState, "paused")
        relay.dataReceived(b"early")
        upstream, server = harness.connect()
        self.assertEqual((client.producerState, server.value()), ("producing", b"early"))

    def test_back_pressure_both_ways(self):
        """
        Each transport is the other's streaming producer, so a full write
        buffer on one side stops reading on the other; both send small
        writes at once (no Nagle delay added by the relay).
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        upstream, server = harness.connect()
        self.assertIs(client.producer, server)
        self.assertIs(server.producer, client)
        self.assertTrue(client.streaming and server.streaming)
        self.assertTrue(client.no_delay and server.no_delay)

    def test_connect_timeout(self):
        """
        The upstream's C{connect_timeout} bounds each connection attempt.
        """
        harness = RelayHarness(upstreams=(upstream_spec(connect_timeout=2.5),))
        harness.accept()
        self.assertEqual(harness.attempts, [("10.0.1.1", 5432, 2.5)])

    def test_retry_on_another_server(self):
        """
        A refused connection is counted against the server and retried on
        another one.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        harness.fail()
        self.assertEqual([a[0] for a in harness.attempts], ["10.0.1.1", "10.0.1.2"])
        upstream, server = harness.connect()
        relay.dataReceived(b"x")
        self.assertEqual(server.value(), b"x")
        failures = {row["address"]: row["failures"] for row in harness.states["db"].snapshot()}
        self.assertEqual(failures, {"10.0.1.1:5432": 1, "10.0.1.2:5432": 0})

    def test_retries_bounded(self):
        """
        When C{retries} are used up the client is closed: no more attempts,
        outcome C{connect_failed}.
        """
        harness = RelayHarness(upstreams=(upstream_spec(
            servers=("10.0.1.1:1", "10.0.1.2:1", "10.0.1.3:1"), retries=1),))
        relay, client = harness.accept()
        harness.fail()
        harness.fail(timeout=True)
        self.assertEqual(len(harness.attempts), 2)
        self.assertTrue(client.disconnecting)
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["connect_failed"], 1)

    def test_passive_ejection(self):
        """
        Connection failures eject a server like the proxy's do: after
        C{max_fails}, new connections go elsewhere at once.
        """
        harness = RelayHarness(upstreams=(upstream_spec(max_fails=2, retries=0),))
        for _ in range(2):
            harness.accept()
            harness.fail()
            harness.accept()
            harness.connect()
        harness.accept()
        harness.accept()
        self.assertEqual([a[0] for a in harness.attempts], ["10.0.1.1", "10.0.1.2"] * 2 + ["10.0.1.2"] * 2)

    def test_no_usable_server(self):
        """
        With every server unhealthy the client is closed without any
        connection attempt.
        """
        harness = RelayHarness()
        for address in ("10.0.1.1:5432", "10.0.1.2:5432"):
            harness.states["db"].set_healthy(address, False)
        relay, client = harness.accept()
        self.assertEqual((harness.attempts, client.disconnecting), ([], True))
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["no_server"], 1)

    def test_max_connections(self):
        """
        Past C{max_connections} on a server another one is picked; when all
        are full the client is refused.
        """
        harness = RelayHarness(upstreams=(upstream_spec(max_connections=1),))
        harness.accept()
        harness.connect()
        harness.accept()
        harness.connect()
        relay, client = harness.accept()
        self.assertEqual(len(harness.attempts), 2)
        self.assertTrue(client.disconnecting)
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["full"], 1)

    def test_client_leaves_while_connecting(self):
        """
        A client gone before the upstream answered stops the attempt; the
        server is not blamed.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        connector = harness.reactor.connectors[0]
        relay._connector = connector
        relay.connectionLost(None)
        self.assertEqual(harness.states["db"].snapshot()[0]["failures"], 0)
        self.assertEqual(harness.listener.snapshot()["active"], 0)

    def test_half_close_from_client(self):
        """
        A client's FIN is passed on as the upstream's end of writing; the
        answer still reaches the client, then the upstream's FIN.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        upstream, server = harness.connect()
        relay.dataReceived(b"question")
        relay.readConnectionLost()
        self.assertTrue(server.write_closed)
        self.assertFalse(client.disconnecting)
        upstream.dataReceived(b"answer")
        self.assertEqual(client.value(), b"answer")
        upstream.readConnectionLost()
        self.assertTrue(client.write_closed)
        relay.writeConnectionLost()
        self.assertTrue(client.disconnecting)

    def test_half_close_while_connecting(self):
        """
        A FIN that arrives while the upstream connects is passed on once it
        is connected, after the bytes before it.
        """
        harness = RelayHarness()
        relay, client = harness.accept()
        relay.dataReceived(b"all of it")
        relay.readConnectionLost()
        upstream, server = harness.connect()
        self.assertEqual((server.value(), server.write_closed), (b"all of it", True))

    def test_idle_timeout(self):
        """
        A connection with no byte either way for C{idle_timeout} is cut;
        traffic in either direction keeps it open.
        """
        harness = RelayHarness(idle_timeout=30.0)
        relay, client = harness.accept()
        upstream, server = harness.connect()
        harness.reactor.advance(20)
        upstream.dataReceived(b"tick")
        harness.reactor.advance(20)
        relay.dataReceived(b"tock")
        harness.reactor.advance(29)
        self.assertFalse(client.aborted)
        harness.reactor.advance(2)
        self.assertTrue(client.aborted and server.aborted)
        relay.connectionLost(None)
        upstream.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["idle_timeout"], 1)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_send_proxy_v1(self):
        """
        With C{send_proxy = v1} the upstream first gets a v1 header naming
        the client and the listener's address.
        """
        harness = RelayHarness(upstreams=(upstream_spec(send_proxy="v1"),))
        relay, client = harness.accept()
        relay.dataReceived(b"hello")
        upstream, server = harness.connect()
        self.assertEqual(server.value(), b"PROXY TCP4 10.0.0.9 10.0.0.1 5555 7000\r\nhello")

    def test_send_proxy_v2(self):
        """
        With C{send_proxy = v2} the upstream first gets the binary header.
        """
        harness = RelayHarness(upstreams=(upstream_spec(send_proxy="v2"),))
        harness.accept()
        upstream, server = harness.connect()
        self.assertEqual(server.value(), encode_v2(("10.0.0.9", 5555), ("10.0.0.1", 7000)))


class AcceptProxyTests(SynchronousTestCase):
    """
    A listener with C{accept_proxy}: headers only from trusted peers,
    strictly parsed, within C{header_timeout}.
    """

    def harness(self, **kw):
        return RelayHarness(accept_proxy=True, trusted=(parse_network("10.0.0.0/24"),),
                            header_timeout=5.0, **kw)

    def test_untrusted_peer_closed(self):
        """
        A connection from outside C{trusted_proxies} is closed at once,
        without connecting upstream.
        """
        harness = self.harness()
        relay, client = harness.accept(peer=("192.0.2.1", 4000))
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["untrusted"], 1)

    def test_client_address_from_header(self):
        """
        The header's source address is the client's: it is what C{ip_hash}
        hashes and what is passed on with C{send_proxy}.
        """
        harness = self.harness(upstreams=(upstream_spec(send_proxy="v1", balance="ip_hash"),))
        relay, client = harness.accept()
        relay.dataReceived(b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 5432\r\nquery")
        upstream, server = harness.connect()
        self.assertEqual(server.value(), b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 5432\r\nquery")
        self.assertEqual(relay.client, ("198.51.100.7", 40000))

    def test_ip_hash_uses_header_address(self):
        """
        Connections whose headers name the same client go to the same
        server, whatever proxy port they come from.
        """
        spec = upstream_spec(servers=[f"10.0.1.{i}:1" for i in range(1, 9)], balance="ip_hash")
        harness = self.harness(upstreams=(spec,))
        for port in range(3):
            relay, _ = harness.accept(peer=("10.0.0.2", 6000 + port))
            relay.dataReceived(b"PROXY TCP4 198.51.100.7 203.0.113.1 1 2\r\n")
        self.assertEqual(len({a[0] for a in harness.attempts}), 1)

    def test_bad_header_closed(self):
        """
        A bad header (here a v1 port out of range) closes the connection
        without connecting upstream.
        """
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["bad_header"], 1)

    def test_header_byte_by_byte(self):
        """
        A v2 header one byte per read is read, then relayed from the next
        byte on.
        """
        harness = self.harness()
        relay, client = harness.accept()
        data = encode_v2(("198.51.100.7", 1), ("203.0.113.1", 2)) + b"rest"
        for i in range(len(data)):
            relay.dataReceived(data[i:i + 1])
        upstream, server = harness.connect()
        self.assertEqual((relay.client, server.value()), (("198.51.100.7", 1), b"rest"))

    def test_header_timeout(self):
        """
        No complete header within C{header_timeout}: closed, nothing
        connected, no timer left.
        """
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(b"PROXY TCP4 1.2.")
        harness.reactor.advance(5)
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["header_timeout"], 1)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class PassthroughTests(SynchronousTestCase):
    """
    A C{tls_passthrough} listener chooses the upstream by server name and
    relays the ClientHello itself.
    """

    def harness(self):
        return RelayHarness(
            upstreams=(upstream_spec("api", servers=("10.0.2.1:443",)),
                       upstream_spec("web", servers=("10.0.3.1:443",))),
            sni=SniTable([("api.example.com", "api"), ("*.example.com", "web")]), header_timeout=5.0)

    def test_chosen_by_name(self):
        """
        Each name goes to its route's upstream, and the upstream receives
        the ClientHello byte for byte.
        """
        harness = self.harness()
        for name, host in (("api.example.com", "10.0.2.1"), ("www.example.com", "10.0.3.1")):
            relay, client = harness.accept()
            hello = openssl_hello(name)
            relay.dataReceived(hello[:10])
            relay.dataReceived(hello[10:])
            self.assertEqual(harness.attempts[-1][0], host)
            upstream, server = harness.connect()
            self.assertEqual(server.value(), hello)
            self.assertEqual(relay.server_name, name)

    def test_no_route(self):
        """
        A name no route matches (no default) is closed without connecting.
        """
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(openssl_hello("other.org"))
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))

    def test_not_tls(self):
        """
        A first record that is not a TLS handshake is closed at once.
        """
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))
        relay.connectionLost(None)
        self.assertEqual(harness.listener.snapshot()["bad_hello"], 1)

    def test_hello_timeout(self):
        """
        A ClientHello not complete within C{header_timeout} is closed.
        """
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(openssl_hello("api.example.com")[:50])
        harness.reactor.advance(5)
        self.assertEqual((client.disconnecting, harness.attempts), (True, []))

    def test_log_names_server_name(self):
        """
        The connection's log line carries the server name.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        harness = self.harness()
        relay, client = harness.accept()
        relay.dataReceived(openssl_hello("api.example.com"))
        upstream, server = harness.connect()
        relay.connectionLost(None)
        upstream.connectionLost(None)
        lines = [e for e in events if e.get("event") == "l4_connection"]
        self.assertEqual([(e["sni"], e["log_level"]) for e in lines], [("api.example.com", LogLevel.info)])


class ReconfigureTests(SynchronousTestCase):
    """
    L{reconfigure_listeners} switches new connections to a new
    configuration; open ones keep theirs.
    """

    def test_new_connections_only(self):
        """
        After a reconfiguration new connections use the new upstream while
        the open one keeps relaying to its server with its settings.
        """
        from gatelayer.config import parse_config_text
        from gatelayer.l4.listener import reconfigure_listeners
        from gatelayer.upstream.state import UpstreamState
        harness = RelayHarness(idle_timeout=30.0)
        old_relay, _ = harness.accept()
        upstream, server = harness.connect()
        config = parse_config_text(
            "[listener:l4]\nbind = 127.0.0.1:0\nmode = tcp\nupstream = other\nidle_timeout = 5s\n"
            "[upstream:other]\nservers = 10.0.9.9:1\n", "gate.ini", cpu_count=1)
        states = {"other": UpstreamState(config.upstreams["other"], harness.reactor)}
        self.assertEqual(reconfigure_listeners([harness.listener, object()], config, states), ["l4"])
        harness.accept()
        self.assertEqual(harness.attempts[-1][:2], ("10.0.9.9", 1))
        self.assertEqual((old_relay.settings.idle_timeout, harness.listener.settings.idle_timeout), (30.0, 5.0))
        old_relay.dataReceived(b"still here")
        self.assertEqual(server.value(), b"still here")
        upstream.connectionLost(None)
        old_relay.connectionLost(None)
        self.assertEqual(harness.states["db"].snapshot()[0]["active"], 0)


class _Port:
    """
    A listening port that only records that it stopped.
    """

    stopped = False

    def stopListening(self):
        self.stopped = True


class DrainTests(SynchronousTestCase):
    """
    A draining worker waits for relayed connections, within its deadline.
    """

    def ports(self, harness, drain_timeout=10.0):
        from gatelayer.process.limits import ConnectionLimits
        from gatelayer.process.worker_services import PortsService
        port = _Port()
        service = PortsService(harness.reactor, 0, ConnectionLimits(harness.reactor, 100),
                               lambda: [(port, harness.listener)], drain_timeout)
        service.startService()
        return service, port

    def test_waits_for_relayed_connections(self):
        """
        The drain stops accepting at once and fires only when the last
        relayed connection has closed.
        """
        harness = RelayHarness()
        service, port = self.ports(harness)
        relay, client = harness.accept()
        upstream, server = harness.connect()
        stopped = service.stopService()
        self.assertTrue(port.stopped)
        self.assertNoResult(stopped)
        upstream.connectionLost(None)
        relay.connectionLost(None)
        self.successResultOf(stopped)

    def test_deadline_cuts(self):
        """
        At the drain deadline relayed connections still open are cut.
        """
        harness = RelayHarness()
        service, port = self.ports(harness, drain_timeout=2.0)
        relay, client = harness.accept()
        harness.connect()
        stopped = service.stopService()
        harness.reactor.advance(2.0)
        self.assertTrue(client.aborted)
        self.successResultOf(stopped)
