"""
Tests for loading OpenAPI documents (L{gatelayer.config.openapi}), the
rewrite of 3.0 schemas (L{gatelayer.config.openapi_schema}) and the
validate filter's C{openapi} keys (L{gatelayer.config.filter_validate}).
"""

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.filter_validate import parse_filter
from gatelayer.config.openapi import load_openapi, parse_document
from gatelayer.config.openapi_schema import from_openapi_30
from gatelayer.testing.config import parse_section

API_30 = """\
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /orders/{id}:
    parameters:
      - $ref: '#/components/parameters/Id'
    get:
      parameters:
        - {name: fields, in: query, schema: {type: array, items: {type: string}}, explode: false}
        - {name: X-Trace, in: header, required: true, schema: {type: string}}
        - {name: Accept, in: header, schema: {type: string}}
      responses:
        200:
          $ref: '#/components/responses/Order'
        4XX: {description: client error}
    put:
      requestBody:
        $ref: '#/components/requestBodies/Order'
      responses:
        default: {description: anything}
components:
  parameters:
    Id: {name: id, in: path, required: true, schema: {type: integer, minimum: 0, exclusiveMinimum: true}}
  requestBodies:
    Order:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Order'}
        text/plain: {}
  responses:
    Order:
      description: an order
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Order'}
  schemas:
    Order:
      type: object
      properties:
        note: {type: string, nullable: true, enum: [a, b]}
"""
"""An OpenAPI 3.0 document using component references at every level."""


def api_31(**paths):
    """
    A minimal OpenAPI 3.1 document (a dict) with C{paths}.
    """
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths}


class LoadTests(SynchronousTestCase):
    """
    A document is read, its references followed, its schemas checked and
    its operations reduced to specs, once.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def write(self, name, text):
        """
        Write C{text} (a str, or a dict written as JSON) to C{name}; returns
        its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))
        return path

    def test_openapi_30_operations(self):
        """
        A 3.0 YAML document: path-item and referenced parameters merge,
        the ignored C{Accept} header is left out, referenced request bodies
        and responses are followed, integer status keys become strings.
        """
        document = load_openapi(self.write("api.yaml", API_30))
        self.assertEqual(document.version, "3.0.3")
        get, put = document.operations
        self.assertEqual((get.method, get.template, put.method), ("GET", "/orders/{id}", "PUT"))
        self.assertEqual([(p.location, p.name, p.required, p.array, p.explode, p.types) for p in get.parameters], [
            ("path", "id", True, False, False, ("integer",)),
            ("query", "fields", False, True, False, ("string",)),
            ("header", "X-Trace", True, False, False, ("string",)),
        ])
        self.assertEqual(get.parameters[0].schema, "/components/parameters/Id/schema")
        self.assertEqual(dict(get.responses)["200"], (
            ("application/json", "/components/responses/Order/content/application~1json/schema"),))
        self.assertEqual(dict(get.responses)["4XX"], ())
        self.assertEqual((put.body.required, [kind for kind, _ in put.body.media]),
                         (True, ["application/json", "text/plain"]))
        self.assertIsNone(put.body.media[1][1])

    def test_openapi_30_schemas_rewritten(self):
        """
        3.0's C{nullable} and boolean C{exclusiveMinimum} become their
        2020-12 spelling in the loaded document.
        """
        document = load_openapi(self.write("api.yaml", API_30)).document
        self.assertEqual(document["components"]["parameters"]["Id"]["schema"],
                         {"type": "integer", "exclusiveMinimum": 0})
        self.assertEqual(document["components"]["schemas"]["Order"]["properties"]["note"],
                         {"type": ["string", "null"], "enum": ["a", "b", None]})

    def test_openapi_31_json(self):
        """
        A 3.1 JSON document keeps its schemas as they are (2020-12 already:
        C{type} lists, numeric C{exclusiveMinimum}).
        """
        schema = {"type": ["integer", "null"], "exclusiveMinimum": 0}
        path = self.write("api.json", api_31(**{"/items": {"get": {"parameters": [
            {"name": "limit", "in": "query", "schema": schema}], "responses": {}}}}))
        document = load_openapi(path)
        self.assertEqual(document.operations[0].parameters[0].types, ("integer", "null"))
        self.assertEqual(document.document["paths"]["/items"]["get"]["parameters"][0]["schema"], schema)

    def test_broken_documents(self):
        """
        Each broken or unsupported document is refused with the file and
        the line and column or the JSON pointer of the problem.
        """
        get = {"responses": {}}
        table = [
            ("syntax.yaml", "openapi: 3.0.0\npaths: {\n", "is not valid YAML", "line 3, column 1"),
            ("syntax.json", "{\"openapi\": }", "is not valid JSON", "line 1, column 13"),
            ("alias.yaml", "openapi: 3.0.0\na: &x [1]\nb: *x\n", "YAML aliases", "line 3, column 4"),
            ("list.yaml", "- 1\n", "is not an OpenAPI document", ""),
            ("swagger.json", {"swagger": "2.0"}, "is a Swagger 2.0 document", "convert"),
            ("v4.json", {"openapi": "4.0.0"}, "at #/openapi: '4.0.0' is not a supported version", ""),
            ("noversion.json", {"paths": {}}, "at #/openapi: None is not a supported", ""),
            ("dialect.json", {**api_31(), "jsonSchemaDialect": "https://json-schema.org/draft-07/schema"},
             "at #/jsonSchemaDialect", "draft 2020-12"),
            ("remote.json", api_31(**{"/a": {"$ref": "https://example.com/api.json#/x"}}),
             "at #/paths/~1a: $ref 'https://example.com/api.json#/x' is not local", "nothing is fetched"),
            ("dangling.json", api_31(**{"/a": {"get": {"requestBody": {"$ref": "#/components/requestBodies/X"}}}}),
             "at #/paths/~1a/get/requestBody: $ref '#/components/requestBodies/X' does not resolve", ""),
            ("badschema.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "query", "schema": {"type": "integr"}}], **get}}}),
             "at #/paths/~1a/get/parameters/0/schema/type: not a valid schema", "'integr'"),
            ("badcomponent.json", {**api_31(), "components": {"schemas": {"A": {"properties": {
                "b": {"minimum": "one"}}}}}},
             "at #/components/schemas/A/properties/b/minimum: not a valid schema", ""),
            ("nullable30.json", {"openapi": "3.0.1", "paths": {}, "components": {"schemas": {
                "A": {"type": "string", "maxLength": -1}}}},
             "at #/components/schemas/A/maxLength: not a valid schema", ""),
            ("style.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "query", "style": "deepObject", "schema": {"type": "string"}}], **get}}}),
             "at #/paths/~1a/get/parameters/0: style 'deepObject' is not supported", "only form"),
            ("matrix.json", api_31(**{"/a/{n}": {"get": {"parameters": [
                {"name": "n", "in": "path", "required": True, "style": "matrix", "schema": {}}], **get}}}),
             "style 'matrix' is not supported for path parameters", ""),
            ("content.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "query", "content": {"application/json": {}}}], **get}}}),
             "the parameter 'n' uses content", ""),
            ("object.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "query", "schema": {"type": "object"}}], **get}}}),
             "the parameter 'n' is an object", ""),
            ("header.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "X Trace", "in": "header", "schema": {}}], **get}}}),
             "at #/paths/~1a/get/parameters/0: 'X Trace' is not a header name", ""),
            ("location.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "body", "schema": {}}], **get}}}),
             "in: 'body' is not one of path, query, header, cookie", ""),
            ("undeclared.json", api_31(**{"/a/{id}": {"get": get}}),
             "at #/paths/~1a~1{id}/get: the path variable {id} of /a/{id} has no path parameter", ""),
            ("optionalpath.json", api_31(**{"/a/{id}": {"get": {"parameters": [
                {"name": "id", "in": "path", "schema": {}}], **get}}}),
             "the path parameter 'id' must have required: true", ""),
            ("twice.json", api_31(**{"/a": {"get": {"parameters": [
                {"name": "n", "in": "query", "schema": {}}, {"name": "n", "in": "query", "schema": {}}], **get}}}),
             "at #/paths/~1a/get/parameters/1: the query parameter 'n' is listed twice", ""),
            ("status.json", api_31(**{"/a": {"get": {"responses": {"299x": {}}}}}),
             "at #/paths/~1a/get/responses/299x: '299x' is not a status code", ""),
            ("shape.json", api_31(**{"/a/{x}": {}, "/a/{y}": {}}),
             "at #/paths/~1a~1{y}: matches the same paths as /a/{x}", ""),
            ("relative.json", api_31(**{"a": {}}), "at #/paths/a: a path must start with /", ""),
            ("brace.json", api_31(**{"/a/{x": {}}), "has an unbalanced brace", ""),
            ("nobody.json", api_31(**{"/a": {"post": {"requestBody": {"content": {}}, **get}}}),
             "at #/paths/~1a/post/requestBody: a request body must declare at least one media type", ""),
            ("loop.json", {**api_31(**{"/a": {"$ref": "#/components/pathItems/A"}}),
                           "components": {"pathItems": {"A": {"$ref": "#/components/pathItems/A"}}}},
             "$ref chain is longer than 32 links or circular", ""),
            ("nan.json", '{"openapi": NaN}', "is not valid JSON", "NaN is not JSON"),
            ("date.yaml", "openapi: 3.1.0\npaths: {}\nx: !!binary aGk=\n", "at #/x: a bytes is not a JSON value", ""),
        ]
        for name, text, message, more in table:
            path = self.write(name, text)
            with self.assertRaises(ValueError, msg=name) as caught:
                load_openapi(path)
            error = str(caught.exception)
            self.assertTrue(error.startswith(path), (name, error))
            self.assertIn(message, error, name)
            self.assertIn(more, error, name)

    def test_deeply_nested_document(self):
        """
        A document nested deeper than any API needs is refused naming the
        place, without exhausting the stack.
        """
        text = '{"openapi": "3.1.0", "x": ' + "[" * 300 + "]" * 300 + "}"
        with self.assertRaises(ValueError) as caught:
            load_openapi(self.write("deep.json", text))
        self.assertIn("nested more than 200 levels", str(caught.exception))

    def test_unreadable_and_large(self):
        """
        A missing file and one beyond the size limit are refused naming the
        file.
        """
        missing = os.path.join(self.directory, "missing.yaml")
        self.assertRaises(ValueError, load_openapi, missing)
        path = self.write("huge.yaml", "x: '" + "a" * (8 * 1024 * 1024) + "'\n")
        with self.assertRaises(ValueError) as caught:
            load_openapi(path)
        self.assertIn("is larger than", str(caught.exception))

    def test_parse_document_without_file(self):
        """
        A document given as data is named generically in messages.
        """
        with self.assertRaises(ValueError) as caught:
            parse_document({"openapi": "2.0"})
        self.assertIn("the OpenAPI document: at #/openapi", str(caught.exception))


class RewriteTests(SynchronousTestCase):
    """
    OpenAPI 3.0 schemas are rewritten into JSON Schema 2020-12 with the
    same meaning.
    """

    def test_rewrites(self):
        """
        Each 3.0 spelling becomes its 2020-12 one, nested schemas included;
        a second rewrite changes nothing.
        """
        table = [
            ({"type": "string", "nullable": True}, {"type": ["string", "null"]}),
            ({"type": "string", "nullable": False}, {"type": "string"}),
            ({"enum": ["a"], "type": "string", "nullable": True}, {"enum": ["a", None], "type": ["string", "null"]}),
            ({"minimum": 1, "exclusiveMinimum": True}, {"exclusiveMinimum": 1}),
            ({"maximum": 9, "exclusiveMaximum": False}, {"maximum": 9}),
            ({"$ref": "#/a", "description": "ignored in 3.0"}, {"$ref": "#/a"}),
            ({"items": {"type": "integer", "nullable": True}}, {"items": {"type": ["integer", "null"]}}),
            ({"properties": {"a": {"maximum": 2, "exclusiveMaximum": True}}},
             {"properties": {"a": {"exclusiveMaximum": 2}}}),
            ({"allOf": [{"nullable": True, "type": "boolean"}], "not": {"nullable": True, "type": "number"}},
             {"allOf": [{"type": ["boolean", "null"]}], "not": {"type": ["number", "null"]}}),
            ({"additionalProperties": {"type": "string", "nullable": True}},
             {"additionalProperties": {"type": ["string", "null"]}}),
            ({"example": 3, "type": "integer"}, {"example": 3, "type": "integer"}),
        ]
        for schema, expected in table:
            original = json.dumps(schema)
            from_openapi_30(schema)
            self.assertEqual(schema, expected, original)
            from_openapi_30(schema)
            self.assertEqual(schema, expected, original)


class SettingsTests(SynchronousTestCase):
    """
    The C{openapi} keys of a validate section.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "api.yaml"), "w") as f:
            f.write(API_30)

    def parse(self, **items):
        """
        Parse a C{[filter:api]} section of C{items}.
        """
        return parse_section(parse_filter, "filter:api", items, self.directory)

    def test_openapi_settings(self):
        """
        C{openapi} loads the document (relative to gate.ini); the prefix
        loses a trailing slash; responses are not checked by default.
        """
        settings, problems = self.parse(openapi="api.yaml", openapi_prefix="/api/")
        self.assertEqual(problems, [])
        self.assertEqual(settings.openapi_file, os.path.join(self.directory, "api.yaml"))
        self.assertEqual((settings.schema_file, settings.openapi_prefix, settings.responses),
                         (None, "/api", "off"))
        self.assertEqual(len(settings.openapi.operations), 2)
        self.assertIsInstance(hash(settings), int)
        settings, problems = self.parse(openapi="api.yaml", responses="report", mode="report")
        self.assertEqual((problems, settings.responses, settings.mode), ([], "report", "report"))

    def test_openapi_config_errors(self):
        """
        Each bad value is one problem naming section and key.
        """
        table = [
            ({"openapi": "missing.yaml"}, "openapi: ", "missing.yaml: cannot be read"),
            ({"openapi": "api.yaml", "schema": "s.json"}, "openapi: ", "cannot be used together with schema"),
            ({"openapi": "api.yaml", "openapi_prefix": "api"}, "openapi_prefix: ", "is not a path prefix"),
            ({"openapi": "api.yaml", "responses": "block"}, "responses: ", "is not one of off, report"),
            ({"openapi": "api.yaml", "require_json": "no"}, "require_json: ", "applies to schema only"),
            ({}, "schema: ", "is required (or openapi)"),
        ]
        for items, key, message in table:
            _, problems = self.parse(**items)
            self.assertEqual(len(problems), 1, (items, problems))
            self.assertTrue(problems[0].startswith("gate.ini [filter:api] " + key), (items, problems))
            self.assertIn(message, problems[0], items)

    def test_broken_document_named(self):
        """
        A broken document is a problem of the C{openapi} key naming the file
        and the pointer inside it.
        """
        with open(os.path.join(self.directory, "bad.yaml"), "w") as f:
            f.write("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters:\n"
                    "        - {name: n, in: query, schema: {type: integr}}\n")
        _, problems = self.parse(openapi="bad.yaml")
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("gate.ini [filter:api] openapi: " + os.path.join(self.directory, "bad.yaml") +
                      ": at #/paths/~1a/get/parameters/0/schema/type: not a valid schema", problems[0])
