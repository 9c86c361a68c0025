"""
The aggregate terminal: one client request fans out to several upstream
calls in parallel (a part waits only for the parts whose documents its
target reads), and their JSON documents are merged into one answer.

The route's filters ran once, before the fan-out: every part is sent the
headers the exchange holds after them (the identity the gateway vouches
for, the request id), as the proxy would send them. Each part goes through
its upstream's balancing, pool, retries and passive health
(L{gatelayer.upstream.call.BufferedCall}); a part counts only as a 2xx
answer with a JSON media type and a valid JSON body within
C{part_max_size} and C{part_timeout}. What a failed part does is
C{on_part_error}'s choice; at the C{deadline} the answer is made from what
is there, the parts still pending marked C{"timeout"}.
"""

import json

from zope.interface import implementer

from gatelayer.chain import ITerminal
from gatelayer.filters.validate import BodyRefusal, is_json, parse_json_body
from gatelayer.http.headers import upstream_headers
from gatelayer.http.part_target import PartError, render_target
from gatelayer.upstream.call import BufferedCall

__all__ = ["AggregateTerminal", "Aggregation", "PROBLEM_JSON"]

PROBLEM_JSON = b"application/problem+json"
_JSON = b"application/json"
_ANSWERED = frozenset([b"GET", b"HEAD"])

# Request headers a part is never sent: it has no body, its answer must be
# plain JSON the gateway can read (not compressed, not a range, not a 304
# to a client's validator), whatever the client asked for its own answer.
_NOT_FOR_PARTS = frozenset([
    b"content-type", b"content-encoding", b"content-md5", b"expect", b"accept", b"accept-encoding",
    b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
])


def _log_word(reason):
    """
    A failed part's reason as one word of the access log: C{"status 503"}
    is C{503}, C{"missing $jwt.sub"} is C{missing}, C{"not JSON"} is
    C{not_json}.
    """
    if reason.startswith("status "):
        return reason[len("status "):]
    if reason.startswith("missing "):
        return "missing"
    return reason.replace(" ", "_").lower()


@implementer(ITerminal)
class AggregateTerminal:
    """
    The terminal of one aggregate route.

    @ivar spec: the route's L{gatelayer.config.model.RouteSpec} (its
        C{aggregate} holds the parts).
    @ivar upstreams: the part's upstream terminals, by part index
        (L{gatelayer.http.proxy.UpstreamTerminal}: C{pool}, C{state},
        C{spec}).
    @ivar clock: an L{twisted.internet.interfaces.IReactorTime}.
    """

    __slots__ = ("spec", "upstreams", "clock")

    def __init__(self, spec, upstreams, clock):
        """
        @param upstreams: the worker's upstream terminals by upstream name.
        """
        self.spec = spec
        self.upstreams = tuple(upstreams[part.upstream] for part in spec.aggregate.parts)
        self.clock = clock

    def serve(self, exchange):
        """
        Fan out, merge, answer.
        """
        Aggregation(self, exchange).start()


class _Part:
    """
    One part's progress in one aggregation.
    """

    __slots__ = ("call", "timer", "started", "outcome", "document", "status", "duration")

    def __init__(self):
        self.call = None
        self.timer = None
        self.started = None
        self.outcome = None
        self.document = None
        self.status = None
        self.duration = 0.0


class Aggregation:
    """
    One client request's fan-out: the parts in flight, their documents, and
    the answer once every part is over or the deadline passed.
    """

    def __init__(self, terminal, exchange):
        self.terminal = terminal
        self.settings = terminal.spec.aggregate
        self.exchange = exchange
        self.clock = terminal.clock
        self.parts = [_Part() for _ in self.settings.parts]
        self.pending = len(self.parts)
        self.answered = False
        self.deadline = None
        self.headers = None

    def start(self):
        """
        Build the part headers once, arm the deadline, send the parts that
        need no other part.
        """
        exchange = self.exchange
        if exchange.method not in _ANSWERED:
            # Routing sends only GET and HEAD here; a filter letting another
            # method through (a CORS preflight) still gets no fan-out.
            self.answered = True
            body = json.dumps({"type": "about:blank", "title": "Method Not Allowed", "status": 405,
                               "detail": "an aggregate route answers GET and HEAD"},
                              separators=(",", ":")).encode("utf-8")
            exchange.send(405, ((b"content-type", PROBLEM_JSON), (b"allow", b"GET, HEAD")), body)
            return
        raw = exchange.headers
        host = raw.getRawHeaders(b"host")
        pairs = [(name, values) for name, values in raw.getAllRawHeaders()
                 if name.lower() not in _NOT_FOR_PARTS]
        headers = upstream_headers(pairs, exchange.peer_ip, exchange.scheme, host[0] if host else None, b"")
        headers.append((b"Accept", _JSON))
        self.headers = headers
        self.deadline = self.clock.callLater(self.settings.deadline, self._deadline)
        exchange.on_client_lost(self._client_lost)
        for index in self.settings.roots:
            if self.answered:
                break
            self._send(index)

    # -- parts -------------------------------------------------------------

    def _send(self, index):
        spec = self.settings.parts[index]
        part = self.parts[index]
        part.started = self.clock.seconds()
        documents = {self.settings.parts[i].name: self.parts[i].document for i in spec.needs}
        try:
            target = render_target(spec, self.exchange, documents)
        except PartError as e:
            self._over(index, e.reason)
            return
        part.call = BufferedCall(
            self.terminal.upstreams[index], self.clock, spec.method, target, self.headers,
            self.exchange.client_ip, self.settings.part_max_size,
            lambda outcome: self._answered(index, outcome), request_id=self.exchange.request_id)
        part.timer = self.clock.callLater(self.settings.part_timeout, self._timed_out, index)
        part.call.start()

    def _timed_out(self, index):
        part = self.parts[index]
        part.timer = None
        part.call.cancel()
        self._over(index, "timeout")

    def _answered(self, index, outcome):
        part = self.parts[index]
        if part.timer is not None:
            part.timer.cancel()
            part.timer = None
        part.status = outcome.status
        if outcome.error is not None:
            self._over(index, outcome.error)
            return
        try:
            document = self._document(outcome)
        except PartError as e:
            self._over(index, e.reason)
            return
        self._over(index, None, document)

    @staticmethod
    def _document(outcome):
        if not 200 <= outcome.status < 300:
            raise PartError(f"status {outcome.status}")
        kinds = [value for name, value in outcome.headers if name.lower() == b"content-type"]
        kind = kinds[0].decode("latin-1").partition(";")[0].strip().lower() if len(kinds) == 1 else ""
        if not is_json(kind):
            raise PartError("not JSON")
        try:
            return parse_json_body(outcome.body)
        except BodyRefusal:
            raise PartError("not JSON") from None

    def _over(self, index, error, document=None):
        """
        Part C{index} is over: with C{document}, or failed with C{error}.
        Its dependents go (or fail, when it failed); the answer goes when
        nothing is pending or a required part failed under C{fail}.
        """
        part = self.parts[index]
        if part.outcome is not None or self.answered:
            return
        part.outcome = "ok" if error is None else error
        part.document = document
        if part.started is not None:
            part.duration = self.clock.seconds() - part.started
        self.pending -= 1
        spec = self.settings.parts[index]
        if error is not None and self.settings.on_part_error == "fail" and not spec.optional:
            self._fail(index)
            return
        for dependent in self.settings.dependents[index]:
            needs = self.settings.parts[dependent].needs
            if self.answered or self.parts[dependent].outcome is not None:
                continue
            if any(self.parts[i].outcome is None for i in needs):
                continue
            failed = [self.settings.parts[i].name for i in needs if self.parts[i].outcome != "ok"]
            if failed:
                self._over(dependent, f"{failed[0]} failed")
            else:
                self._send(dependent)
        if self.pending == 0 and not self.answered:
            self._answer()

    def _deadline(self):
        """
        Time is up: every part still pending (sent or waiting for another
        part) is a timeout, and the answer goes with what is there.
        """
        self.deadline = None
        self._stop("timeout")
        self.pending = 0
        if self.settings.on_part_error == "fail":
            for index, spec in enumerate(self.settings.parts):
                if not spec.optional and self.parts[index].outcome != "ok":
                    self._fail(index)
                    return
        self._answer()

    def _stop(self, outcome):
        """
        Cancel what is still running (calls, part timers, the deadline);
        the parts not over yet end with C{outcome}.
        """
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        now = self.clock.seconds()
        for part in self.parts:
            if part.timer is not None:
                part.timer.cancel()
                part.timer = None
            if part.outcome is None:
                if part.call is not None:
                    part.call.cancel()
                part.outcome = outcome
                if part.started is not None:
                    part.duration = now - part.started

    def _client_lost(self):
        if self.answered:
            return
        self.answered = True
        self._stop("cancelled")
        self._note_log()

    # -- the answer --------------------------------------------------------

    def _note_log(self):
        """
        The parts' outcomes and durations for the client request's access
        log line: C{user:200:12ms,orders:503:30ms,recs:timeout:800ms}.
        """
        request = self.exchange.request
        routing = getattr(request, "routing", None)
        if routing is None:
            return
        words = []
        for spec, part in zip(self.settings.parts, self.parts):
            if part.outcome == "ok":
                word = str(part.status)
            else:
                word = _log_word(part.outcome)
            words.append("%s:%s:%dms" % (spec.name, word, round(part.duration * 1000)))
        routing.log_fields = (("parts", ",".join(words)),)

    def _fail(self, index):
        self.answered = True
        self._stop("cancelled")
        self._note_log()
        name = self.settings.parts[index].name
        reason = self.parts[index].outcome
        body = json.dumps({
            "type": "about:blank", "title": "Bad Gateway", "status": 502,
            "detail": f"the part {name} failed: {reason}", "part": name, "reason": reason,
        }, separators=(",", ":")).encode("utf-8")
        self.exchange.send(502, ((b"content-type", PROBLEM_JSON),), body)

    def _answer(self):
        self.answered = True
        self._stop("cancelled")
        self._note_log()
        drop = self.settings.on_part_error == "omit"
        merged = {}
        errors = {}
        for spec, part in zip(self.settings.parts, self.parts):
            if part.outcome == "ok":
                merged[spec.name] = part.document
                continue
            errors[spec.name] = part.outcome
            if not drop:
                merged[spec.name] = None
        if errors:
            merged["errors"] = errors
        # ASCII with escapes: a part's string may hold a lone surrogate
        # (valid JSON escape, not encodable as UTF-8).
        body = json.dumps(merged, separators=(",", ":")).encode("ascii")
        exchange = self.exchange
        headers = ((b"content-type", _JSON),)
        if exchange.method == b"HEAD":
            exchange.respond(200, headers, len(body))
            exchange.finish()
        else:
            exchange.send(200, headers, body)
