"""
The C{cache} filter: a shared HTTP cache (RFC 9111) in front of a route's
terminal, one memory store per worker (and optionally Redis behind it).

A GET or HEAD whose key has a fresh entry is answered from it at once
(C{X-Cache: HIT}) with no upstream; a miss goes on, and the response
streams to the client while a copy is kept, stored only once it is
complete and only when RFC 9111 lets a shared cache store it. Concurrent
misses on one key wait (up to C{lock_timeout}) for the first, then are
answered from what it stored. An expired entry with a validator is
revalidated with a conditional request, a 304 refreshing it; an entry
inside its C{stale-if-error} window answers when the upstream fails; one
inside its C{stale-while-revalidate} window answers at once while it is
refreshed (L{gatelayer.filters.cache_refresh}). The C{X-Cache} values are
L{OUTCOMES}, described in docs/cache.md.
"""

import ipaddress

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.cache.entry import make_entry, refreshed
from gatelayer.cache.memory import MemoryStore
from gatelayer.cache.policy import client_conditionals, not_modified, response_refusal, variant_of
from gatelayer.cache.store import VARIANT_SEPARATOR
from gatelayer.chain import IBodyFilter, Reply, json_reply
from gatelayer.filters.cache_refresh import BackgroundRefresher

__all__ = ["CacheFilter", "OUTCOMES", "build_filter"]

HIT, MISS, EXPIRED, STALE, BYPASS = b"HIT", b"MISS", b"EXPIRED", b"STALE", b"BYPASS"
OUTCOMES = ("HIT", "MISS", "EXPIRED", "STALE", "BYPASS")
"""The values of C{X-Cache}, each counted in L{CacheFilter.counts}."""

_STATE = "cache"
_CACHED_METHODS = frozenset([b"GET", b"HEAD"])
_SAFE_METHODS = frozenset([b"GET", b"HEAD", b"OPTIONS", b"TRACE"])
_UPSTREAM_ERRORS = frozenset([500, 502, 503, 504])
# What a 304 from the cache carries of the stored headers (RFC 9110
# section 15.4.5).
_NOT_MODIFIED_HEADERS = frozenset([
    b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"])
_log = Logger(namespace="gatelayer.filters.cache")


class _Pass:
    """
    What the filter knows of one request while it is answered (kept in
    the exchange's context).

    @ivar outcome: the C{X-Cache} value.
    @ivar store: whether the response is a candidate for storing.
    @ivar storing: whether its body is being kept.
    @ivar entry: the stale entry being revalidated (or kept for
        C{stale-if-error}).
    @ivar answer: the entry answered in the terminal's place.
    """

    __slots__ = (
        "outcome", "primary", "lock_key", "lock", "store", "storing", "entry", "answer", "chunks", "size",
        "headers", "request_time", "response_time", "conditionals", "authorization", "invalidate")

    def __init__(self, outcome, primary=None):
        self.outcome = outcome
        self.primary = primary
        self.lock_key = None
        self.lock = None
        self.store = False
        self.storing = False
        self.entry = None
        self.answer = None
        self.chunks = None
        self.size = 0
        self.headers = None
        self.request_time = 0.0
        self.response_time = 0.0
        self.conditionals = None
        self.authorization = False
        self.invalidate = False


class _Lock:
    """
    A key being fetched: the requests waiting for it, and the timer that
    lets them go on their own.
    """

    __slots__ = ("waiters", "timer")

    def __init__(self):
        self.waiters = []
        self.timer = None


@implementer(IBodyFilter)
class CacheFilter:
    """
    The cache filter of one C{[filter:NAME]} section, shared by every route
    listing it in one worker.

    @ivar counts: how many requests had each C{X-Cache} outcome (C{str}
        keys of L{OUTCOMES}).
    @ivar store: the L{gatelayer.cache.store.ICacheStore} entries live in.
    """

    preserves_length = True

    def __init__(self, name, settings, clock, store=None, master=None, shared=None, origins=None):
        """
        @param settings: the L{gatelayer.config.filter_cache.CacheSettings}.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param master: the worker's control connection to the master,
            through which an accepted C{PURGE} reaches every worker
            (L{None}: this worker's store only).
        @param shared: a store shared with the other workers and hosts
            (L{gatelayer.cache.redis_store.RedisCacheStore}) asked when
            the memory store misses, or L{None}.
        @param origins: route name to C{(upstream terminal, route spec)}
            for the routes a background revalidation can call on their
            own (a L{gatelayer.http.proxy.UpstreamTerminal} and the
            route's L{gatelayer.config.model.RouteSpec}); the others
            revalidate in the foreground.
        @param store: where entries live (default: a L{MemoryStore} of
            C{settings.size}).
        """
        self.name = name
        self.settings = settings
        self.clock = clock
        self.store = store if store is not None else MemoryStore(settings.size, clock)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.master = master
        self.shared = shared
        self._locks = {}
        self._origins = origins or {}
        self._refresher = BackgroundRefresher(name, clock, settings.max_entry_size, settings.default_ttl,
                                              self.store, self._put)
        self._purge_from = settings.purge_from
        self._extra = settings.key_extra
        self._key_query = settings.key_query
        self._max_entry = settings.max_entry_size
        self._ttl = settings.default_ttl
        self._lock_timeout = settings.lock_timeout

    @property
    def fetching(self):
        """
        How many keys are being fetched with other requests waiting for
        them (or free to).
        """
        return len(self._locks)

    @property
    def refreshing(self):
        """
        How many keys are being revalidated in the background.
        """
        return len(self._refresher.calls)

    @property
    def background_refreshes(self):
        """
        How many background revalidations (C{stale-while-revalidate}) were
        started.
        """
        return self._refresher.started

    # -- keys ---------------------------------------------------------------

    def url_key(self, exchange):
        """
        The URL key of C{exchange}: C{scheme://host/path?query} with the
        query as C{key_query} says, then C{\\0NAME=VALUE} for each
        C{key_extra} header.
        """
        key = b"%s://%s%s" % (exchange.scheme.encode("ascii"), exchange.host.encode("ascii"),
                              exchange.path)
        query = exchange.query
        if query and self._key_query != "ignore":
            if self._key_query == "sorted":
                query = b"&".join(sorted(query.split(b"&")))
            key += b"?" + query
        for name in self._extra:
            values = exchange.headers.getRawHeaders(name)
            key += b"\x00" + name + b"=" + (b",".join(values) if values else b"")
        return key

    # -- request phase -------------------------------------------------------

    def on_request(self, exchange):
        """
        Answer from a fresh entry, wait for a concurrent fetch of the same
        key, or let the request go on (marking what to do with its
        response).
        """
        method = exchange.method
        if method not in _CACHED_METHODS:
            if method == b"PURGE" and self._purge_from:
                return self._purge(exchange)
            state = _Pass(BYPASS, self.url_key(exchange))
            state.invalidate = method not in _SAFE_METHODS
            exchange.context[_STATE] = state
            return None
        if exchange.headers.hasHeader(b"range"):
            exchange.context[_STATE] = _Pass(BYPASS)
            return None
        return self._lookup(exchange, self.url_key(exchange), False)

    def stop(self):
        """
        Abandon the background revalidations in flight and close the
        shared store's connections, if there is one.
        """
        self._refresher.stop()
        if self.shared is not None:
            return self.shared.close()
        return None

    def _lookup(self, exchange, primary, waited, shared_done=False):
        now = self.clock.seconds()
        store = self.store
        names = store.vary(primary)
        entry = None
        lock_key = primary
        if names is not None:
            lock_key = primary + VARIANT_SEPARATOR + variant_of(names, exchange.headers)
            entry = store.get(lock_key)
        if entry is not None:
            staleness = entry.staleness(now)
            if staleness < 0:
                return self._hit(exchange, entry, now, HIT)
            if not entry.must_revalidate and staleness <= entry.stale_while_revalidate:
                if lock_key in self._locks:
                    # Another request is refreshing it: do not wait for that.
                    return self._hit(exchange, entry, now, STALE)
                origin = self._origins.get(exchange.route)
                if origin is not None and entry.stale_while_revalidate > 0:
                    if lock_key not in self._refresher.calls:
                        self._refresher.start(exchange, origin, primary, lock_key, entry, now)
                    return self._hit(exchange, entry, now, STALE)
        if not waited and self._lock_timeout > 0 and exchange.method == b"GET":
            lock = self._locks.get(lock_key)
            if lock is not None:
                waiting = Deferred()
                lock.waiters.append(waiting)
                waiting.addCallback(lambda _: self._lookup(exchange, primary, True))
                return waiting
        if entry is None and self.shared is not None and not shared_done:
            asking = self.shared.fetch(primary, exchange.headers)
            asking.addCallback(self._from_shared, exchange, primary, waited)
            return asking
        state = _Pass(MISS if entry is None else EXPIRED, primary)
        state.request_time = now
        exchange.context[_STATE] = state
        if exchange.method != b"GET":
            return None
        headers = exchange.headers
        state.store = True
        state.authorization = headers.hasHeader(b"authorization")
        state.entry = entry
        if not waited and self._lock_timeout > 0:
            lock = self._locks[lock_key] = _Lock()
            lock.timer = self.clock.callLater(self._lock_timeout, self._lock_expired, lock_key, lock)
            state.lock_key = lock_key
            state.lock = lock
        if entry is not None and entry.validators:
            state.conditionals = client_conditionals(headers)
            headers.removeHeader(b"if-none-match")
            headers.removeHeader(b"if-modified-since")
            if entry.etag is not None:
                headers.setRawHeaders(b"if-none-match", [entry.etag])
            if entry.last_modified is not None:
                headers.setRawHeaders(b"if-modified-since", [entry.last_modified])
        return None

    def _from_shared(self, found, exchange, primary, waited):
        if found is not None:
            variant, entry = found
            self.store.put(primary + VARIANT_SEPARATOR + variant, entry)
        return self._lookup(exchange, primary, waited, True)

    def _hit(self, exchange, entry, now, outcome):
        exchange.context[_STATE] = _Pass(outcome)
        age = (b"age", b"%d" % (entry.age(now),))
        conditionals = client_conditionals(exchange.headers)
        if conditionals is not None and not_modified(conditionals, entry):
            headers = tuple(h for h in entry.headers if h[0] in _NOT_MODIFIED_HEADERS)
            # The stored body goes along only to set the Content-Length a
            # 200 would have had: no body is ever written for a 304.
            return Reply(304, entry.body, headers + (age,))
        return Reply(entry.status, entry.body, entry.headers + (age,))

    def _purge(self, exchange):
        try:
            address = ipaddress.ip_address(exchange.client_ip)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in self._purge_from):
            return json_reply(403, {"error": "PURGE is not allowed from this address", "status": 403})
        primary = self.url_key(exchange)
        _log.info("cache {filter}: PURGE of {key!r} from {client}",
                  filter=self.name, key=primary, client=exchange.client_ip)
        if self.master is None:
            return json_reply(200, {"purged": self.purge(primary), "workers": 1})
        from gatelayer.cache.control import PurgeEverywhere

        def answered(result):
            return json_reply(200, {"purged": result["purged"], "workers": result["workers"]})

        def failed(failure):
            # The master is away (restarting?): this worker's store at
            # least is purged, and the answer says how far it reached.
            _log.warn("cache {filter}: the master did not relay a purge ({error}); purged here only",
                      filter=self.name, error=failure.getErrorMessage())
            return json_reply(200, {"purged": self.purge(primary), "workers": 1})
        return self.master.callRemote(PurgeEverywhere, key=primary).addCallbacks(answered, failed)

    def purge(self, key=None, prefix=None):
        """
        Remove every variant of the URL key C{key}, or of every URL key
        starting with C{prefix} (bytes); returns how many entries went.
        """
        if prefix is not None:
            if self.shared is not None:
                self.shared.remove_prefix(prefix)
            return self.store.remove_prefix(prefix)
        if self.shared is not None:
            self.shared.remove(key)
        return self.store.remove(key)

    # -- locks --------------------------------------------------------------

    def _release(self, state):
        key, state.lock_key = state.lock_key, None
        lock, state.lock = state.lock, None
        if key is None or self._locks.get(key) is not lock:
            # Expired already (its waiters went on); a newer fetch of the
            # key may hold it now.
            return
        del self._locks[key]
        if lock.timer is not None and lock.timer.active():
            lock.timer.cancel()
        self._wake(lock)

    def _lock_expired(self, key, lock):
        if self._locks.get(key) is lock:
            del self._locks[key]
        lock.timer = None
        self._wake(lock)

    def _wake(self, lock):
        waiters, lock.waiters = lock.waiters, []
        if waiters:
            # On the next reactor turn: never inside the response of the
            # request that fetched the entry.
            self.clock.callLater(0, self._fire, waiters)

    @staticmethod
    def _fire(waiters):
        for waiting in waiters:
            waiting.callback(None)

    # -- response phase -----------------------------------------------------

    def on_response(self, exchange):
        """
        Count and mark the outcome (C{X-Cache}); decide whether the
        response is stored, refreshes the entry being revalidated, or is
        replaced by a stale entry.
        """
        state = exchange.context.get(_STATE)
        if state is None:
            return
        if state.store:
            self._response_head(exchange, state)
        elif state.invalidate and exchange.status < 400:
            # An unsafe method changed the resource (RFC 9111 section 4.4).
            self.store.remove(state.primary)
        outcome = state.outcome
        self.counts[outcome.decode("ascii")] += 1
        exchange.response_headers.append((b"x-cache", outcome))

    def _response_head(self, exchange, state):
        now = self.clock.seconds()
        status = exchange.status
        entry = state.entry
        raw = exchange.request.responseHeaders
        headers = [(name.lower(), value) for name, values in raw.getAllRawHeaders() for value in values]
        if entry is not None:
            if status == 304 and entry.validators:
                entry = refreshed(entry, headers, state.request_time, now, self._ttl)
                self._put(exchange.headers, state.primary, entry)
                state.answer = entry
                state.store = False
                self._release(state)
                return
            if status in _UPSTREAM_ERRORS and not entry.must_revalidate \
                    and entry.staleness(now) <= entry.stale_if_error:
                state.answer = entry
                state.outcome = STALE
                state.store = False
                self._release(state)
                return
        reason = response_refusal(status, state.authorization, headers, self._ttl)
        if reason is not None:
            state.store = False
            self._release(state)
            return
        state.storing = True
        state.headers = headers
        state.response_time = now
        state.chunks = []

    def on_response_body(self, exchange, data):
        """
        Keep a copy of the body being stored (until it passes
        C{max_entry_size}); hold back the body of a response answered in
        its place by a stored entry.
        """
        state = exchange.context.get(_STATE)
        if state is None:
            return data
        if state.answer is not None:
            return None
        if state.storing:
            state.size += len(data)
            if state.size > self._max_entry:
                state.storing = False
                state.chunks = None
                self._release(state)
            else:
                state.chunks.append(data)
        return data

    def on_response_end(self, exchange):
        """
        Store the complete response, or answer with the entry that takes
        its place (refreshed by a 304, or stale after an upstream error).
        """
        state = exchange.context.get(_STATE)
        if state is None:
            return b""
        entry = state.answer
        if entry is not None:
            state.answer = None
            age = (b"age", b"%d" % (entry.age(self.clock.seconds()),))
            if not_modified(state.conditionals, entry):
                headers = tuple(h for h in entry.headers if h[0] in _NOT_MODIFIED_HEADERS)
                exchange.answer_instead(304, headers + (age,), entry.body)
            else:
                exchange.answer_instead(entry.status, entry.headers + (age,), entry.body)
            return None
        if state.storing:
            state.storing = False
            body = b"".join(state.chunks)
            state.chunks = None
            entry = make_entry(exchange.status, state.headers, body, state.request_time,
                               state.response_time, self._ttl)
            self._put(exchange.headers, state.primary, entry)
            self._release(state)
        return b""

    def _put(self, request_headers, primary, entry):
        if entry.lifetime <= entry.initial_age and not entry.validators and not entry.stale_if_error:
            # Stale already and nothing could make it useful.
            return
        variant = variant_of(entry.vary, request_headers)
        key = primary + VARIANT_SEPARATOR + variant
        try:
            self.store.put(key, entry)
            if self.shared is not None:
                self.shared.put(primary, variant, entry)
        except Exception:
            _log.failure("cache {filter} could not store {key!r}", filter=self.name, key=key)


def build_filter(spec, services):
    """
    Build the cache filter of C{spec} on the worker's reactor, with its
    Redis store when C{store} is set, and the upstream of each route that
    lists it and proxies to one upstream (for background revalidation).
    """
    settings = spec.settings
    shared = None
    if settings.store is not None:
        from gatelayer.cache.redis_store import RedisCacheStore
        shared = RedisCacheStore.from_url(
            services.reactor, settings.store, b"gatelayer:cache:%s:" % (spec.name.encode("utf-8"),),
            settings.store_timeout)
    upstreams = services.upstreams or {}
    origins = {
        route.name: (upstreams[route.upstream], route) for route in services.config.routes
        if spec.name in route.filters and route.terminal == "upstream" and not route.split
        and route.upstream in upstreams}
    return CacheFilter(spec.name, settings, services.reactor, master=services.master, shared=shared,
                       origins=origins)
