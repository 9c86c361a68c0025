"""
Settings of a C{[filter:NAME] type = rate_limit} section.

Parsing only: the rate-limit filter and its stores live in
L{gatelayer.filters.ratelimit} and L{gatelayer.ratelimit}.
"""

import os.path
import re

from attrs import frozen

from gatelayer.config import values as v
# The store URL syntax is shared with the Redis store, which must not import
# the config package: both take it from this neutral, pure module.
from gatelayer.net.redisurl import RedisAddress, parse_store_url

__all__ = ["RateLimitSettings", "RedisAddress", "parse_filter", "parse_key", "parse_rate", "parse_store_url"]

ALGORITHMS = ("gcra", "sliding_window")
ON_STORE_ERROR = ("open", "closed", "local")
MODES = ("enforce", "shadow")

_PERIODS = {
    "second": 1.0, "sec": 1.0, "s": 1.0,
    "minute": 60.0, "min": 60.0, "m": 60.0,
    "hour": 3600.0, "h": 3600.0,
    "day": 86400.0, "d": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MAX_RATE_PER_SECOND = 1_000_000


@frozen
class RateLimitSettings:
    """
    A parsed rate-limit filter section.

    @ivar key: the key sources, e.g. C{("ip",)} or C{("route", "jwt.sub")};
        C{header:NAME} sources carry the header name in lower case.
    @ivar rate: requests allowed per C{period}.
    @ivar period: the period in seconds (1, 60, 3600 or 86400).
    @ivar burst: extra requests allowed at once.
    @ivar algorithm: C{"gcra"} or C{"sliding_window"}.
    @ivar store: a L{RedisAddress}, or L{None} for the master's embedded store.
    @ivar store_timeout: seconds a store may take before the take counts as
        an error.
    @ivar on_store_error: C{"open"}, C{"closed"} or C{"local"}.
    @ivar mode: C{"enforce"} or C{"shadow"}.
    @ivar legacy_headers: also send C{X-RateLimit-*} headers.
    """

    key: tuple = ("ip",)
    rate: int = 60
    period: float = 60.0
    burst: int = 0
    algorithm: str = "gcra"
    store: RedisAddress = None
    store_timeout: float = 0.1
    on_store_error: str = "local"
    mode: str = "enforce"
    legacy_headers: bool = False

    @property
    def limit(self):
        """
        Requests a fresh key admits at once: C{rate + burst}.
        """
        return self.rate + self.burst


def parse_rate(text):
    """
    Parse C{N/second}, C{N/minute}, C{N/hour} or C{N/day} into
    C{(N, period_seconds)}.
    """
    match = _RATE.match(text)
    if match is None:
        raise ValueError("is not a rate (use N/second, N/minute, N/hour or N/day)")
    count, unit = int(match.group(1)), match.group(2).lower()
    period = _PERIODS.get(unit)
    if period is None:
        raise ValueError(f"has the unknown unit {unit!r} (use second, minute, hour or day)")
    if count < 1:
        raise ValueError("must allow at least one request")
    if count > _MAX_RATE_PER_SECOND * period:
        raise ValueError(f"is more than {_MAX_RATE_PER_SECOND} requests per second")
    return count, period


def parse_key(text):
    """
    Parse a comma-separated list of key sources: C{ip}, C{header:NAME},
    C{jwt.CLAIM}, C{consumer}, C{route}, C{global}.
    """
    sources = []
    for item in v.parse_list(text):
        lowered = item.lower()
        if lowered in ("ip", "consumer", "route", "global"):
            source = lowered
        elif lowered.startswith("header:"):
            name = item[len("header:"):].strip()
            if not _TOKEN.match(name):
                raise ValueError(f"has {item!r}, whose header name is not a valid HTTP header name")
            source = "header:" + name.lower()
        elif lowered.startswith("jwt."):
            claim = item[len("jwt."):].strip()
            if not claim:
                raise ValueError(f"has {item!r}, which names no claim (use jwt.sub, jwt.tenant, ...)")
            source = "jwt." + claim
        else:
            raise ValueError(
                f"has {item!r}, which is not a key source (use ip, header:NAME, jwt.CLAIM, consumer, route, global)")
        if source not in sources:
            sources.append(source)
    if not sources:
        raise ValueError("names no key source")
    if "global" in sources and len(sources) > 1:
        raise ValueError("combines global with other sources (global is one counter for every request)")
    return tuple(sources)


def parse_filter(reader):
    """
    Read every key of a rate-limit filter section from C{reader} (a
    L{gatelayer.config.reader.SectionReader}), recording problems on it.
    """
    key = reader.get("key", parse_key, ("ip",))
    rate = reader.get("rate", parse_rate)
    burst = reader.get("burst", lambda t: v.parse_int(t, 0, 10_000_000), 0)
    store_text = reader.raw("store")
    store = None
    if store_text is not None and store_text.strip():
        try:
            store = parse_store_url(store_text, reader.base_dir)
        except ValueError as e:
            # the URL may hold a password: show the scheme and host part only
            reader.error("store", str(e), _without_password(store_text.strip()))
        if store is not None and store.ca is not None and not os.path.isfile(store.ca):
            reader.error("store", f"has ca={store.ca}, which is not a file", _without_password(store_text.strip()))
            store = None
    # The embedded store answers from the master, which a burst on a busy
    # host can delay by tens of milliseconds; its fallback is per worker (not
    # exact), so it gets a longer default than a Redis store.
    default_timeout = 0.1 if store_text is not None and store_text.strip() else 1.0
    timeout = reader.get("store_timeout", v.parse_duration, default_timeout)
    if timeout is not None and not 0.001 <= timeout <= 60:
        reader.error("store_timeout", "must be from 1ms to 60s", reader.raw("store_timeout").strip())
        timeout = None
    rate = rate or (60, 60.0)
    return RateLimitSettings(
        key=key or ("ip",),
        rate=rate[0],
        period=rate[1],
        burst=burst if burst is not None else 0,
        algorithm=reader.choice("algorithm", ALGORITHMS, "gcra") or "gcra",
        store=store,
        store_timeout=timeout or default_timeout,
        on_store_error=reader.choice("on_store_error", ON_STORE_ERROR, "local") or "local",
        mode=reader.choice("mode", MODES, "enforce") or "enforce",
        legacy_headers=bool(reader.get("legacy_headers", v.parse_bool, False)),
    )


def _without_password(url):
    return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
