"""
The validate filter with an OpenAPI document in a real worker process, in
front of a real upstream process (the echo server of
L{gatelayer.testing.upstreams.UpstreamProcess}): valid requests reach the
upstream, a bad body or query parameter gets 400 problem+json naming its
JSON pointer and never reaches it, a response violating its schema reaches
the client unchanged and is logged, and C{--check} refuses a broken
document naming the place in it.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, send_raw
from gatelayer.testing.server import parse_response
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until

API = """\
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /orders:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      responses:
        200:
          description: the orders (the echo upstream never sends them)
          content:
            application/json:
              schema:
                type: object
                required: [orders]
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Order'}
      responses:
        200:
          description: the echo
          content:
            application/json:
              schema: {type: object, required: [server, method, uri]}
components:
  schemas:
    Order:
      type: object
      required: [quantity]
      properties:
        quantity: {type: integer, minimum: 1}
        note: {type: string, nullable: true}
"""

GATE = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:0
[upstream:shop]
servers = {upstream}
[filter:shop-api]
type = validate
openapi = api.yaml
openapi_prefix = /shop
responses = report
[route:shop]
path = /shop/
upstream = shop
strip_prefix = /shop
filters = shop-api
"""

JSON = {b"content-type": [b"application/json"]}


class OpenAPIGatewayTests(TestCase):
    """
    One real worker validating against an OpenAPI 3.0 document in front of
    a real upstream process.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        (self.upstream,) = yield start_upstreams(self, reactor, "shop")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "api.yaml"), "w") as f:
            f.write(API)
        self.gate = yield start_gateway(self, reactor, GATE.format(upstream=self.upstream.address), self.directory)

    def post(self, body):
        """
        POST C{body} as JSON to C{/shop/orders}.
        """
        return fetch(reactor, self.gate.url("web", "/shop/orders"), method=b"POST", headers=JSON, body=body)

    @inlineCallbacks
    def test_valid_requests_reach_upstream(self):
        """
        A valid body and a valid query reach the upstream (its echo names
        the stripped path and the body's length).
        """
        body = b'{"quantity": 2, "note": null}'
        response = yield self.post(body)
        self.assertEqual(response.status, 200, response.body)
        echo = response.json()
        self.assertEqual((echo["method"], echo["uri"], echo["body_length"]), ("POST", "/orders", len(body)))
        response = yield fetch(reactor, self.gate.url("web", "/shop/orders?limit=10"))
        self.assertEqual((response.status, response.json()["uri"]), (200, "/orders?limit=10"))

    @inlineCallbacks
    def test_bad_body_refused(self):
        """
        A body failing the schema gets 400 problem+json naming
        C{/body/quantity}; the upstream never sees it.
        """
        before = yield self.upstream.requests()
        response = yield self.post(b'{"quantity": 0}')
        self.assertEqual(response.status, 400)
        self.assertEqual(response.header(b"content-type"), b"application/problem+json")
        problem = response.json()
        self.assertEqual([e["pointer"] for e in problem["errors"]], ["/body/quantity"])
        self.assertIn("POST /orders", problem["detail"])
        after = yield self.upstream.requests()
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_bad_query_refused(self):
        """
        A query parameter of the wrong type gets 400 naming
        C{/query/limit}; an unknown path 404, an undeclared method 405
        with C{Allow}.
        """
        response = yield fetch(reactor, self.gate.url("web", "/shop/orders?limit=lots"))
        self.assertEqual(response.status, 400)
        self.assertEqual([e["pointer"] for e in response.json()["errors"]], ["/query/limit"])
        response = yield fetch(reactor, self.gate.url("web", "/shop/customers"))
        self.assertEqual(response.status, 404)
        response = yield fetch(reactor, self.gate.url("web", "/shop/orders"), method=b"DELETE")
        self.assertEqual((response.status, response.header(b"allow")), (405, b"GET, HEAD, POST"))

    @inlineCallbacks
    def test_hostile_requests_whole_and_byte_by_byte(self):
        """
        Hostile requests sent whole and byte by byte get problem+json with
        the same pointers, and the worker keeps serving.
        """
        address = self.gate.address("web")
        table = [
            (b"GET /shop/orders?limit=1&limit=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             400, ["/query/limit"]),
            (b"POST /shop/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n"
             b"Connection: close\r\n\r\n{\"quantity\": }", 400, ["/body"]),
            (b"POST /shop/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 210\r\n"
             b"Connection: close\r\n\r\n" + b"[" * 105 + b"]" * 105, 400, ["/body"]),
            (b"GET /shop/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
             400, ["/body"]),
        ]
        for data, status, pointers in table:
            for byte_by_byte in (False, True):
                raw = yield send_raw(reactor, address, data, byte_by_byte=byte_by_byte)
                got, headers, body = parse_response(raw)
                self.assertEqual(got, status, (data[:50], byte_by_byte, body))
                self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
                self.assertEqual([e["pointer"] for e in json.loads(body)["errors"]], pointers, data[:50])
        response = yield self.post(b'{"quantity": 1}')
        self.assertEqual(response.status, 200)

    @inlineCallbacks
    def test_bad_response_passed_and_logged(self):
        """
        The echo violates the GET response schema: the client gets it
        unchanged, and the worker logs the route, status and pointer.
        """
        response = yield fetch(reactor, self.gate.url("web", "/shop/orders"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["server"], "shop")
        yield wait_until(reactor, lambda: "does not match the API description" in self.gate.log(), timeout=20,
                         what="the response report in the log")
        line = next(line for line in self.gate.log().splitlines() if "does not match the API" in line)
        self.assertIn("validate [shop-api]: route shop: GET /shop/orders (GET /orders): response 200: the "
                      "response body does not match the API description: \"\": 'orders' is a required property",
                      line)

    @inlineCallbacks
    def test_check_refuses_broken_document(self):
        """
        C{--check} refuses a document with an invalid schema, naming the
        section, the key, the file and the JSON pointer.
        """
        with open(os.path.join(self.directory, "api.yaml"), "w") as f:
            f.write(API.replace("minimum: 1, maximum: 100", "minimum: one"))
        code, output = yield self.gate.check()
        self.assertNotEqual(code, 0)
        self.assertIn("[filter:shop-api] openapi: " + os.path.join(self.directory, "api.yaml") +
                      ": at #/paths/~1orders/get/parameters/0/schema/minimum: not a valid schema", output)
