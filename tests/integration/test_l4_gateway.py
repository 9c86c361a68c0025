"""
Integration tests of layer 4 listeners: a real gatelayer master and
workers relaying real TCP connections to echo servers running as processes
(one killed under load), to a real C{redis-server} driven by C{redis-cli},
and to two TLS servers chosen by server name (checked with C{openssl
s_client}); PROXY headers sent to a recording backend and accepted from a
trusted peer only; half-close and back-pressure end to end.
"""

import json
import os
import re

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from gatelayer.l4.proxyproto import encode_v2
from gatelayer.testing.certs import CertificateAuthority, server_tls_options
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, rss_growth_limit_kb, rss_kb, send_raw
from gatelayer.testing.redis import RedisServer
from gatelayer.testing.tcp_servers import EchoServer, SourceServer, exchange, start_echo_servers
from gatelayer.testing.upstreams import UpstreamServer
from gatelayer.testing.waiting import wait_until
from tests.test_l4_clienthello import openssl_hello


def l4_config(listeners, upstreams, gateway=""):
    """
    A gate.ini with two workers, an ephemeral admin port, the given
    C{[listener:NAME]} and C{[upstream:NAME]} bodies (dicts; every listener
    binds 127.0.0.1:0).
    """
    parts = [f"[gateway]\nworkers = 2\nadmin = 127.0.0.1:0\ndrain_timeout = 2s\n{gateway}\n"]
    for name, body in listeners.items():
        parts.append(f"[listener:{name}]\nbind = 127.0.0.1:0\n{body}\n")
    for name, body in upstreams.items():
        parts.append(f"[upstream:{name}]\n{body}\n")
    return "".join(parts)


@inlineCallbacks
def status(gate):
    """
    The gateway's C{/status} document.
    """
    response = yield fetch(reactor, gate.admin_url())
    return json.loads(response.body)


def l4_counters(document, listener):
    """
    The sum over workers of C{listener}'s layer 4 counters in C{/status}.
    """
    total = {}
    for worker in document["workers"]:
        for key, value in worker.get("l4", {}).get(listener, {}).items():
            total[key] = total.get(key, 0) + value
    return total


class TcpRelayTests(TestCase):
    """
    C{mode = tcp} in front of echo servers and Redis.
    """

    @inlineCallbacks
    def test_echo_pool_with_a_server_killed_under_load(self):
        """
        With one of three echo servers killed while clients keep
        connecting, every exchange still succeeds: connections that hit the
        dead server are retried on another one, then the health checks take
        it out of rotation.
        """
        servers = yield start_echo_servers(self, reactor, "a", "b", "c")
        addresses = ", ".join(s.address for s in servers)
        gate = yield start_gateway(self, reactor, l4_config(
            {"echo": "mode = tcp\nupstream = pool\n"},
            {"pool": f"servers = {addresses}\nhealth_check = tcp\nhealth_interval = 500ms\n"
                     "health_fall = 2\nretries = 2\nconnect_timeout = 1s\n"}))
        address = gate.address("echo")
        results = []
        killed = []

        @inlineCallbacks
        def client(index):
            for n in range(40):
                payload = b"client %d message %d " % (index, n) * 50
                # Connections open when the server died are lost with it
                # (an established connection is never retried): only those
                # started once it is gone must all succeed.
                after = bool(killed)
                try:
                    answer = yield exchange(reactor, address, payload)
                except Exception as e:
                    answer = e
                results.append((after, answer == payload))
                if n == 10 and index == 0:
                    servers[1].kill()
                    yield servers[1].protocol.ended
                    killed.append(True)
        yield gatherResults([client(i) for i in range(4)])
        self.assertEqual([r for r in results if r[0] and not r[1]], [])
        self.assertGreater(sum(1 for after, _ in results if after), 20)
        log = gate.log()
        self.assertIn(f"server {servers[1].address} could not be connected to", log)
        document = yield status(gate)
        self.assertEqual(l4_counters(document, "echo").get("connect_failed", 0), 0)

        @inlineCallbacks
        def found_unhealthy():
            document = yield status(gate)
            rows = {row["address"]: row for row in document["upstreams"]["pool"]}
            return rows[servers[1].address]["health_check"]["healthy"] is False
        yield wait_until(reactor, found_unhealthy, what="the tcp health check to find the server dead")
        lines = re.findall(r"l4 echo 127\.0\.0\.1:\d+ -> (\S+) relayed sent=(\d+) received=(\d+)", log)
        self.assertTrue(lines)
        # Connections to the surviving servers were relayed whole (those
        # open on the killed one when it died were cut with it).
        survivors = [(sent, received) for server, sent, received in lines if server != servers[1].address]
        self.assertTrue(survivors)
        self.assertEqual([pair for pair in survivors if pair[0] != pair[1]], [])

    @inlineCallbacks
    def test_redis_behind_tcp_listener(self):
        """
        C{redis-cli} against the listener sets and gets a key in a real
        C{redis-server}.
        """
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        gate = yield start_gateway(self, reactor, l4_config(
            {"redis": "mode = tcp\nupstream = redis\n"},
            {"redis": f"servers = 127.0.0.1:{redis.port}\nhealth_check = tcp\n"}))
        port = str(gate.address("redis")[1])
        out, err, code = yield getProcessOutputAndValue(
            "redis-cli", ["-h", "127.0.0.1", "-p", port, "set", "l4-key", "relayed value"], env=os.environ)
        self.assertEqual((code, out.strip()), (0, b"OK"), err)
        out, err, code = yield getProcessOutputAndValue(
            "redis-cli", ["-h", "127.0.0.1", "-p", port, "get", "l4-key"], env=os.environ)
        self.assertEqual((code, out.strip()), (0, b"relayed value"), err)
        self.assertEqual(redis.command("GET", "l4-key"), b"$13\r\nrelayed value\r\n")

    @inlineCallbacks
    def test_half_close(self):
        """
        A client that shuts down writing still reads the whole echo, and
        the connection then ends cleanly on both sides.
        """
        echo = EchoServer(reactor)
        echo.start()
        self.addCleanup(echo.stop)
        gate = yield start_gateway(self, reactor, l4_config(
            {"echo": "mode = tcp\nupstream = echo\n"}, {"echo": f"servers = {echo.address}\n"}))
        payload = os.urandom(300000)
        answer = yield exchange(reactor, gate.address("echo"), payload)
        self.assertEqual(answer, payload)
        self.assertEqual(echo.connections[-1].data, payload)
        yield wait_until(reactor, lambda: "relayed sent=300000 received=300000" in gate.log(),
                         what="the connection's log line")

    @inlineCallbacks
    def test_back_pressure(self):
        """
        A client that stops reading makes the gateway stop reading the
        server: what the server could send stays bounded (socket buffers,
        not the 96 MB it has), the worker's memory does not grow with it,
        and everything arrives once the client reads again.
        """
        total = 96 * 1024 * 1024
        source = SourceServer(reactor, total)
        source.start()
        self.addCleanup(source.stop)
        gate = yield start_gateway(self, reactor, l4_config(
            {"src": "mode = tcp\nupstream = src\n"},
            {"src": f"servers = 127.0.0.1:{source.port.getHost().port}\n"},
            gateway="").replace("workers = 2", "workers = 1"))
        document = yield status(gate)
        pid = document["workers"][0]["pid"]
        before = rss_kb(pid)
        client = _PausedReader()
        factory = ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP(*gate.address("src"), factory)
        yield wait_until(reactor, lambda: source.last_progress is not None
                         and reactor.seconds() - source.last_progress > 1.0,
                         timeout=30, what="the source to be held back")
        held = source.sent
        grown = rss_kb(pid) - before
        self.assertLess(held, 40 * 1024 * 1024)
        self.assertLess(grown, rss_growth_limit_kb(16 * 1024))
        client.transport.resumeProducing()
        yield wait_until(reactor, lambda: client.received >= total, timeout=60,
                         what="all 96 MB to arrive")
        self.assertEqual(client.received, total)


class _PausedReader(Protocol):
    """
    A client that stops reading as soon as it is connected, until resumed;
    it counts what it receives.
    """

    received = 0

    def connectionMade(self):
        self.transport.pauseProducing()

    def dataReceived(self, data):
        self.received += len(data)


class ProxyProtocolTests(TestCase):
    """
    PROXY headers sent to backends and accepted from trusted peers.
    """

    @inlineCallbacks
    def setUp(self):
        self.echo = EchoServer(reactor)
        self.echo.start()
        self.addCleanup(self.echo.stop)
        servers = f"servers = {self.echo.address}\n"
        self.gate = yield start_gateway(self, reactor, l4_config(
            {"v1": "mode = tcp\nupstream = v1\n",
             "v2": "mode = tcp\nupstream = v2\n",
             "behind": "mode = tcp\nupstream = v1\naccept_proxy = yes\nheader_timeout = 2s\n"},
            {"v1": servers + "send_proxy = v1\n", "v2": servers + "send_proxy = v2\n"},
            gateway="trusted_proxies = 127.0.0.1\n"))

    @inlineCallbacks
    def test_send_v1_and_v2(self):
        """
        The backend receives a v1 line, or the v2 binary header, naming the
        client's address and port and the listener's, then the client's
        bytes.
        """
        for name in ("v1", "v2"):
            host, port = self.gate.address(name)
            answer = yield exchange(reactor, (host, port), b"hello")
            received = self.echo.connections[-1].data
            self.assertEqual(answer, received)
            self.assertTrue(received.endswith(b"hello"))
            header = received[:-len(b"hello")]
            if name == "v1":
                match = re.fullmatch(rb"PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 (\d+) (\d+)\r\n", header)
                self.assertIsNotNone(match, header)
                self.assertEqual(int(match.group(2)), port)
            else:
                client_port = int.from_bytes(header[-4:-2], "big")
                self.assertEqual(header, encode_v2(("127.0.0.1", client_port), ("127.0.0.1", port)))

    @inlineCallbacks
    def test_accept_from_trusted_peer(self):
        """
        A v1 or v2 header from a trusted peer is taken: the client address
        it names is what the backend is told.
        """
        address = self.gate.address("behind")
        yield exchange(reactor, address, b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 5432\r\nv1 data")
        self.assertEqual(self.echo.connections[-1].data,
                         b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 5432\r\nv1 data")
        v2 = encode_v2(("2001:db8::7", 41000), ("2001:db8::1", 5432))
        yield exchange(reactor, address, v2 + b"v2 data")
        self.assertEqual(self.echo.connections[-1].data,
                         b"PROXY TCP6 2001:db8::7 2001:db8::1 41000 5432\r\nv2 data")
        yield wait_until(reactor, lambda: "l4 behind [2001:db8::7]:41000 -> " in self.gate.log(),
                         what="the log line with the client from the header")

    @inlineCallbacks
    def test_refused_headers(self):
        """
        An untrusted peer, a hostile header, a header sent byte by byte but
        left incomplete: each connection is closed with nothing relayed,
        and the workers keep serving.
        """
        address = self.gate.address("behind")
        seen = len(self.echo.connections)
        untrusted = yield exchange(reactor, address, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nx",
                                   bind=("127.0.0.2", 0))
        hostile = [b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", b"GET / HTTP/1.1\r\n\r\n",
                   b"\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\x04abcd", b"PROXY " + b"A" * 200]
        answers = yield gatherResults([send_raw(reactor, address, data) for data in hostile])
        slow = yield send_raw(reactor, address, b"PROXY TCP4 1.2.3.4 ", byte_by_byte=True)
        self.assertEqual([untrusted, *answers, slow], [b""] * 6)
        self.assertEqual(len(self.echo.connections), seen)
        document = yield status(self.gate)
        self.assertEqual([w["restarts"] for w in document["workers"]], [0, 0])
        answer = yield exchange(reactor, address, b"PROXY UNKNOWN\r\nstill fine")
        self.assertRegex(answer, rb"^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ \d+\r\nstill fine$")


class PassthroughTests(TestCase):
    """
    C{mode = tls_passthrough} in front of two TLS servers.
    """

    @inlineCallbacks
    def setUp(self):
        ca = CertificateAuthority()
        self.ports = {}
        for name in ("api.example.test", "www.example.test"):
            server = UpstreamServer(reactor, name)
            port = reactor.listenSSL(0, server.site, server_tls_options(ca.issue([name])),
                                     interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port
        self.gate = yield start_gateway(self, reactor, l4_config(
            {"tls": "mode = tls_passthrough\nheader_timeout = 2s\n"
                    "routes = api.example.test -> api, *.example.test -> www\n"},
            {"api": f"servers = 127.0.0.1:{self.ports['api.example.test']}\n",
             "www": f"servers = 127.0.0.1:{self.ports['www.example.test']}\n"}))

    def s_client(self, *args):
        """
        Run C{openssl s_client} against the listener with C{args}; fires
        with its output.
        """
        host, port = self.gate.address("tls")
        command = "openssl s_client -connect %s:%d %s </dev/null" % (host, port, " ".join(args))
        d = getProcessOutputAndValue("/bin/sh", ["-c", command], env=os.environ)
        return d.addCallback(lambda r: (r[0] + r[1]).decode("utf-8", "replace"))

    @inlineCallbacks
    def test_chosen_by_server_name(self):
        """
        Each server name reaches its own backend, whose certificate the
        client sees: the gateway never terminated TLS.
        """
        for name, expected in (("api.example.test", "api.example.test"),
                               ("www.example.test", "www.example.test"),
                               ("other.example.test", "www.example.test")):
            output = yield self.s_client("-servername", name)
            subjects = re.findall(r"subject=.*?CN ?= ?([\w.]+)", output)
            self.assertEqual(subjects[:1], [expected], output)
        yield wait_until(reactor, lambda: "sni=other.example.test" in self.gate.log(),
                         what="the log line with the server name")

    @inlineCallbacks
    def test_refused_without_route(self):
        """
        No server name (and no default route), a name no route matches,
        or something that is not TLS: closed without a backend connection.
        """
        output = yield self.s_client("-noservername")
        self.assertNotIn("subject=", output)
        answer = yield send_raw(reactor, self.gate.address("tls"), openssl_hello("example.org"))
        self.assertEqual(answer, b"")
        answer = yield send_raw(reactor, self.gate.address("tls"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(answer, b"")
        answer = yield send_raw(reactor, self.gate.address("tls"), openssl_hello("api.example.test")[:60])
        self.assertEqual(answer, b"")
        document = yield status(self.gate)
        self.assertEqual([w["restarts"] for w in document["workers"]], [0, 0])
