"""
A stored response, ready to send: its status, the headers a hit sends (hop
by hop and framing headers already removed), its body, and the freshness
facts worked out once when it was stored.
"""

from gatelayer.cache.policy import (
    current_age, delta_seconds, freshness_lifetime, http_date, parse_cache_control, parse_vary)

__all__ = ["Entry", "STORED_HEADERS_DROPPED", "make_entry", "refreshed"]

STORED_HEADERS_DROPPED = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"content-length", b"age", b"set-cookie", b"proxy-authenticate",
])
"""
Response headers never stored: hop-by-hop and framing ones (the responder
frames a hit itself), C{Age} (computed on each hit), and C{Set-Cookie},
which belongs to the one client it was sent to.
"""

# The headers a 304 may not change in a stored response (RFC 9111 section
# 3.2): the ones describing the stored body's framing.
_NOT_UPDATED = frozenset([b"content-length", b"content-encoding", b"content-range", b"content-type"])


class Entry:
    """
    One stored response.

    @ivar status: the status code.
    @ivar headers: C{(name, value)} pairs of lower-case names and bytes
        values, in the order received, sent as they are on a hit.
    @ivar body: the body (bytes).
    @ivar vary: the C{Vary} names (see L{parse_vary}).
    @ivar etag: the C{ETag} value or L{None}.
    @ivar last_modified: the C{Last-Modified} value or L{None}.
    @ivar modified: C{last_modified} as POSIX seconds, or L{None}.
    @ivar initial_age: its corrected initial age (RFC 9111 section 4.2.3).
    @ivar response_time: the clock time its response arrived.
    @ivar lifetime: its freshness lifetime in seconds.
    @ivar no_cache: whether it must be revalidated before every use.
    @ivar must_revalidate: whether it may never be served stale.
    @ivar stale_while_revalidate: seconds it may be served stale while
        it is refreshed.
    @ivar stale_if_error: seconds it may be served stale when the upstream
        fails.
    @ivar size: what it counts against the store's size (body plus headers).
    """

    __slots__ = (
        "status", "headers", "body", "vary", "etag", "last_modified", "modified", "initial_age",
        "response_time", "lifetime", "no_cache", "must_revalidate", "stale_while_revalidate",
        "stale_if_error", "size",
    )

    def __init__(self, status, headers, body, vary, etag, last_modified, initial_age,
                 response_time, lifetime, no_cache=False, must_revalidate=False,
                 stale_while_revalidate=0, stale_if_error=0):
        self.status = status
        self.headers = headers
        self.body = body
        self.vary = vary
        self.etag = etag
        self.last_modified = last_modified
        self.modified = http_date(last_modified) if last_modified else None
        self.initial_age = initial_age
        self.response_time = response_time
        self.lifetime = lifetime
        self.no_cache = no_cache
        self.must_revalidate = must_revalidate
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.size = len(body) + sum(len(n) + len(v) + 4 for n, v in headers) + 256

    def __repr__(self):
        return "<Entry %d, %d bytes, lifetime %s>" % (self.status, len(self.body), self.lifetime)

    def age(self, now):
        """
        Its current age in seconds at clock time C{now}.
        """
        return self.initial_age + (now - self.response_time)

    def staleness(self, now):
        """
        How many seconds past its freshness lifetime it is at C{now}
        (less than zero: fresh). An entry to revalidate before every use is
        always stale.
        """
        if self.no_cache:
            return max(1.0, self.age(now) - self.lifetime)
        return self.age(now) - self.lifetime

    @property
    def validators(self):
        """
        Whether it can be revalidated (it has an C{ETag} or a
        C{Last-Modified}).
        """
        return self.etag is not None or self.last_modified is not None

    def keep_for(self):
        """
        How long (seconds from when it was stored) a store should keep it:
        its freshness lifetime and the longer of its stale windows, and
        longer when it can be revalidated.
        """
        keep = self.lifetime - self.initial_age + max(self.stale_while_revalidate, self.stale_if_error)
        if self.validators:
            keep = max(keep, 0) + 3600
        return max(keep, 1)


def _single(headers, name):
    for key, value in headers:
        if key == name:
            return value
    return None


def _all(headers, name):
    return [value for key, value in headers if key == name] or None


def make_entry(status, headers, body, request_time, response_time, default_ttl):
    """
    The L{Entry} of a response: C{headers} are C{(lower-case name, value)}
    pairs as received (the ones in L{STORED_HEADERS_DROPPED} are left out),
    C{request_time} and C{response_time} the clock times the request went
    out and the response head came back.
    """
    kept = tuple((n, v) for n, v in headers if n not in STORED_HEADERS_DROPPED)
    cc = parse_cache_control(_all(headers, b"cache-control"))
    date = http_date(_single(headers, b"date"))
    lifetime = freshness_lifetime(cc, date, _all(headers, b"expires"), default_ttl)
    age_value = _single(headers, b"age")
    age = delta_seconds(age_value.decode("latin-1").strip()) if age_value else None
    initial = current_age(date, age, request_time, response_time, response_time)
    return Entry(
        status, kept, body, parse_vary(_all(headers, b"vary")),
        _single(headers, b"etag"), _single(headers, b"last-modified"), initial, response_time,
        lifetime, no_cache="no-cache" in cc,
        must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc,
        stale_while_revalidate=max(cc.seconds("stale-while-revalidate") or 0, 0),
        stale_if_error=max(cc.seconds("stale-if-error") or 0, 0))


def refreshed(entry, headers, request_time, response_time, default_ttl):
    """
    The entry C{entry} updated by a 304's C{headers} (RFC 9111 section
    4.3.4): each header the 304 carries replaces the stored one of that
    name (the body's framing and type excepted), and the freshness is
    worked out again from the result.
    """
    fresh = [(n, v) for n, v in headers if n not in STORED_HEADERS_DROPPED and n not in _NOT_UPDATED]
    names = {n for n, _ in fresh}
    merged = [(n, v) for n, v in entry.headers if n not in names] + fresh
    return make_entry(entry.status, merged, entry.body, request_time, response_time, default_ttl)
