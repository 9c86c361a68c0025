"""
The rules of a shared HTTP cache (RFC 9111), without I/O: which requests
may be answered from the cache, which responses may be stored, how long
they stay fresh, how old they are, and which variant a request selects.

Everything here works on plain values (bytes header values, seconds as
floats from an injected clock), so it is tested table by table.
"""

import re
from email.utils import parsedate_to_datetime

from gatelayer.http.conditional import modified_since, none_match

__all__ = [
    "CacheControl", "DEFAULT_STATUSES", "MAX_DELTA", "UNDERSTOOD_STATUSES", "current_age",
    "delta_seconds", "freshness_lifetime", "http_date", "parse_cache_control", "parse_vary",
    "client_conditionals", "not_modified", "refusal", "response_refusal", "variant_of",
]

MAX_DELTA = 2 ** 31
"""
The largest delta-seconds honoured; a larger number is taken as this one
(RFC 9111 section 1.2.2).
"""

DEFAULT_STATUSES = frozenset([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
"""
The statuses a response may be stored for without explicit freshness (the
heuristically cacheable ones of RFC 9110 section 15.1, less 206: ranges
are not cached).
"""

UNDERSTOOD_STATUSES = DEFAULT_STATUSES | frozenset([302, 303, 307])
"""
Every status the cache stores; those outside L{DEFAULT_STATUSES} only with
explicit freshness (C{s-maxage}, C{max-age} or C{Expires}).
"""

_DIGITS = re.compile(r"[0-9]+\Z")
# One directive: a token name, then optionally = and a token or a quoted
# string (whose commas do not split the list).
_DIRECTIVE = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*"|[^,]*?))?[ \t]*(?:,|\Z)')
_QUOTED_PAIR = re.compile(r"\\(.)")
_DELTA_DIRECTIVES = frozenset(["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"])
_CONFLICT = object()


def delta_seconds(text):
    """
    The seconds of a delta-seconds value (C{str}): digits only, capped at
    L{MAX_DELTA}; L{None} for anything else (a sign, a fraction, spaces,
    another script's digits, nothing).
    """
    if text is None or _DIGITS.match(text) is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 10:
        return MAX_DELTA
    return min(int(digits), MAX_DELTA)


class CacheControl:
    """
    The directives of one message's C{Cache-Control} header lines.

    Names are compared in lower case; a quoted value is unquoted. A
    directive given twice keeps its first value, except a delta-seconds
    directive given twice with different values, which counts as invalid
    (the response is then stale at once, as RFC 9111 section 4.2.1
    allows). An invalid delta-seconds value (C{max-age=abc},
    C{max-age=-1}, C{max-age=1.5}) is L{None} from L{seconds} and also
    makes the response stale: never fresher than its sender meant.

    @ivar directives: a dict of lower-case name (C{str}) to value (C{str},
        or L{None} for a directive without one).
    """

    __slots__ = ("directives",)

    def __init__(self, directives):
        self.directives = directives

    def __contains__(self, name):
        return name in self.directives

    def __repr__(self):
        return "<CacheControl %r>" % (self.directives,)

    def seconds(self, name):
        """
        The delta-seconds of directive C{name}: an C{int}, L{None} when
        the directive is absent, or C{-1} when it is present but invalid
        (bad number, no value, conflicting duplicates).
        """
        if name not in self.directives:
            return None
        value = self.directives[name]
        if value is _CONFLICT:
            return -1
        number = delta_seconds(value)
        return -1 if number is None else number

    def has_field_names(self, name):
        """
        Whether directive C{name} (C{no-cache}, C{private}) came with a
        list of field names (a qualified form, which only removes those
        headers; the cache then treats it as the unqualified form would,
        the conservative reading).
        """
        return self.directives.get(name) not in (None, _CONFLICT)


def parse_cache_control(values):
    """
    Parse the C{Cache-Control} header lines C{values} (a sequence of
    bytes, or L{None}) into a L{CacheControl}. Malformed pieces between
    commas are skipped; the directives around them still count.
    """
    directives = {}
    if not values:
        return CacheControl(directives)
    for raw in values:
        text = raw.decode("latin-1")
        position = 0
        end = len(text)
        while position < end:
            match = _DIRECTIVE.match(text, position)
            if match is None:
                # Skip to the next comma outside a quoted string.
                comma = text.find(",", position)
                if comma < 0:
                    break
                position = comma + 1
                continue
            position = match.end()
            name, value = match.group(1).lower(), match.group(2)
            if value is not None:
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
                else:
                    value = value.strip(" \t")
            if name in directives:
                if name in _DELTA_DIRECTIVES and directives[name] != value:
                    directives[name] = _CONFLICT
                continue
            directives[name] = value
    return CacheControl(directives)


def http_date(value):
    """
    The POSIX time of an HTTP date (bytes), or L{None} when it is not one.
    """
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError, UnicodeDecodeError):
        return None
    if moment is None:
        return None
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def freshness_lifetime(cc, date, expires, default_ttl):
    """
    How many seconds a response stays fresh (RFC 9111 section 4.2.1):
    C{s-maxage}, else C{max-age}, else C{Expires} less C{Date}, else
    C{default_ttl} (the configured heuristic; L{None}: no heuristic, the
    response is stale at once). An invalid value of the directive that
    applies gives 0.

    @param cc: the response's L{CacheControl}.
    @param date: the response's C{Date} (POSIX seconds) or L{None}.
    @param expires: the raw C{Expires} header lines (bytes), or L{None}.
    """
    for name in ("s-maxage", "max-age"):
        seconds = cc.seconds(name)
        if seconds is not None:
            return max(seconds, 0)
    if expires is not None:
        if len(expires) != 1:
            return 0
        moment = http_date(expires[0])
        if moment is None or date is None:
            # An invalid Expires (often "0") means already expired.
            return 0
        return max(0, moment - date)
    return default_ttl if default_ttl is not None else 0


def current_age(date, age, request_time, response_time, now):
    """
    The current age in seconds of a stored response (RFC 9111 section
    4.2.3).

    @param date: its C{Date} (POSIX seconds) or L{None}.
    @param age: its C{Age} header value in seconds, or L{None}.
    @param request_time: when the request that fetched it was sent.
    @param response_time: when its response arrived.
    @param now: the clock's time now.
    """
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = response_time - request_time
    corrected_age = (age or 0) + response_delay
    initial = max(apparent, corrected_age)
    return initial + (now - response_time)


def refusal(status, request_has_authorization, response_cc, has_set_cookie, explicit, default_ttl):
    """
    Why a response to a GET may not be stored (a short reason, C{str}),
    or L{None} when it may be (RFC 9111 section 3).

    @param explicit: whether the response carries explicit freshness or a
        validator-only instruction (C{s-maxage}, C{max-age}, C{Expires},
        C{no-cache}).
    """
    if status not in UNDERSTOOD_STATUSES:
        return "status"
    if "no-store" in response_cc:
        return "no-store"
    if "private" in response_cc:
        return "private"
    shared_ok = "public" in response_cc or "s-maxage" in response_cc
    if request_has_authorization and not (shared_ok or "must-revalidate" in response_cc):
        return "authorization"
    if has_set_cookie and not shared_ok:
        return "set-cookie"
    if not explicit and (status not in DEFAULT_STATUSES or default_ttl is None):
        return "no freshness"
    return None


def parse_vary(values):
    """
    The request header names (lower-case bytes, sorted, without
    duplicates) the C{Vary} header lines C{values} name, or C{b"*"}
    when one is C{*} (the response is then never stored).
    """
    names = set()
    for value in values or ():
        for name in value.split(b","):
            name = name.strip(b" \t").lower()
            if name == b"*":
                return b"*"
            if name:
                names.add(name)
    return tuple(sorted(names))


def variant_of(names, headers):
    """
    The part of a cache key that tells variants apart: the values the
    request's C{headers} (a L{twisted.web.http_headers.Headers}) has for
    the C{Vary} C{names}, each list joined with C{,} and stripped of
    spaces around commas (two spellings of one list select one variant).
    """
    if not names:
        return b""
    parts = []
    for name in names:
        values = headers.getRawHeaders(name)
        if values is None:
            parts.append(b"\x00")
            continue
        items = []
        for value in values:
            items.extend(item.strip(b" \t") for item in value.split(b","))
        parts.append(b",".join(items))
    return b"\n".join(parts)


def response_refusal(status, authorization, headers, default_ttl):
    """
    Why a response of C{status} with C{headers} (lower-case C{(name,
    value)} byte pairs) must not be stored by a shared cache, or L{None}.
    """
    def values(name):
        return [value for key, value in headers if key == name] or None

    response_cc = parse_cache_control(values(b"cache-control"))
    names = {name for name, _ in headers}
    explicit = ("s-maxage" in response_cc or "max-age" in response_cc or "no-cache" in response_cc
                or b"expires" in names)
    reason = refusal(status, authorization, response_cc, b"set-cookie" in names, explicit, default_ttl)
    if reason is None and parse_vary(values(b"vary")) == b"*":
        reason = "vary *"
    if reason is None and "no-cache" in response_cc \
            and not (b"etag" in names or b"last-modified" in names):
        reason = "no-cache without a validator"
    return reason


def client_conditionals(headers):
    """
    The client's own validators, C{(If-None-Match, If-Modified-Since)}
    (bytes or L{None} each), from C{headers} (twisted.web C{Headers}); or
    L{None} when it sent neither.
    """
    inm = headers.getRawHeaders(b"if-none-match")
    ims = headers.getRawHeaders(b"if-modified-since")
    if inm is None and ims is None:
        return None
    return (b", ".join(inm) if inm else None, ims[0] if ims else None)


def not_modified(conditionals, entry):
    """
    Whether the client's validators C{(If-None-Match, If-Modified-Since)}
    match C{entry}, so the answer is 304 (If-None-Match wins when both
    are sent, RFC 9110 section 13.2.2).
    """
    if conditionals is None or entry.status != 200:
        return False
    inm, ims = conditionals
    if inm is not None:
        return entry.etag is not None and none_match(inm.decode("latin-1"), entry.etag)
    if ims is not None and entry.modified is not None:
        return not modified_since(ims.decode("latin-1"), entry.modified)
    return False
