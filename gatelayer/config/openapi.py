"""
Loading and checking an OpenAPI 3.0/3.1 document for the validate filter
(C{openapi = api.yaml}).

The document is read once per config load (start, reload, C{--check}):
parsed (YAML without aliases, or JSON), every C{$ref} checked to be local
and to resolve, OpenAPI 3.0 schemas rewritten into JSON Schema 2020-12 (the
dialect 3.1 uses), every schema checked against the 2020-12 meta-schema,
and every operation reduced to plain frozen specs: the path template, the
parameters with their serialization, the request body's media types and
the responses' schemas, each schema named by its JSON pointer in the
(rewritten) document. Anything that is wrong or that the filter would not
check faithfully (a parameter style it does not parse) is a L{ValueError}
naming the file and the JSON pointer. The validators themselves are
compiled where the filter is built (L{gatelayer.filters.openapi}).
"""

import re
from urllib.parse import unquote

from attrs import field, frozen

from gatelayer.config.json_file import bounded
from gatelayer.config.openapi_file import read_document
from gatelayer.config.openapi_schema import check_schema, from_openapi_30, pointer_join, schema_types

__all__ = [
    "BodySpec", "MAX_DOCUMENT", "METHODS", "OpenAPIDocument", "OperationSpec", "ParameterSpec",
    "load_openapi", "parse_document", "resolve_pointer", "split_template",
]

MAX_DOCUMENT = 8 * 1024 * 1024
"""A document file larger than this is refused."""

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
"""The operations of a path item, in the order OpenAPI lists them."""

_VERSION = re.compile(r"^3\.([01])\.\d+(?:-[0-9A-Za-z.-]+)?$")
_DIALECTS = ("https://spec.openapis.org/oas/3.1/dialect/base", "https://json-schema.org/draft/2020-12/schema")
_STATUS = re.compile(r"^(?:[1-5][0-9][0-9]|[1-5]XX|default)$")
_VARIABLE = re.compile(r"\{([^{}/]+)\}")
_STYLES = {"path": ("simple",), "header": ("simple",), "query": ("form",), "cookie": ("form",)}
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_IGNORED_HEADERS = frozenset(("accept", "content-type", "authorization"))


@frozen
class ParameterSpec:
    """
    One parameter of an operation.

    @ivar name: its name as the document spells it (a header's is matched
        without regard to case).
    @ivar location: C{"path"}, C{"query"}, C{"header"} or C{"cookie"}.
    @ivar required: whether a request must carry it.
    @ivar array: whether its schema is an array (the value is a list).
    @ivar explode: for an array in the query, whether it is sent as
        repeated C{name=v} pairs (C{True}) or one comma-separated value.
    @ivar types: the JSON types its schema allows at the top (after
        C{$ref}s), which decide how a string is coerced; for an array, the
        types of its items.
    @ivar schema: the JSON pointer of its schema in the document.
    """

    name: str
    location: str
    required: bool
    array: bool
    explode: bool
    types: tuple
    schema: str


@frozen
class BodySpec:
    """
    The request body an operation takes.

    @ivar required: whether a request must have one.
    @ivar media: C{(media range, schema pointer or None)} pairs, as declared
        (lower case, without parameters).
    """

    required: bool
    media: tuple


@frozen
class OperationSpec:
    """
    One operation (a method on a path template).

    @ivar method: the method, upper case (C{"GET"}).
    @ivar template: the path template (C{"/users/{id}"}).
    @ivar parameters: its L{ParameterSpec}s, path-item ones included.
    @ivar body: its L{BodySpec}, or L{None} when it takes no body.
    @ivar responses: C{(status key, media pairs)}: the status key is
        C{"200"}, C{"2XX"} or C{"default"}; media pairs as in L{BodySpec}.
    """

    method: str
    template: str
    parameters: tuple
    body: object
    responses: tuple


@frozen
class OpenAPIDocument:
    """
    A loaded, checked OpenAPI document.

    @ivar version: its C{openapi} version string.
    @ivar document: the document (JSON values), with 3.0 schemas rewritten
        to JSON Schema 2020-12: the schemas' pointers point into it.
        Compared, never hashed.
    @ivar operations: its L{OperationSpec}s.
    """

    version: str
    document: object = field(hash=False, repr=False)
    operations: tuple = ()


def _where(pointer):
    return "#" + pointer


def load_openapi(path):
    """
    Read, parse and check the OpenAPI document at C{path} (JSON when the
    name ends in C{.json}, else YAML).

    @return: an L{OpenAPIDocument}.
    @raise ValueError: naming the file and, inside it, the line and column
        or the JSON pointer of the problem.
    """
    return parse_document(read_document(path, MAX_DOCUMENT), path)


def resolve_pointer(document, pointer):
    """
    The value at the JSON pointer C{pointer} (C{"/components/schemas/User"})
    in C{document}.

    @raise LookupError: when nothing is there.
    """
    node = document
    if pointer == "":
        return node
    for part in pointer[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise LookupError(pointer)
    return node


def _ref_pointer(ref):
    return unquote(ref[1:])


def _check_refs(node, pointer, document, path):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if "$ref" in node and isinstance(ref, str):
            if not ref.startswith("#"):
                raise ValueError(f"{path}: at {_where(pointer)}: $ref {bounded(repr(ref))} is not local: only "
                                 "references inside the document (#/...) are supported, nothing is fetched")
            try:
                resolve_pointer(document, _ref_pointer(ref))
            except LookupError:
                raise ValueError(f"{path}: at {_where(pointer)}: $ref {bounded(repr(ref))} does not resolve "
                                 "within the document") from None
        for key, value in node.items():
            _check_refs(value, pointer_join(pointer, key), document, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_refs(value, pointer_join(pointer, index), document, path)


class _Reader:
    """
    Walks one document: follows OpenAPI-level C{$ref}s and remembers which
    schemas were rewritten and checked.
    """

    def __init__(self, document, path, version):
        self.document = document
        self.path = path
        self.openapi_30 = version.startswith("3.0")
        self.checked = set()

    def fail(self, pointer, message):
        raise ValueError(f"{self.path}: at {_where(pointer)}: {message}")

    def follow(self, node, pointer, kind):
        """
        C{node} with its C{$ref} chain followed: C{(object, pointer)}.
        """
        for _ in range(32):
            if not isinstance(node, dict):
                self.fail(pointer, f"a {kind} must be an object")
            ref = node.get("$ref")
            if ref is None:
                return node, pointer
            if not isinstance(ref, str):
                self.fail(pointer, "$ref must be a string")
            pointer = _ref_pointer(ref)
            node = resolve_pointer(self.document, pointer)
        self.fail(pointer, "$ref chain is longer than 32 links or circular")

    def schema(self, node, pointer):
        """
        Rewrite (3.0) and check the schema at C{pointer} once; returns its
        pointer.
        """
        if pointer in self.checked:
            return pointer
        self.checked.add(pointer)
        if self.openapi_30:
            from_openapi_30(node)
        problem = check_schema(node)
        if problem is not None:
            where, message = problem
            self.fail(pointer + where, f"not a valid schema: {bounded(message)}")
        return pointer

    def types(self, schema, pointer):
        for _ in range(32):
            if not isinstance(schema, dict) or "$ref" not in schema:
                return schema_types(schema)
            pointer = _ref_pointer(schema["$ref"])
            schema = resolve_pointer(self.document, pointer)
        return ()

    def items_of(self, schema):
        for _ in range(32):
            if not isinstance(schema, dict):
                return None
            if "$ref" not in schema:
                return schema.get("items")
            schema = resolve_pointer(self.document, _ref_pointer(schema["$ref"]))
        return None


def split_template(template):
    """
    The segments of a path template (C{"/users/{id}"} -> C{["users",
    "{id}"]}) and its variable names, in order.

    @raise ValueError: for a template that does not start with C{/} or has
        unbalanced or repeated C{{name}}s.
    """
    if not template.startswith("/"):
        raise ValueError("a path must start with /")
    segments = template[1:].split("/")
    names = []
    for segment in segments:
        if _VARIABLE.sub("", segment).count("{") or _VARIABLE.sub("", segment).count("}"):
            raise ValueError(f"the segment {bounded(repr(segment))} has an unbalanced brace")
        names.extend(_VARIABLE.findall(segment))
    if len(set(names)) != len(names):
        raise ValueError("a path variable is named twice")
    return segments, names


def parse_document(document, path="the OpenAPI document"):
    """
    Check the parsed C{document} (JSON values) and reduce it to an
    L{OpenAPIDocument}; 3.0 schemas are rewritten in place.

    @raise ValueError: naming C{path} and the JSON pointer of the problem.
    """
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not an OpenAPI document: it must be an object")
    if "swagger" in document and "openapi" not in document:
        raise ValueError(f"{path} is a Swagger {bounded(str(document['swagger']))} document: only OpenAPI "
                         "3.0.x and 3.1.x are supported (convert it first)")
    version = document.get("openapi")
    if not isinstance(version, str) or _VERSION.match(version) is None:
        raise ValueError(f"{path}: at #/openapi: {bounded(repr(version))} is not a supported version: only "
                         "OpenAPI 3.0.x and 3.1.x are")
    dialect = document.get("jsonSchemaDialect")
    if version.startswith("3.1") and dialect is not None and dialect not in _DIALECTS:
        raise ValueError(f"{path}: at #/jsonSchemaDialect: {bounded(repr(dialect))} is not supported: schemas "
                         "are validated as JSON Schema draft 2020-12")
    _check_refs(document, "", document, path)
    reader = _Reader(document, path, version)
    components = document.get("components", {})
    if not isinstance(components, dict):
        reader.fail("/components", "must be an object")
    schemas = components.get("schemas", {})
    if not isinstance(schemas, dict):
        reader.fail("/components/schemas", "must be an object")
    for name, schema in schemas.items():
        reader.schema(schema, pointer_join("/components/schemas", name))
    paths = document.get("paths", {})
    if not isinstance(paths, dict):
        reader.fail("/paths", "must be an object")
    operations = []
    shapes = {}
    for template, item in paths.items():
        item_pointer = pointer_join("/paths", template)
        if template.startswith("x-"):
            continue
        try:
            segments, names = split_template(template)
        except ValueError as e:
            reader.fail(item_pointer, str(e))
        shape = "/".join(_VARIABLE.sub("{}", s) for s in segments)
        if shape in shapes:
            reader.fail(item_pointer, f"matches the same paths as {bounded(shapes[shape])}")
        shapes[shape] = template
        item, item_target = reader.follow(item, item_pointer, "path item")
        shared = _parameters(reader, item.get("parameters", []), pointer_join(item_target, "parameters"))
        for method in METHODS:
            if method not in item:
                continue
            op_pointer = pointer_join(item_target, method)
            operations.append(_operation(reader, template, names, method, item[method], op_pointer, shared))
    return OpenAPIDocument(version=version, document=document, operations=tuple(operations))


def _parameters(reader, nodes, pointer):
    if not isinstance(nodes, list):
        reader.fail(pointer, "parameters must be a list")
    found = {}
    for index, node in enumerate(nodes):
        spec = _parameter(reader, node, pointer_join(pointer, index))
        if spec is None:
            continue
        key = (spec.location, spec.name.lower() if spec.location == "header" else spec.name)
        if key in found:
            reader.fail(pointer_join(pointer, index), f"the {spec.location} parameter {spec.name!r} is listed twice")
        found[key] = spec
    return found


def _parameter(reader, node, pointer):
    node, pointer = reader.follow(node, pointer, "parameter")
    name, location = node.get("name"), node.get("in")
    if not isinstance(name, str) or not name:
        reader.fail(pointer, "a parameter needs a name")
    if location not in _STYLES:
        reader.fail(pointer, f"in: {bounded(repr(location))} is not one of path, query, header, cookie")
    if location == "header" and _TOKEN.match(name) is None:
        reader.fail(pointer, f"{bounded(repr(name))} is not a header name")
    if location == "header" and name.lower() in _IGNORED_HEADERS:
        return None
    if "content" in node:
        reader.fail(pointer, f"the parameter {name!r} uses content: only parameters with a schema are supported")
    if "schema" not in node:
        reader.fail(pointer, f"the parameter {name!r} has no schema")
    style = node.get("style", _STYLES[location][0])
    if style not in _STYLES[location]:
        reader.fail(pointer, f"style {bounded(repr(style))} is not supported for {location} parameters (only "
                             f"{_STYLES[location][0]})")
    explode = node.get("explode", style == "form")
    required = node.get("required", False)
    if not isinstance(explode, bool) or not isinstance(required, bool):
        reader.fail(pointer, "explode and required must be booleans")
    if location == "path" and not required:
        reader.fail(pointer, f"the path parameter {name!r} must have required: true")
    schema_pointer = reader.schema(node["schema"], pointer_join(pointer, "schema"))
    types = reader.types(node["schema"], schema_pointer)
    if "object" in types:
        reader.fail(pointer, f"the parameter {name!r} is an object: only primitive and array parameters are "
                             "supported")
    array = "array" in types
    if array:
        types = reader.types(reader.items_of(node["schema"]), schema_pointer)
        if "object" in types or "array" in types:
            reader.fail(pointer, f"the array parameter {name!r} must have primitive items")
    return ParameterSpec(name=name, location=location, required=required, array=array, explode=explode,
                         types=types, schema=schema_pointer)


def _operation(reader, template, names, method, node, pointer, shared):
    if not isinstance(node, dict):
        reader.fail(pointer, "an operation must be an object")
    own = _parameters(reader, node.get("parameters", []), pointer_join(pointer, "parameters"))
    merged = dict(shared)
    merged.update(own)
    declared = {spec.name for (location, _), spec in merged.items() if location == "path"}
    for name in names:
        if name not in declared:
            reader.fail(pointer, f"the path variable {{{name}}} of {template} has no path parameter")
    for name in declared - set(names):
        reader.fail(pointer, f"the path parameter {name!r} is not in the path {template}")
    body = None
    if "requestBody" in node:
        body_node, body_pointer = reader.follow(node["requestBody"], pointer_join(pointer, "requestBody"),
                                                "request body")
        required = body_node.get("required", False)
        if not isinstance(required, bool):
            reader.fail(body_pointer, "required must be a boolean")
        media = _content(reader, body_node.get("content"), pointer_join(body_pointer, "content"))
        if not media:
            reader.fail(body_pointer, "a request body must declare at least one media type in content")
        body = BodySpec(required=required, media=media)
    responses = []
    declared_responses = node.get("responses", {})
    if not isinstance(declared_responses, dict):
        reader.fail(pointer_join(pointer, "responses"), "must be an object")
    for status, response in declared_responses.items():
        status_pointer = pointer_join(pointer_join(pointer, "responses"), status)
        if status.startswith("x-"):
            continue
        if _STATUS.match(status.upper() if status != "default" else status) is None:
            reader.fail(status_pointer, f"{bounded(repr(status))} is not a status code, a range like 2XX, "
                                        "or default")
        response, response_pointer = reader.follow(response, status_pointer, "response")
        content = response.get("content")
        media = _content(reader, content, pointer_join(response_pointer, "content")) if content is not None else ()
        responses.append((status.upper() if status != "default" else status, media))
    return OperationSpec(method=method.upper(), template=template, parameters=tuple(merged.values()),
                         body=body, responses=tuple(responses))


def _content(reader, content, pointer):
    if not isinstance(content, dict):
        reader.fail(pointer, "content must be an object of media types")
    media = []
    for kind, media_object in content.items():
        media_pointer = pointer_join(pointer, kind)
        if not isinstance(media_object, dict):
            reader.fail(media_pointer, "a media type object must be an object")
        schema = None
        if "schema" in media_object:
            schema = reader.schema(media_object["schema"], pointer_join(media_pointer, "schema"))
        media.append((kind.partition(";")[0].strip().lower(), schema))
    return tuple(media)
