"""
Integration tests of route conditions: a real gatelayer master and worker in
front of two upstream processes that say who they are (C{X-Upstream}). The
same path goes to v2 or v1 by a header, a query parameter or a cookie; a
header sent one byte at a time still matches; the admin C{/status} shows
the compiled route table in precedence order.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, send_raw
from gatelayer.testing.server import parse_response
from gatelayer.testing.upstreams import start_upstreams

ROUTES = """
[route:api]
path = /api
upstream = v1
[route:api-v2]
path = /api
match_header = X-Api-Version: 2
upstream = v2
[route:api-query]
path = /api
match_query = version=2
upstream = v2
[route:api-beta]
path = /api
match_cookie = beta=1
upstream = v2
[route:api-canary]
path = /api
match_header = X-Api-Version: ~3(\\.[0-9]+)?
               X-Canary
upstream = v2
"""


class RouteMatchGatewayTests(TestCase):
    """
    Routing on headers, query and cookies through real processes.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        """
        Start the v1 and v2 upstreams, then a gateway routing between them.
        """
        self.v1, self.v2 = yield start_upstreams(self, reactor, "v1", "v2")
        config = f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
[listener:web]
bind = 127.0.0.1:0
[upstream:v1]
servers = {self.v1.address}
[upstream:v2]
servers = {self.v2.address}
{ROUTES}"""
        self.gate = yield start_gateway(self, reactor, config)

    @inlineCallbacks
    def served_by(self, path="/api", headers=None):
        """
        The name of the upstream that answered C{GET path} with C{headers}.
        """
        response = yield fetch(reactor, self.gate.url("web", path), headers=headers)
        self.assertEqual(response.status, 200, response.body)
        return response.header(b"x-upstream").decode("ascii")

    @inlineCallbacks
    def test_header_query_cookie(self):
        """
        With the header, the query parameter or the cookie the request goes
        to v2; without it (or with another value) to v1.
        """
        cases = [
            ("/api", None, "v1"),
            ("/api/users", None, "v1"),
            ("/api", {b"X-Api-Version": [b"2"]}, "v2"),
            ("/api/users?x=1", {b"x-api-version": [b"2"]}, "v2"),
            ("/api", {b"X-Api-Version": [b"1"]}, "v1"),
            ("/api", {b"X-Api-Version": [b"2", b"2"]}, "v1"),
            ("/api?version=2", None, "v2"),
            ("/api?version=%32", None, "v2"),
            ("/api?version=1&version=2", None, "v1"),
            ("/api", {b"Cookie": [b"session=abc; beta=1"]}, "v2"),
            ("/api", {b"Cookie": [b"beta=0"]}, "v1"),
            ("/api", {b"X-Api-Version": [b"3.1"], b"X-Canary": [b"1"]}, "v2"),
            ("/api", {b"X-Api-Version": [b"3.1"]}, "v1"),
            ("/api", {b"X_Api_Version": [b"2"]}, "v1"),
        ]
        for path, headers, expected in cases:
            served = yield self.served_by(path, headers)
            self.assertEqual(served, expected, (path, headers))

    @inlineCallbacks
    def test_byte_by_byte(self):
        """
        Requests trickled one byte at a time still match their header,
        query and cookie conditions.
        """
        cases = [
            (b"GET /api HTTP/1.1\r\nHost: x\r\nX-Api-Version: 2\r\nConnection: close\r\n\r\n", b"v2"),
            (b"GET /api?version=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"v2"),
            (b"GET /api HTTP/1.1\r\nHost: x\r\nCookie: beta=1\r\nConnection: close\r\n\r\n", b"v2"),
            (b"GET /api HTTP/1.1\r\nHost: x\r\nX-Api-Version: 3\r\nConnection: close\r\n\r\n", b"v1"),
            (b"GET /api HTTP/1.1\r\nHost: x\r\nX-Api-Version : 2\r\nConnection: close\r\n\r\n", None),
        ]
        for request, expected in cases:
            raw = yield send_raw(reactor, self.gate.address("web"), request, byte_by_byte=True)
            status, headers, body = parse_response(raw)
            if expected is None:
                self.assertEqual(status, 400, raw)
                self.assertNotIn(b"x-upstream", headers)
            else:
                self.assertEqual((status, headers[b"x-upstream"]), (200, [expected]), raw)

    @inlineCallbacks
    def test_status(self):
        """
        The admin /status lists the route table in the order routes are
        tried: more conditions first, then file order, then the route
        without any.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        self.assertEqual(response.status, 200)
        groups = response.json()["routes"]
        self.assertEqual([(g["kind"], g["host"]) for g in groups], [("any", None)])
        rows = groups[0]["routes"]
        self.assertEqual([r["name"] for r in rows], ["api-canary", "api-v2", "api-query", "api-beta", "api"])
        self.assertEqual(rows[0]["conditions"], {
            "header": ["x-api-version: ~3(\\.[0-9]+)?", "x-canary"], "query": [], "cookie": []})
        self.assertEqual(rows[1]["terminal"], {"type": "upstream", "upstreams": ["v2"]})
        self.assertEqual(rows[4]["conditions"], {"header": [], "query": [], "cookie": []})
