"""
A route's request conditions: C{match_header}, C{match_query} and
C{match_cookie}, parsed and compiled once when the configuration loads.

Each key holds one condition per line (INI continuation lines); a route
matches only when all of its conditions hold. A condition is one of::

    Name: value     match_header: the header's value is exactly C{value}
    name=value      match_query, match_cookie: the value is exactly C{value}
    Name / name     present (any value, even an empty one)
    !Name / !name   absent
    Name: ~regex    the value matches C{regex} in full (also C{name=~regex})

Header names are compared case-insensitively (they are kept in lower case);
values, query names and cookie names are compared exactly. What a condition
is compared with (a header sent several times, a repeated query parameter,
percent-escapes) is the routing table's business: see
L{gatelayer.routing.conditions}.
"""

import re

from attrs import frozen

__all__ = [
    "CONDITION_KEYS", "MatchCondition", "hidden_header_problems", "parse_conditions", "route_conditions",
]

CONDITION_KEYS = (("match_header", "header"), ("match_query", "query"), ("match_cookie", "cookie"))
"""The route keys holding conditions, each with the part of the request it tests."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_QUERY_NAME = re.compile(r"[^\s&=#%+\x00-\x1f\x7f]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONSUMER_HEADER = b"x-consumer"
# Headers a condition may not name, with the way to do what was meant.
_RESERVED_HEADERS = {
    b"host": "the canonical host is routed on with host = ...",
    b"cookie": "use match_cookie for a cookie's value",
}


@frozen
class MatchCondition:
    """
    One condition of a route.

    @ivar source: C{"header"}, C{"query"} or C{"cookie"}.
    @ivar name: what is tested (bytes): a header name in lower case, a
        query parameter's decoded name, a cookie name.
    @ivar test: C{"equals"}, C{"present"}, C{"absent"} or C{"regex"}.
    @ivar value: the exact value (bytes) for C{"equals"}, the compiled
        bytes pattern for C{"regex"}, else L{None}.
    """

    source: str
    name: bytes
    test: str
    value: object = None

    @property
    def text(self):
        """
        The condition as it is written in C{gate.ini} (a header name in
        lower case), for C{/status} and messages.
        """
        name = self.name.decode("utf-8", "replace")
        if self.test == "absent":
            return "!" + name
        if self.test == "present":
            return name
        sep = ": " if self.source == "header" else "="
        value = self.value.pattern if self.test == "regex" else self.value
        value = value.decode("utf-8", "replace")
        return name + sep + ("~" + value if self.test == "regex" else value)


def parse_conditions(source, text):
    """
    Parse the conditions of one key: one per non-blank line of C{text}.

    @param source: C{"header"}, C{"query"} or C{"cookie"}.
    @return: C{(conditions, problems)}: the L{MatchCondition}s of the good
        lines, in their order, and C{(line, message)} for each bad line.
    """
    conditions = []
    problems = []
    seen = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            condition = _parse_line(source, line)
        except ValueError as e:
            problems.append((line, str(e)))
            continue
        if condition.name in seen:
            problems.append((line, "names a " + _NOUNS[source] + " that an earlier line already names "
                                   "(one condition per name; all of a route's conditions must hold)"))
            continue
        seen.add(condition.name)
        conditions.append(condition)
    return tuple(conditions), problems


_NOUNS = {"header": "header", "query": "query parameter", "cookie": "cookie"}


def _parse_line(source, line):
    negated = line.startswith("!")
    if negated:
        line = line[1:].strip()
    if source == "header":
        name, sep, value = line.partition(":")
    else:
        name, sep, value = line.partition("=")
    name, value = name.strip(), value.strip()
    noun = _NOUNS[source]
    if not name:
        raise ValueError(f"has no {noun} name")
    if source == "query":
        if _QUERY_NAME.match(name) is None:
            raise ValueError(f"has {name!r}, which is not a query parameter name (write it decoded, "
                             "without spaces, &, =, #, % or +)")
    elif _TOKEN.match(name) is None:
        raise ValueError(f"has {name!r}, which is not a {noun} name (letters, digits and !#$%&'*+.^_`|~-)")
    if source == "header":
        name = name.lower()
        if name.encode("ascii") in _RESERVED_HEADERS:
            raise ValueError(f"cannot test {name}: {_RESERVED_HEADERS[name.encode('ascii')]}")
    encoded = name.encode("utf-8")
    if negated:
        if sep:
            raise ValueError(f"tests that the {noun} is absent, which takes no value")
        return MatchCondition(source, encoded, "absent")
    if not sep:
        return MatchCondition(source, encoded, "present")
    if value.startswith("~"):
        pattern = value[1:]
        try:
            compiled = re.compile(pattern.encode("utf-8"))
        except re.error as e:
            raise ValueError(f"has a bad regular expression {pattern!r}: {e}") from None
        return MatchCondition(source, encoded, "regex", compiled)
    if not value:
        mark = ":" if source == "header" else "="
        raise ValueError(f"has no value after {mark!r} (write the name alone to require only that the "
                         f"{noun} is present)")
    if _CONTROL.search(value) or (source == "cookie" and ";" in value):
        raise ValueError("has a value with a control character" +
                         (" or ;" if source == "cookie" else ""))
    return MatchCondition(source, encoded, "equals", value.encode("utf-8"))


def route_conditions(reader):
    """
    The conditions of the route read by C{reader} (a
    L{gatelayer.config.reader.SectionReader}): C{match_header}, then
    C{match_query}, then C{match_cookie}, each in line order. A bad line is
    recorded as a problem naming the key and the line.
    """
    conditions = []
    for key, source in CONDITION_KEYS:
        text = reader.get(key, None, None)
        if text is None:
            continue
        parsed, problems = parse_conditions(source, text)
        for line, message in problems:
            reader.error(key, message, line)
        conditions.extend(parsed)
    return tuple(conditions)


def hidden_header_problems(path, routes, gateway, filters):
    """
    Problems with header conditions that could never hold because the
    gateway removes the header before routing: a name with an underscore
    while C{[gateway] underscore_headers} is C{drop} or C{reject}, and the
    identity headers the gateway vouches for (C{X-Consumer} and the headers
    of every C{forward_claims}) in any spelling.

    @param gateway: the L{gatelayer.config.model.GatewaySpec}.
    @param filters: the filter specs by name.
    """
    names = [CONSUMER_HEADER]
    for spec in filters.values():
        names.extend(header for _, header in getattr(spec.settings, "forward_claims", ()) or ())
    identity = {name.upper().replace(b"-", b"_") for name in names}
    problems = []
    for route in routes:
        for condition in route.conditions:
            if condition.source != "header":
                continue
            shown = condition.name.decode("ascii")
            if condition.name.upper().replace(b"-", b"_") in identity:
                problems.append(
                    f"{path} [route:{route.name}] match_header: {shown!r} is an identity header the gateway "
                    "sets itself and removes from every request, so the condition could never hold")
            elif b"_" in condition.name and gateway.underscore_headers != "allow":
                problems.append(
                    f"{path} [route:{route.name}] match_header: {shown!r} has an underscore, and "
                    f"[gateway] underscore_headers = {gateway.underscore_headers} removes such headers "
                    "before routing")
    return problems
