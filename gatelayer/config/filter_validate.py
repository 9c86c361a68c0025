"""
Settings of a C{[filter:NAME] type = validate} section.

The filter validates with either a JSON Schema (C{schema}, here) or an
OpenAPI document (C{openapi}, loaded by L{gatelayer.config.openapi}).

A JSON Schema is configuration, not key material: it is read, parsed and
checked against the draft 2020-12 meta-schema here, once per config load, so
a missing file, a file that is not JSON (with its line and column) or a
schema that is not valid stops a start, a reload or a C{--check} with file,
section and key named. The C{jsonschema} package is a plain library (it
loads nothing of the running gateway), which the import rules allow the
config package. The validator itself is compiled where the filter is built,
L{gatelayer.filters.validate}.
"""

from urllib.parse import urljoin

from attrs import field, frozen

from gatelayer.config import values as v
from gatelayer.config.json_file import bounded, parse_json, read_text

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
"""The C{$schema} URI of the only draft the filter validates with."""

INSTALL_HINT = "pip install 'gatelayer[validate]'"
"""What an operator runs when the C{jsonschema} package is missing."""

MAX_SCHEMA_FILE = 4 * 1024 * 1024
"""A schema file larger than this is refused (a schema, not a data set)."""


@frozen
class ValidateSettings:
    """
    A JSON Schema validation filter's settings.

    @ivar schema_file: the absolute path of the schema file (C{schema}),
        or L{None} when the filter validates with an OpenAPI document.
    @ivar schema: the parsed schema (a dict or a bool), already checked
        against the draft 2020-12 meta-schema; L{None} when it could not be
        read (the config then has errors). Compared, never hashed.
    @ivar openapi_file: the absolute path of the OpenAPI document
        (C{openapi}), or L{None}.
    @ivar openapi: the loaded L{gatelayer.config.openapi.OpenAPIDocument},
        or L{None}.
    @ivar openapi_prefix: the path prefix in front of the document's paths
        (C{""}: none).
    @ivar responses: C{"off"}, or C{"report"}: JSON responses are checked
        against the document and failures logged (OpenAPI only).
    @ivar mode: C{"enforce"} (refuse what fails) or C{"report"} (log it and
        let the request pass).
    @ivar require_json: whether a body of another content type is refused
        with 415 (C{True}) or passed unvalidated.
    @ivar max_body: the largest body, in bytes, that is parsed; a larger one
        is refused with 413.
    @ivar max_errors: how many schema failures a 400 lists at most.
    """

    schema_file: str = None
    schema: object = field(default=None, hash=False)
    mode: str = "enforce"
    require_json: bool = True
    max_body: int = 1024 * 1024
    max_errors: int = 20
    openapi_file: str = None
    openapi: object = field(default=None, hash=False)
    openapi_prefix: str = ""
    responses: str = "off"


def jsonschema_module():
    """
    The C{jsonschema} package, or L{None} when it is not installed (it is
    the optional C{validate} extra).
    """
    try:
        import jsonschema
    except ImportError:
        return None
    return jsonschema


def load_schema(path, jsonschema):
    """
    Read the schema file at C{path} and check it with C{jsonschema}'s draft
    2020-12 meta-schema.

    @return: the parsed schema.
    @raise ValueError: with a message naming the file and, for JSON that
        does not parse, the line and column.
    """
    schema = parse_json(read_text(path, MAX_SCHEMA_FILE), path)
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"{path} is not a JSON Schema: it must be an object or a boolean")
    if isinstance(schema, dict) and schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        raise ValueError(f"{path} declares $schema {bounded(repr(schema['$schema']))}: "
                         f"only draft 2020-12 ({DRAFT_2020_12}) is supported")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = e.json_path if hasattr(e, "json_path") else "$"
        raise ValueError(f"{path} is not a valid JSON Schema (draft 2020-12): at {where}: "
                         f"{bounded(e.message)}") from None
    except RecursionError:
        raise ValueError(f"{path} is not a valid JSON Schema: nested too deeply") from None
    try:
        unresolved = unresolved_refs(schema)
    except RecursionError:
        raise ValueError(f"{path} is not a valid JSON Schema: nested too deeply") from None
    if unresolved:
        raise ValueError(f"{path}: $ref {bounded(unresolved[0])} does not resolve within the schema "
                         "(nothing is fetched over the network)")
    return schema


def _refs(node, base, found):
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        if isinstance(node.get("$ref"), str):
            found.append(urljoin(base, node["$ref"]))
        for value in node.values():
            _refs(value, base, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, base, found)
    return found


def unresolved_refs(schema):
    """
    The C{$ref}s of C{schema} (a checked draft 2020-12 schema) that do not
    resolve within it or to a draft meta-schema: the validator never fetches
    anything, so such a reference would fail every request.
    """
    from jsonschema_specifications import REGISTRY
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012
    resource = DRAFT202012.create_resource(schema)
    base = resource.id() or ""
    resolver = REGISTRY.with_resource(base, resource).crawl().resolver(base_uri=base)
    unresolved = []
    for ref in _refs(schema, base, []):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            unresolved.append(ref)
    return unresolved


def _positive(maximum):
    return lambda text: v.parse_int(text, 1, maximum)


def _prefix(text):
    if not text.startswith("/") or "?" in text or "#" in text:
        raise ValueError("is not a path prefix (it must start with /)")
    return text.rstrip("/")


def parse_filter(reader):
    """
    Read a C{type = validate} section from C{reader} into
    L{ValidateSettings}, loading and checking its schema file or OpenAPI
    document, and recording every problem on the reader.
    """
    path = reader.path("schema", None)
    openapi_path = reader.path("openapi", None)
    prefix = reader.get("openapi_prefix", _prefix, "")
    responses = reader.choice("responses", ("off", "report"), "off")
    mode = reader.choice("mode", ("enforce", "report"), "enforce")
    require_json = reader.get("require_json", v.parse_bool, True)
    max_body = reader.get("max_body", v.parse_size, 1024 * 1024)
    if max_body is not None and max_body < 1:
        reader.error("max_body", "must be at least 1 byte", reader.raw("max_body").strip())
        max_body = None
    max_errors = reader.get("max_errors", _positive(1000), 20)
    if path is None and openapi_path is None:
        reader.error("schema", "is required (or openapi)")
    if path is not None and openapi_path is not None:
        reader.error("openapi", "cannot be used together with schema: choose one")
        path = openapi_path = None
    if openapi_path is None:
        for key in ("openapi_prefix", "responses"):
            if reader.has(key) and reader.raw(key).strip():
                reader.error(key, "applies to an openapi document only")
    elif reader.has("require_json"):
        reader.error("require_json", "applies to schema only (an OpenAPI document declares its media types)")
    schema = document = None
    jsonschema = jsonschema_module()
    if jsonschema is None:
        reader.error(None, f"type = validate needs the jsonschema package: {INSTALL_HINT}")
    elif path is not None:
        unreadable = v.file_unreadable(path)
        if unreadable is not None:
            reader.error("schema", unreadable)
        else:
            try:
                schema = load_schema(path, jsonschema)
            except ValueError as e:
                reader.error("schema", str(e))
    elif openapi_path is not None:
        document = _load_openapi(reader, openapi_path)
    return ValidateSettings(
        schema_file=path,
        schema=schema,
        mode=mode or "enforce",
        require_json=True if require_json is None else require_json,
        max_body=max_body or 1024 * 1024,
        max_errors=max_errors or 20,
        openapi_file=openapi_path,
        openapi=document,
        openapi_prefix=prefix or "",
        responses=responses or "off",
    )


def _load_openapi(reader, path):
    from gatelayer.config.openapi import load_openapi
    unreadable = v.file_unreadable(path)
    if unreadable is not None:
        reader.error("openapi", unreadable)
        return None
    try:
        return load_openapi(path)
    except RecursionError:
        reader.error("openapi", f"{path} is nested too deeply")
    except ValueError as e:
        reader.error("openapi", str(e))
    return None
