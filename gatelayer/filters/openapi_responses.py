"""
Response validation in report mode (C{responses = report}): the JSON body
of a response is copied as it passes (unchanged, never held back), and
once it is complete it is checked against the operation's response schema
on a later reactor turn, so the check never delays the response. Failures
are logged, at most once per L{REPORT_INTERVAL} per operation and status,
with the route, the status and the JSON pointers.
"""

import json
from itertools import islice

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IBodyFilter
from gatelayer.filters.openapi import OpenAPIFilter, schema_failures, select_media
from gatelayer.filters.validate import BodyRefusal, is_json, parse_json_body

__all__ = ["REPORT_INTERVAL", "OpenAPIResponseFilter", "ResponseCopy"]

REPORT_INTERVAL = 10.0
"""A response problem of one operation and status is logged at most once
per this many seconds; those in between are counted in the next line."""

_SKIPPED_STATUSES = frozenset((204, 304))
_MAX_KEYS = 1000


class ResponseCopy:
    """
    The copy of one response body being collected for validation.

    @ivar validator: the compiled schema of its status and media type.
    @ivar chunks: the bytes so far; L{None} once it went over the limit.
    """

    __slots__ = ("operation", "status", "validator", "chunks", "size")

    def __init__(self, operation, status, validator):
        self.operation = operation
        self.status = status
        self.validator = validator
        self.chunks = []
        self.size = 0


@implementer(IBodyFilter)
class OpenAPIResponseFilter(OpenAPIFilter):
    """
    L{OpenAPIFilter} that also reports responses which do not match the
    document (it never changes or blocks them).
    """

    log = Logger()
    preserves_length = True

    def __init__(self, name, settings, api, clock, interval=REPORT_INTERVAL):
        """
        @param clock: the reactor (L{IReactorTime}): the check runs on a
            later turn, and the log is throttled by its time.
        """
        super().__init__(name, settings, api)
        self.clock = clock
        self.interval = interval
        self.key = f"validate.{name}.response"
        self._quiet_until = {}
        self._suppressed = {}

    def passed(self, exchange, operation):
        """
        Remember C{operation} for the response.
        """
        exchange.context[self.key] = operation

    def on_response(self, exchange):
        """
        Decide, from the response head, whether its body is copied.
        """
        operation = exchange.context.pop(self.key, None)
        if operation is None:
            return
        try:
            self._start(exchange, operation)
        except Exception:
            self.log.failure("validate [{filter}]: response check failed", filter=self.name)

    def _start(self, exchange, operation):
        status = exchange.status
        if exchange.method == b"HEAD" or status in _SKIPPED_STATUSES or status < 200:
            return
        declared = operation.response_media(status)
        if declared is None:
            self._report(exchange, operation, status, f"status {status} is not declared", [])
            return
        headers = exchange.request.responseHeaders
        kinds = headers.getRawHeaders(b"content-type")
        if not declared or not kinds:
            return
        kind = kinds[0].decode("latin-1").partition(";")[0].strip().lower()
        chosen = select_media(declared, kind)
        if chosen is None:
            self._report(exchange, operation, status, f"the media type {kind} is not declared for status "
                                                      f"{status}", [])
            return
        if chosen[1] is None or not is_json(kind):
            return
        encoding = headers.getRawHeaders(b"content-encoding")
        if encoding and encoding[0].strip().lower() != b"identity":
            self._report(exchange, operation, status, "not checked: the body is content-encoded", [])
            return
        length = headers.getRawHeaders(b"content-length")
        if length and length[0].isdigit() and int(length[0]) > self.settings.max_body:
            self._report(exchange, operation, status, f"not checked: the body is larger than max_body "
                                                      f"({self.settings.max_body} bytes)", [])
            return
        exchange.context[self.key] = ResponseCopy(operation, status, chosen[1])

    def on_response_body(self, exchange, data):
        """
        Copy C{data} (up to C{max_body} bytes) and pass it on unchanged.
        """
        copy = exchange.context.get(self.key)
        if copy is not None and copy.chunks is not None:
            copy.size += len(data)
            if copy.size > self.settings.max_body:
                copy.chunks = None
                self._report(exchange, copy.operation, copy.status, "not checked: the body is larger than "
                             f"max_body ({self.settings.max_body} bytes)", [])
            else:
                copy.chunks.append(data)
        return data

    def on_response_end(self, exchange):
        """
        The body is complete: check the copy on a later reactor turn.
        """
        copy = exchange.context.pop(self.key, None)
        if copy is not None and copy.chunks is not None:
            fields = {"route": exchange.route, "method": exchange.method.decode("latin-1"),
                      "path": exchange.path.decode("latin-1")}
            self.clock.callLater(0, self._check, copy, b"".join(copy.chunks), fields)
        return b""

    def _check(self, copy, data, fields):
        try:
            try:
                instance = parse_json_body(data)
            except BodyRefusal as refusal:
                detail = refusal.detail.replace("the request body", "the response body")
                self._log(copy.operation, copy.status, fields, detail, [])
                return
            errors = list(islice(schema_failures(copy.validator, instance, ""), self.settings.max_errors))
            if errors:
                self._log(copy.operation, copy.status, fields,
                          "the response body does not match the API description", errors)
        except Exception:
            self.log.failure("validate [{filter}]: response check failed", filter=self.name)

    def _report(self, exchange, operation, status, detail, errors):
        self._log(operation, status, {"route": exchange.route, "method": exchange.method.decode("latin-1"),
                                      "path": exchange.path.decode("latin-1")}, detail, errors)

    def _log(self, operation, status, fields, detail, errors):
        key = (operation.label, status, detail)
        now = self.clock.seconds()
        if now < self._quiet_until.get(key, 0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._quiet_until) >= _MAX_KEYS:
            # Upstream-chosen details (media types) must not grow this
            # without bound: forget the keys whose quiet time is over.
            for old in [k for k, until in self._quiet_until.items() if until <= now]:
                del self._quiet_until[old]
                self._suppressed.pop(old, None)
        self._quiet_until[key] = now + self.interval
        suppressed = self._suppressed.pop(key, 0)
        listed = "; ".join(f"{json.dumps(e['pointer'])}: {e['message']}" for e in errors)
        self.log.warn(
            "validate [{filter}]: route {route}: {method} {path} ({operation}): response {status}: {detail}"
            + (": {errors}" if errors else "") + (" ({suppressed} similar not logged since)" if suppressed else ""),
            filter=self.name, operation=operation.label, status=status, detail=detail, errors=listed,
            pointers=[e["pointer"] for e in errors], suppressed=suppressed, **fields)
