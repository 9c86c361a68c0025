"""
The validate filter with an OpenAPI document (C{openapi = api.yaml}):
requests are checked against the operation their path and method name,
and, with C{responses = report}, JSON responses against the operation's
response schema (logged, never blocked).

Everything is compiled once, when the filter is built: the path templates
into a L{PathMatcher}, and one validator per schema (shared by every
operation using that schema), all resolving C{$ref}s within the document
only. A request then costs a path lookup, the parsing of what its
operation declares, and the validations.
"""

from itertools import islice
from urllib.parse import unquote

from twisted.logger import Logger

from gatelayer.config.openapi import resolve_pointer
from gatelayer.filters.openapi_match import PathMatcher, coerce, decode, parse_cookies, parse_query
from gatelayer.filters.validate import (
    BodyRefusal, ValidateFilter, is_json, json_pointer, media_type, parse_json_body,
)

__all__ = [
    "DOCUMENT_URI", "CompiledAPI", "Operation", "OpenAPIFilter", "OperationRefusal",
    "build_openapi_filter", "compile_api", "schema_failures", "select_media",
]

DOCUMENT_URI = "https://openapi.gatelayer.invalid/document"
"""The base URI the document is registered under for C{$ref} resolution;
nothing is ever fetched from it."""


def select_media(declared, kind):
    """
    The C{(range, schema)} pair of C{declared} that the media type C{kind}
    falls under: the exact type, then C{type/*}, then C{*/*}; or L{None}.
    """
    best = None
    rank = 3
    major = kind.partition("/")[0] + "/*"
    for pair in declared:
        found = 0 if pair[0] == kind else 1 if pair[0] == major else 2 if pair[0] == "*/*" else 3
        if found < rank:
            best, rank = pair, found
    return best


class Operation:
    """
    One compiled operation: its spec, its parameters' validators, its
    request body's and responses' media types with their validators.

    @ivar label: C{"GET /users/{id}"}, for messages and logs.
    @ivar parameters: C{(spec, pointer prefix, validator)} triples.
    @ivar body: L{None}, or C{(required, ((range, validator or None), ...))}.
    @ivar responses: status key -> C{((range, validator or None), ...)}.
    """

    __slots__ = ("label", "parameters", "body", "responses")

    def __init__(self, spec, validator):
        self.label = f"{spec.method} {spec.template}"
        self.parameters = tuple(
            (p, f"/{p.location}" + json_pointer([p.name]), validator(p.schema)) for p in spec.parameters)
        self.body = None
        if spec.body is not None:
            self.body = (spec.body.required, tuple(
                (kind, validator(schema) if schema is not None else None) for kind, schema in spec.body.media))
        self.responses = {status: tuple((kind, validator(schema) if schema is not None else None)
                                        for kind, schema in media) for status, media in spec.responses}

    def response_media(self, status):
        """
        The media pairs declared for C{status}: the exact code, then its
        range (C{2XX}), then C{default}; L{None} when none is declared.
        """
        responses = self.responses
        for key in (str(status), f"{status // 100}XX", "default"):
            if key in responses:
                return responses[key]
        return None


class OperationRefusal(BodyRefusal):
    """
    A 400: the request matched C{operation} but its parameters or body do
    not (in report mode it goes on to that operation).
    """

    def __init__(self, operation, detail, errors):
        super().__init__(400, detail, errors)
        self.operation = operation


class CompiledAPI:
    """
    An OpenAPI document compiled for requests: the path matcher (template
    -> method -> L{Operation}) and the prefix in front of the paths.
    """

    def __init__(self, prefix, matcher):
        self.prefix = prefix
        self.matcher = matcher

    def find(self, method, path):
        """
        The L{Operation} for C{method} (text) on C{path} (text, still
        percent-encoded) and its raw path values.

        @raise BodyRefusal: 404 for a path no template matches, 405 (with
            C{Allow}) for a method the path does not have.
        """
        if not path.startswith("/"):
            raise BodyRefusal(404, "the path is not in the API description")
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                raise BodyRefusal(404, "the path is not in the API description")
            path = path[len(self.prefix):] or "/"
        found = self.matcher.match(path)
        if found is None:
            raise BodyRefusal(404, "the path is not in the API description")
        methods, values = found
        operation = methods.get(method)
        if operation is None and method == "HEAD":
            operation = methods.get("GET")
        if operation is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            raise BodyRefusal(405, f"the API description has no {method} operation on this path",
                              headers=((b"allow", ", ".join(allowed).encode("ascii")),))
        return operation, values


def _absolute(node):
    """
    A copy of C{node} whose local C{$ref}s (C{#/components/...}) name the
    document by L{DOCUMENT_URI}: a schema compiled on its own, out of the
    document, still resolves them against the document's root.
    """
    if isinstance(node, dict):
        copy = {key: _absolute(value) for key, value in node.items()}
        ref = copy.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            copy["$ref"] = DOCUMENT_URI + ref
        return copy
    if isinstance(node, list):
        return [_absolute(value) for value in node]
    return node


def compile_api(document, prefix=""):
    """
    Compile C{document} (a L{gatelayer.config.openapi.OpenAPIDocument}):
    one validator per schema pointer, one L{Operation} per operation.

    Each validator is compiled on its schema itself (a schema that is
    only a C{$ref} is replaced by its target), so a request pays for a
    reference only where a schema uses one inside.
    """
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    absolute = _absolute(document.document)
    registry = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(absolute))
    validators = {}

    def validator(pointer):
        compiled = validators.get(pointer)
        if compiled is None:
            schema = resolve_pointer(absolute, pointer)
            for _ in range(32):
                if not (isinstance(schema, dict) and list(schema) == ["$ref"]):
                    break
                schema = resolve_pointer(absolute, unquote(schema["$ref"][len(DOCUMENT_URI) + 1:]))
            compiled = validators[pointer] = Draft202012Validator(schema, registry=registry)
        return compiled

    templates = {}
    for spec in document.operations:
        templates.setdefault(spec.template, {})[spec.method] = Operation(spec, validator)
    return CompiledAPI(prefix, PathMatcher(templates.items()))


class OpenAPIFilter(ValidateFilter):
    """
    Refuse (or, in report mode, log) requests that do not match the
    operation of their path and method: 404, 405, 415, 413, or 400 listing
    each failing location as a JSON pointer (C{/path/id}, C{/query/limit},
    C{/header/X-Trace}, C{/cookie/session}, C{/body/items/0/price}).
    """

    log = Logger()

    def __init__(self, name, settings, api):
        super().__init__(name, settings, None)
        self.api = api

    def check(self, exchange):
        """
        Check the request of C{exchange} against its operation; the
        operation is returned for the response side.

        @raise BodyRefusal: when it is refused.
        """
        operation, raw_values = self.api.find(exchange.method.decode("latin-1"), exchange.path.decode("latin-1"))
        instance = self._body(exchange, operation)
        errors = self._parameters(exchange, operation, raw_values)
        if instance is not _NO_BODY:
            media_validator, body = instance
            if isinstance(body, BodyRefusal):
                errors = _chain(errors, [{"pointer": "/body", "message": body.detail}])
            elif media_validator is not None:
                errors = _chain(errors, schema_failures(media_validator, body, "/body"))
        limit = self.settings.max_errors
        listed = list(islice(errors, limit + 1))
        if listed:
            more = f" (only the first {limit} are listed)" if len(listed) > limit else ""
            raise OperationRefusal(operation, f"the request does not match the API description "
                                              f"({operation.label}){more}", listed[:limit])
        return operation

    def _body(self, exchange, operation):
        length = exchange.body_length()
        if operation.body is None:
            if length:
                return None, BodyRefusal(400, "the operation takes no request body")
            return _NO_BODY
        required, declared = operation.body
        if not length:
            if required:
                return None, BodyRefusal(400, "a request body is required")
            return _NO_BODY
        kind, charset = media_type(exchange.headers)
        names = ", ".join(pair[0] for pair in declared)
        chosen = select_media(declared, kind) if kind is not None else None
        if chosen is None:
            raise BodyRefusal(415, f"the request body must be one of: {names}")
        if not is_json(kind):
            return _NO_BODY
        if charset not in (None, "utf-8", "utf8"):
            raise BodyRefusal(415, "a JSON request body must be UTF-8")
        if length > self.settings.max_body:
            raise BodyRefusal(413, f"the request body is larger than the {self.settings.max_body} bytes "
                                   "that are validated")
        content = exchange.body
        content.seek(0)
        try:
            data = content.read(self.settings.max_body + 1)
        finally:
            content.seek(0)
        try:
            return chosen[1], parse_json_body(data)
        except BodyRefusal as refusal:
            return None, refusal

    def _parameters(self, exchange, operation, raw_values):
        sources = {}
        for spec, where, validator in operation.parameters:
            location = spec.location
            try:
                values = self._values(exchange, spec, raw_values, sources)
            except ValueError as e:
                if location == "path":
                    yield {"pointer": where, "message": str(e)}
                elif sources.get(location) is not _UNREADABLE:
                    sources[location] = _UNREADABLE
                    yield {"pointer": f"/{location}", "message": str(e)}
                continue
            if not values:
                if spec.required:
                    yield {"pointer": where, "message": "is required"}
                continue
            if spec.array:
                if not (spec.explode and location in ("query", "cookie")):
                    values = [item.strip() for item in ",".join(values).split(",")] if any(values) else []
                value = [coerce(item, spec.types) for item in values]
            elif len(values) > 1:
                yield {"pointer": where, "message": f"is given {len(values)} times (once is allowed)"}
                continue
            else:
                value = coerce(values[0], spec.types)
            yield from schema_failures(validator, value, where)

    @staticmethod
    def _values(exchange, spec, raw_values, sources):
        """
        The values (text, decoded) of the parameter C{spec} in the request,
        or L{None}; C{sources} caches the parsed query and cookies.
        """
        location = spec.location
        if location == "path":
            return [decode(raw_values[spec.name])]
        if location == "header":
            raw = exchange.headers.getRawHeaders(spec.name.encode("latin-1"))
            return [value.decode("latin-1").strip() for value in raw] if raw else None
        parsed = sources.get(location)
        if parsed is _UNREADABLE:
            raise ValueError("is not readable")
        if parsed is None:
            if location == "query":
                parsed = parse_query(exchange.query.decode("latin-1"))
            else:
                raw = exchange.headers.getRawHeaders(b"cookie") or ()
                parsed = parse_cookies([value.decode("latin-1") for value in raw])
            sources[location] = parsed
        return parsed.get(spec.name)

    def on_request(self, exchange):
        """
        L{None} when the request matches its operation; else a
        problem+json L{Reply}, or L{None} after logging in report mode.
        """
        try:
            operation = self.check(exchange)
        except BodyRefusal as refusal:
            reply = self._refused(exchange, refusal)
            if reply is None and isinstance(refusal, OperationRefusal):
                self.passed(exchange, refusal.operation)
            return reply
        self.passed(exchange, operation)
        return None

    def passed(self, exchange, operation):
        """
        The request of C{exchange} goes on to C{operation} (it matched, or
        report mode let a mismatch through): nothing more to do unless
        responses are checked too.
        """


_NO_BODY = object()
_UNREADABLE = object()


def _chain(first, second):
    yield from first
    yield from second


def schema_failures(validator, instance, prefix):
    """
    The failures of C{instance} under C{validator} as C{{"pointer",
    "message"}} dicts, each pointer prefixed with C{prefix}; lazily, so a
    caller takes only as many as it lists.
    """
    try:
        for failure in validator.iter_errors(instance):
            error = ValidateFilter._error(failure)
            error["pointer"] = prefix + error["pointer"]
            yield error
    except RecursionError:
        yield {"pointer": prefix, "message": "is nested too deeply to validate"}


def build_openapi_filter(spec, services):
    """
    Build the validate filter of C{spec} for its OpenAPI document,
    compiled once; with C{responses = report} the filter also sees
    response bodies (L{OpenAPIResponseFilter}, using C{services.reactor}).
    """
    settings = spec.settings
    api = compile_api(settings.openapi, settings.openapi_prefix)
    if settings.responses == "report":
        from gatelayer.filters.openapi_responses import OpenAPIResponseFilter
        return OpenAPIResponseFilter(spec.name, settings, api, services.reactor)
    return OpenAPIFilter(spec.name, settings, api)

