"""
Integration tests of the two server channels: the gateway core's
integration tests (which run with the default, the lean channel) again with
twisted.web's channel, raw client bytes (pipelining, a chunked upload, a
smuggling attempt) over real sockets to the lean channel, and, on both
channels, a stalled body, bare-LF framing and what refusals carry (Date,
HSTS over TLS).
"""

import calendar
import email.utils
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from gatelayer.http.date import is_imf_fixdate
from gatelayer.testing.certs import CertificateAuthority, tls_client_creator
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.server import parse_response, split_responses, with_server
from gatelayer.testing.upstreams import UpstreamServer
from gatelayer.testing.http import RawClient, RawClientFactory, send_raw
from tests.integration import test_gateway



class TwistedChannelIntegrationTests(test_gateway.GatewayIntegrationTests):
    """
    The master, its workers and the proxy, for real, with twisted.web's
    channel (C{http_server = twisted}).
    """

    def start(self, config_text):
        """
        Start the gateway with C{http_server = twisted}.
        """
        return super().start(with_server(config_text, "twisted"))


class LeanRawSocketTests(TestCase):
    """
    Raw HTTP/1.1 over a real socket to a gateway with the lean channel.
    """

    timeout = 60

    @inlineCallbacks
    def start_gateway(self):
        """
        One worker with the lean channel, proxying to one upstream server.
        """
        upstream = UpstreamServer(reactor, "a")
        upstream.start()
        self.addCleanup(upstream.stop)
        self.gate = yield start_gateway(
            self, reactor, with_server(test_gateway.gate_config([upstream], workers=1), "gatelayer"))

    def send(self, data):
        """
        Send raw bytes on a new connection; fires with all that came back.
        """
        host, port = self.gate.address("web")
        return send_raw(reactor, (host, port), data)

    @inlineCallbacks
    def test_pipelined_and_chunked_upload(self):
        """
        Pipelined requests (a direct answer, a proxied chunked upload, a
        proxied GET) are answered in order on one connection, the last one
        closing it.
        """
        yield self.start_gateway()
        data = yield self.send(
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses = split_responses(data)
        self.assertEqual([r[0] for r in responses], [200, 200, 200])
        self.assertEqual(responses[0][2], b"hello")
        upload = json.loads(responses[1][2])
        self.assertEqual((upload["method"], upload["uri"], upload["body_length"]), ("POST", "/up", 11))
        self.assertEqual(json.loads(responses[2][2])["uri"], "/last")
        self.assertEqual(responses[2][1][b"connection"], [b"close"])

    @inlineCallbacks
    def test_smuggling_refused(self):
        """
        Content-Length with Transfer-Encoding: 400 and the connection
        closes; the request hidden in the body never reaches the upstream.
        """
        yield self.start_gateway()
        data = yield self.send(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = parse_response(data)
        self.assertEqual(status, 400)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1)


def hardening_config(http_server):
    """
    A plain listener and a TLS listener with HSTS (C{certs/www.pem} in the
    gateway's directory), a 1 s body timeout, far shorter than the header
    and idle timeouts, and one direct route.
    """
    return f"""
[gateway]
workers = 1
admin = 127.0.0.1:0
drain_timeout = 2s
http_server = {http_server}
header_timeout = 20s
idle_timeout = 30s
body_timeout = 1s
max_body_size = 1KB
[listener:web]
bind = 127.0.0.1:0
[listener:secure]
bind = 127.0.0.1:0
tls = main
[tls:main]
certificates = certs/
hsts = max-age=31536000
[route:hello]
path = /hello
respond = 200 hello
"""


class ChannelHardeningTests(TestCase):
    """
    Over real sockets, on the lean channel (and, in the subclass, on
    twisted.web's): a stalled body is cut with 408 after body_timeout, a
    bare-LF chunk line is refused at once, and every answer (refusals
    written before a request exists included) carries a Date, plus HSTS on
    the TLS listener.
    """

    timeout = 60
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "certs"))
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(directory, "certs", "www.pem"))
        self.gate = yield start_gateway(self, reactor, hardening_config(self.http_server), directory)

    def send(self, data, listener="web"):
        """
        Send raw bytes on a new connection (TLS for C{secure}); fires with
        the client protocol once the gateway has closed the connection.
        """
        host, port = self.gate.address(listener)
        client = RawClient(reactor, data)
        factory = RawClientFactory(client)
        if listener == "secure":
            factory = TLSMemoryBIOFactory(tls_client_creator("www.example.com"), True, factory, clock=reactor)
        reactor.connectTCP(host, port, factory, timeout=10)
        return client.done.addCallback(lambda data: client).addTimeout(20, reactor)

    def assertDated(self, headers):
        """
        One Date, an IMF-fixdate within a few seconds of now.
        """
        self.assertEqual(len(headers[b"date"]), 1, headers)
        value = headers[b"date"][0]
        self.assertTrue(is_imf_fixdate(value), value)
        sent = calendar.timegm(email.utils.parsedate(value.decode("ascii")))
        self.assertLess(abs(sent - reactor.seconds()), 5)

    @inlineCallbacks
    def test_stalled_body(self):
        """
        A body that stops arriving gets a JSON 408 after body_timeout (1 s
        here, not the 20 s header or 30 s idle timeout), then the close.
        """
        client = yield self.send(b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        status, headers, body = parse_response(b"".join(client.received))
        self.assertEqual((status, json.loads(body)["error"]), (408, "request body not received in time"))
        self.assertDated(headers)
        elapsed = client.closed_at - client.connected_at
        self.assertTrue(0.9 <= elapsed < 10, elapsed)

    @inlineCallbacks
    def test_bare_lf_chunk_line(self):
        """
        A chunk-size line ended by a bare LF is 400 at once: not a 408 from
        the body timeout (which waiting for a CRLF would end in).
        """
        client = yield self.send(
            b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\n\n")
        status, headers, body = parse_response(b"".join(client.received))
        self.assertEqual(status, 400)
        self.assertDated(headers)

    @inlineCallbacks
    def test_tls_refusals_carry_hsts(self):
        """
        On the TLS listener, refusals written before a request exists (a
        bare-LF head, an oversized header, a body declared too large) carry
        Strict-Transport-Security and a Date, as the gateway's errors do.
        """
        for data, status in [(b"GET /hello HTTP/1.1\nHost: x\n\n", 400),
                             (b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
                             (b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
                             (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404)]:
            client = yield self.send(data, "secure")
            code, headers, body = parse_response(b"".join(client.received))
            self.assertEqual(code, status, data[:40])
            self.assertEqual(headers[b"strict-transport-security"], [b"max-age=31536000"])
            self.assertDated(headers)

    @inlineCallbacks
    def test_plain_answers_dated(self):
        """
        A direct response on the plain listener is dated and has no HSTS.
        """
        client = yield self.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = parse_response(b"".join(client.received))
        self.assertEqual((status, body), (200, b"hello"))
        self.assertDated(headers)
        self.assertNotIn(b"strict-transport-security", headers)


class TwistedChannelHardeningTests(ChannelHardeningTests):
    """
    The same, with twisted.web's channel (C{http_server = twisted}).
    """

    http_server = "twisted"
