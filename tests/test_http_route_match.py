"""
Route conditions through the gateway in memory: requests whose headers,
query and cookies pick the route, hostile spellings among them, sent whole
and byte by byte through both server channels. Conditions see the
canonical request (normalized path, header policy applied).
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.server import InMemoryGateway, feed, parse_response, with_server

GATE = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:8080
[route:v1]
path = /api
respond = 200 v1
[route:v2]
path = /api
match_header = X-Api-Version: 2
respond = 200 v2
[route:query]
path = /api
match_query = version=2
respond = 200 query
[route:beta]
path = /api
match_cookie = beta=1
respond = 200 beta
[route:canary]
path = /api
match_header = X-Api-Version: ~3(\\.[0-9]+)?
               X-Canary
match_query = !legacy
respond = 200 canary
[route:writes]
path = /write
methods = POST
match_header = X-Api-Version: 2
respond = 200 writes
[route:reads]
path = /write
methods = GET
respond = 200 reads
"""


def get(target=b"/api", headers=b""):
    """
    A GET of C{target} with Host and C{headers} (CRLF-terminated lines).
    """
    return b"GET " + target + b" HTTP/1.1\r\nHost: example.com\r\n" + headers + b"Connection: close\r\n\r\n"


# (request, status, body): which route answers.
CASES = [
    (get(), 200, b"v1"),
    (get(headers=b"X-Api-Version: 2\r\n"), 200, b"v2"),
    (get(headers=b"x-api-VERSION:2\r\n"), 200, b"v2"),
    (get(headers=b"X-Api-Version: \t2 \t\r\n"), 200, b"v2"),
    (get(headers=b"X-Api-Version: 3\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 2\r\nX-Api-Version: 2\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 2, 2\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 22\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version:\r\n"), 200, b"v1"),
    (get(headers=b"X_Api_Version: 2\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version-: 2\r\n"), 200, b"v1"),
    (get(b"/api/users", b"X-Api-Version: 2\r\n"), 200, b"v2"),
    (get(b"/x/../api", b"X-Api-Version: 2\r\n"), 200, b"v2"),
    (get(b"/apix", b"X-Api-Version: 2\r\n"), 404, None),
    (get(b"/api?version=2"), 200, b"query"),
    (get(b"/api?version=%32"), 200, b"query"),
    (get(b"/api?a=1&version=2"), 200, b"query"),
    (get(b"/api?version=1&version=2"), 200, b"v1"),
    (get(b"/api?Version=2"), 200, b"v1"),
    (get(b"/api?version=2", b"X-Api-Version: 2\r\n"), 200, b"v2"),
    (b"GET http://example.com/api?version=2 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n", 200, b"query"),
    (get(headers=b"Cookie: beta=1\r\n"), 200, b"beta"),
    (get(headers=b"Cookie: a=b; beta=1\r\n"), 200, b"beta"),
    (get(headers=b"Cookie: a=b\r\nCookie: beta=1\r\n"), 200, b"beta"),
    (get(headers=b"Cookie: beta=11\r\n"), 200, b"v1"),
    (get(headers=b"Cookie: xbeta=1\r\n"), 200, b"v1"),
    (get(b"/api?beta=1"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 3\r\nX-Canary: yes\r\n"), 200, b"canary"),
    (get(headers=b"X-Api-Version: 3.1\r\nX-Canary:\r\n"), 200, b"canary"),
    (get(b"/api?legacy", b"X-Api-Version: 3\r\nX-Canary: yes\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 3.x\r\nX-Canary: yes\r\n"), 200, b"v1"),
    (get(headers=b"X-Api-Version: 3\r\n"), 200, b"v1"),
    (get(b"/write", b"X-Api-Version: 2\r\n"), 200, b"reads"),
    (b"POST /write HTTP/1.1\r\nHost: x\r\nX-Api-Version: 2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
     200, b"writes"),
    (b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405, None),
    (get(headers=b"X-Api-Version : 2\r\n"), 400, None),
    (get(headers=b"X-Api-Version: 1\r\n 2\r\n"), 400, None),
    (get(headers=b"X-Api-Version: 2\x00\r\n"), 400, None),
    (get(headers=b"X-Api\x00Version: 2\r\n"), 400, None),
    (get(headers=b"X-Api-Version: 2\rX-Evil: 1\r\n"), 400, None),
]


class RouteMatchGatewayTests(SynchronousTestCase):
    """
    Through the lean server channel.
    """

    http_server = "gatelayer"

    def setUp(self):
        """
        An in-memory gateway of GATE on this class's channel.
        """
        self.gate = InMemoryGateway(with_server(GATE, self.http_server))

    def send(self, data, byte_by_byte):
        """
        Send C{data} on a new connection, whole or one byte at a time;
        returns what came back.
        """
        channel, transport = self.gate.connect()
        feed(channel, data, byte_by_byte)
        return transport.value()

    def test_cases(self):
        """
        Each request, sent whole and byte by byte, is answered by the route
        its headers, query and cookies select, or refused with a JSON error
        and no traceback.
        """
        for request, status, body in CASES:
            for byte_by_byte in (False, True):
                with self.subTest(request=request, byte_by_byte=byte_by_byte):
                    raw = self.send(request, byte_by_byte)
                    got_status, headers, got_body = parse_response(raw)
                    self.assertEqual(got_status, status, raw)
                    if body is not None:
                        self.assertEqual(got_body, body)
                    else:
                        self.assertEqual(headers[b"content-type"], [b"application/json"])
                        self.assertNotIn(b"Traceback", raw)

    def test_allow(self):
        """
        405's Allow lists the methods of the routes whose conditions hold.
        """
        request = b"PUT /write HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
        _, headers, _ = parse_response(self.send(request + b"\r\n", False))
        self.assertEqual(headers[b"allow"], [b"GET"])
        _, headers, _ = parse_response(self.send(request + b"X-Api-Version: 2\r\n\r\n", False))
        self.assertEqual(headers[b"allow"], [b"GET, POST"])

    def test_pipelined(self):
        """
        Pipelined requests on one connection are each routed on their own
        headers, query and cookies.
        """
        from gatelayer.testing.server import split_responses
        requests = [get(), get(headers=b"X-Api-Version: 2\r\n"), get(b"/api?version=2"),
                    get(headers=b"Cookie: beta=1\r\n"), get()]
        data = b"".join(r.replace(b"Connection: close\r\n", b"") for r in requests)
        channel, transport = self.gate.connect()
        channel.dataReceived(data)
        self.assertEqual([body for _, _, body in split_responses(transport.value())],
                         [b"v1", b"v2", b"query", b"beta", b"v1"])


class TwistedRouteMatchGatewayTests(RouteMatchGatewayTests):
    """
    Through twisted.web's server channel.
    """

    http_server = "twisted"


class DocumentedExampleTests(SynchronousTestCase):
    """
    The worked example of docs/routing.md is a valid configuration and
    routes as its table says.
    """

    def test_example(self):
        """
        The gate.ini block of docs/routing.md, with a listener, passes the
        loader, and each request of the page's table gets its route.
        """
        import os
        import re

        from gatelayer.config import parse_config_text
        from gatelayer.routing import RouteTable
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "docs", "routing.md"), encoding="utf-8") as f:
            example = re.search(r"```ini\n(.*?)```", f.read(), re.S).group(1)
        config = parse_config_text("[listener:web]\nbind = 127.0.0.1:8080\n" + example, "gate.ini")
        table = RouteTable([(spec, spec.name) for spec in config.routes])
        cases = [
            ({}, b"", "api"),
            ({b"x-api-version": [b"2"]}, b"", "api-v2"),
            ({}, b"version=2", "api-v2-query"),
            ({}, b"version=%32", "api-v2-query"),
            ({b"cookie": [b"session=x; beta=1"]}, b"", "api-beta"),
            ({b"x-api-version": [b"3.1"], b"x-canary": [b"yes"]}, b"", "api-canary"),
            ({b"x-api-version": [b"3.1"], b"x-canary": [b"yes"]}, b"legacy", "api"),
            ({b"x-api-version": [b"2", b"2"]}, b"", "api"),
        ]
        for headers, query, expected in cases:
            with self.subTest(headers=headers, query=query):
                self.assertEqual(table.match("", b"/api/users", "GET", headers, query).route, expected)
