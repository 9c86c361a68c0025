"""
Tests for the validate filter with an OpenAPI document
(L{gatelayer.filters.openapi}, L{gatelayer.filters.openapi_responses}):
requests checked by operation (path, method, parameters, body), hostile
requests refused with problem+json naming JSON pointers, and responses
reported, never blocked.
"""

import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodyFilter, IFilter
from gatelayer.config.filter_validate import parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters import openapi_responses
from gatelayer.filters.openapi import OpenAPIFilter
from gatelayer.filters.openapi_responses import OpenAPIResponseFilter
from gatelayer.filters.validate import MAX_DEPTH
from gatelayer.testing.config import parse_section
from gatelayer.testing.exchange import request_exchange
from gatelayer.testing.server import InMemoryGateway, accept_upstream, feed, parse_response

ORDER = {
    "type": "object",
    "required": ["quantity"],
    "properties": {
        "quantity": {"type": "integer", "minimum": 1},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "price": {"type": "number", "minimum": 0}}}},
    },
}

SHOP = {
    "openapi": "3.1.0",
    "info": {"title": "shop", "version": "1"},
    "paths": {
        "/orders": {
            "get": {
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "tags", "in": "query", "schema": {"type": "array", "maxItems": 3,
                                                               "items": {"type": "string"}}},
                    {"name": "X-Trace", "in": "header", "required": True,
                     "schema": {"type": "string", "pattern": "^[a-f0-9]{4,}$"}},
                    {"name": "session", "in": "cookie", "schema": {"type": "string", "minLength": 3}},
                ],
                "responses": {"200": {"description": "orders", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["orders"],
                    "properties": {"orders": {"type": "array"}}}}}}},
            },
            "post": {
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Order"}},
                    "text/csv": {}}},
                "responses": {"201": {"description": "created", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                    "4XX": {"description": "refused"}},
            },
        },
        "/orders/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 1}}],
            "get": {"parameters": [{"name": "fields", "in": "query", "explode": False,
                                    "schema": {"type": "array", "items": {"enum": ["id", "total"]}}}],
                    "responses": {"default": {"description": "an order"}}},
            "delete": {"responses": {"204": {"description": "gone"}}},
        },
        "/orders/{id}/lines/{line}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "line", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^L[0-9]+$"}},
            ],
            "get": {"responses": {}},
        },
    },
    "components": {"schemas": {"Order": ORDER}},
}
"""The OpenAPI 3.1 document most tests validate with."""

SHOP_30 = """\
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /orders/{id}:
    put:
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer, minimum: 0, exclusiveMinimum: true}}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                note: {type: string, nullable: true}
                count: {type: integer, maximum: 10, exclusiveMaximum: true}
      responses:
        200: {description: ok}
"""
"""An OpenAPI 3.0 document, to check its schemas' 3.0 meaning is kept."""

TRACE = (b"x-trace", b"abcd")
JSON = (b"content-type", b"application/json")


class OpenAPITestsMixin:
    """
    Writes the documents and builds filters from sections naming them.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "shop.json"), "w") as f:
            json.dump(SHOP, f)
        with open(os.path.join(self.directory, "shop30.yaml"), "w") as f:
            f.write(SHOP_30)
        self.clock = MemoryReactorClock()

    def make(self, **items):
        """
        The filter of a C{[filter:shop]} section of C{items} (by default
        naming C{shop.json}), built as a worker builds it.
        """
        items.setdefault("openapi", "shop.json")
        settings, problems = parse_section(parse_filter, "filter:shop", items, self.directory)
        self.assertEqual(problems, [])
        services = FilterServices(reactor=self.clock, master=None, config=None)
        return build_filter(FilterSpec("shop", "validate", settings), services)

    def refusal(self, reply):
        """
        C{(status, pointers)} of a refusal, checking it is problem+json.
        """
        self.assertIn((b"content-type", b"application/problem+json"), reply.headers)
        problem = json.loads(reply.body)
        self.assertEqual(problem["status"], reply.status)
        return reply.status, [error["pointer"] for error in problem.get("errors", ())]


class RequestTests(OpenAPITestsMixin, SynchronousTestCase):
    """
    Requests are checked against the operation of their path and method.
    """

    def test_interfaces(self):
        """
        Without response checking the filter has no body hook (it costs the
        response nothing); with it, it is a body filter that keeps lengths.
        """
        plain = self.make()
        self.assertIsInstance(plain, OpenAPIFilter)
        self.assertTrue(verifyObject(IFilter, plain))
        self.assertFalse(IBodyFilter.providedBy(plain))
        reporting = self.make(responses="report")
        self.assertIsInstance(reporting, OpenAPIResponseFilter)
        self.assertTrue(verifyObject(IBodyFilter, reporting))
        self.assertTrue(reporting.preserves_length)

    def test_requests(self):
        """
        Each request (valid, or hostile: path traversal in a path value,
        wrong types, repeated and missing parameters, bad encodings, bodies
        where none is declared, deep and invalid JSON, undeclared media
        types and methods) passes or is refused with the status and the
        JSON pointers of what is wrong.
        """
        deep = b'{"quantity": 1, "x": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
        table = [
            # method, path, query, headers, body -> None (passes) or (status, pointers)
            (b"GET", b"/orders", b"limit=10&tags=a&tags=b", [TRACE], b"", None),
            (b"GET", b"/orders", b"", [TRACE, (b"cookie", b"session=abcdef; other=1")], b"", None),
            (b"HEAD", b"/orders", b"", [TRACE], b"", None),
            (b"GET", b"/orders", b"unknown=1&" + b"x" * 100000, [TRACE], b"", None),
            (b"GET", b"/orders", b"", [], b"", (400, ["/header/X-Trace"])),
            (b"GET", b"/orders", b"", [(b"x-trace", b"ABCD")], b"", (400, ["/header/X-Trace"])),
            (b"GET", b"/orders", b"", [TRACE, TRACE], b"", (400, ["/header/X-Trace"])),
            (b"GET", b"/orders", b"limit=abc", [TRACE], b"", (400, ["/query/limit"])),
            (b"GET", b"/orders", b"limit=0", [TRACE], b"", (400, ["/query/limit"])),
            (b"GET", b"/orders", b"limit=1.0", [TRACE], b"", (400, ["/query/limit"])),
            (b"GET", b"/orders", b"limit=1&limit=2", [TRACE], b"", (400, ["/query/limit"])),
            (b"GET", b"/orders", b"limit=", [TRACE], b"", (400, ["/query/limit"])),
            (b"GET", b"/orders", b"tags=a&tags=b&tags=c&tags=d", [TRACE], b"", (400, ["/query/tags"])),
            (b"GET", b"/orders", b"limit=%ff", [TRACE], b"", (400, ["/query"])),
            (b"GET", b"/orders", b"a=1&" * 1001, [TRACE], b"", (400, ["/query"])),
            (b"GET", b"/orders", b"", [TRACE, (b"cookie", b"session=ab")], b"", (400, ["/cookie/session"])),
            (b"GET", b"/orders", b"limit=x", [], b"", (400, ["/query/limit", "/header/X-Trace"])),
            (b"GET", b"/orders", b"", [TRACE], b"{}", (400, ["/body"])),
            (b"GET", b"/orders/12", b"fields=id,total", [], b"", None),
            (b"GET", b"/orders/12", b"fields=id,secret", [], b"", (400, ["/query/fields/1"])),
            (b"GET", b"/orders/0", b"", [], b"", (400, ["/path/id"])),
            (b"GET", b"/orders/..%2F..%2Fetc%2Fpasswd", b"", [], b"", (400, ["/path/id"])),
            (b"GET", b"/orders/%2e%2e", b"", [], b"", (400, ["/path/id"])),
            (b"GET", b"/orders/%ff", b"", [], b"", (400, ["/path/id"])),
            (b"GET", b"/orders/1/lines/L7", b"", [], b"", None),
            (b"GET", b"/orders/1/lines/..", b"", [], b"", (400, ["/path/line"])),
            (b"DELETE", b"/orders/12", b"", [], b"", None),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": 2, "items": [{"price": 1.5}]}', None),
            (b"POST", b"/orders", b"", [(b"content-type", b"text/csv")], b"a,b\n", None),
            (b"POST", b"/orders", b"", [(b"content-type", b"application/json; charset=utf-8")],
             b'{"quantity": 1}', None),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": 0}', (400, ["/body/quantity"])),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": "2"}', (400, ["/body/quantity"])),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": 1, "items": [{"price": "x"}]}',
             (400, ["/body/items/0/price"])),
            (b"POST", b"/orders", b"", [JSON], b'{}', (400, ["/body"])),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": ', (400, ["/body"])),
            (b"POST", b"/orders", b"", [JSON], b'{"quantity": NaN}', (400, ["/body"])),
            (b"POST", b"/orders", b"", [JSON], deep, (400, ["/body"])),
            (b"POST", b"/orders", b"", [JSON], b"", (400, ["/body"])),
            (b"POST", b"/orders", b"", [(b"content-type", b"application/xml")], b"<a/>", (415, [])),
            (b"POST", b"/orders", b"", [], b'{"quantity": 1}', (415, [])),
            (b"POST", b"/orders", b"", [(b"content-type", b"application/json; charset=latin-1")],
             b'{"quantity": 1}', (415, [])),
            (b"POST", b"/orders", b"", [JSON, (b"content-type", b"text/csv")], b'{"quantity": 1}', (400, [])),
            (b"DELETE", b"/orders", b"", [], b"", (405, [])),
            (b"GET", b"/customers", b"", [], b"", (404, [])),
            (b"GET", b"/orders/", b"", [], b"", (404, [])),
            (b"GET", b"/orders/1/lines", b"", [], b"", (404, [])),
            (b"OPTIONS", b"*", b"", [], b"", (404, [])),
        ]
        flt = self.make()
        for method, path, query, headers, body, expected in table:
            exchange = request_exchange(method, path, query, headers, body)
            reply = flt.on_request(exchange)
            where = (method, path, query[:40], headers, body[:40])
            if expected is None:
                self.assertIsNone(reply, (where, reply and reply.body))
            else:
                self.assertIsNotNone(reply, where)
                self.assertEqual(self.refusal(reply), expected, where)

    def test_problem_details(self):
        """
        A 400 names the operation and lists pointers with messages; a 405
        carries C{Allow}; a 404 and a 415 say what was expected.
        """
        flt = self.make()
        reply = flt.on_request(request_exchange(b"POST", b"/orders", headers=[JSON], body=b'{"quantity": 0}'))
        problem = json.loads(reply.body)
        self.assertEqual(problem, {
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "the request does not match the API description (POST /orders)",
            "errors": [{"pointer": "/body/quantity", "message": "0 is less than the minimum of 1"}]})
        reply = flt.on_request(request_exchange(b"PUT", b"/orders/3"))
        self.assertEqual(reply.status, 405)
        self.assertIn((b"allow", b"DELETE, GET, HEAD"), reply.headers)
        self.assertEqual(json.loads(reply.body)["title"], "Method Not Allowed")
        reply = flt.on_request(request_exchange(b"GET", b"/nope"))
        self.assertEqual(json.loads(reply.body)["detail"], "the path is not in the API description")
        reply = flt.on_request(request_exchange(b"POST", b"/orders", headers=[(b"content-type", b"text/xml")],
                                                body=b"<a/>"))
        self.assertEqual(json.loads(reply.body)["detail"], "the request body must be one of: application/json, "
                                                           "text/csv")

    def test_max_errors_and_max_body(self):
        """
        At most C{max_errors} failures are listed (the detail says so); a
        JSON body over C{max_body} is refused with 413 unparsed.
        """
        flt = self.make(max_errors="2", max_body="16")
        reply = flt.on_request(request_exchange(b"GET", b"/orders", b"limit=0&tags=a&tags=b&tags=c&tags=d",
                                                [(b"cookie", b"session=x")]))
        problem = json.loads(reply.body)
        self.assertEqual([e["pointer"] for e in problem["errors"]], ["/query/limit", "/query/tags"])
        self.assertIn("only the first 2 are listed", problem["detail"])
        reply = flt.on_request(request_exchange(b"POST", b"/orders", headers=[JSON], body=b'{"quantity": 12345678}'))
        self.assertEqual(reply.status, 413)

    def test_prefix(self):
        """
        With C{openapi_prefix} the document's paths are matched after it;
        a path outside it is not in the API.
        """
        flt = self.make(openapi_prefix="/api/v1")
        self.assertIsNone(flt.on_request(request_exchange(b"GET", b"/api/v1/orders/3")))
        self.assertEqual(flt.on_request(request_exchange(b"GET", b"/orders/3")).status, 404)
        self.assertEqual(flt.on_request(request_exchange(b"GET", b"/api/v10/orders/3")).status, 404)
        self.assertEqual(self.refusal(flt.on_request(request_exchange(b"GET", b"/api/v1/orders/x"))),
                         (400, ["/path/id"]))

    def test_openapi_30_meaning(self):
        """
        A 3.0 document's C{exclusiveMinimum: true}, C{exclusiveMaximum:
        true} and C{nullable} keep their 3.0 meaning; its optional body may
        be left out.
        """
        flt = self.make(openapi="shop30.yaml")
        table = [
            (b"/orders/1", b'{"note": null, "count": 9}', None),
            (b"/orders/1", b"", None),
            (b"/orders/0", b"{}", (400, ["/path/id"])),
            (b"/orders/1", b'{"count": 10}', (400, ["/body/count"])),
            (b"/orders/1", b'{"note": 5}', (400, ["/body/note"])),
        ]
        for path, body, expected in table:
            reply = flt.on_request(request_exchange(b"PUT", path, headers=[JSON], body=body))
            self.assertEqual(reply and self.refusal(reply), expected, (path, body))

    def test_recursive_references(self):
        """
        A recursive schema reached through references (body, then
        component, then itself) validates at every depth, naming the
        pointer deep inside the body.
        """
        node = {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}
        tree = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
                "paths": {"/trees": {"post": {"requestBody": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Tree"}}}}, "responses": {}}}},
                "components": {"schemas": {"Tree": {"$ref": "#/components/schemas/Node"}, "Node": node}}}
        with open(os.path.join(self.directory, "tree.json"), "w") as f:
            json.dump(tree, f)
        flt = self.make(openapi="tree.json")
        good = b'{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}'
        bad = b'{"name": "a", "children": [{"name": "b", "children": [{"name": 3}]}]}'
        self.assertIsNone(flt.on_request(request_exchange(b"POST", b"/trees", headers=[JSON], body=good)))
        reply = flt.on_request(request_exchange(b"POST", b"/trees", headers=[JSON], body=bad))
        self.assertEqual(self.refusal(reply), (400, ["/body/children/0/children/0/name"]))

    def test_report_mode(self):
        """
        In report mode nothing is refused: each failure is a warning naming
        the filter, the route, the status it would have had and the
        pointers.
        """
        flt = self.make(mode="report")
        with capturedLogs() as events:
            self.assertIsNone(flt.on_request(request_exchange(b"GET", b"/orders", b"limit=0", [TRACE])))
            self.assertIsNone(flt.on_request(request_exchange(b"PATCH", b"/orders")))
            self.assertIsNone(flt.on_request(request_exchange(b"GET", b"/orders", b"limit=5", [TRACE])))
        self.assertEqual([(e["filter"], e["route"], e["status"], e["pointers"]) for e in events],
                         [("shop", "r", 400, ["/query/limit"]), ("shop", "r", 405, [])])


CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
connect_timeout = 1s
read_timeout = 5s
[filter:shop]
type = validate
openapi = shop.json
openapi_prefix = /api
responses = report
max_body = 64
[filter:strict]
type = validate
openapi = shop.json
[route:api]
path = /api/
upstream = app
filters = shop
[route:direct]
path = /orders
respond = 200 ok
filters = strict
"""


def _warnings(events):
    """
    The warnings of the C{shop} filter among C{events}, formatted.
    """
    return [formatEvent(e) for e in events if e.get("filter") == "shop" and e["log_level"] == LogLevel.warn]


class ResponseReportTests(OpenAPITestsMixin, SynchronousTestCase):
    """
    Through a whole in-memory gateway, responses are checked against the
    document after they were passed on, and only logged.
    """

    def setUp(self):
        super().setUp()
        with open(os.path.join(self.directory, "gate.ini"), "w") as f:
            f.write(CONFIG)
        self.gate = InMemoryGateway(CONFIG, path=os.path.join(self.directory, "gate.ini"), with_upstreams=True)
        self.reactor = self.gate.reactor

    def answer(self, request, *pieces):
        """
        Send C{request}, answer it from the upstream with the response
        C{pieces} (in separate deliveries), and return what the client got
        and the warnings logged before and after the next reactor turn.
        """
        channel, client = self.gate.connect()
        with capturedLogs() as events:
            channel.dataReceived(request)
            _, protocol = accept_upstream(self.reactor)
            for piece in pieces:
                protocol.dataReceived(piece)
            before = _warnings(events)
            self.reactor.advance(0)
        after = _warnings(events)
        return parse_response(client.value()), before, after

    def test_valid_response_not_logged(self):
        """
        A response matching its schema passes unchanged and nothing is
        logged.
        """
        body = b'{"orders": []}'
        response, _, logged = self.answer(
            b"GET /api/orders HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertEqual((response[0], response[2]), (200, body))
        self.assertEqual(logged, [])

    def test_invalid_response_passed_and_logged(self):
        """
        A chunked response violating its schema reaches the client byte for
        byte; once it is complete, on the next reactor turn (never before
        the client has it), a warning names route, operation, status and
        pointer.
        """
        response, before, after = self.answer(
            b"GET /api/orders HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"6\r\n{\"orde\r\n", b"a\r\nrs\": \"no\"}\r\n0\r\n\r\n")
        self.assertEqual((response[0], response[2]), (200, b'{"orders": "no"}'))
        self.assertEqual(before, [])
        self.assertEqual(len(after), 1, after)
        self.assertIn("route api: GET /api/orders (GET /orders): response 200: the response body does not match "
                      "the API description: \"/orders\": 'no' is not of type 'array'", after[0])

    def test_other_problems_logged(self):
        """
        A status the operation does not declare, invalid JSON, an
        undeclared media type and a body over C{max_body} are each logged;
        the response passes unchanged.
        """
        created = b'{"quantity": 1}'
        post = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d" \
               b"\r\n\r\n%s" % (len(created), created)
        get = b"GET /api/orders HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n"
        big = b'{"orders": [' + b"1," * 40 + b"1]}"
        table = [
            (get, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", "response 500: status 500 is not declared"),
            (post, b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{\"q\"",
             "response 201: the response body is not valid JSON"),
            (post, b"HTTP/1.1 201 Created\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi",
             "response 201: the media type text/html is not declared for status 201"),
            (get, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(big), big), "not checked: the body is larger than max_body (64 bytes)"),
            (get, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big), "not checked: the body is larger than max_body"),
            (get, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                  b"Content-Length: 3\r\n\r\nabc", "not checked: the body is content-encoded"),
        ]
        for request, upstream_response, message in table:
            response, _, logged = self.answer(request, upstream_response)
            self.assertEqual(response[2], upstream_response.partition(b"\r\n\r\n")[2].replace(
                b"%x\r\n" % (len(big),), b"").replace(b"\r\n0\r\n\r\n", b""), message)
            self.assertEqual(len(logged), 1, (message, logged))
            self.assertIn(message, logged[0])
            self.reactor.advance(60)

    def test_declared_and_skipped(self):
        """
        A 4XX range covers a 400 without content; a refused request's own
        answer is not checked as an upstream response.
        """
        post = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2" \
               b"\r\n\r\n{}"
        channel, client = self.gate.connect()
        with capturedLogs() as events:
            channel.dataReceived(post)
            self.reactor.advance(0)
        self.assertEqual(parse_response(client.value())[0], 400)
        self.assertEqual(_warnings(events), [])
        good = b'{"quantity": 1}'
        response, _, logged = self.answer(
            b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d"
            b"\r\n\r\n%s" % (len(good), good), b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual((response[0], logged), (409, []))

    def test_report_mode_checks_responses(self):
        """
        With C{mode = report} a request failing its parameters still goes
        on to its operation, and its response is checked.
        """
        text = CONFIG.replace("responses = report\n", "responses = report\nmode = report\n")
        with open(os.path.join(self.directory, "gate.ini"), "w") as f:
            f.write(text)
        self.gate = InMemoryGateway(text, path=os.path.join(self.directory, "gate.ini"), with_upstreams=True)
        self.reactor = self.gate.reactor
        response, _, logged = self.answer(
            b"GET /api/orders?limit=0 HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        self.assertEqual((response[0], response[2]), (200, b"{}"))
        self.assertEqual(len(logged), 2, logged)
        self.assertIn("would refuse with 400", logged[0])
        self.assertIn("response 200: the response body does not match", logged[1])

    def test_throttle_memory_bounded(self):
        """
        What the throttle remembers is bounded: past the limit, the
        problems whose quiet time is over are forgotten (a media type an
        upstream makes up per response cannot grow it without end).
        """
        self.patch(openapi_responses, "_MAX_KEYS", 3)
        request = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " \
                  b"15\r\n\r\n{\"quantity\": 1}"
        flt = self.gate.gateway.filters["shop"]
        for kind in (b"a", b"b", b"c"):
            self.answer(request, b"HTTP/1.1 201 Created\r\nContent-Type: text/%s\r\nContent-Length: 0\r\n\r\n" % kind)
        self.assertEqual(len(flt._quiet_until), 3)
        self.reactor.advance(11)
        _, _, logged = self.answer(request, b"HTTP/1.1 201 Created\r\nContent-Type: text/d\r\nContent-Length: 0"
                                            b"\r\n\r\n")
        self.assertIn("the media type text/d is not declared", logged[0])
        self.assertEqual(len(flt._quiet_until), 1)

    def test_logging_throttled(self):
        """
        The same failure of one operation and status is logged once per
        ten seconds; the next line counts those left out.
        """
        request = b"GET /api/orders HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n"
        bad = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        logged = [self.answer(request, bad)[2] for _ in range(3)]
        self.assertEqual([len(lines) for lines in logged], [1, 0, 0])
        self.reactor.advance(10)
        again = self.answer(request, bad)[2]
        self.assertEqual(len(again), 1)
        self.assertIn("(2 similar not logged since)", again[0])


class WholeGatewayTests(OpenAPITestsMixin, SynchronousTestCase):
    """
    Hostile requests sent to an in-memory gateway whole and byte by byte
    get the same problem+json.
    """

    def setUp(self):
        super().setUp()
        self.gate = InMemoryGateway(CONFIG, path=os.path.join(self.directory, "gate.ini"), with_upstreams=True)

    def send(self, data, byte_by_byte):
        """
        Send C{data} on a new connection; returns the parsed response.
        """
        channel, client = self.gate.connect()
        feed(channel, data, byte_by_byte)
        return parse_response(client.value())

    def test_hostile_requests(self):
        """
        Each request gets its status and pointers, whole or byte by byte;
        the valid one reaches the route's terminal.
        """
        body = b'{"quantity": 1, "items": [{"price": -1}]}'
        table = [
            (b"GET /orders?limit=5 HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n", 200, None),
            (b"GET /orders?limit=five HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n", 400, ["/query/limit"]),
            (b"GET /orders?limit=1&limit=2 HTTP/1.1\r\nHost: x\r\n\r\n", 400, ["/query/limit", "/header/X-Trace"]),
            (b"GET /orders?" + b"q=" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\n\r\n", 200, None),
            (b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
             % (len(body), body), 400, ["/body/items/0/price"]),
            (b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
             b"\r\n\r\n5\r\n{\"qua\r\n0\r\n\r\n", 400, ["/body"]),
            (b"GET /orders HTTP/1.1\r\nHost: x\r\nX-Trace: abcd\r\nContent-Length: 2\r\n\r\n{}", 400, ["/body"]),
            (b"PUT /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, []),
        ]
        for data, status, pointers in table:
            for byte_by_byte in (False, True):
                got_status, headers, got_body = self.send(data, byte_by_byte)
                self.assertEqual(got_status, status, (data[:60], byte_by_byte, got_body))
                if pointers is None:
                    self.assertEqual(got_body, b"ok")
                    continue
                self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
                problem = json.loads(got_body)
                self.assertEqual([e["pointer"] for e in problem.get("errors", ())], pointers, data[:60])
