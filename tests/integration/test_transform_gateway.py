"""
The transform filter through a real worker, in front of an upstream that
echoes the request it got: request headers set, removed and renamed, a
path rewrite and query changes arrive upstream, and the upstream's
response headers come back added to, removed and renamed.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
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
[filter:tf]
type = transform
request_headers_remove = X-Debug
request_headers_rename = X-Old: X-New
request_headers_set = X-Host: $host, X-Page: $query.page, X-Price: $$5
rewrite = ^/api/v1/(.*) /v1/\\1
query_remove = debug
query_add = source=gw
response_headers_remove = X-Internal
response_headers_rename = X-Up-Version: X-Version
response_headers_add = X-Gateway: gatelayer
[filter:climb]
type = transform
rewrite = ^/up/(.*) /a/../../\\1
[route:api]
path = /api/
upstream = app
filters = tf
[route:up]
path = /up/
upstream = app
filters = climb
"""


class EchoApp(resource.Resource):
    """
    An upstream answering with the target and headers it received, and
    two headers of its own (C{X-Internal}, C{X-Up-Version}).

    @ivar uris: the targets it received, in order.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.uris = []

    def render(self, request):
        self.uris.append(request.uri)
        headers = {k.decode("latin-1").lower(): [x.decode("latin-1") for x in v]
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-internal", b"secret")
        request.setHeader(b"x-up-version", b"7")
        return json.dumps({"uri": request.uri.decode("latin-1"), "headers": headers}).encode("utf-8")


class TransformGatewayIntegrationTests(TestCase):
    """
    One real worker (lean channel) with a transform filter on C{/api/}, in
    front of L{EchoApp}.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.app = EchoApp()
        port = serve_quietly(reactor, self.app)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        config = GATE.format(http_server=self.http_server, port=port.getHost().port)
        self.gate = yield start_gateway(self, reactor, config, directory)

    @inlineCallbacks
    def request(self, path, headers=()):
        """
        Send one GET (closing the connection after it) and parse the
        answer into C{(status, headers, body)}.
        """
        lines = [b"GET %s HTTP/1.1" % (path,), b"Host: api.example.test", b"Connection: close"]
        lines += [name + b": " + value for name, value in headers]
        host, port = self.gate.address("web")
        data = yield send_raw(reactor, (host, port), b"\r\n".join(lines) + b"\r\n\r\n")
        return parse_response(data)

    @inlineCallbacks
    def test_request_transformed(self):
        """
        The upstream sees the rewritten path, the changed query and the
        set, removed and renamed headers.
        """
        status, _, body = yield self.request(b"/api/v1/users/7?debug=1&page=3", [
            (b"X-Debug", b"1"), (b"X-Old", b"o"), (b"X-Host", b"spoofed")])
        self.assertEqual(status, 200)
        seen = json.loads(body)
        self.assertEqual(seen["uri"], "/v1/users/7?page=3&source=gw")
        headers = seen["headers"]
        self.assertNotIn("x-debug", headers)
        self.assertNotIn("x-old", headers)
        self.assertEqual(headers["x-new"], ["o"])
        self.assertEqual(headers["x-host"], ["api.example.test"])
        self.assertEqual(headers["x-page"], ["3"])
        self.assertEqual(headers["x-price"], ["$5"])

    @inlineCallbacks
    def test_response_transformed(self):
        """
        The client gets the added header, not the removed one, and the
        renamed one under its new name.
        """
        status, headers, _ = yield self.request(b"/api/v1/x")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"x-gateway"], [b"gatelayer"])
        self.assertNotIn(b"x-internal", headers)
        self.assertNotIn(b"x-up-version", headers)
        self.assertEqual(headers[b"x-version"], [b"7"])

    @inlineCallbacks
    def test_rewrite_above_root_refused(self):
        """
        A rewrite whose result climbs above the root is refused with a 400
        problem and never reaches the upstream.
        """
        status, headers, body = yield self.request(b"/up/etc/passwd")
        self.assertEqual(status, 400)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(json.loads(body)["status"], 400)
        self.assertEqual(self.app.uris, [])


class TwistedChannelTransformGatewayIntegrationTests(TransformGatewayIntegrationTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
