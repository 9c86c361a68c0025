"""
Tests for the transform filter's bodies: the body keys
(L{gatelayer.config.transform_bodies}) and what the filter does to request
and response bodies through a whole in-memory gateway
(L{gatelayer.filters.transform_bodies}), on both server channels.
"""

import json
import os

from twisted.internet.error import ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodyFilter, RouteChain
from gatelayer.config import parse_config_text
from gatelayer.config import transform_bodies
from gatelayer.config.filter_transform import parse_filter
from gatelayer.config.transform_bodies import DEFAULT_MAX_SIZE, DEFAULT_ROOT, parse_pointer
from gatelayer.filters import build_filter
from gatelayer.filters.bodies import XML_DECLARATION
from gatelayer.filters.transform import BodyTransformFilter, TransformFilter
from gatelayer.testing.config import parse_section
from gatelayer.testing.server import (
    InMemoryGateway, accept_upstream, feed, parse_response, split_responses, with_server,
)


def _parse(**items):
    return parse_section(parse_filter, "filter:tf", items)


class SettingsTests(SynchronousTestCase):
    """
    The body keys are read once, pointers parsed, and every problem names
    section, key and value.
    """

    def test_none(self):
        """
        A transform without body keys has no body settings.
        """
        settings, problems = _parse(request_headers_remove="X-A")
        self.assertEqual(problems, [])
        self.assertIsNone(settings.body)

    def test_parsed(self):
        """
        Directions, size, root and pointers (escapes undone, entries split at
        commas before C{/} and at line ends) are read.
        """
        settings, problems = _parse(
            request_body="xml_to_json", response_body="JSON_TO_XML", max_transform_size="64KB",
            xml_root="order", request_json_remove="/a/b, /c~1d\n/e~0f, /",
            request_json_rename="/x -> /y, /l/0->/l/-", response_json_remove="/secret",
            response_json_rename="/a/b -> /c")
        self.assertEqual(problems, [])
        body = settings.body
        self.assertEqual((body.request, body.response, body.max_size, body.xml_root),
                         ("xml_to_json", "json_to_xml", 65536, "order"))
        self.assertEqual(body.request_removes, (("a", "b"), ("c/d",), ("e~f",), ("",)))
        self.assertEqual(body.request_renames, ((("x",), ("y",)), (("l", "0"), ("l", "-"))))
        self.assertEqual(body.response_removes, (("secret",),))
        self.assertEqual(body.response_renames, ((("a", "b"), ("c",)),))

    def test_defaults(self):
        """
        C{max_transform_size} is 1MB and C{xml_root} C{root} unless set;
        edits alone make a body transformation.
        """
        settings, problems = _parse(response_json_remove="/a")
        self.assertEqual(problems, [])
        body = settings.body
        self.assertEqual((body.request, body.response, body.max_size, body.xml_root),
                         (None, None, DEFAULT_MAX_SIZE, DEFAULT_ROOT))
        self.assertEqual((body.on_requests, body.on_responses), (False, True))
        self.assertEqual(DEFAULT_MAX_SIZE, 1024 * 1024)

    def test_pointer_escapes(self):
        """
        C{~01} is C{~1} (C{~1} is undone first), as RFC 6901 says.
        """
        self.assertEqual(parse_pointer("/~01/~10/~0~1"), ("~1", "/0", "~/"))
        self.assertEqual(parse_pointer("/"), ("",))
        self.assertEqual(parse_pointer("//a"), ("", "a"))

    def test_problems(self):
        """
        Each bad value is reported once, naming section, key and value.
        """
        table = [
            (dict(request_body="json_to_yaml"), "[filter:tf] request_body:", "is not one of json_to_xml, xml_to_json"),
            (dict(response_body="xml"), "[filter:tf] response_body:", "is not one of"),
            (dict(request_body="xml_to_json", max_transform_size="0"), "max_transform_size:", "at least 1 byte"),
            (dict(request_body="xml_to_json", max_transform_size="lots"), "max_transform_size:", "is not a size"),
            (dict(request_body="xml_to_json", max_transform_size="65MB"), "max_transform_size:", "over 64MB"),
            (dict(request_body="json_to_xml", xml_root="1st"), "xml_root:", "is not an XML element name"),
            (dict(request_body="json_to_xml", xml_root="a b"), "xml_root:", "is not an XML element name"),
            (dict(request_body="json_to_xml", xml_root="xmlDoc"), "xml_root:", "is not an XML element name"),
            (dict(request_body="json_to_xml", xml_root="a:b:c"), "xml_root:", "is not an XML element name"),
            (dict(request_body="xml_to_json", xml_root="order"), "xml_root:", "only with request_body or "
                                                                             "response_body = json_to_xml"),
            (dict(max_transform_size="1MB"), "max_transform_size:", "applies only with"),
            (dict(xml_root="order"), "xml_root:", "applies only with"),
            (dict(request_json_remove="a/b"), "request_json_remove:", "is not a JSON pointer"),
            (dict(response_json_remove="/a~2b"), "response_json_remove:", "~0 (for ~) or ~1 (for /)"),
            (dict(response_json_remove="/a~"), "response_json_remove:", "~0 (for ~) or ~1 (for /)"),
            (dict(request_json_rename="/a"), "request_json_rename:", "is not /source -> /target"),
            (dict(request_json_rename="/a -> "), "request_json_rename:", "is not /source -> /target"),
            (dict(request_json_rename="/a -> /b -> /c"), "request_json_rename:", "is not /source -> /target"),
            (dict(request_json_rename="a -> /b"), "request_json_rename:", "is not a JSON pointer"),
            (dict(response_json_rename="/a -> /a"), "response_json_rename:", "to itself"),
            (dict(response_json_rename="/a -> /a/b"), "response_json_rename:", "inside itself"),
            (dict(response_json_rename="/a~1b -> /a~1b/c"), "response_json_rename:", "inside itself"),
        ]
        for items, where, reason in table:
            _, problems = _parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertTrue(problems[0].startswith("gate.ini [filter:tf] "), problems)
            self.assertIn(where, problems[0], items)
            self.assertIn(reason, problems[0], items)

    def test_defusedxml_missing(self):
        """
        Without the defusedxml package, C{xml_to_json} is a configuration
        error saying what to install; C{json_to_xml} needs nothing.
        """
        self.patch(transform_bodies, "defusedxml_module", lambda: None)
        _, problems = _parse(request_body="xml_to_json", response_body="xml_to_json")
        self.assertEqual(problems, [
            f"gate.ini [filter:tf] {key}: = xml_to_json needs the defusedxml package: "
            "pip install 'gatelayer[transform]'" for key in ("request_body", "response_body")])
        self.assertEqual(_parse(request_body="json_to_xml")[1], [])

    def test_unrelated_prefix_allowed(self):
        """
        A rename to a sibling sharing a prefix of characters (C{/a -> /ab})
        is not a move inside itself.
        """
        settings, problems = _parse(request_json_rename="/a -> /ab, /a/b -> /a")
        self.assertEqual(problems, [])
        self.assertEqual(len(settings.body.request_renames), 2)

    def test_whole_config(self):
        """
        A whole configuration with body keys loads; a bad one stops with
        every problem listed.
        """
        config = parse_config_text(WHOLE.format(direction="xml_to_json"), "gate.ini", cpu_count=1)
        self.assertEqual(config.filters["xml"].settings.body.request, "xml_to_json")
        with self.assertRaises(Exception) as raised:
            parse_config_text(WHOLE.format(direction="sideways"), "gate.ini", cpu_count=1)
        self.assertIn("[filter:xml] request_body", str(raised.exception))


WHOLE = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:xml]
type = transform
request_body = {direction}
[route:api]
path = /api/
upstream = app
filters = xml
"""


class BuildTests(SynchronousTestCase):
    """
    Only a transform with response body keys has a response-body hook, so
    the others cost the body path nothing.
    """

    def build(self, **items):
        """
        Build the filter of a C{[filter:tf]} with C{items}.
        """
        settings, problems = _parse(**items)
        self.assertEqual(problems, [])
        from gatelayer.config.model import FilterSpec
        return build_filter(FilterSpec(name="tf", type="transform", settings=settings), None)

    def test_kinds(self):
        """
        Headers or request bodies only: a plain filter; response bodies or
        response edits: a body filter (verified against the interface).
        """
        for items in (dict(request_headers_remove="X-A"), dict(request_body="xml_to_json"),
                      dict(request_json_remove="/a")):
            flt = self.build(**items)
            self.assertIs(type(flt), TransformFilter, items)
            self.assertEqual(RouteChain.build([flt]).body_hooks, ())
        for items in (dict(response_body="json_to_xml"), dict(response_json_rename="/a -> /b")):
            flt = self.build(**items)
            self.assertIsInstance(flt, BodyTransformFilter)
            verifyObject(IBodyFilter, flt)
            self.assertEqual(RouteChain.build([flt]).body_hooks, (0,))


CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:xml-in]
type = transform
request_body = xml_to_json
response_body = json_to_xml
xml_root = order
max_transform_size = 2KB
request_json_remove = /secret
request_json_rename = /@id -> /id
response_json_remove = /internal
[filter:json-in]
type = transform
request_body = json_to_xml
response_body = xml_to_json
xml_root = req
max_transform_size = 2KB
request_json_rename = /user -> /login
response_json_rename = /@version -> /version
[filter:edit]
type = transform
request_json_remove = /password
response_json_remove = /token
[filter:req-only]
type = transform
request_body = xml_to_json
[route:req]
path = /req/
upstream = app
filters = req-only
[route:edit-then-xml]
path = /edit-then-xml/
upstream = app
filters = xml-in, edit
[route:xml-then-edit]
path = /xml-then-edit/
upstream = app
filters = edit, xml-in
[route:xml]
path = /xml/
upstream = app
filters = xml-in
[route:json]
path = /json/
upstream = app
filters = json-in
[route:edit]
path = /edit/
upstream = app
filters = edit
"""


def _request(method, path, body=b"", content_type=b"application/xml", extra=b""):
    head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    if body or method in (b"POST", b"PUT"):
        head += b"Content-Length: %d\r\n" % (len(body),)
    return head + extra + b"\r\n" + body


def _sent(upstream):
    """
    The request the upstream got: C{(head bytes, body bytes)}.
    """
    head, _, body = upstream.value().partition(b"\r\n\r\n")
    return head, body


def _problem(test, status, headers, body, code):
    """
    Assert a problem+json answer with status C{code}; return its detail.
    """
    test.assertEqual(status, code, body)
    test.assertEqual(headers[b"content-type"], [b"application/problem+json"])
    test.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
    problem = json.loads(body)
    test.assertEqual(problem["status"], code)
    return problem["detail"]


class RequestBodyTests(SynchronousTestCase):
    """
    Request bodies of the source format are converted and edited before
    they go upstream; others pass untouched; what cannot be transformed is
    refused with a problem+json naming where.
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor

    def send(self, data, byte_by_byte=False):
        """
        Send C{data} on a new connection; returns C{(channel, client)}.
        """
        channel, client = self.gate.connect()
        feed(channel, data, byte_by_byte)
        return channel, client

    def test_xml_to_json(self):
        """
        An XML body goes upstream as JSON (edits applied), with its
        Content-Type and length, whole or sent byte by byte.
        """
        xml = b'<order id="7"><item>a</item><item>b</item><secret>s</secret></order>'
        for byte_by_byte in (False, True):
            self.send(_request(b"POST", b"/xml/orders", xml), byte_by_byte)
            head, body = _sent(accept_upstream(self.reactor)[0])
            self.assertEqual(json.loads(body), {"item": ["a", "b"], "id": "7"})
            self.assertIn(b"Content-Type: application/json\r\n", head)
            self.assertIn(b"\r\nContent-Length: %d\r\n" % (len(body),), head + b"\r\n")

    def test_chunked_request(self):
        """
        A chunked XML body goes upstream as JSON framed by its length.
        """
        pieces = [b"<order>", b"<item>a</item>", b"</order>"]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        self.send(b"POST /xml/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + chunked, byte_by_byte=True)
        head, body = _sent(accept_upstream(self.reactor)[0])
        self.assertEqual(body, b'{"item":"a"}')
        self.assertIn(b"\r\nContent-Length: 12", head)
        self.assertNotIn(b"chunked", head.lower())

    def test_json_to_xml(self):
        """
        A JSON body goes upstream as XML under C{xml_root}.
        """
        self.send(_request(b"PUT", b"/json/x", b'{"user": "ann", "n": 2}', b"application/json; charset=utf-8"))
        head, body = _sent(accept_upstream(self.reactor)[0])
        self.assertEqual(body, XML_DECLARATION + b"<req><n>2</n><login>ann</login></req>")
        self.assertIn(b"Content-Type: application/xml; charset=utf-8\r\n", head)

    def test_edits_only(self):
        """
        A transform with edits only edits JSON bodies (C{+json} too) and
        leaves their format.
        """
        self.send(_request(b"POST", b"/edit/x", b'{"user":"a","password":"p"}', b"application/vnd.x+json"))
        head, body = _sent(accept_upstream(self.reactor)[0])
        self.assertEqual(json.loads(body), {"user": "a"})
        self.assertIn(b"Content-Type: application/json\r\n", head)
        # Non-ASCII stays UTF-8; a lone surrogate, which UTF-8 cannot carry, stays escaped.
        for sent, out in [(b'{"n":"\\u00e9","password":1}', '{"n":"\u00e9"}'.encode("utf-8")),
                          (b'{"n":"\\ud800","password":1}', b'{"n":"\\ud800"}')]:
            self.send(_request(b"POST", b"/edit/x", sent, b"application/json"))
            self.assertEqual(_sent(accept_upstream(self.reactor)[0])[1], out)

    def test_untouched(self):
        """
        Other types, no type, the other format, empty bodies and compressed
        bodies pass byte for byte.
        """
        table = [
            (b"/xml/a", b"<a/>", b"text/plain"),
            (b"/xml/a", b"<a/>", None),
            (b"/xml/a", b'{"a": 1}', b"text/json"),
            (b"/req/a", b'{"a": 1}', b"application/json"),
            (b"/json/a", b"<a/>", b"application/xml"),
            (b"/edit/a", b"<a/>", b"application/xml"),
            (b"/xml/a", b"", b"application/xml"),
        ]
        for path, sent, kind in table:
            self.send(_request(b"POST", path, sent, kind))
            head, body = _sent(accept_upstream(self.reactor)[0])
            self.assertEqual(body, sent, (path, kind))
            if kind is not None:
                self.assertIn(b"Content-Type: " + kind + b"\r\n", head)
        with capturedLogs() as events:
            self.send(_request(b"POST", b"/xml/a", b"\x1f\x8bnot really", b"application/xml",
                               b"Content-Encoding: gzip\r\n"))
        self.assertEqual(_sent(accept_upstream(self.reactor)[0])[1], b"\x1f\x8bnot really")
        self.assertTrue(any("compressed request body" in e["log_format"] for e in events))

    def test_invalid_refused(self):
        """
        Invalid XML, hostile XML, invalid JSON and JSON without an XML form
        are refused with 400 naming the problem and its position; nothing
        goes upstream, and each is logged.
        """
        table = [
            (b"/xml/a", b"<order>\n<item></order>", b"mismatched tag at line 2, column 9"),
            (b"/xml/a", b'<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>', b"document type declaration"),
            (b"/xml/a", b'<!DOCTYPE r SYSTEM "http://evil.example/x.dtd"><r/>', b"document type declaration"),
            (b"/xml/a", b"<r>&xxe;</r>", b"undefined entity at line 1, column 4"),
            (b"/xml/a", b"<a>" * 65 + b"</a>" * 65, b"deeper than 64 levels"),
            (b"/xml/a", b"<r>\xff</r>", b"not well-formed (invalid token) at line 1, column 4"),
            (b"/json/a", b'{"a": 1,}', b"is not valid JSON: Expecting property name enclosed in double "
                                       b"quotes at line 1, column 9"),
            (b"/json/a", b'{"a": NaN}', b"NaN is not a JSON value"),
            (b"/json/a", b"[1, 2]", b"JSON array at the top"),
            (b"/json/a", b'{"bad key": 1}', b"'bad key', which is not an XML element name, at /bad key"),
            (b"/edit/a", b'{"a": ', b"not valid JSON: Expecting value at line 1, column 7"),
        ]
        for path, sent, reason in table:
            kind = b"application/xml" if sent.startswith(b"<") else b"application/json"
            clients = len(self.reactor.tcpClients)
            with capturedLogs() as events:
                status, headers, body = parse_response(self.send(_request(b"POST", path, sent, kind))[1].value())
            detail = _problem(self, status, headers, body, 400)
            self.assertIn(reason.decode("utf-8"), detail, sent)
            self.assertTrue(detail.startswith("the request body "), detail)
            self.assertEqual(len(self.reactor.tcpClients), clients, "nothing goes upstream")
            self.assertEqual([e["status"] for e in events if "refused a request body" in e["log_format"]], [400])

    def test_several_content_types(self):
        """
        A request body with several Content-Type headers is refused (which
        one the upstream would believe is not known).
        """
        data = _request(b"POST", b"/xml/a", b"<a/>", extra=b"Content-Type: text/plain\r\n")
        status, headers, body = parse_response(self.send(data)[1].value())
        self.assertIn("several Content-Type headers", _problem(self, status, headers, body, 400))

    def test_too_large(self):
        """
        A body over C{max_transform_size} (within the route's body limit)
        is refused with 413, as is one whose transformation would be.
        """
        big = b"<order>" + b"<i>x</i>" * 300 + b"</order>"
        with capturedLogs() as events:
            status, headers, body = parse_response(self.send(_request(b"POST", b"/xml/a", big))[1].value())
        self.assertIn("larger than the 2048 bytes", _problem(self, status, headers, body, 413))
        self.assertEqual([e["status"] for e in events if "refused" in e["log_format"]], [413])
        # Under the bound as JSON, over it as XML.
        amplifying = json.dumps({"k" * 100: [1] * 300}).encode("ascii")
        self.assertLess(len(amplifying), 2048)
        status, headers, body = parse_response(
            self.send(_request(b"POST", b"/json/a", amplifying, b"application/json"))[1].value())
        self.assertIn("larger than 2048 bytes as XML", _problem(self, status, headers, body, 413))

    def test_refusal_not_transformed(self):
        """
        The filter's own refusal stays problem+json on a route whose
        responses are turned into XML.
        """
        status, headers, body = parse_response(self.send(_request(b"POST", b"/xml/a", b"<a>"))[1].value())
        self.assertIn("no element found", _problem(self, status, headers, body, 400))

    def test_upstream_asked_for_identity(self):
        """
        On a route whose responses are transformed, the upstream is not
        asked to compress or slice the response.
        """
        self.send(_request(b"GET", b"/xml/a", content_type=None,
                           extra=b"Accept-Encoding: gzip, br\r\nRange: bytes=0-9\r\nIf-Range: \"x\"\r\n"))
        head = _sent(accept_upstream(self.reactor)[0])[0].lower()
        for name in (b"accept-encoding", b"range", b"if-range"):
            self.assertNotIn(b"\r\n" + name + b":", head)
        self.send(_request(b"GET", b"/req/a", content_type=None, extra=b"Accept-Encoding: gzip\r\n"))
        self.assertIn(b"\r\naccept-encoding: gzip", _sent(accept_upstream(self.reactor)[0])[0].lower())


class ValidateAfterTransformTests(SynchronousTestCase):
    """
    A validate filter listed after the transform checks the JSON the
    transform made of an XML body.
    """

    def test_validated(self):
        """
        The converted body is validated: a matching one goes upstream, a
        failing one gets the validate filter's 400 naming the pointer.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        schema = os.path.join(directory, "order.json")
        with open(schema, "w") as f:
            json.dump({"type": "object", "required": ["qty"],
                       "properties": {"qty": {"type": "string", "pattern": "^[0-9]+$"}}}, f)
        gate = InMemoryGateway(VALIDATED.format(schema=schema), with_upstreams=True)
        channel, client = gate.connect()
        channel.dataReceived(_request(b"POST", b"/v/a", b"<order><qty>two</qty></order>"))
        status, _, body = parse_response(client.value())
        self.assertEqual(status, 400)
        self.assertEqual([e["pointer"] for e in json.loads(body)["errors"]], ["/qty"])
        self.assertEqual(gate.reactor.tcpClients, [])
        channel.dataReceived(_request(b"POST", b"/v/a", b"<order><qty>2</qty></order>"))
        self.assertEqual(len(gate.reactor.tcpClients), 1)


VALIDATED = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:xml]
type = transform
request_body = xml_to_json
[filter:check]
type = validate
schema = {schema}
[route:v]
path = /v/
upstream = app
filters = xml, check
"""


class TwistedChannelRequestBodyTests(RequestBodyTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"


JSON_OK = b'{"id":"7","item":["a","b"],"internal":"x"}'


class ResponseBodyTests(SynchronousTestCase):
    """
    Response bodies of the source format are held back whole, converted,
    and sent with a matching head; others stream untouched; what cannot be
    transformed (too large, invalid) is answered with 502.
    """

    http_server = "gatelayer"

    setUp = RequestBodyTests.setUp

    def proxied(self, path=b"/xml/a", method=b"GET"):
        """
        Send a request for C{path}; returns C{(channel, client, upstream
        transport, upstream protocol)}.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(_request(method, path, content_type=None))
        transport, protocol = accept_upstream(self.reactor)
        return channel, client, transport, protocol

    def test_json_to_xml(self):
        """
        A chunked JSON answer comes back as XML with its own Content-Type
        and Content-Length; the upstream's validators are dropped, its
        other headers kept.
        """
        _, client, _, protocol = self.proxied()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"v1\"\r\n"
                              b"X-App: yes\r\nTransfer-Encoding: chunked\r\n\r\n")
        for index in range(0, len(JSON_OK), 5):
            piece = JSON_OK[index:index + 5]
            protocol.dataReceived(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.assertEqual(client.value(), b"", "held back until the body is whole")
        protocol.dataReceived(b"0\r\n\r\n")
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 200)
        self.assertEqual(body, XML_DECLARATION + b"<order><id>7</id><item>a</item><item>b</item></order>")
        self.assertEqual(headers[b"content-type"], [b"application/xml; charset=utf-8"])
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
        self.assertNotIn(b"etag", headers)
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(headers[b"x-app"], [b"yes"])

    def test_xml_to_json(self):
        """
        An XML answer (C{+xml}) comes back as JSON, edited.
        """
        _, client, _, protocol = self.proxied(b"/json/a")
        xml = b'<?xml version="1.0"?><r version="2"><a>1</a></r>'
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Type: application/soap+xml\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(xml), xml))
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, json.loads(body)), (201, {"a": "1", "version": "2"}))
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])

    def test_upstream_error_transformed(self):
        """
        An upstream's JSON error answer is transformed like any answer.
        """
        _, client, _, protocol = self.proxied()
        protocol.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\n"
                              b"Content-Length: 15\r\n\r\n{\"status\":404}\n")
        status, _, body = parse_response(client.value())
        self.assertEqual((status, body), (404, XML_DECLARATION + b"<order><status>404</status></order>"))

    def test_untouched(self):
        """
        Another type streams through at once with its own length; so do
        204, 304, an empty body and, logged, a compressed one.
        """
        _, client, _, protocol = self.proxied()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhello")
        self.assertIn(b"hello", client.value(), "not held back")
        protocol.dataReceived(b"world")
        self.assertEqual(parse_response(client.value())[::2], (200, b"helloworld"))
        table = [
            b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Type: application/json\r\nETag: \"v\"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 4\r\n\r\n<a/>",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        ]
        for answer in table:
            _, client, _, protocol = self.proxied()
            protocol.dataReceived(answer)
            status, headers, body = parse_response(client.value())
            self.assertEqual(body, answer.partition(b"\r\n\r\n")[2], answer)
            self.assertNotIn(b"application/xml; charset=utf-8", headers.get(b"content-type", []))
        _, client, _, protocol = self.proxied()
        with capturedLogs() as events:
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                                  b"Content-Length: 4\r\n\r\n\x1f\x8b\x08\x00")
        status, headers, body = parse_response(client.value())
        self.assertEqual((status, body, headers[b"content-encoding"]), (200, b"\x1f\x8b\x08\x00", [b"gzip"]))
        self.assertTrue(any("compressed response body" in e["log_format"] for e in events))

    def test_head(self):
        """
        A HEAD answer gets the transformed Content-Type and no length (it
        is not known without the body).
        """
        _, client, _, protocol = self.proxied(method=b"HEAD")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
        head = client.value()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"Content-Type: application/xml; charset=utf-8\r\n", head)
        self.assertNotIn(b"Content-Length: 40", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)

    def test_head_edits_only(self):
        """
        A HEAD answer on a route that only edits JSON keeps its type and
        loses its length.
        """
        _, client, _, protocol = self.proxied(b"/edit/a", method=b"HEAD")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
        head = client.value()
        self.assertIn(b"Content-Type: application/json\r\n", head)
        self.assertNotIn(b"Content-Length: 40", head)

    def test_gateway_errors_untouched(self):
        """
        The gateway's own error (a timed-out upstream) stays JSON on a
        route whose answers become XML.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(_request(b"GET", b"/xml/a", content_type=None))
        self.reactor.advance(120)
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 504)
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(json.loads(body)["status"], 504)

    def test_two_body_transforms(self):
        """
        Two transforms with body keys on one route run nearest-the-upstream
        first: edits before the conversion take effect; after it, the
        body is no longer JSON and passes the edits untouched (no 502).
        """
        answer = b'{"id":"1","token":"t","internal":"i"}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (len(answer),)
        for path, expected in [(b"/edit-then-xml/a", b"<order><id>1</id></order>"),
                               (b"/xml-then-edit/a", b"<order><id>1</id><token>t</token></order>")]:
            _, client, _, protocol = self.proxied(path)
            protocol.dataReceived(head + answer)
            status, headers, body = parse_response(client.value())
            self.assertEqual((status, body), (200, XML_DECLARATION + expected), path)
            self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])

    def test_too_large(self):
        """
        A body growing over C{max_transform_size} is answered with 502 at
        once, logged, and the upstream connection is cut; the client's
        connection stays usable.
        """
        channel, client, transport, protocol = self.proxied()
        with capturedLogs() as events:
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 100000\r\n\r\n" + b"[" + b"1," * 1500)
        status, headers, body = parse_response(client.value())
        self.assertIn("response body is larger than the 2048 bytes", _problem(self, status, headers, body, 502))
        self.assertTrue(transport.disconnecting or transport.disconnected, "upstream cut off")
        self.assertFalse(client.disconnecting)
        self.assertTrue(any("answered 502" in e["log_format"] for e in events))
        protocol.dataReceived(b"1," * 1000)
        self.assertEqual(len(split_responses(client.value())), 1, "nothing more after the 502")
        channel.dataReceived(_request(b"GET", b"/xml/b", content_type=None))
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        responses = split_responses(client.value())
        self.assertEqual([r[0] for r in responses], [502, 200])
        self.assertEqual(responses[1][2], XML_DECLARATION + b"<order/>")

    def test_invalid(self):
        """
        Invalid JSON or XML from the upstream, or JSON without an XML form,
        is answered with 502 naming the position or pointer.
        """
        table = [
            (b"/xml/a", b"application/json", b'{"a":\n  tru}', "Expecting value at line 2, column 3"),
            (b"/xml/a", b"application/json", b'{"a": Infinity}', "Infinity is not a JSON value"),
            (b"/xml/a", b"application/json", b'[1]', "JSON array at the top"),
            (b"/xml/a", b"application/json", b'{"a": {"b c": 1}}', "which is not an XML element name, at /a/b c"),
            (b"/json/a", b"text/xml", b"<a><b></a>", "mismatched tag at line 1, column 9"),
            (b"/json/a", b"text/xml", b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
             "document type declaration"),
            (b"/json/a", b"text/xml", b"\xff\xfe<", "not well-formed"),
        ]
        for path, kind, sent, reason in table:
            _, client, _, protocol = self.proxied(path)
            with capturedLogs() as events:
                protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                                      % (kind, len(sent), sent))
            status, headers, body = parse_response(client.value())
            detail = _problem(self, status, headers, body, 502)
            self.assertIn(reason, detail, sent)
            self.assertTrue(detail.startswith("the upstream's response body "), detail)
            self.assertEqual(len([e for e in events if "answered 502" in e["log_format"]]), 1)

    def test_upstream_breaks_off(self):
        """
        An upstream that breaks off while the body is held back: the client
        gets a 502 (nothing of the response had gone out), not a cut.
        """
        _, client, _, protocol = self.proxied()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100\r\n\r\n{\"a\":")
        protocol.connectionLost(Failure(ConnectionLost()))
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(body), {"error": "response broken off before it was sent", "status": 502})
        self.assertFalse(client.disconnecting)

    def test_client_gone_while_held(self):
        """
        A client going away while the body is held back abandons the
        upstream exchange; nothing is written or logged as an error.
        """
        channel, client, transport, protocol = self.proxied()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100\r\n\r\n{\"a\":")
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(transport.disconnecting or transport.disconnected)
        self.assertEqual(client.value(), b"")
        protocol.dataReceived(b"1}")
        self.assertEqual(self.flushLoggedErrors(), [])


class TwistedChannelResponseBodyTests(ResponseBodyTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
