"""
The cache's shared store in Redis: entries every worker (and every gateway
host using the same Redis) can answer from.

Each URL key is one Redis hash (C{gatelayer:cache:FILTER:URL-KEY}): the
field C{\\0vary} holds the C{Vary} names of the URL, and one field per
variant holds its entry, serialized compactly (a JSON head of the status,
headers and freshness facts, then the body's bytes). The hash expires when
its longest-lived entry should go, so Redis forgets entries by itself.

The store never fails a request: a lookup that errs or takes longer than
its timeout is a miss, a write that errs is dropped, and either is logged
at most once per L{COMPLAINT_INTERVAL} seconds (with a count of the
others).
"""

import json

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gatelayer.cache.entry import Entry
from gatelayer.cache.policy import variant_of
from gatelayer.net.redisurl import RedisAddress, parse_store_url
from gatelayer.ratelimit.sentinel import is_readonly

__all__ = [
    "COMPLAINT_INTERVAL", "PURGE_TIMEOUT", "RedisCacheStore", "WRITE_TIMEOUT", "decode_entry",
    "encode_entry"]

COMPLAINT_INTERVAL = 10.0
"""The least time (seconds) between two log lines about a failing store."""

WRITE_TIMEOUT = 1.0
"""The least time (seconds) a write may take before it is dropped."""

PURGE_TIMEOUT = 30.0
"""The least time (seconds) a purge may take (a prefix purge scans)."""

VARY_FIELD = b"\x00vary"
# No variant is this: a variant's parts are header values (never holding
# NUL) or a lone NUL, joined by LF.

# Replace the URL's variants when its Vary names change; store the entry;
# keep the hash as long as its longest-lived entry.
_PUT_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and old ~= ARGV[2] then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
return 1
"""

_GLOB_SPECIAL = frozenset(b"*?[]\\")
_log = Logger(namespace="gatelayer.cache.redis_store")


def encode_entry(entry):
    """
    The bytes an entry is kept as: the length of a JSON head, LF, the
    head, the body.
    """
    head = json.dumps([
        entry.status, [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        [n.decode("latin-1") for n in entry.vary],
        entry.etag.decode("latin-1") if entry.etag is not None else None,
        entry.last_modified.decode("latin-1") if entry.last_modified is not None else None,
        entry.initial_age, entry.response_time, entry.lifetime, entry.no_cache,
        entry.must_revalidate, entry.stale_while_revalidate, entry.stale_if_error,
    ], separators=(",", ":")).encode("ascii")
    return b"%d\n" % (len(head),) + head + entry.body


def decode_entry(data):
    """
    The L{Entry} C{data} (from L{encode_entry}) holds.

    @raise ValueError: it is not such bytes.
    """
    size, newline, rest = data.partition(b"\n")
    if not newline or not size.isdigit() or int(size) > len(rest):
        raise ValueError("not a cache entry")
    size = int(size)
    try:
        (status, headers, vary, etag, last_modified, initial_age, response_time, lifetime,
         no_cache, must_revalidate, swr, sie) = json.loads(rest[:size])
        return Entry(
            int(status), tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in headers),
            rest[size:], tuple(n.encode("latin-1") for n in vary),
            etag.encode("latin-1") if etag is not None else None,
            last_modified.encode("latin-1") if last_modified is not None else None,
            float(initial_age), float(response_time), float(lifetime), bool(no_cache),
            bool(must_revalidate), float(swr), float(sie))
    except (TypeError, ValueError, AttributeError, UnicodeError) as e:
        raise ValueError(f"not a cache entry ({e})") from None


def _glob_escaped(data):
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in data)


def connect(reactor, address, connect_timeout=1.0, pool_size=2):
    """
    A lazy txredisapi connection pool to C{address} (a L{RedisAddress}),
    connecting and reconnecting in the background as the rate-limit store's
    does (following the master for a C{redis+sentinel://} address).
    """
    from gatelayer.ratelimit.redis_store import redis_pool
    return redis_pool(reactor, address, pool_size, connect_timeout, charset=None)


class RedisCacheStore:
    """
    A cache filter's entries in Redis (see the module docstring).

    @ivar counters: lookups, hits, errors and timeouts, writes and dropped
        writes.
    """

    def __init__(self, clock, redis, namespace, timeout=0.1, factory=None):
        """
        @param clock: an L{twisted.internet.interfaces.IReactorTime}
            (timeouts, log pacing).
        @param redis: a txredisapi connection handler (or anything with
            its C{hget}, C{eval}, C{delete} and C{scan}).
        @param namespace: bytes put before every URL key.
        @param timeout: seconds a lookup may take before it is a miss.
        @param factory: the connection factory to disconnect on L{close}.
        """
        self.clock = clock
        self.redis = redis
        self.namespace = namespace
        self.timeout = timeout
        self.factory = factory
        self.counters = {"lookups": 0, "hits": 0, "errors": 0, "timeouts": 0, "writes": 0,
                         "write_errors": 0}
        self._last_complaint = None
        self._unreported = 0

    @classmethod
    def from_url(cls, reactor, url, namespace, timeout=0.1):
        """
        A store connected to C{url} (text or a L{RedisAddress}).
        """
        address = url if isinstance(url, RedisAddress) else parse_store_url(url)
        factory = connect(reactor, address)
        return cls(reactor, factory.handler, namespace, timeout, factory)

    def _complain(self, what, detail):
        now = self.clock.seconds()
        if self._last_complaint is not None and now - self._last_complaint < COMPLAINT_INTERVAL:
            self._unreported += 1
            return
        _log.warn("cache store {what} failed ({detail}); answering without it"
                  " ({unreported} more failures since the last report)",
                  what=what, detail=detail, unreported=self._unreported)
        self._last_complaint = now
        self._unreported = 0

    def _bounded(self, command, what, counter="errors", timeout=None):
        """
        Fire with C{command}'s result, or with L{None} on error or after
        the timeout (never fails); a command still waiting for a
        connection when its time is up is cancelled, so nothing piles up
        while Redis is away.
        """
        result = Deferred()
        sent = []
        timeout = self.timeout if timeout is None else timeout

        def timed_out():
            if not result.called:
                self.counters["timeouts" if counter == "errors" else counter] += 1
                self._complain(what, "no answer in %gs" % (timeout,))
                result.callback(None)
                for d in sent:
                    d.cancel()
        timer = self.clock.callLater(timeout, timed_out)

        def answered(value):
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(value)

        def failed(failure):
            if timer.active():
                timer.cancel()
            if is_readonly(failure):
                self._reconnect()
            if not result.called:
                self.counters[counter] += 1
                self._complain(what, failure.getErrorMessage())
                result.callback(None)
        try:
            d = command()
        except Exception as e:
            d = Deferred()
            d.errback(e)
        sent.append(d)
        d.addCallbacks(answered, failed)
        return result

    def _reconnect(self):
        """
        Drop the connections after Redis answered as a replica (a master
        demoted by a failover), so the pool connects to the master again
        (through the Sentinels for a C{redis+sentinel://} store).
        """
        if self.factory is not None:
            for connection in list(self.factory.pool):
                if connection.transport is not None:
                    connection.transport.loseConnection()

    def fetch(self, primary, headers):
        """
        Look up the variant of the URL key C{primary} that the request
        C{headers} select; fires with C{(full key, entry)} or L{None}
        (nothing stored, an unreadable entry, a failing store).
        """
        self.counters["lookups"] += 1
        name = self.namespace + primary
        vary = self._bounded(lambda: self.redis.hget(name, VARY_FIELD), "lookup")

        def found_vary(names):
            if names is None:
                return None
            if isinstance(names, str):
                names = names.encode("utf-8")
            names = tuple(n for n in names.split(b"\n") if n)
            variant = variant_of(names, headers)
            return self._bounded(lambda: self.redis.hget(name, variant), "lookup").addCallback(
                found_entry, variant)

        def found_entry(data, variant):
            if data is None:
                return None
            if isinstance(data, str):
                data = data.encode("utf-8")
            try:
                entry = decode_entry(data)
            except ValueError as e:
                self.counters["errors"] += 1
                self._complain("lookup", str(e))
                return None
            self.counters["hits"] += 1
            return variant, entry
        return vary.addCallback(found_vary)

    def put(self, primary, variant, entry):
        """
        Store C{entry} for the URL key C{primary} and its C{variant}, in
        the background (a failure is logged and forgotten).
        """
        self.counters["writes"] += 1
        ttl = max(1, int(entry.keep_for() * 1000))
        args = [VARY_FIELD, b"\n".join(entry.vary), variant, encode_entry(entry), str(ttl)]
        return self._bounded(lambda: self.redis.eval(_PUT_SCRIPT, [self.namespace + primary], args),
                             "write", "write_errors", max(self.timeout, WRITE_TIMEOUT))

    def remove(self, primary):
        """
        Remove every variant of the URL key C{primary}, in the background.
        """
        return self._background(lambda: self.redis.delete(self.namespace + primary), "purge")

    def remove_prefix(self, prefix):
        """
        Remove every URL key starting with C{prefix}: keys are found with
        SCAN (never KEYS, which would stop Redis) and deleted batch by
        batch, in the background.
        """
        pattern = _glob_escaped(self.namespace + prefix) + b"*"

        def step(cursor):
            return self.redis.scan(cursor, pattern, 500).addCallback(scanned)

        def scanned(reply):
            cursor, keys = reply
            d = self.redis.delete(*keys) if keys else None
            if int(cursor) == 0:
                return d
            if d is None:
                return step(cursor)
            return d.addCallback(lambda _: step(cursor))
        return self._background(lambda: step(0), "purge")

    def _background(self, command, what):
        return self._bounded(command, what, "write_errors", max(self.timeout, PURGE_TIMEOUT))

    def close(self):
        """
        Close the connections (a Deferred firing once they are).
        """
        if self.factory is None or self.factory.disconnectCalled:
            return None
        return self.factory.disconnect()
