"""
Tests for request ids (L{gatelayer.observe.requestid}) and for the gateway
giving every request one: returned to the client (errors included), sent
upstream in place of the client's, in the gateway's error bodies, and
taken from the client only through a trusted proxy.
"""

import ipaddress
import json
import re

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.requestid import MAX_LENGTH, RequestIds, sane_request_id
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, error_document, parse_response, with_server,
)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
MADE = re.compile(rb"[a-z2-7]{12}-[0-9a-f]+\Z")

# (peer, header values, whether the client's first value is kept)
CHOICES = [
    ("10.1.2.3", [b"abc-123"], True),
    ("10.1.2.3", [b"first", b"second"], True),
    ("::1", [b"from-v6"], True),
    ("::ffff:10.0.0.7", [b"mapped"], True),
    ("10.1.2.3", [b"x" * MAX_LENGTH], True),
    ("192.0.2.1", [b"abc-123"], False),
    ("not an address", [b"abc-123"], False),
    ("10.1.2.3", [b"x" * (MAX_LENGTH + 1)], False),
    ("10.1.2.3", [b""], False),
    ("10.1.2.3", [b"has space"], False),
    ("10.1.2.3", [b"tab\there"], False),
    ("10.1.2.3", [b"nul\x00"], False),
    ("10.1.2.3", [b"del\x7f"], False),
    ("10.1.2.3", [b"caf\xc3\xa9"], False),
    ("10.1.2.3", [b"\xff\xfe"], False),
    ("10.1.2.3", None, False),
    ("10.1.2.3", [], False),
]

PROXIED = """
[gateway]
{extra}
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


class RequestIdsTests(SynchronousTestCase):
    """
    L{RequestIds} makes unique short ids and accepts a client's only from a
    trusted proxy, and only a sane one.
    """

    def test_made_ids(self):
        """
        Made ids are the random prefix and a hexadecimal counter: short,
        visible ASCII, all different; two processes have different prefixes.
        """
        ids = RequestIds()
        made = [ids.new() for _ in range(1000)]
        self.assertEqual(len(set(made)), 1000)
        for value in made:
            self.assertRegex(value, MADE)
            self.assertTrue(value.startswith(ids.prefix))
            self.assertTrue(sane_request_id(value))
        self.assertNotEqual(RequestIds().prefix, RequestIds().prefix)
        self.assertEqual(RequestIds(prefix=b"p").new(), b"p-1")

    def test_choices(self):
        """
        The client's id is kept only when the peer is trusted and the value
        is 1 to 128 visible ASCII characters; otherwise a new id is made.
        """
        for peer, values, kept in CHOICES:
            ids = RequestIds(TRUSTED, prefix=b"made")
            chosen = ids.choose(values, peer)
            if kept:
                self.assertEqual(chosen, values[0], (peer, values))
            else:
                self.assertEqual(chosen, b"made-1", (peer, values))

    def test_nothing_trusted(self):
        """
        Without trusted proxies every client's id is replaced.
        """
        ids = RequestIds(prefix=b"made")
        self.assertEqual(ids.choose([b"abc"], "127.0.0.1"), b"made-1")
        self.assertEqual(ids.choose([b"abc"], "10.0.0.1"), b"made-2")


class GatewayRequestIdTests(SynchronousTestCase):
    """
    The gateway's request id through both server channels: on every
    response, upstream, in error bodies.
    """

    http_server = "gatelayer"

    def gateway(self, extra=""):
        """
        An in-memory gateway with a proxied and a direct route.
        """
        self.gate = InMemoryGateway(with_server(PROXIED.format(extra=extra), self.http_server),
                                    with_upstreams=True)
        return self.gate

    def test_direct_response_and_404(self):
        """
        A direct answer and a 404 carry a made id; the 404's JSON body
        names the same id.
        """
        gate = self.gateway()
        status, headers, _ = parse_response(gate.exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 200)
        self.assertRegex(headers[b"x-request-id"][0], MADE)
        status, headers, body = parse_response(gate.exchange(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(status, 404)
        self.assertEqual(error_document(body, headers), {"error": "no route matches this request",
                                                         "status": 404})

    def test_upstream_gets_the_id(self):
        """
        The upstream is sent the gateway's id in place of an untrusted
        client's, once, and the client gets that id back even when the
        upstream answers with an id of its own.
        """
        gate = self.gateway()
        channel, client = gate.connect(peer="192.0.2.9")
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\nX-Request-Id: spoof\r\n"
                             b"x-request-id: spoof2\r\n\r\n")
        sent, protocol = accept_upstream(gate.reactor)
        head = sent.value().lower()
        self.assertNotIn(b"spoof", head)
        ids = re.findall(rb"x-request-id: ([^\r]*)\r\n", head)
        self.assertEqual(len(ids), 1)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX-Request-Id: theirs\r\nContent-Length: 0\r\n\r\n")
        _, headers, _ = parse_response(client.value())
        self.assertEqual(headers[b"x-request-id"], ids)

    def test_trusted_proxy_id_kept(self):
        """
        From a trusted proxy a sane id is kept (upstream and response); an
        oversized or garbled one is replaced.
        """
        for value, kept in [(b"edge-42", True), (b"a" * 129, False), (b"bad\x01id", False),
                            (b"\xc3\xa9t\xc3\xa9", False)]:
            gate = self.gateway("trusted_proxies = 10.9.0.0/16")
            channel, client = gate.connect(peer="10.9.0.5")
            channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + value + b"\r\n\r\n")
            if not gate.reactor.tcpClients:
                # Refused by the header rules (a control byte): still an id.
                status, headers, _ = parse_response(client.value())
                self.assertEqual(status, 400, value)
                self.assertRegex(headers[b"x-request-id"][0], MADE)
                continue
            sent, protocol = accept_upstream(gate.reactor)
            protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
            _, headers, _ = parse_response(client.value())
            chosen = headers[b"x-request-id"][0]
            self.assertIn(b"x-request-id: " + chosen + b"\r\n", sent.value().lower())
            if kept:
                self.assertEqual(chosen, value)
            else:
                self.assertRegex(chosen, MADE)

    def test_upstream_failure_body(self):
        """
        A 502 the gateway makes (upstream unreachable) carries the id in
        its header and its JSON body.
        """
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        gate = self.gateway()
        channel, client = gate.connect()
        channel.dataReceived(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, factory, _, _ = gate.reactor.tcpClients[-1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 502)
        self.assertEqual(error_document(body, headers)["status"], 502)

    def test_refusals_carry_an_id(self):
        """
        A request refused before it could be answered (a bad Host, a body
        over the limit) still gets an id in its header and body.
        """
        gate = self.gateway("max_body_size = 4")
        for request in [b"GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n",
                        b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"]:
            status, headers, body = parse_response(gate.exchange(request))
            self.assertIn(status, (400, 413))
            self.assertRegex(headers[b"x-request-id"][0], MADE)
            self.assertEqual(json.loads(body)["request_id"].encode("ascii"), headers[b"x-request-id"][0])

    def test_header_name_setting(self):
        """
        C{request_id_header} names the header the id is read from and
        returned in.
        """
        gate = self.gateway("request_id_header = X-Trace-Id\ntrusted_proxies = 127.0.0.1")
        _, headers, _ = parse_response(gate.exchange(
            b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Trace-Id: t-1\r\nX-Request-Id: r-1\r\n\r\n"))
        self.assertEqual(headers[b"x-trace-id"], [b"t-1"])
        self.assertNotIn(b"x-request-id", headers)


class TwistedGatewayRequestIdTests(GatewayRequestIdTests):
    """
    The same through twisted.web's channel.
    """

    http_server = "twisted"
