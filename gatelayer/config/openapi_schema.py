"""
The schemas of an OpenAPI document: 3.0's schema dialect rewritten into
JSON Schema draft 2020-12 (what 3.1 uses, and what the filter validates
with), and the meta-schema check of a schema, with the JSON pointer of a
problem.

OpenAPI 3.0 schema objects differ from 2020-12 in a few keywords; the
rewrite keeps their meaning:

  - C{nullable: true} adds C{"null"} to C{type} (and L{None} to an
    C{enum});
  - C{exclusiveMinimum: true} with C{minimum: n} becomes
    C{exclusiveMinimum: n} (the same for the maximum); C{false} is dropped;
  - the siblings of a C{$ref} are dropped: 3.0 ignores them.

C{example}, C{discriminator}, C{xml} and C{externalDocs} are annotations a
2020-12 validator ignores, so they stay.
"""

__all__ = ["check_schema", "from_openapi_30", "pointer_join", "schema_types"]

_SUBSCHEMA = ("items", "not", "additionalProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")


def pointer_join(pointer, part):
    """
    C{pointer} with one more reference token, escaped as RFC 6901 says
    (C{("/paths", "/users/{id}")} -> C{"/paths/~1users~1{id}"}).
    """
    return pointer + "/" + str(part).replace("~", "~0").replace("/", "~1")


def from_openapi_30(schema, depth=0):
    """
    Rewrite the OpenAPI 3.0 schema C{schema} into JSON Schema 2020-12, in
    place (a second rewrite changes nothing).
    """
    if not isinstance(schema, dict) or depth > 200:
        return
    if "$ref" in schema:
        for key in [k for k in schema if k != "$ref"]:
            del schema[key]
        return
    nullable = schema.pop("nullable", False)
    if nullable is True:
        kind = schema.get("type")
        if isinstance(kind, str):
            schema["type"] = [kind, "null"]
        if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = schema.get(exclusive)
        if isinstance(flag, bool):
            del schema[exclusive]
            if flag and bound in schema:
                schema[exclusive] = schema.pop(bound)
    for key in _SUBSCHEMA:
        from_openapi_30(schema.get(key), depth + 1)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for sub in schema[key]:
                from_openapi_30(sub, depth + 1)
    if isinstance(schema.get("properties"), dict):
        for sub in schema["properties"].values():
            from_openapi_30(sub, depth + 1)


def check_schema(schema):
    """
    Check C{schema} against the draft 2020-12 meta-schema.

    @return: L{None} when it is valid, else C{(pointer, message)}: the
        JSON pointer of the problem inside the schema and what is wrong.
    """
    from jsonschema import Draft202012Validator, SchemaError
    if isinstance(schema, dict) and schema.get("$schema", None) not in (
            None, "https://json-schema.org/draft/2020-12/schema"):
        return "/$schema", "only JSON Schema draft 2020-12 is supported"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        pointer = ""
        for part in e.absolute_path:
            pointer = pointer_join(pointer, part)
        return pointer, e.message
    except RecursionError:
        return "", "nested too deeply"
    return None


def schema_types(schema):
    """
    The JSON types C{schema} allows at its top (its C{type}, as a tuple),
    or C{()} when it does not say.
    """
    if not isinstance(schema, dict):
        return ()
    kind = schema.get("type")
    if isinstance(kind, str):
        return (kind,) if kind in _JSON_TYPES else ()
    if isinstance(kind, list):
        return tuple(k for k in kind if k in _JSON_TYPES)
    return ()
