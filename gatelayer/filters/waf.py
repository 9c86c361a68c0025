"""
The C{waf} filter: each request (request line, headers and a bounded body)
is run through the OWASP Core Rule Set by libmodsecurity
(L{gatelayer.waf}) before anything else of the route sees it.

In C{block} mode a request the rules refuse gets a 403 problem+json that
names nothing of the rules; the log line (a warning) has the rule ids and
messages, the client, the route and the request id. In C{detect} mode the
same line says the request would have been refused, and it passes. A body
larger than C{max_body} is refused with 413 in block mode (a body the WAF
cannot read whole is not let through unread); in detect mode it passes
with only its request line and headers inspected. Responses are not
inspected.
"""

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IFilter, json_reply
from gatelayer.filters.validate import PROBLEM_JSON
from gatelayer.waf import WafEngine, WafRulesError, WafUnavailable, rules_text

__all__ = ["REFUSAL", "WafFilter", "build_engine", "build_filter", "list_problems", "request_id"]

REFUSAL = json_reply(403, {
    "type": "about:blank", "title": "Forbidden", "status": 403,
    "detail": "the request was refused by the web application firewall",
}, content_type=PROBLEM_JSON)
"""The answer to every refused request: the same whatever rule refused it."""

REQUEST_ID_CONTEXT = "request_id"
"""Where a filter that assigns request ids leaves one in C{exchange.context}."""


def _too_large(limit):
    return json_reply(413, {
        "type": "about:blank", "title": "Content Too Large", "status": 413,
        "detail": f"the request body is larger than the {limit} bytes the web application firewall inspects",
    }, content_type=PROBLEM_JSON)


def request_id(exchange):
    """
    The request's id for the log: the gateway's (the exchange's
    C{request_id}); for an exchange without one, the one a filter set, else
    the client's C{X-Request-Id}, else C{"-"}.
    """
    if exchange.request_id:
        return exchange.request_id
    known = exchange.context.get(REQUEST_ID_CONTEXT)
    if known:
        return known.encode("utf-8") if isinstance(known, str) else known
    values = exchange.headers.getRawHeaders(b"x-request-id")
    return values[0][:128] if values else b"-"


@implementer(IFilter)
class WafFilter:
    """
    Run requests through a L{gatelayer.waf.WafEngine}; refuse or report
    what its rules refuse.
    """

    log = Logger()

    def __init__(self, name, settings, engine):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_waf.WafSettings}.
        @param engine: the L{gatelayer.waf.WafEngine} with its rules.
        """
        self.name = name
        self.settings = settings
        self.engine = engine
        self.blocking = settings.mode == "block"
        self._too_large = _too_large(settings.max_body)

    def on_request(self, exchange):
        """
        L{None} when the rules let the request pass (or in detect mode),
        else the 403 L{Reply} (413 for a body too large to inspect).
        """
        length = exchange.body_length()
        body = None
        if length > self.settings.max_body:
            self.log.warn("waf [{filter}]: route {route}: client {client}: request {request_id}: "
                          "the body of {length} bytes is larger than max_body ({limit}): {action}",
                          filter=self.name, route=exchange.route, client=exchange.client_ip,
                          request_id=request_id(exchange).decode("latin-1"), length=length,
                          limit=self.settings.max_body,
                          action="refused" if self.blocking else "body not inspected")
            if self.blocking:
                return self._too_large
        elif length:
            content = exchange.body
            content.seek(0)
            try:
                body = content.read(self.settings.max_body)
            finally:
                content.seek(0)
        uri = exchange.path + (b"?" + exchange.query if exchange.query else b"")
        rid = request_id(exchange)
        verdict = self.engine.inspect(
            exchange.client_ip, exchange.method, uri, list(_header_pairs(exchange.headers)), body, rid)
        if not verdict.refused:
            if verdict.rule_ids:
                self.log.debug("waf [{filter}]: route {route}: client {client}: request {request_id}: "
                               "matched rules {rules} below the threshold", filter=self.name,
                               route=exchange.route, client=exchange.client_ip,
                               request_id=rid.decode("latin-1"), rules=_ids(verdict))
            return None
        self.log.warn("waf [{filter}]: route {route}: client {client}: request {request_id}: {outcome} "
                      "by rules {rules}: {messages}", filter=self.name, route=exchange.route,
                      client=exchange.client_ip, request_id=rid.decode("latin-1"),
                      outcome="refused" if self.blocking else "would be refused (detect mode)",
                      rules=_ids(verdict), messages="; ".join(m for m in verdict.messages if m),
                      rule_ids=verdict.rule_ids)
        return REFUSAL if self.blocking else None

    def on_response(self, exchange):
        """
        Nothing to add on the way back.
        """


def _ids(verdict):
    return ", ".join(str(rule_id) for rule_id in verdict.rule_ids)


def _header_pairs(headers):
    for name, values in headers.getAllRawHeaders():
        for value in values:
            yield name, value


def build_engine(spec):
    """
    Compile the rules of the C{waf} filter C{spec} (a
    L{gatelayer.config.model.FilterSpec}).

    @raise WafRulesError: the rules do not load.
    @raise WafUnavailable: libmodsecurity is not installed.
    """
    return WafEngine(rules_text(spec.settings))


def _problem(spec, config_path):
    key = " rules" if spec.settings.rules_file is not None else ""
    try:
        engine = build_engine(spec)
    except WafUnavailable as e:
        from gatelayer.config.filter_waf import INSTALL_HINT
        return f"{config_path} [filter:{spec.name}]: {e}: {INSTALL_HINT}"
    except WafRulesError as e:
        return f"{config_path} [filter:{spec.name}]{key}: ModSecurity cannot load the rules: {e}"
    engine.close()
    return None


def list_problems(config):
    """
    Every C{waf} filter of C{config} whose rules do not compile, each a
    sentence naming config file, section and the library's message (which
    names the rule file and line).
    """
    problems = []
    for spec in config.filters.values():
        if spec.type == "waf":
            problem = _problem(spec, config.path)
            if problem is not None:
                problems.append(problem)
    return problems


def build_filter(spec, services):
    """
    Build the WAF filter of C{spec}, compiling its rules once for this
    worker.

    @raise gatelayer.config.ConfigError: the rules do not load.
    """
    config_path = "gate.ini" if services.config is None else services.config.path
    try:
        engine = build_engine(spec)
    except (WafRulesError, WafUnavailable):
        from gatelayer.config import ConfigError
        raise ConfigError([_problem(spec, config_path)]) from None
    return WafFilter(spec.name, spec.settings, engine)
