"""
Tests for the validate filter: its settings and schema loading
(L{gatelayer.config.filter_validate}) and its behaviour on requests
(L{gatelayer.filters.validate}).
"""

import json
import os
import sys
from tempfile import TemporaryFile

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IFilter
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_validate import ValidateSettings, parse_filter
from gatelayer.config.model import FilterSpec
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters.validate import MAX_DEPTH, ValidateFilter, json_pointer
from gatelayer.testing.config import parse_section
from gatelayer.testing.exchange import request_exchange

ORDER = {
    "type": "object",
    "required": ["customer", "items"],
    "properties": {
        "customer": {"type": "string", "maxLength": 40},
        "note": {"type": "string", "maxLength": 10},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "qty"],
                "properties": {"name": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            },
        },
        "a/b~c": {"type": "integer"},
    },
}
"""The schema most tests validate with."""

GOOD = b'{"customer": "alice", "items": [{"name": "pen", "qty": 2}]}'


def _exchange(body=b"", content_type=b"application/json", method=b"POST", content=None, extra=()):
    headers = [(b"content-type", content_type)] if content_type is not None else []
    return request_exchange(method, b"/orders", headers=[*headers, *extra], body=body, route="orders",
                            content=content)


class ValidateTestsMixin:
    """
    Writes schema files and parses filter sections against them.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write("order.json", json.dumps(ORDER))

    def write(self, name, text):
        """
        Write C{text} (str or bytes) to C{name} in the test's directory.
        """
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(os.path.join(self.directory, name), mode) as f:
            f.write(text)

    def parse(self, **items):
        """
        Parse a C{[filter:orders]} section of C{items}: C{(settings,
        problems)}.
        """
        items.setdefault("schema", "order.json")
        return parse_section(parse_filter, "filter:orders", items, self.directory)

    def make(self, **items):
        """
        A L{ValidateFilter} built as a worker builds it, from a section of
        C{items}.
        """
        settings, problems = self.parse(**items)
        self.assertEqual(problems, [])
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=None)
        return build_filter(FilterSpec("orders", "validate", settings), services)

    def problem(self, reply):
        """
        The problem details of C{reply}, checking its media type.
        """
        self.assertIn((b"content-type", b"application/problem+json"), reply.headers)
        return json.loads(reply.body)


class SettingsTests(ValidateTestsMixin, SynchronousTestCase):
    """
    The schema file is read, parsed and checked when the config loads;
    every problem names file, section and key.
    """

    def test_defaults(self):
        """
        A section naming only a schema enforces, requires JSON, parses up
        to 1MB and lists 20 failures; the schema is parsed already.
        """
        settings, problems = self.parse()
        self.assertEqual(problems, [])
        self.assertEqual(settings, ValidateSettings(
            schema_file=os.path.join(self.directory, "order.json"), schema=ORDER))
        self.assertEqual((settings.mode, settings.require_json, settings.max_body, settings.max_errors),
                         ("enforce", True, 1024 * 1024, 20))

    def test_settings_read(self):
        """
        Every key is read with its syntax.
        """
        settings, problems = self.parse(mode="report", require_json="no", max_body="64KB", max_errors="3")
        self.assertEqual(problems, [])
        self.assertEqual((settings.mode, settings.require_json, settings.max_body, settings.max_errors),
                         ("report", False, 65536, 3))

    def test_settings_hashable(self):
        """
        The settings can be hashed although the schema is a dict.
        """
        settings, _ = self.parse()
        self.assertIsInstance(hash(settings), int)

    def test_config_errors(self):
        """
        Each bad file or value is one problem naming section, key and what
        is wrong (the position of a JSON syntax error included).
        """
        self.write("syntax.json", '{"type":\n  "object",}')
        self.write("notschema.json", '{"type": "objekt"}')
        self.write("draft7.json", '{"$schema": "http://json-schema.org/draft-07/schema#"}')
        self.write("array.json", "[1, 2]")
        self.write("nan.json", '{"maximum": NaN}')
        self.write("latin1.json", b'{"title": "caf\xe9"}')
        self.write("remote.json", '{"$ref": "https://schemas.example/order.json"}')
        self.write("dangling.json", '{"$ref": "#/$defs/missing"}')
        self.write("empty.json", "")
        table = [
            ({"schema": "missing.json"}, "[filter:orders] schema: ", "missing.json: cannot be read"),
            ({"schema": "syntax.json"}, "[filter:orders] schema: ", "not valid JSON: Expecting property name "
                                                                    "enclosed in double quotes at line 2, column 12"),
            ({"schema": "notschema.json"}, "[filter:orders] schema: ", "not a valid JSON Schema (draft 2020-12): "
                                                                       "at $.type"),
            ({"schema": "draft7.json"}, "[filter:orders] schema: ", "only draft 2020-12"),
            ({"schema": "array.json"}, "[filter:orders] schema: ", "must be an object or a boolean"),
            ({"schema": "nan.json"}, "[filter:orders] schema: ", "NaN is not JSON"),
            ({"schema": "latin1.json"}, "[filter:orders] schema: ", "is not UTF-8 (byte 14)"),
            ({"schema": "remote.json"}, "[filter:orders] schema: ", "does not resolve within the schema"),
            ({"schema": "dangling.json"}, "[filter:orders] schema: ", "#/$defs/missing does not resolve"),
            ({"schema": "empty.json"}, "[filter:orders] schema: ", "not valid JSON: Expecting value at line 1"),
            ({"schema": ""}, "[filter:orders] schema: ", "is required"),
            ({"mode": "warn"}, "[filter:orders] mode: ", "is not one of enforce, report"),
            ({"require_json": "maybe"}, "[filter:orders] require_json: ", "is not yes or no"),
            ({"max_body": "lots"}, "[filter:orders] max_body: ", "is not a size"),
            ({"max_body": "0"}, "[filter:orders] max_body: ", "must be at least 1 byte"),
            ({"max_errors": "0"}, "[filter:orders] max_errors: ", "must be at least 1"),
            ({"max_errors": "5000"}, "[filter:orders] max_errors: ", "must be at most 1000"),
            ({"openapi": "order.json"}, "[filter:orders] openapi: ", "cannot be used together with schema"),
            ({"responses": "report"}, "[filter:orders] responses: ", "applies to an openapi document only"),
            ({"openapi_prefix": "/api"}, "[filter:orders] openapi_prefix: ", "applies to an openapi document"),
        ]
        for items, where, message in table:
            _, problems = self.parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertTrue(problems[0].startswith("gate.ini " + where), (items, problems))
            self.assertIn(message, problems[0], items)

    def test_schema_refs_within_file(self):
        """
        References inside the schema, to C{$defs}, anchors and nested
        C{$id}s, and to the draft's meta-schema resolve.
        """
        self.write("refs.json", json.dumps({
            "$id": "https://schemas.example/root.json",
            "$defs": {"name": {"$anchor": "name", "type": "string"},
                      "qty": {"$id": "qty.json", "type": "integer"}},
            "properties": {"a": {"$ref": "#/$defs/name"}, "b": {"$ref": "#name"}, "c": {"$ref": "qty.json"},
                           "d": {"$ref": "https://json-schema.org/draft/2020-12/schema"}},
        }))
        self.assertEqual(self.parse(schema="refs.json")[1], [])

    def test_without_jsonschema(self):
        """
        Without the jsonschema package a validate section is an error
        naming the section and the extra to install.
        """
        self.addCleanup(sys.modules.__setitem__, "jsonschema", sys.modules["jsonschema"])
        sys.modules["jsonschema"] = None
        _, problems = self.parse()
        self.assertEqual(problems, ["gate.ini [filter:orders]: type = validate needs the jsonschema package: "
                                    "pip install 'gatelayer[validate]'"])

    def test_whole_config(self):
        """
        A bad schema fails the whole configuration with the config file,
        section and key named.
        """
        self.write("bad.json", '{"type": 5}')
        text = ("[listener:web]\nbind = 127.0.0.1:8080\n[upstream:u]\nservers = 127.0.0.1:9\n"
                "[route:r]\npath = /\nupstream = u\nfilters = orders\n"
                "[filter:orders]\ntype = validate\nschema = bad.json\n")
        error = self.assertRaises(ConfigError, parse_config_text, text,
                                  os.path.join(self.directory, "gate.ini"))
        self.assertEqual(len(error.problems), 1)
        self.assertIn("gate.ini [filter:orders] schema: ", error.problems[0])
        self.assertIn("bad.json is not a valid JSON Schema", error.problems[0])


class FilterTests(ValidateTestsMixin, SynchronousTestCase):
    """
    Requests with JSON bodies are validated; refusals are problem+json.
    """

    def test_interface(self):
        """
        The built filter provides L{IFilter}.
        """
        flt = self.make()
        self.assertIsInstance(flt, ValidateFilter)
        self.assertTrue(verifyObject(IFilter, flt))
        self.assertIsNone(flt.on_response(_exchange(GOOD)))

    def test_valid_body_passes(self):
        """
        A matching body passes, for C{application/json} with a charset and
        for a C{+json} type.
        """
        flt = self.make()
        for content_type in (b"application/json", b"Application/JSON; charset=utf-8",
                             b"application/vnd.orders+json"):
            self.assertIsNone(flt.on_request(_exchange(GOOD, content_type)), content_type)

    def test_schema_failures(self):
        """
        A body that does not match gets 400 problem+json listing the JSON
        pointer and message of each failure.
        """
        reply = self.make().on_request(_exchange(b'{"customer": "alice", "items": [{"name": 7, "qty": 0}]}'))
        self.assertEqual(reply.status, 400)
        problem = self.problem(reply)
        self.assertEqual({k: problem[k] for k in ("type", "title", "status", "detail")}, {
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "the request body does not match the schema"})
        self.assertEqual(sorted(problem["errors"], key=lambda e: e["pointer"]), [
            {"pointer": "/items/0/name", "message": "7 is not of type 'string'"},
            {"pointer": "/items/0/qty", "message": "0 is less than the minimum of 1"},
        ])

    def test_root_failure_pointer(self):
        """
        A failure of the whole body has the empty pointer.
        """
        problem = self.problem(self.make().on_request(_exchange(b'{"items": []}')))
        self.assertEqual(problem["errors"], [{"pointer": "", "message": "'customer' is a required property"}])

    def test_pointer_escaping(self):
        """
        C{~} and C{/} in keys are escaped as RFC 6901 says.
        """
        self.assertEqual(json_pointer(["a/b~c", 0, "x"]), "/a~1b~0c/0/x")
        problem = self.problem(self.make().on_request(
            _exchange(b'{"customer": "a", "items": [], "a/b~c": "x"}')))
        self.assertEqual([e["pointer"] for e in problem["errors"]], ["/a~1b~0c"])

    def test_errors_bounded(self):
        """
        At most C{max_errors} failures are listed, and the detail says more
        were found.
        """
        body = json.dumps({"customer": "a", "items": [{"name": 1, "qty": 1}] * 50}).encode()
        problem = self.problem(self.make(max_errors="5").on_request(_exchange(body)))
        self.assertEqual(len(problem["errors"]), 5)
        self.assertEqual([e["pointer"] for e in problem["errors"]], [f"/items/{i}/name" for i in range(5)])
        self.assertIn("only the first 5", problem["detail"])

    def test_long_values_not_echoed(self):
        """
        A failure message that would quote a long value names the keyword
        instead.
        """
        body = json.dumps({"customer": "a", "items": [], "note": "x" * 5000}).encode()
        reply = self.make().on_request(_exchange(body))
        self.assertNotIn(b"x" * 300, reply.body)
        self.assertEqual(self.problem(reply)["errors"], [
            {"pointer": "/note", "message": "does not satisfy the schema's 'maxLength' keyword"}])

    def test_requests_without_body_pass(self):
        """
        A request without a body and without a Content-Type passes,
        whatever its method.
        """
        flt = self.make()
        for method in (b"GET", b"DELETE", b"POST", b"HEAD", b"OPTIONS"):
            self.assertIsNone(flt.on_request(_exchange(b"", None, method)), method)

    def test_empty_json_requests(self):
        """
        An empty request declared as JSON passes for a method without a
        body and is refused as not JSON for POST, PUT and PATCH.
        """
        flt = self.make()
        for method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            self.assertIsNone(flt.on_request(_exchange(b"", b"application/json", method)), method)
        for method in (b"POST", b"PUT", b"PATCH"):
            reply = flt.on_request(_exchange(b"", b"application/json", method))
            self.assertEqual(reply.status, 400, method)
            self.assertIn("is empty", self.problem(reply)["detail"])

    def test_other_content_types(self):
        """
        A body of another type, or without a type, gets 415; with
        C{require_json = no} it passes unvalidated.
        """
        strict, lenient = self.make(), self.make(require_json="no")
        for content_type in (b"text/plain", b"application/x-www-form-urlencoded", b"application/jsonx",
                             b"text/json", None):
            exchange = _exchange(b"customer=alice", content_type)
            reply = strict.on_request(exchange)
            self.assertEqual(reply.status, 415, content_type)
            self.assertEqual(self.problem(reply)["title"], "Unsupported Media Type")
            self.assertIsNone(lenient.on_request(exchange), content_type)

    def test_charset_other_than_utf8(self):
        """
        A JSON body declared in another charset gets 415.
        """
        reply = self.make().on_request(_exchange(GOOD, b"application/json; charset=iso-8859-1"))
        self.assertEqual(reply.status, 415)

    def test_several_content_types(self):
        """
        Several Content-Type headers are refused with 400.
        """
        reply = self.make().on_request(_exchange(GOOD, extra=((b"content-type", b"text/plain"),)))
        self.assertEqual((reply.status, self.problem(reply)["detail"]),
                         (400, "the request has several Content-Type headers"))

    def test_max_body(self):
        """
        A JSON body larger than C{max_body} gets 413 without being parsed;
        one of exactly that size is validated.
        """
        flt = self.make(max_body=str(len(GOOD)))
        self.assertIsNone(flt.on_request(_exchange(GOOD)))
        reply = flt.on_request(_exchange(GOOD + b" "))
        self.assertEqual((reply.status, self.problem(reply)["title"]), (413, "Content Too Large"))

    def test_file_body(self):
        """
        A body spilled to a temporary file is read, and left at its start
        for the upstream.
        """
        content = TemporaryFile()
        self.addCleanup(content.close)
        content.write(GOOD)
        content.seek(5)
        self.assertIsNone(self.make().on_request(_exchange(GOOD, content=content)))
        self.assertEqual(content.tell(), 0)
        self.assertEqual(content.read(), GOOD)

    def test_hostile_bodies(self):
        """
        Each body that is not strict JSON gets 400 problem+json saying
        why, without errors listed; nothing raises.
        """
        nested = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
        table = [
            (b"", "is empty"),
            (b"\xef\xbb\xbf" + GOOD, "byte order mark"),
            (b'{"customer": "\xff"}', "not valid UTF-8 (byte 14)"),
            (b'{"customer": "\xed\xa0\x80"}', "not valid UTF-8"),
            (nested, f"deeper than {MAX_DEPTH} levels"),
            (b"[" * 100_000, f"deeper than {MAX_DEPTH} levels"),
            (b'{"a":' * 5000 + b"1" + b"}" * 5000, f"deeper than {MAX_DEPTH} levels"),
            (b"[" * 65 + b'"' + b'\\"' * 200_000, f"deeper than {MAX_DEPTH} levels"),
            (b"[" * 65 + b'"' + b'\\"' * 200_000 + b"\\", f"deeper than {MAX_DEPTH} levels"),
            (b"{}" * 100 + b'"' * 200_001, "Extra data at line 1, column 3"),
            (b'{"qty": NaN}', "NaN is not a JSON value"),
            (b'{"qty": Infinity}', "Infinity is not a JSON value"),
            (b'{"qty": -Infinity}', "-Infinity is not a JSON value"),
            (b'{"qty": 1e999}', "a number is out of range"),
            (b'{"qty": ' + b"9" * 5000 + b"}", "a number has too many digits"),
            (GOOD + b" x", "Extra data at line 1, column"),
            (GOOD + GOOD, "Extra data at line 1, column"),
            (b'{"customer": "alice",\n "items": [}', "at line 2, column 12"),
            (b"{'customer': 'alice'}", "Expecting property name enclosed in double quotes at line 1, column 2"),
            (b'{"customer": "a\x00"}', "Invalid control character"),
            (b"\x00\x00\x00{", "not valid JSON"),
        ]
        flt = self.make()
        for body, detail in table:
            reply = flt.on_request(_exchange(body))
            self.assertEqual(reply.status, 400, body[:40])
            problem = self.problem(reply)
            self.assertIn(detail, problem["detail"], body[:40])
            self.assertNotIn("errors", problem)

    def test_brackets_in_strings_are_not_nesting(self):
        """
        Brackets inside strings do not count towards the nesting bound, and
        nesting up to the bound is accepted.
        """
        flt = self.make()
        quoted = json.dumps({"customer": "a", "items": [], "extra": "[{" * 200 + '\\"['}).encode()
        self.assertIsNone(flt.on_request(_exchange(quoted)))
        self.write("any.json", "true")
        schema_free = self.make(schema="any.json")
        deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
        self.assertIsNone(schema_free.on_request(_exchange(deep)))

    def test_duplicate_keys_last_wins(self):
        """
        With duplicate keys the last one is what the schema sees.
        """
        flt = self.make()
        self.assertIsNone(flt.on_request(_exchange(b'{"customer": 1, "customer": "a", "items": []}')))
        reply = flt.on_request(_exchange(b'{"customer": "a", "customer": 1, "items": []}'))
        self.assertEqual([e["pointer"] for e in self.problem(reply)["errors"]], ["/customer"])

    def test_big_numbers_in_range(self):
        """
        Large but representable numbers are validated as numbers.
        """
        body = b'{"customer": "a", "items": [{"name": "x", "qty": 123456789012345678901234567890}]}'
        self.assertIsNone(self.make().on_request(_exchange(body)))

    def test_report_mode(self):
        """
        In report mode nothing is refused; each failure is logged as a
        warning naming the filter, route, status and pointers.
        """
        flt = self.make(mode="report")
        with capturedLogs() as events:
            self.assertIsNone(flt.on_request(_exchange(b'{"customer": 5, "items": []}')))
            self.assertIsNone(flt.on_request(_exchange(b"{")))
            self.assertIsNone(flt.on_request(_exchange(b"x=1", b"text/plain")))
            self.assertIsNone(flt.on_request(_exchange(GOOD)))
        self.assertEqual([(e["filter"], e["route"], e["status"], e["pointers"]) for e in events], [
            ("orders", "orders", 400, ["/customer"]),
            ("orders", "orders", 400, []),
            ("orders", "orders", 415, []),
        ])
        self.assertEqual({e["log_level"].name for e in events}, {"warn"})
