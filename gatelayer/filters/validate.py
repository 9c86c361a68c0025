"""
The C{validate} filter: JSON request bodies are checked against a JSON
Schema (draft 2020-12) before they go upstream.

The schema was read and checked when the config was loaded
(L{gatelayer.config.filter_validate}); the validator is compiled once, here,
when the filter is built, so a request costs one parse and one validation.
Refusals are RFC 9457 problem details (C{application/problem+json}): invalid
JSON names its line and column, schema failures list the JSON pointer of
each failing value (at most C{max_errors}), never the value itself when it
is long. In C{report} mode every failure is logged and the request passes.
"""

import json
import math
import re
from itertools import islice

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IFilter, json_reply

__all__ = [
    "BODY_METHODS", "MAX_DEPTH", "PROBLEM_JSON", "BodyRefusal", "ValidateFilter", "build_filter", "is_json",
    "json_pointer", "media_type", "parse_json_body",
]

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects a body may have: deeper ones
are refused with 400 before they are parsed, so neither the parser nor the
validator can run out of stack."""

PROBLEM_JSON = b"application/problem+json"
"""The media type of the filter's refusals (RFC 9457)."""

MESSAGE_LIMIT = 200
"""A schema failure message longer than this (it would quote a long value
of the request) is replaced by one naming the schema keyword only."""

# A string runs to its closing quote or, unterminated, to the end (and a
# lone trailing backslash belongs to it): the pattern never fails from a
# quote, so the scan stays linear on hostile input.
_BRACKETS = re.compile(r'"[^"\\]*(?:\\[\s\S]?[^"\\]*)*(?:"|\Z)|[\[\]{}]')
_BOM = b"\xef\xbb\xbf"

BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
"""The methods whose empty body, sent as JSON, is refused as not JSON; an
empty request of another method (a C{GET} whose client always sends
C{Content-Type: application/json}) passes."""
_TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
           415: "Unsupported Media Type"}


class BodyRefusal(Exception):
    """
    A request body the filter does not let through.

    @ivar status: the HTTP status of the refusal.
    @ivar detail: a sentence for the problem's C{detail}.
    @ivar errors: the schema failures, C{{"pointer", "message"}} dicts, or
        L{None} when the body was not validated.
    @ivar headers: C{(name, value)} byte pairs the refusal carries (the
        C{Allow} of a 405).
    """

    def __init__(self, status, detail, errors=None, headers=()):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def problem(self):
        """
        The RFC 9457 problem details object of this refusal.
        """
        problem = {"type": "about:blank", "title": _TITLES[self.status], "status": self.status,
                   "detail": self.detail}
        if self.errors is not None:
            problem["errors"] = self.errors
        return problem


class _Strict:
    """
    The hooks of C{json.loads} refusing what RFC 8259 does not allow, with
    messages naming the body (C{what}).
    """

    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what

    def constant(self, name):
        raise BodyRefusal(400, f"{self.what} is not valid JSON: {name} is not a JSON value")

    def finite_float(self, text):
        value = float(text)
        if math.isinf(value):
            raise BodyRefusal(400, f"{self.what} is not valid JSON: a number is out of range")
        return value


def _too_deep(text):
    """
    Whether C{text} nests arrays and objects deeper than L{MAX_DEPTH}
    (brackets inside strings do not count). Only scanned when the body has
    more brackets than that at all, so small bodies cost nothing.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif token in "]}":
            depth -= 1
    return False


def parse_json_body(data, what="the request body"):
    """
    Parse a request body as strict JSON (RFC 8259): UTF-8 without a byte
    order mark, no C{NaN} or C{Infinity}, no number beyond a float's range
    or Python's integer digit limit, nesting at most L{MAX_DEPTH} deep,
    nothing after the value. Duplicate object keys are allowed and the last
    one wins, as in Python.

    @param what: how messages name the body (the transform filter names
        an upstream's response body).
    @raise BodyRefusal: 400, naming what is wrong and, for a syntax error,
        its line and column.
    """
    if not data:
        raise BodyRefusal(400, f"{what} is empty, which is not JSON")
    if data.startswith(_BOM):
        raise BodyRefusal(400, f"{what} starts with a byte order mark, which JSON does not allow")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyRefusal(400, f"{what} is not valid UTF-8 (byte {e.start})") from None
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _too_deep(text):
        raise BodyRefusal(400, f"{what} nests arrays and objects deeper than {MAX_DEPTH} levels")
    try:
        strict = _Strict(what)
        return json.loads(text, parse_constant=strict.constant, parse_float=strict.finite_float)
    except json.JSONDecodeError as e:
        raise BodyRefusal(
            400, f"{what} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise BodyRefusal(400, f"{what} nests arrays and objects deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        # int() refusing more digits than sys.get_int_max_str_digits().
        raise BodyRefusal(400, f"{what} is not valid JSON: a number has too many digits") from None


def json_pointer(path):
    """
    The RFC 6901 JSON pointer of C{path}, a sequence of object keys and
    array indexes (C{["items", 0, "name"]} -> C{"/items/0/name"}).
    """
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def media_type(headers):
    """
    The lower-case media type of the request's single C{Content-Type}
    header and its C{charset} parameter (or L{None}), or C{(None, None)}
    when there is none.

    @raise BodyRefusal: 400 for several C{Content-Type} headers.
    """
    values = headers.getRawHeaders(b"content-type")
    if not values:
        return None, None
    if len(values) > 1:
        raise BodyRefusal(400, "the request has several Content-Type headers")
    kind, _, params = values[0].decode("latin-1").partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def is_json(kind):
    """
    Whether the media type C{kind} is JSON: C{application/json} or a
    C{application/*+json} type.
    """
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _read(exchange, limit):
    content = exchange.body
    if hasattr(content, "getvalue"):
        return content.getvalue()
    content.seek(0)
    try:
        return content.read(limit + 1)
    finally:
        content.seek(0)


@implementer(IFilter)
class ValidateFilter:
    """
    Refuse (or, in report mode, log) JSON request bodies that do not match
    the schema.
    """

    log = Logger()

    def __init__(self, name, settings, validator):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_validate.ValidateSettings}.
        @param validator: the compiled C{jsonschema} validator of its schema.
        """
        self.name = name
        self.settings = settings
        self.validator = validator

    def on_request(self, exchange):
        """
        L{None} when the request has no body, a body of another type (with
        C{require_json = no}) or a JSON body matching the schema; else a
        problem+json L{Reply} (413, 415 or 400), or L{None} after logging
        the failure in report mode.
        """
        try:
            self.check(exchange)
        except BodyRefusal as refusal:
            return self._refused(exchange, refusal)
        return None

    def check(self, exchange):
        """
        Check the request of C{exchange}.

        @raise BodyRefusal: when it is refused.
        """
        kind, charset = media_type(exchange.headers)
        length = exchange.body_length()
        if length == 0 and (kind is None or exchange.method not in BODY_METHODS):
            return
        if kind is None or not is_json(kind):
            if self.settings.require_json:
                raise BodyRefusal(415, "the request body must be JSON (application/json)")
            return
        if charset not in (None, "utf-8", "utf8"):
            raise BodyRefusal(415, "a JSON request body must be UTF-8")
        if length > self.settings.max_body:
            raise BodyRefusal(413, f"the request body is larger than the {self.settings.max_body} bytes "
                                   "that are validated")
        instance = parse_json_body(_read(exchange, self.settings.max_body))
        try:
            failures = list(islice(self.validator.iter_errors(instance), self.settings.max_errors + 1))
        except RecursionError:
            raise BodyRefusal(400, "the request body is nested too deeply to validate") from None
        if failures:
            errors = [self._error(failure) for failure in failures[:self.settings.max_errors]]
            more = " (only the first %d are listed)" % (self.settings.max_errors,) \
                if len(failures) > self.settings.max_errors else ""
            raise BodyRefusal(400, "the request body does not match the schema" + more, errors)

    def on_response(self, exchange):
        """
        Nothing to add on the way back.
        """

    @staticmethod
    def _error(failure):
        message = failure.message
        if len(message) > MESSAGE_LIMIT:
            message = f"does not satisfy the schema's {failure.validator!r} keyword"
        return {"pointer": json_pointer(failure.absolute_path), "message": message}

    def _refused(self, exchange, refusal):
        pointers = [error["pointer"] for error in refusal.errors or ()]
        if self.settings.mode == "report":
            self.log.warn(
                "validate [{filter}]: route {route}: {method} {path}: would refuse with {status}: "
                "{detail} {pointers}", filter=self.name, route=exchange.route,
                method=exchange.method.decode("latin-1"), path=exchange.path.decode("latin-1"),
                status=refusal.status, detail=refusal.detail, pointers=pointers)
            return None
        self.log.debug("validate [{filter}]: refused with {status}: {detail} {pointers}",
                       filter=self.name, status=refusal.status, detail=refusal.detail, pointers=pointers)
        return json_reply(refusal.status, refusal.problem(), refusal.headers, content_type=PROBLEM_JSON)


def build_filter(spec, services):
    """
    Build the validate filter of C{spec} (a
    L{gatelayer.config.model.FilterSpec}), compiling its schema (or its
    OpenAPI document's schemas, L{gatelayer.filters.openapi}) once; only
    response validation needs C{services} (its reactor).
    """
    if spec.settings.openapi is not None:
        from gatelayer.filters.openapi import build_openapi_filter
        return build_openapi_filter(spec, services)
    from jsonschema import Draft202012Validator
    from referencing import Registry

    # An empty registry: references resolve within the schema (and to the
    # drafts' meta-schemas) only; jsonschema's default would fetch URLs.
    validator = Draft202012Validator(spec.settings.schema, registry=Registry())
    return ValidateFilter(spec.name, spec.settings, validator)
