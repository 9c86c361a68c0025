"""
The C{rate_limit} filter: one store decision per request, answered with 429
(or let through, in shadow mode) when the client's quota is spent.
"""

import hashlib
import math

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatelayer.chain import IFilter, json_reply
from gatelayer.ratelimit.algorithms import quota_of
from gatelayer.ratelimit.breaker import GuardedStore, StoreBreaker
from gatelayer.ratelimit.interfaces import StoreUnavailable
from gatelayer.ratelimit.master_store import MasterStore
from gatelayer.ratelimit.registry import StoreRegistry

__all__ = ["RateLimitFilter", "build_filter", "KEY_PREFIX", "OUTCOME_CONTEXT"]

KEY_PREFIX = "gatelayer:rl:"
OUTCOME_CONTEXT = "ratelimit"
"""The exchange context key of the rate limit's outcome (C{"allowed"},
C{"rejected"}, C{"shadow_rejected"}, C{"store_error_open"},
C{"store_error_closed"}), read by the access log."""
PROBLEM_JSON = b"application/problem+json"
_MAX_KEY_PART = 128


def build_filter(spec, services, registry=None):
    """
    Build the rate-limit filter for C{spec} (a
    L{gatelayer.config.model.FilterSpec} of type C{rate_limit}).

    Without C{store} in the section the master's embedded store is used
    through C{services.master}; with no master (a single process) a
    process-local memory store. With a Redis C{store}, C{on_store_error =
    local} falls back to the embedded store.

    @param registry: where stores are shared among filters; by default
        C{services.stores} (the worker's, closed when it stops), or a
        registry of this filter's own without one.
    """
    settings = spec.settings
    if registry is None:
        registry = services.stores if services.stores is not None else StoreRegistry()
    reactor = services.reactor
    if services.master is not None:
        embedded, embedded_name = MasterStore(services.master, services.reactor), "embedded store (master)"
    else:
        embedded, embedded_name = registry.memory(reactor), "embedded store"
    if settings.store is not None:
        store, name = registry.redis(reactor, settings.store), f"Redis {settings.store.display()}"
        fallback = GuardedStore(embedded, reactor, settings.store_timeout, name=embedded_name)
    else:
        store, name = embedded, embedded_name
        fallback = None
        if services.master is not None:
            fallback = GuardedStore(registry.memory(reactor), reactor, settings.store_timeout,
                                    name="worker-local store")
    primary = GuardedStore(store, reactor, settings.store_timeout, StoreBreaker(reactor), name=name)
    return RateLimitFilter(spec.name, settings, primary, reactor, fallback=fallback)


class _ThrottledLog:
    """
    Emits a kind of event through C{owner.log} at most once per C{interval}
    seconds, saying how many were left out since, so a dead store cannot
    flood the log.
    """

    def __init__(self, owner, clock, interval=10.0):
        self._owner = owner
        self._clock = clock
        self._interval = interval
        self._last = {}
        self._suppressed = {}

    def warn(self, kind, fmt, **fields):
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        self._owner.log.warn(fmt + " ({suppressed} similar events not logged since)",
                       kind=kind, suppressed=suppressed, **fields)


def _sf_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@implementer(IFilter)
class RateLimitFilter:
    """
    Takes one unit of the quota per request from a store and answers 429
    when it is spent.

    @ivar name: the section name; part of every key and of the headers.
    @ivar counters: for metrics (see L{stats}).
    """

    log = Logger()

    def __init__(self, name, settings, store, clock, fallback=None):
        """
        @param store: the primary store, normally wrapped in a
            L{GuardedStore} (timeout and breaker).
        @param fallback: the store used when C{on_store_error = local}, or
            L{None} to treat the request as with C{open}.
        """
        self.name = name
        self.settings = settings
        self._quota = quota_of(settings)
        self._store = store
        self._take_local = getattr(store, "take_local", None)
        self._fallback = fallback
        self._clock = clock
        self._prefix = f"{KEY_PREFIX}{name}:"
        self._throttled = _ThrottledLog(self, clock)
        self._policy = f"{_sf_string(name)};q={settings.rate};w={int(settings.period)}".encode("ascii")
        self.counters = {
            "allowed": 0, "rejected": 0, "shadow_rejected": 0,
            "fallback_open": 0, "fallback_closed": 0, "fallback_local": 0,
        }

    # -- keys -----------------------------------------------------------

    def key_for(self, exchange):
        """
        The client's key (without the C{gatelayer:rl:<filter>:} prefix): one
        C{source=value} part per configured source, joined with C{|}; a
        source the request lacks is replaced by the client address.
        """
        sources = self.settings.key
        if len(sources) == 1:
            source = sources[0]
            if source == "ip":
                return f"ip={exchange.client_ip}"
            value = self._value(source, exchange)
            return f"{source}={value}" if value is not None else f"ip={exchange.client_ip}"
        parts = []
        for source in sources:
            value = self._value(source, exchange)
            part = f"{source}={value}" if value is not None else f"ip={exchange.client_ip}"
            if part not in parts:
                parts.append(part)
        return "|".join(parts)

    def _value(self, source, exchange):
        if source == "ip":
            value = exchange.client_ip
        elif source == "global":
            return "*"
        elif source == "route":
            value = exchange.route
        elif source == "consumer":
            value = exchange.context.get("consumer")
        elif source.startswith("header:"):
            raw = exchange.headers.getRawHeaders(source[len("header:"):].encode("latin-1"))
            value = raw[0].decode("latin-1").strip() if raw else None
        else:
            value = _claim(exchange.context.get("jwt.claims"), source[len("jwt."):])
        if value is None or value == "":
            return None
        value = str(value)
        if len(value) > _MAX_KEY_PART or not value.isprintable():
            value = "sha1:" + hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()
        return value

    # -- request phase --------------------------------------------------

    def on_request(self, exchange):
        """
        Take from the store and pass (adding C{RateLimit} headers) or answer
        429; synchronous, without a Deferred, when the store can answer at
        once (a lease of the embedded store, a memory store).
        """
        key = self._prefix + self.key_for(exchange)
        local = self._take_local
        if local is not None:
            decision = local(key, self._quota)
            if decision is not None:
                return self._decided(decision, exchange, key)
        d = self._store.take(key, self._quota)
        d.addCallbacks(self._decided, self._unavailable,
                       callbackArgs=(exchange, key), errbackArgs=(exchange, key))
        return _now_or_later(d)

    def on_response(self, exchange):
        """
        Nothing: the headers were added to C{exchange.response_headers}
        when the request was let through.
        """

    def _decided(self, decision, exchange, key):
        # What the access log shows: the last rate-limit filter's outcome.
        context = exchange.context
        if decision.allowed:
            context[OUTCOME_CONTEXT] = "allowed"
            self.counters["allowed"] += 1
            if self.settings.mode == "enforce":
                exchange.response_headers.extend(self._headers(decision.remaining, decision.reset))
            return None
        if self.settings.mode == "shadow":
            context[OUTCOME_CONTEXT] = "shadow_rejected"
            self.counters["shadow_rejected"] += 1
            self._throttled.warn(
                "shadow", "rate limit {filter} (shadow mode) would have rejected {key}",
                filter=self.name, key=key)
            return None
        context[OUTCOME_CONTEXT] = "rejected"
        self.counters["rejected"] += 1
        return self._too_many(decision)

    def _unavailable(self, failure, exchange, key):
        failure.trap(StoreUnavailable)
        policy = self.settings.on_store_error
        if policy == "local" and self._fallback is not None:
            self.counters["fallback_local"] += 1
            self._throttled.warn(
                "local", "rate limit {filter}: {problem}; deciding with the {fallback}",
                filter=self.name, problem=str(failure.value), fallback="embedded store")
            d = self._fallback.take(key, self._quota)
            d.addCallbacks(self._decided, self._fallback_failed,
                           callbackArgs=(exchange, key), errbackArgs=(exchange,))
            return d
        if policy == "closed" and self.settings.mode == "enforce":
            exchange.context[OUTCOME_CONTEXT] = "store_error_closed"
            self.counters["fallback_closed"] += 1
            self._throttled.warn(
                "closed", "rate limit {filter}: {problem}; answering 503 (on_store_error = closed)",
                filter=self.name, problem=str(failure.value))
            return self._unavailable_reply()
        exchange.context[OUTCOME_CONTEXT] = "store_error_open"
        self.counters["fallback_open"] += 1
        self._throttled.warn(
            "open", "rate limit {filter}: {problem}; letting requests through",
            filter=self.name, problem=str(failure.value))
        return None

    def _fallback_failed(self, failure, exchange):
        failure.trap(StoreUnavailable)
        exchange.context[OUTCOME_CONTEXT] = "store_error_open"
        self.counters["fallback_open"] += 1
        self._throttled.warn(
            "fallback", "rate limit {filter}: the fallback store failed too ({problem}); "
            "letting requests through", filter=self.name, problem=str(failure.value))
        return None

    # -- answers --------------------------------------------------------

    def _headers(self, remaining, reset):
        seconds = max(0, math.ceil(reset))
        headers = [
            (b"RateLimit-Policy", self._policy),
            (b"RateLimit", f"{_sf_string(self.name)};r={remaining};t={seconds}".encode("ascii")),
        ]
        if self.settings.legacy_headers:
            headers += [
                (b"X-RateLimit-Limit", str(self.settings.rate).encode("ascii")),
                (b"X-RateLimit-Remaining", str(remaining).encode("ascii")),
                (b"X-RateLimit-Reset", str(seconds).encode("ascii")),
            ]
        return headers

    def _too_many(self, decision):
        retry = max(1, math.ceil(decision.retry_after))
        headers = [(b"Retry-After", str(retry).encode("ascii")), *self._headers(0, retry)]
        return json_reply(429, {
            "type": "about:blank",
            "title": "Too Many Requests",
            "status": 429,
            "detail": f"rate limit {self.name} exceeded: {self.settings.rate} requests per "
                      f"{_period_name(self.settings.period)}; retry in {retry}s",
        }, headers=headers, content_type=PROBLEM_JSON)

    def _unavailable_reply(self):
        return json_reply(503, {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": f"rate limit {self.name} cannot be checked right now",
        }, headers=[(b"Retry-After", b"1")], content_type=PROBLEM_JSON)

    def stats(self):
        """
        Counters for metrics: decisions (allowed, rejected, shadow_rejected),
        fallbacks by policy, and the primary store's errors, timeouts,
        skipped takes and breaker openings, with the breaker's state.
        """
        stats = dict(self.counters)
        guard = getattr(self._store, "counters", None)
        if guard is not None:
            stats.update({f"store_{k}": v for k, v in guard.items()})
            stats["store_breaker"] = self._store.breaker.state
        return stats


def _claim(claims, name):
    if not isinstance(claims, dict):
        return None
    if name in claims:
        return claims[name]
    value = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if not isinstance(value, (dict, list)) else None


def _period_name(period):
    return {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}.get(period, f"{period:g}s")


def _now_or_later(d):
    """
    The result of C{d} itself when it has fired already (the usual case
    with the embedded memory store, which saves the chain a Deferred), else
    C{d}.
    """
    box = []

    def seen(value):
        box.append(value)
        return value

    d.addBoth(seen)
    if not box:
        return d
    value = box[0]
    if isinstance(value, Failure):
        d.addErrback(lambda _: None)
        value.raiseException()
    return value
