"""
Background revalidation for the C{cache} filter (RFC 5861
C{stale-while-revalidate}): while a stale entry answers every request at
once, one conditional request per key goes to the route's upstream through
its pool (L{gatelayer.upstream.call.BufferedCall}); its 304 refreshes the
entry, a storable response replaces it, anything else leaves it. Nothing of
it ever reaches a client.
"""

from functools import partial

from twisted.logger import Logger

from gatelayer.cache.entry import make_entry, refreshed
from gatelayer.cache.policy import response_refusal
from gatelayer.http.headers import upstream_headers
from gatelayer.http.proxy import upstream_target
from gatelayer.upstream.call import BufferedCall

__all__ = ["BackgroundRefresher"]

# What a background revalidation does not take over from the request that
# started it: the client's own preconditions and ranges.
_CLIENT_PRECONDITIONS = (
    b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range")
_log = Logger(namespace="gatelayer.filters.cache")


class BackgroundRefresher:
    """
    The background revalidations of one cache filter in one worker.

    @ivar calls: key -> the L{BufferedCall} revalidating it (one per key).
    @ivar started: how many were started.
    """

    def __init__(self, name, clock, max_size, default_ttl, store, put):
        """
        @param name: the filter's name, for logs.
        @param max_size: the largest response body read (the filter's
            C{max_entry_size}).
        @param store: the filter's memory store (to check that the entry a
            304 refreshes is still the stored one).
        @param put: C{put(request_headers, primary, entry)} stores an entry
            as the filter does.
        """
        self.name = name
        self.clock = clock
        self.calls = {}
        self.started = 0
        self._max_size = max_size
        self._ttl = default_ttl
        self._store = store
        self._put = put

    def start(self, exchange, origin, primary, key, entry, now):
        """
        Start the one background revalidation of C{key} (its stale
        C{entry}) through the route's upstream (C{origin}: the upstream
        terminal and the route spec): a GET of the request's target with
        its Host and headers (so its Vary'd ones), the client's
        preconditions replaced by the entry's validators. A failure to
        start it is logged and costs the request nothing.
        """
        upstream, route = origin
        try:
            vary_headers = exchange.headers.copy()
            request = vary_headers.copy()
            for name in _CLIENT_PRECONDITIONS:
                request.removeHeader(name)
            if entry.etag is not None:
                request.setRawHeaders(b"if-none-match", [entry.etag])
            if entry.last_modified is not None:
                request.setRawHeaders(b"if-modified-since", [entry.last_modified])
            host = request.getRawHeaders(b"host")
            host_header = host[0] if host else None
            headers = upstream_headers(request.getAllRawHeaders(), exchange.peer_ip, exchange.scheme,
                                       host_header, b"")
            done = partial(self._done, key, primary, entry, vary_headers,
                           request.hasHeader(b"authorization"), now)
            call = BufferedCall(
                upstream, self.clock, b"GET", upstream_target(route, exchange), headers,
                exchange.client_ip, self._max_size, done,
                host=host_header if route.preserve_host else None)
            self.calls[key] = call
            self.started += 1
            call.start()
        except Exception:
            self.calls.pop(key, None)
            _log.failure("cache {filter}: the background revalidation of {key!r} failed to start",
                         filter=self.name, key=key)

    def stop(self):
        """
        Abandon the revalidations in flight.
        """
        calls = list(self.calls.values())
        self.calls.clear()
        for call in calls:
            call.cancel()

    def _done(self, key, primary, entry, vary_headers, authorization, request_time, outcome):
        """
        A background revalidation ended: a 304 refreshes the entry it was
        made for (if still stored), a storable response replaces it,
        anything else leaves it as it is.
        """
        self.calls.pop(key, None)
        if outcome.error is not None:
            _log.warn("cache {filter}: the background revalidation of {key!r} got no response ({error});"
                      " the stale entry stays", filter=self.name, key=key, error=outcome.error)
            return
        now = self.clock.seconds()
        status = outcome.status
        headers = [(name.lower(), value) for name, value in outcome.headers]
        if status == 304 and entry.validators:
            if self._store.get(key) is entry:
                self._put(vary_headers, primary, refreshed(entry, headers, request_time, now, self._ttl))
            return
        reason = response_refusal(status, authorization, headers, self._ttl)
        if reason is not None:
            _log.info("cache {filter}: the background revalidation of {key!r} got a response not stored"
                      " ({status}, {reason}); the stale entry stays",
                      filter=self.name, key=key, status=status, reason=reason)
            return
        self._put(vary_headers, primary, make_entry(status, headers, outcome.body, request_time, now, self._ttl))
