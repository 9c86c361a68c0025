"""
The transform filter's bodies through a real worker, in front of a real
upstream process that speaks JSON only (its C{/json/echo} answers with the
JSON it received, re-indented): a client's XML goes upstream as JSON and
the JSON answer comes back as XML equal in meaning; bodies over
C{max_transform_size} get 413 (request) and 502 (response); invalid XML
gets 400 naming its line and column; entity attacks are refused; and the
worker keeps serving throughout.
"""

from xml.etree.ElementTree import canonicalize

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.filters.bodies import xml_to_json
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, send_raw
from gatelayer.testing.server import parse_response
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until

GATE = """
[gateway]
workers = 1
http_server = {http_server}
[listener:web]
bind = 127.0.0.1:0
[upstream:json-api]
servers = 127.0.0.1:{port}
[filter:xml-api]
type = transform
request_body = xml_to_json
response_body = json_to_xml
xml_root = order
max_transform_size = 16KB
[route:json]
path = /json/
upstream = json-api
filters = xml-api
"""

ORDER = b"""<?xml version="1.0" encoding="UTF-8"?>
<order id="A-17" xmlns:x="urn:example:extra">
  <customer>Ann &amp; Bob</customer>
  <line sku="P1"><qty>2</qty></line>
  <line sku="P2"><qty>1</qty><note>gift &lt;wrap&gt; \xc3\xa9t\xc3\xa9</note></line>
  <x:channel>web</x:channel>
  <gift/>
</order>
"""

XML = {b"content-type": [b"application/xml"]}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<order>&lol4;</order>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE order [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<order>&secret;</order>
"""


def canonical(document):
    """
    The C14N 2.0 form of C{document} without white-space-only text: two
    documents equal in meaning have the same (read by the standard
    library, not by the gateway's mapping).
    """
    return canonicalize(document.decode("utf-8"), strip_text=True)


class TransformBodiesGatewayTests(TestCase):
    """
    One real worker (lean channel) with an XML-facing transform in front of
    a JSON upstream process.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.upstream, = yield start_upstreams(self, reactor, "json-api")
        self.gate = yield start_gateway(
            self, reactor, GATE.format(port=self.upstream.port, http_server=self.http_server))

    def post(self, path, body, headers=XML):
        """
        POST C{body} to C{path} of the gateway.
        """
        return fetch(reactor, self.gate.url("web", path), method=b"POST", headers=headers, body=body)

    def assertProblem(self, response, status, *parts):
        """
        Assert C{response} is a problem+json of C{status} whose detail has
        each of C{parts}; return the detail.
        """
        self.assertEqual(response.status, status, response.body)
        self.assertEqual(response.header(b"content-type"), b"application/problem+json")
        detail = response.json()["detail"]
        for part in parts:
            self.assertIn(part, detail)
        return detail

    @inlineCallbacks
    def test_xml_round_trip(self):
        """
        The client's XML reaches the upstream as JSON, and the upstream's
        JSON answer comes back as XML equal in meaning to what was sent.
        """
        response = yield self.post("/json/echo", ORDER)
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(response.header(b"x-received-type"), b"application/json")
        self.assertEqual(response.header(b"content-type"), b"application/xml; charset=utf-8")
        self.assertEqual(canonical(response.body), canonical(ORDER))
        self.assertEqual(xml_to_json(response.body), {
            "@id": "A-17", "@xmlns:x": "urn:example:extra", "customer": "Ann & Bob",
            "line": [{"@sku": "P1", "qty": "2"}, {"@sku": "P2", "qty": "1", "note": "gift <wrap> \u00e9t\u00e9"}],
            "x:channel": "web", "gift": None})

    @inlineCallbacks
    def test_round_trip_byte_by_byte(self):
        """
        The same request sent one byte at a time comes back the same.
        """
        request = (b"POST /json/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/xml\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(ORDER), ORDER))
        data = yield send_raw(reactor, self.gate.address("web"), request, byte_by_byte=True)
        status, headers, body = parse_response(data)
        self.assertEqual(status, 200, body)
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
        self.assertEqual(canonical(body), canonical(ORDER))

    @inlineCallbacks
    def test_other_bodies_untouched(self):
        """
        A JSON request on the same route reaches the upstream as it is (it
        is not the source format), and its answer still comes back as XML.
        """
        response = yield self.post("/json/echo", b'{"a": ["x", "y"]}', {b"content-type": [b"application/json"]})
        self.assertEqual(response.status, 200, response.body)
        self.assertEqual(xml_to_json(response.body), {"a": ["x", "y"]})

    @inlineCallbacks
    def test_request_too_large(self):
        """
        A request body over C{max_transform_size} gets 413 problem+json.
        """
        big = b"<order>" + b"<item>x</item>" * 2000 + b"</order>"
        response = yield self.post("/json/echo", big)
        self.assertProblem(response, 413, "larger than the 16384 bytes")

    @inlineCallbacks
    def test_response_too_large(self):
        """
        An upstream answer over C{max_transform_size} gets 502
        problem+json, logged; the worker goes on serving.
        """
        response = yield fetch(reactor, self.gate.url("web", "/json/pad?bytes=40000"))
        self.assertProblem(response, 502, "response body is larger than the 16384 bytes")
        yield wait_until(reactor, lambda: "answered 502" in self.gate.log(), what="the 502 log line")
        response = yield fetch(reactor, self.gate.url("web", "/json/pad?bytes=10"))
        self.assertEqual((response.status, xml_to_json(response.body)), (200, {"pad": "x" * 10}))

    @inlineCallbacks
    def test_invalid_xml(self):
        """
        XML that is not well-formed gets 400 naming line and column, and
        a warning is logged.
        """
        response = yield self.post("/json/echo", b"<order>\n  <line>\n</order>")
        self.assertProblem(response, 400, "not well-formed XML", "mismatched tag", "line 3, column 3")
        yield wait_until(reactor, lambda: "refused a request body with 400" in self.gate.log(),
                         what="the refusal's log line")

    @inlineCallbacks
    def test_entity_attacks_refused(self):
        """
        Billion laughs and an external entity are refused with 400 before
        any entity is expanded or fetched; the worker keeps serving.
        """
        for attack in (BILLION_LAUGHS, EXTERNAL_ENTITY):
            response = yield self.post("/json/echo", attack)
            detail = self.assertProblem(response, 400, "document type declaration", "line 2")
            self.assertNotIn("root:", detail)
        response = yield self.post("/json/echo", b"<order><ok>yes</ok></order>")
        self.assertEqual((response.status, xml_to_json(response.body)), (200, {"ok": "yes"}))


class TwistedChannelTransformBodiesGatewayTests(TestCase):
    """
    The round trips through the twisted.web channel (the rest is the
    filter's, tested on both channels in memory).
    """

    timeout = 120
    http_server = "twisted"

    setUp = TransformBodiesGatewayTests.setUp
    post = TransformBodiesGatewayTests.post
    test_xml_round_trip = TransformBodiesGatewayTests.test_xml_round_trip
    test_round_trip_byte_by_byte = TransformBodiesGatewayTests.test_round_trip_byte_by_byte
