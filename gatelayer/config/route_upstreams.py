"""
The upstream side of a C{[route:NAME]} section: C{upstream} (one upstream,
or versions with weights for a canary split), C{split_key} and C{mirror}.

Parsing is per key (plain functions raising L{ValueError}, wrapped by the
section reader); what needs the other sections (every version and the
shadow is an C{[upstream:NAME]}, a C{jwt:CLAIM} key needs a jwt filter on
the route) is checked by L{route_upstream_problems} once everything is read.
"""

import math
import re

from gatelayer.config import values as v

__all__ = [
    "SPLIT_KEY_KINDS", "parse_mirror", "parse_split_key", "parse_upstream",
    "route_upstream_problems",
]

SPLIT_KEY_KINDS = ("ip", "header", "cookie", "jwt")
"""What a split key may be read from: C{ip}, C{header:NAME}, C{cookie:NAME}, C{jwt:CLAIM}."""

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_WEIGHT = re.compile(r"\d+\Z")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%\Z")
_MAX_WEIGHT = 1000000


def parse_upstream(text):
    """
    Parse a route's C{upstream}: C{NAME} (one upstream) or
    C{NAME:WEIGHT, NAME:WEIGHT, ...} (versions of a weighted split).

    @return: C{(name, ())} for one upstream, C{(None, ((name, weight), ...))}
        for a split. A split of a single C{NAME:WEIGHT} (weight above 0) is
        the same as C{NAME}: it costs nothing per request.
    @raise ValueError: naming what is wrong.
    """
    items = v.parse_list(text)
    if not items:
        raise ValueError("names no upstream")
    if len(items) == 1 and ":" not in items[0]:
        return items[0], ()
    versions = []
    for item in items:
        name, sep, weight = item.rpartition(":")
        name, weight = name.strip(), weight.strip()
        if not sep or not name:
            raise ValueError(f"has {item!r}, which is not NAME:WEIGHT (e.g. v1:90, v2:10)")
        if not _WEIGHT.match(weight) or int(weight) > _MAX_WEIGHT:
            raise ValueError(
                f"has {item!r}, whose weight is not a whole number from 0 to {_MAX_WEIGHT}")
        if any(name == known for known, _ in versions):
            raise ValueError(f"names {name!r} twice")
        versions.append((name, int(weight)))
    if sum(weight for _, weight in versions) == 0:
        raise ValueError("gives every version weight 0: at least one must get traffic")
    if len(versions) == 1:
        return versions[0][0], ()
    return None, tuple(versions)


def parse_split_key(text):
    """
    Parse a route's C{split_key}: C{ip}, C{header:NAME}, C{cookie:NAME} or
    C{jwt:CLAIM}.

    @return: C{(kind, name)}; C{name} is L{None} for C{ip}, the lower-cased
        header name for C{header}, and as written for C{cookie} and C{jwt}.
    """
    kind, sep, name = text.strip().partition(":")
    kind, name = kind.strip().lower(), name.strip()
    if kind not in SPLIT_KEY_KINDS:
        raise ValueError("is not ip, header:NAME, cookie:NAME or jwt:CLAIM")
    if kind == "ip":
        if sep:
            raise ValueError("takes no name: ip is the client address")
        return ("ip", None)
    if not name:
        raise ValueError(f"needs a name after {kind}:")
    if kind in ("header", "cookie") and not _TOKEN.match(name):
        raise ValueError(f"has {name!r}, which is not a {kind} name")
    if kind == "header":
        name = name.lower()
    return (kind, name)


def parse_mirror(text):
    """
    Parse a route's C{mirror}: C{NAME} or C{NAME P%} (a share over 0 and at
    most 100 percent of the requests; 100 when omitted).

    @return: C{(name, percent)}.
    """
    words = text.split()
    if not words or len(words) > 2:
        raise ValueError("is not NAME or NAME P% (e.g. shadow 10%)")
    percent = 100.0
    if len(words) == 2:
        match = _PERCENT.match(words[1])
        if match is None:
            raise ValueError(f"has {words[1]!r}, which is not a percentage like 10%")
        percent = float(match.group(1))
        if not 0 < percent <= 100 or not math.isfinite(percent):
            raise ValueError(f"has {words[1]!r}: the share must be over 0% and at most 100%")
    return words[0], percent


def route_upstream_problems(path, route, upstreams, filters):
    """
    The problems of C{route} (a L{gatelayer.config.model.RouteSpec}) that
    need the other sections: every upstream it names exists, and a
    C{jwt:CLAIM} split key has a jwt filter on the route to validate it.

    @param upstreams: the C{[upstream:NAME]} specs by name.
    @param filters: the C{[filter:NAME]} specs by name.
    """
    where = f"{path} [route:{route.name}]"
    problems = []
    if route.upstream is not None and route.upstream not in upstreams:
        problems.append(f"{where} upstream: no section [upstream:{route.upstream}]")
    for name, _ in route.split:
        if name not in upstreams:
            problems.append(f"{where} upstream: no section [upstream:{name}]")
    if route.mirror is not None and route.mirror not in upstreams:
        problems.append(f"{where} mirror: no section [upstream:{route.mirror}]")
    kind, claim = route.split_key
    if kind == "jwt" and not any(
            name in filters and filters[name].type == "jwt" for name in route.filters):
        problems.append(
            f"{where} split_key: 'jwt:{claim}' needs a jwt filter in the route's filters "
            "(the claim must come from a validated token)")
    return problems
