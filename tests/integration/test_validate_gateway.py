"""
The validate filter in a real worker process, in front of an in-process
twisted.web upstream that counts what reaches it: a valid JSON body goes
through unchanged, an invalid one is answered with 400 problem+json naming
the failing JSON pointer and never reaches the upstream, and a route in
report mode lets it through.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web import resource

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import serve_quietly

SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}},
}

GATE = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = 127.0.0.1:{port}
[filter:orders]
type = validate
schema = order.json
[filter:orders-report]
type = validate
schema = order.json
mode = report
[route:enforced]
path = /orders
upstream = app
filters = orders
[route:reported]
path = /report
upstream = app
filters = orders-report
"""

JSON = {b"content-type": [b"application/json"]}


class CountingApp(resource.Resource):
    """
    An upstream that records the bodies it receives and echoes them back.

    @ivar bodies: the request bodies received, in order.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies = []

    def render(self, request):
        """
        Record and echo the body.
        """
        body = request.content.read()
        self.bodies.append(body)
        request.setHeader(b"content-type", b"application/json")
        return body or b"{}"


class ValidateGatewayTests(TestCase):
    """
    One real worker with a validate filter in front of L{CountingApp}.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.app = CountingApp()
        port = serve_quietly(reactor, self.app)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "order.json"), "w") as f:
            json.dump(SCHEMA, f)
        self.gate = yield start_gateway(self, reactor, GATE.format(port=port.getHost().port), directory)

    def post(self, path, body, headers=JSON):
        """
        POST C{body} to C{path} of the gateway.
        """
        return fetch(reactor, self.gate.url("web", path), method=b"POST", headers=headers, body=body)

    @inlineCallbacks
    def test_valid_body_reaches_upstream(self):
        """
        A body matching the schema reaches the upstream unchanged.
        """
        body = b'{"items": [{"name": "pen"}]}'
        response = yield self.post("/orders", body)
        self.assertEqual((response.status, response.body), (200, body))
        self.assertEqual(self.app.bodies, [body])

    @inlineCallbacks
    def test_invalid_body_refused(self):
        """
        A body failing the schema gets 400 problem+json naming the JSON
        pointer, and the upstream never sees it.
        """
        response = yield self.post("/orders", b'{"items": [{"name": 7}]}')
        self.assertEqual(response.status, 400)
        self.assertEqual(response.header(b"content-type"), b"application/problem+json")
        problem = response.json()
        self.assertEqual((problem["status"], [e["pointer"] for e in problem["errors"]]),
                         (400, ["/items/0/name"]))
        self.assertEqual(self.app.bodies, [])

    @inlineCallbacks
    def test_invalid_json_and_media_type_refused(self):
        """
        Invalid JSON gets 400 naming its position, a form body 415; neither
        reaches the upstream, and a GET without a body passes.
        """
        response = yield self.post("/orders", b'{"items": [}')
        self.assertEqual(response.status, 400)
        self.assertIn("at line 1, column 12", response.json()["detail"])
        response = yield self.post("/orders", b"items=1",
                                   headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.status, 415)
        self.assertEqual(self.app.bodies, [])
        response = yield fetch(reactor, self.gate.url("web", "/orders"))
        self.assertEqual(response.status, 200)
        self.assertEqual(self.app.bodies, [b""])

    @inlineCallbacks
    def test_report_mode_passes(self):
        """
        In report mode an invalid body reaches the upstream.
        """
        response = yield self.post("/report", b'{"items": "none"}')
        self.assertEqual(response.status, 200)
        self.assertEqual(self.app.bodies, [b'{"items": "none"}'])
