"""
Settings of a C{[filter:NAME] type = cors} section, and the origin syntax
both the settings and the runtime filter use.

An origin is C{scheme://host[:port]} and nothing else: no path, no user, no
query. Origins are compared in one canonical form (scheme and host in lower
case, the scheme's default port dropped), so the comparison is exact on
scheme, host and port and never a substring test: neither
C{https://app.example.com.evil.test} nor C{https://app.example.com:8443}
is C{https://app.example.com}.
"""

import re

from attrs import frozen

from gatelayer.config import values as v

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://([^/?#@:\[\]\s]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?\Z", re.I)
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}

DEFAULT_METHODS = ("GET", "HEAD", "POST")
"""The methods a preflight may ask for when C{methods} is not set."""

DEFAULT_MAX_AGE = 600
"""How long (seconds) browsers may cache a preflight answer by default: 10 minutes."""


def canonical_origin(text):
    """
    The canonical form of the origin C{text} (C{scheme://host[:port]}, the
    scheme and host lower-cased, a default port dropped), or L{None} when
    it is not a serialized origin: a path, a user, a query, a trailing dot,
    an empty label or a port out of range all make it L{None}.
    """
    match = _ORIGIN.match(text)
    if match is None:
        return None
    scheme, host, port = match.groups()
    scheme = scheme.lower()
    host = host.lower()
    if not host.startswith("["):
        if not all(_LABEL.match(label) for label in host.split(".")):
            return None
    if port is not None:
        number = int(port)
        if not 0 < number <= 65535:
            return None
        if _DEFAULT_PORTS.get(scheme) != number:
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


@frozen
class OriginRule:
    """
    One entry of C{origins}.

    @ivar kind: C{"exact"} (C{value} is a canonical origin, or C{"null"}),
        C{"wildcard"} (C{value} is C{(scheme, ".domain", port suffix)}) or
        C{"regex"} (C{value} is a compiled pattern that must match the whole
        canonical origin).
    """

    kind: str
    value: object

    def matches(self, origin):
        """
        Whether the canonical origin C{origin} (or C{"null"}) is allowed by
        this rule.
        """
        if self.kind == "exact":
            return origin == self.value
        if origin == "null":
            return False
        if self.kind == "wildcard":
            scheme, domain, port = self.value
            prefix = scheme + "://"
            if not origin.startswith(prefix):
                return False
            authority = origin[len(prefix):]
            host = authority[:len(authority) - len(port)] if port else authority
            if port and not authority.endswith(port):
                return False
            if ":" in host or host.startswith("["):
                return False
            return host.endswith(domain) and len(host) > len(domain)
        return self.value.fullmatch(origin) is not None


@frozen
class CorsSettings:
    """
    A CORS filter's settings.

    @ivar any_origin: C{origins = *}: every origin except C{null} is
        allowed, answered with C{Access-Control-Allow-Origin: *}.
    @ivar origins: the L{OriginRule}s, in the listed order.
    @ivar methods: the methods a preflight may ask for (upper case).
    @ivar headers: the request headers a preflight may ask for (lower case).
    @ivar expose_headers: the response headers scripts may read.
    @ivar credentials: whether to send C{Access-Control-Allow-Credentials: true}.
    @ivar max_age: seconds browsers may cache a preflight answer.
    """

    any_origin: bool = False
    origins: tuple = ()
    methods: tuple = DEFAULT_METHODS
    headers: tuple = ()
    expose_headers: tuple = ()
    credentials: bool = False
    max_age: int = DEFAULT_MAX_AGE


def parse_origin(text):
    """
    Parse one C{origins} entry (other than C{*}) into an L{OriginRule}.

    @raise ValueError: it is neither C{null}, an origin, a C{*.} wildcard
        origin nor a valid C{regex:} pattern.
    """
    if text == "null":
        return OriginRule("exact", "null")
    if text.startswith("regex:"):
        try:
            return OriginRule("regex", re.compile(text[len("regex:"):]))
        except re.error as e:
            raise ValueError(f"is not a valid regular expression ({e})") from None
    match = _ORIGIN.match(text)
    if match is not None and match.group(2).startswith("*."):
        domain = match.group(2)[1:]
        canonical = canonical_origin(text.replace("*.", "wildcard.", 1))
        if canonical is None:
            raise ValueError("is not an origin (scheme://host[:port], no path, user or query)")
        if domain.count(".") < 2:
            raise ValueError("is a wildcard too wide: use *. before a domain of two labels or more")
        scheme, _, authority = canonical.partition("://")
        host, colon, port = authority.partition(":")
        return OriginRule("wildcard", (scheme, host[len("wildcard"):], colon + port))
    canonical = canonical_origin(text)
    if canonical is None or "*" in text:
        raise ValueError("is not an origin (scheme://host[:port], no path, user or query)")
    return OriginRule("exact", canonical)


def _tokens(upper):
    def parse(text):
        items = v.parse_list(text)
        for item in items:
            if item == "*" or not _TOKEN.match(item):
                raise ValueError(f"has {item!r}, which is not a name (list them; * is not supported)")
        return tuple(item.upper() if upper else item.lower() for item in items)
    return parse


def parse_filter(reader):
    """
    Read a C{type = cors} section from C{reader} into L{CorsSettings},
    recording every problem on the reader.
    """
    credentials = reader.get("credentials", v.parse_bool, False)
    entries = reader.get("origins", v.parse_list)
    any_origin = False
    rules = []
    for entry in entries or ():
        if entry == "*":
            any_origin = True
            if credentials:
                reader.error("origins", "is not allowed with credentials = yes "
                             "(browsers refuse it): list the origins", entry)
            if len(entries) > 1:
                reader.error("origins", "cannot be combined with other origins", entry)
            continue
        try:
            rules.append(parse_origin(entry))
        except ValueError as e:
            reader.error("origins", str(e), entry)
    methods = reader.get("methods", _tokens(True), DEFAULT_METHODS)
    headers = reader.get("headers", _tokens(False), ())
    expose = reader.get("expose_headers", _tokens(False), ())
    max_age = reader.get("max_age", v.parse_duration, DEFAULT_MAX_AGE)
    return CorsSettings(
        any_origin=any_origin,
        origins=tuple(rules),
        methods=methods or DEFAULT_METHODS,
        headers=headers or (),
        expose_headers=expose or (),
        credentials=bool(credentials),
        max_age=DEFAULT_MAX_AGE if max_age is None else int(max_age),
    )
