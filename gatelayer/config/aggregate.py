"""
Settings of a route with C{aggregate = ...}: the parts one client request
fans out to, their request targets as templates, and the dependency graph
between parts, all compiled once when the configuration loads.

One part per line: C{NAME: UPSTREAM METHOD TARGET [optional]}. The target
is a template in the transform filter's language (C{$jwt.<claim>},
C{$query.<name>}, C{$header.<name>}, C{$consumer}, C{$remote_addr},
C{$host}, C{$path}, C{$request_id}) plus C{$part.NAME.a.b}: a value of an
earlier part's JSON document (list indexes as numbers), which makes the
part wait for part C{NAME}. Unknown parts and cycles are configuration
errors naming the parts.
"""

import re

from attrs import evolve, frozen

from gatelayer.config import values as v
from gatelayer.config.filter_transform import read_variable, scan_template

__all__ = [
    "AGGREGATE_KEYS", "AggregateSpec", "PART_METHODS", "PartSpec", "PartValue", "ON_PART_ERROR",
    "aggregate_problems", "parse_aggregate", "parse_parts", "parse_target",
]

ON_PART_ERROR = ("null", "omit", "fail")
"""What a failed part does to the answer: its key is null (with an C{errors}
member), its key is left out (still listed in C{errors}), or the whole
answer is a 502 (optional parts are never fatal)."""

PART_METHODS = ("GET",)
"""The methods a part may use: parts are reads, sent without a body, and
safe to retry on another server."""

AGGREGATE_KEYS = ("part_timeout", "deadline", "on_part_error", "part_max_size")
"""The route keys that only apply with C{aggregate}."""

RESERVED_NAMES = ("errors",)
"""Part names the merged document keeps for itself."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PART_VARIABLE = re.compile(r"\$(?:\{part((?:\.[^.}\s]+)+)\}|part((?:\.[A-Za-z0-9_-]+)+))")
# What a literal of a request target may hold: visible ASCII but the
# fragment mark (a space, a control byte or non-ASCII would break the
# request line).
_TARGET_LITERAL = re.compile(r"[\x21-\x22\x24-\x7e]*\Z")
_PLACEHOLDER = b"v"
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@frozen
class PartValue:
    """
    C{$part.NAME.a.b} in a target: a scalar of part C{NAME}'s JSON document.

    @ivar part: the part's name.
    @ivar path: the keys (str) and list indexes (int) leading to the value.
    """

    part: str
    path: tuple

    @property
    def spelling(self):
        """
        How the variable is written, for messages: C{$part.user.id}.
        """
        return "$part." + ".".join([self.part, *(str(p) for p in self.path)])


@frozen
class PartSpec:
    """
    One part of an aggregate route.

    @ivar name: its key in the merged JSON document.
    @ivar upstream: the C{[upstream:NAME]} it is sent to.
    @ivar method: the method (bytes).
    @ivar path: the target's path template: bytes literals,
        L{gatelayer.config.filter_transform.Variable}s and L{PartValue}s.
    @ivar query: the query template (without C{?}) in the same parts, or
        C{()} when the target has none.
    @ivar has_query: whether the target has a C{?}.
    @ivar optional: whether its failure can never fail the whole answer.
    @ivar needs: the indexes of the parts whose documents it reads.
    """

    name: str
    upstream: str
    method: bytes
    path: tuple
    query: tuple = ()
    has_query: bool = False
    optional: bool = False
    needs: tuple = ()


@frozen
class AggregateSpec:
    """
    An aggregate route's fan-out: the parts in configured order and the
    dependency graph compiled from their targets.

    @ivar parts: the L{PartSpec}s, in the order their keys are merged.
    @ivar roots: the indexes of the parts that need no other part: sent at
        once.
    @ivar dependents: for each part index, the indexes of the parts that
        need it.
    @ivar part_timeout: seconds each part may take, from when it is sent.
    @ivar deadline: seconds the whole answer may take.
    @ivar on_part_error: one of L{ON_PART_ERROR}.
    @ivar part_max_size: the largest part body read, in bytes.
    """

    parts: tuple
    roots: tuple
    dependents: tuple
    part_timeout: float = 1.0
    deadline: float = 3.0
    on_part_error: str = "null"
    part_max_size: int = 1024 * 1024


def _part_value(spelled):
    """
    The L{PartValue} of C{.NAME.a.0} (what follows C{$part}).
    """
    names = spelled[1:].split(".")
    if len(names) < 2:
        raise ValueError(f"has $part{spelled}: name a value inside the part, as $part{spelled}.id")
    if not _NAME.match(names[0]):
        raise ValueError(f"has $part{spelled}: {names[0]!r} is not a part name")
    path = tuple(int(n) if n.isdigit() else n for n in names[1:])
    return PartValue(names[0], path)


def _target_variable(text, dollar):
    match = _PART_VARIABLE.match(text, dollar)
    if match is not None:
        return _part_value(match.group(1) or match.group(2)), match.end()
    try:
        variable, end = read_variable(text, dollar)
    except ValueError as e:
        if "unknown variable" in str(e):
            raise ValueError(f"{e}; a part's target also takes $part.NAME.<path>") from None
        raise
    if variable.kind == "path":
        raise ValueError("has $path: a part's target names its own path")
    return variable, end


def parse_target(text):
    """
    Parse a part's request target template into C{(path parts, query
    parts, has_query)}; literals are bytes. Values substituted into it are
    percent-encoded at request time, so only the literal text gives the
    target its structure: it must start with C{/}, hold no space, control
    byte, non-ASCII byte or C{#}, and its path must already be in normal
    form (no dot segments, doubled slashes or needless escapes).

    @raise ValueError: naming what is wrong.
    """
    if not text.startswith("/"):
        raise ValueError("is not a target starting with /")
    parts = scan_template(text, _target_variable)
    for part in parts:
        if isinstance(part, str) and not _TARGET_LITERAL.match(part):
            raise ValueError("has a space, control character, non-ASCII character or # in its literal text")
    path, query, has_query = [], [], False
    for part in parts:
        if isinstance(part, str):
            if not has_query and "?" in part:
                before, _, after = part.partition("?")
                has_query = True
                if before:
                    path.append(before.encode("ascii"))
                if after:
                    query.append(after.encode("ascii"))
                continue
            part = part.encode("ascii")
        (query if has_query else path).append(part)
    _check_normal(path)
    return tuple(path), tuple(query), has_query


def _check_normal(path):
    sample = b"".join(p if isinstance(p, bytes) else _PLACEHOLDER for p in path)
    segments = sample.split(b"/")[1:]
    if b"\\" in sample or any(s in (b".", b"..") for s in segments) or b"" in segments[:-1]:
        raise ValueError("has a path that is not in normal form (dot segments, doubled slashes, backslashes)")
    for match in _ESCAPE.finditer(sample):
        digits = match.group(1)
        if digits is None or int(digits, 16) in _UNRESERVED or int(digits, 16) < 0x20:
            raise ValueError("has a path with a malformed, needless or control percent-escape "
                             f"({match.group(0).decode('ascii')})")


def _part(line):
    name, colon, rest = line.partition(":")
    name = name.strip()
    if not colon or not _NAME.match(name):
        raise ValueError(f"has {line!r}, which is not NAME: UPSTREAM METHOD TARGET [optional] "
                         "(the name a JSON key of letters, digits and _)")
    if name in RESERVED_NAMES:
        raise ValueError(f"has the part {name!r}: that key is kept for the parts' errors")
    words = rest.split()
    if len(words) == 4 and words[3].lower() == "optional":
        words, optional = words[:3], True
    elif len(words) == 3:
        optional = False
    else:
        raise ValueError(f"has the part {name}: {rest.strip()!r} is not UPSTREAM METHOD TARGET [optional]")
    upstream, method, target = words
    if method.upper() not in PART_METHODS:
        raise ValueError(f"has the part {name}: {method!r} is not a part method (" + ", ".join(PART_METHODS) + ")")
    try:
        path, query, has_query = parse_target(target)
    except ValueError as e:
        raise ValueError(f"has the part {name}: {target!r} {e}") from None
    return PartSpec(name=name, upstream=upstream, method=method.upper().encode("ascii"),
                    path=path, query=query, has_query=has_query, optional=optional)


def _references(part):
    return [p for p in part.path + part.query if isinstance(p, PartValue)]


def _cycle(needs, names):
    """
    The first dependency cycle in C{needs} (index -> indexes), as part
    names from a part back to itself, or L{None}.
    """
    state = {}
    for start in range(len(needs)):
        if state.get(start):
            continue
        stack = [(start, iter(needs[start]))]
        trail = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            following = next(pending, None)
            if following is None:
                stack.pop()
                trail.pop()
                state[node] = 2
                continue
            if state.get(following) == 1:
                loop = trail[trail.index(following):] + [following]
                return [names[i] for i in loop]
            if not state.get(following):
                state[following] = 1
                stack.append((following, iter(needs[following])))
                trail.append(following)
    return None


def parse_parts(text):
    """
    Parse the C{aggregate} value into C{(parts, roots, dependents)} (see
    L{AggregateSpec}): one part per line, unique names, every
    C{$part.NAME} naming another part, no cycle.

    @raise ValueError: naming the parts at fault.
    """
    parts = [_part(line.strip()) for line in text.splitlines() if line.strip()]
    if not parts:
        raise ValueError("lists no part")
    index = {}
    for i, part in enumerate(parts):
        if part.name in index:
            raise ValueError(f"has the part {part.name} twice")
        index[part.name] = i
    needs = []
    for part in parts:
        found = []
        for ref in _references(part):
            if ref.part not in index:
                raise ValueError(f"has the part {part.name} reading {ref.spelling}, but no part is called {ref.part}")
            if index[ref.part] not in found:
                found.append(index[ref.part])
        needs.append(tuple(found))
    loop = _cycle(needs, [p.name for p in parts])
    if loop is not None:
        raise ValueError("has a dependency cycle between parts: " + " -> ".join(loop))
    parts = tuple(evolve(part, needs=needs[i]) for i, part in enumerate(parts))
    roots = tuple(i for i, n in enumerate(needs) if not n)
    dependents = tuple(tuple(j for j, n in enumerate(needs) if i in n) for i in range(len(parts)))
    return parts, roots, dependents


def parse_aggregate(reader):
    """
    Read the aggregate keys of a route section from C{reader} (a
    L{gatelayer.config.reader.SectionReader}) into an L{AggregateSpec}, or
    L{None} when the route has no C{aggregate} or it is unusable (the
    problems are recorded on the reader). The aggregate-only keys on a route
    without C{aggregate} are errors.
    """
    if not reader.has("aggregate"):
        for key in AGGREGATE_KEYS:
            if reader.has(key):
                reader.raw(key)
                reader.error(key, "only applies with aggregate")
        return None
    compiled = None
    text = reader.raw("aggregate")
    try:
        compiled = parse_parts(text)
    except ValueError as e:
        # Not quoting the whole (multi-line) value: the message names the part.
        reader.error("aggregate", str(e))
    part_timeout = reader.get("part_timeout", _positive_duration, 1.0)
    deadline = reader.get("deadline", _positive_duration, 3.0)
    on_error = reader.choice("on_part_error", ON_PART_ERROR, "null")
    max_size = reader.get("part_max_size", _positive_size, 1024 * 1024)
    if part_timeout is not None and deadline is not None and deadline < part_timeout:
        reader.error("deadline", f"is shorter than part_timeout ({part_timeout:g}s): "
                     "no part could use its whole time", reader.raw("deadline").strip())
        return None
    if None in (compiled, part_timeout, deadline, on_error, max_size):
        return None
    parts, roots, dependents = compiled
    return AggregateSpec(parts=parts, roots=roots, dependents=dependents, part_timeout=part_timeout,
                         deadline=deadline, on_part_error=on_error, part_max_size=max_size)


def _positive_duration(text):
    seconds = v.parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


def _positive_size(text):
    size = v.parse_size(text)
    if size <= 0:
        raise ValueError("must be more than 0")
    return size


def aggregate_problems(path, route, upstreams):
    """
    The problems of the aggregate route C{route} (a
    L{gatelayer.config.model.RouteSpec}) against the configuration's
    C{upstreams}: every part names an existing C{[upstream:NAME]}.
    """
    return [f"{path} [route:{route.name}] aggregate: the part {part.name} names no section "
            f"[upstream:{part.upstream}]"
            for part in route.aggregate.parts if part.upstream not in upstreams]
