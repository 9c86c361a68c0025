"""
CORS through a real worker: preflights are answered by the gateway without
an upstream call, also on a route whose C{methods} lacks OPTIONS, and actual
requests come back with the CORS headers.
"""

import json
import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.internet.defer import inlineCallbacks
from twisted.web import resource

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.server import parse_response
from gatelayer.testing.http import send_raw
from gatelayer.testing.upstreams import serve_quietly

GATE = """
[gateway]
workers = 1
http_server = {http_server}
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = 127.0.0.1:{port}
[filter:cors]
type = cors
origins = https://app.example.com, https://*.example.org
methods = GET, POST
headers = Content-Type
expose_headers = X-Total
credentials = yes
max_age = 2m
[route:api]
path = /api/
methods = GET, POST
upstream = app
filters = cors
[route:other]
path = /
upstream = app
"""


class CountingApp(resource.Resource):
    """
    An upstream that counts the requests it gets and answers with the
    method it saw.

    @ivar methods: the methods of the requests it received, in order.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.methods = []

    def render(self, request):
        self.methods.append(request.method)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-total", b"3")
        return json.dumps({"method": request.method.decode("ascii")}).encode("utf-8")


class CorsGatewayIntegrationTests(TestCase):
    """
    One real worker with a cors filter on C{/api/}, in front of
    L{CountingApp}.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.app = CountingApp()
        port = serve_quietly(reactor, self.app)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        config = GATE.format(http_server=self.http_server, port=port.getHost().port)
        self.gate = yield start_gateway(self, reactor, config, directory)

    @inlineCallbacks
    def request(self, method, path, headers=()):
        """
        Send one request (closing the connection after it) and parse the
        answer into C{(status, headers, body)}.
        """
        lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: api.example.test", b"Connection: close"]
        lines += [name + b": " + value for name, value in headers]
        host, port = self.gate.address("web")
        data = yield send_raw(reactor, (host, port), b"\r\n".join(lines) + b"\r\n\r\n")
        return parse_response(data)

    @inlineCallbacks
    def test_preflight_answered_at_gateway(self):
        """
        An allowed preflight is answered 204 with the CORS headers, a
        refused one 403, and neither reaches the upstream although the
        route's methods are GET and POST.
        """
        status, headers, body = yield self.request(b"OPTIONS", b"/api/orders", [
            (b"Origin", b"https://app.example.com"),
            (b"Access-Control-Request-Method", b"POST"),
            (b"Access-Control-Request-Headers", b"content-type"),
        ])
        self.assertEqual((status, body), (204, b""))
        self.assertEqual(headers[b"access-control-allow-origin"], [b"https://app.example.com"])
        self.assertEqual(headers[b"access-control-allow-methods"], [b"GET, POST"])
        self.assertEqual(headers[b"access-control-allow-headers"], [b"content-type"])
        self.assertEqual(headers[b"access-control-max-age"], [b"120"])
        self.assertEqual(headers[b"access-control-allow-credentials"], [b"true"])
        status, headers, body = yield self.request(b"OPTIONS", b"/api/orders", [
            (b"Origin", b"https://app.example.com.evil.test"),
            (b"Access-Control-Request-Method", b"POST"),
        ])
        self.assertEqual(status, 403)
        self.assertNotIn(b"access-control-allow-origin", headers)
        self.assertEqual(self.app.methods, [])

    @inlineCallbacks
    def test_plain_options_routed_as_before(self):
        """
        An OPTIONS request that is not a preflight is routed as before: the
        C{/api/} route does not allow OPTIONS, so the route for C{/} (no
        cors filter) takes it to the upstream.
        """
        status, headers, _ = yield self.request(b"OPTIONS", b"/api/orders", [
            (b"Origin", b"https://app.example.com")])
        self.assertEqual(status, 200)
        self.assertNotIn(b"access-control-allow-origin", headers)
        self.assertNotIn(b"vary", headers)
        self.assertEqual(self.app.methods, [b"OPTIONS"])

    @inlineCallbacks
    def test_actual_request_headers(self):
        """
        An actual request from an allowed origin reaches the upstream and
        its response carries the origin echoed, credentials, the exposed
        headers and C{Vary: Origin}; a refused origin's response carries
        only C{Vary: Origin}.
        """
        status, headers, body = yield self.request(b"GET", b"/api/orders", [
            (b"Origin", b"https://shop.example.org")])
        self.assertEqual((status, json.loads(body)), (200, {"method": "GET"}))
        self.assertEqual(headers[b"access-control-allow-origin"], [b"https://shop.example.org"])
        self.assertEqual(headers[b"access-control-allow-credentials"], [b"true"])
        self.assertEqual(headers[b"access-control-expose-headers"], [b"x-total"])
        self.assertIn(b"Origin", b",".join(headers[b"vary"]))
        status, headers, _ = yield self.request(b"GET", b"/api/orders", [
            (b"Origin", b"https://evil.test")])
        self.assertEqual(status, 200)
        self.assertNotIn(b"access-control-allow-origin", headers)
        self.assertIn(b"Origin", b",".join(headers[b"vary"]))
        self.assertEqual(self.app.methods, [b"GET", b"GET"])


class CorsTwistedChannelIntegrationTests(CorsGatewayIntegrationTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
