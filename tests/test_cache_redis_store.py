"""
Unit tests for the cache's Redis store (L{gatelayer.cache.redis_store})
without a Redis server: the entry encoding, lookups and their failures
(every one a miss, logged at a low rate), writes and purges, and the
filter answering from the shared store. The store against a real server
is in tests/integration/test_cache_redis.py.
"""

import txredisapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gatelayer.cache import make_entry
from gatelayer.cache.redis_store import (
    COMPLAINT_INTERVAL, VARY_FIELD, WRITE_TIMEOUT, RedisCacheStore, decode_entry, encode_entry)
from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response

# Bytes that are not an encoded entry.
GARBAGE = [
    b"", b"\n", b"x\n{}", b"5\n[1]", b"999\n[]", b"2\n[]", b"-1\n[]", b"12\nnot json!!!",
    b"4\nnull", b"2\n{}", b'27\n[200,"h",[],null,null,0]',
    b'45\n[200,[["a"]],[],null,null,0,0,0,0,0,0,0]',
    b'49\n["x",[],[],null,null,0,0,0,false,false,0,0]xx',
]

# The attributes an encoded entry must keep.
ENTRY_FIELDS = ("status", "headers", "body", "vary", "etag", "last_modified", "modified", "initial_age",
                "response_time", "lifetime", "no_cache", "must_revalidate", "stale_while_revalidate",
                "stale_if_error")


def _entry(body=b"\x00\xff body \xe2\x82\xac", vary=b"Accept-Language"):
    return make_entry(200, [
        (b"content-type", b"text/plain; charset=\xe9"), (b"cache-control", b"max-age=60, stale-if-error=5"),
        (b"etag", b'"e"'), (b"last-modified", b"Thu, 01 Jan 1970 00:00:10 GMT"), (b"vary", vary)],
        body, 100.0, 101.0, None)


class FakeRedis:
    """
    Stands in for a txredisapi handler: a dict of hashes, every command
    recorded; C{hang} leaves commands unanswered, C{error} fails them.
    """

    def __init__(self):
        self.hashes = {}
        self.calls = []
        self.hang = False
        self.error = None
        self.scan_pages = []

    def _reply(self, value):
        if self.hang:
            return Deferred()
        if self.error is not None:
            return fail(self.error)
        return succeed(value)

    def hget(self, name, field):
        """
        HGET.
        """
        self.calls.append(("hget", name, field))
        return self._reply(self.hashes.get(name, {}).get(field))

    def eval(self, script, keys, args):
        """
        EVAL of the put script, run here in Python.
        """
        self.calls.append(("eval", keys, args))
        stored = self.hashes.setdefault(keys[0], {})
        if stored.get(args[0], args[1]) != args[1]:
            stored.clear()
        stored[args[0]] = args[1]
        stored[args[2]] = args[3]
        return self._reply(1)

    def delete(self, *names):
        """
        DEL.
        """
        self.calls.append(("delete",) + names)
        for name in names:
            self.hashes.pop(name, None)
        return self._reply(len(names))

    def scan(self, cursor, pattern, count):
        """
        SCAN, answering the pages of C{scan_pages} in turn.
        """
        self.calls.append(("scan", cursor, pattern))
        return self._reply(self.scan_pages.pop(0))


class FakePooled:
    """
    A pooled connection over a L{StringTransport}.
    """

    def __init__(self):
        self.transport = StringTransport()


class FakePool:
    """
    The part of a txredisapi factory the store uses to reconnect: its pool.
    """

    def __init__(self, pool):
        self.pool = pool
        self.disconnectCalled = True


class EncodingTests(SynchronousTestCase):
    """
    L{encode_entry} and L{decode_entry}.
    """

    def test_round_trip(self):
        """
        An entry comes back whole: binary body, non-ASCII header bytes,
        validators, Vary and freshness.
        """
        entry = _entry()
        back = decode_entry(encode_entry(entry))
        for name in ENTRY_FIELDS:
            self.assertEqual(getattr(back, name), getattr(entry, name), name)

    def test_garbage(self):
        """
        Bytes that are not an entry raise L{ValueError}, never anything
        else.
        """
        for data in GARBAGE:
            with self.subTest(data=data):
                self.assertRaises(ValueError, decode_entry, data)


class RedisCacheStoreTests(SynchronousTestCase):
    """
    L{RedisCacheStore} over L{FakeRedis}.
    """

    def setUp(self):
        self.clock = Clock()
        self.redis = FakeRedis()
        self.store = RedisCacheStore(self.clock, self.redis, b"ns:", timeout=0.1)

    def headers(self, language):
        """
        Request headers with C{Accept-Language: language}.
        """
        return Headers({b"Accept-Language": [language]})

    def test_readonly_reconnects(self):
        """
        A write refused with READONLY (the master was demoted by a
        failover) is dropped like any failed write, and the connections are
        closed so the pool connects to the master again; other errors keep
        them.
        """
        connection = FakePooled()
        self.store.factory = FakePool([connection])
        self.redis.error = txredisapi.ResponseError("ERR other")
        self.successResultOf(self.store.put(b"/a", b"", _entry(vary=b"")))
        self.assertFalse(connection.transport.disconnecting)
        self.redis.error = txredisapi.ResponseError("READONLY You can't write against a read only replica.")
        self.assertIsNone(self.successResultOf(self.store.put(b"/a", b"", _entry(vary=b""))))
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(self.store.counters["write_errors"], 2)

    def test_put_and_fetch(self):
        """
        A stored entry is found for the variant it was stored under, not
        for another; its TTL covers freshness and stale windows.
        """
        entry = _entry()
        self.successResultOf(self.store.put(b"http://h/a", b"en", entry))
        _, keys, args = self.redis.calls[-1]
        self.assertEqual(keys, [b"ns:http://h/a"])
        self.assertEqual(args[:3], [VARY_FIELD, b"accept-language", b"en"])
        self.assertEqual(int(args[4]), int(entry.keep_for() * 1000))
        variant, found = self.successResultOf(self.store.fetch(b"http://h/a", self.headers(b"en")))
        self.assertEqual((variant, found.body), (b"en", entry.body))
        self.assertIsNone(self.successResultOf(self.store.fetch(b"http://h/a", self.headers(b"fr"))))
        self.assertIsNone(self.successResultOf(self.store.fetch(b"http://h/b", self.headers(b"en"))))
        self.assertEqual(self.store.counters["hits"], 1)
        self.assertFalse(self.clock.getDelayedCalls())

    def test_failures_are_misses(self):
        """
        A lookup that errs, hangs past the timeout or finds garbage is a
        miss; the first failure is logged, the next ones within
        COMPLAINT_INTERVAL are only counted.
        """
        self.redis.hashes[b"ns:k"] = {VARY_FIELD: b"", b"": b"garbage"}
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(self.store.fetch(b"k", Headers())))
            self.redis.error = ConnectionError("refused")
            self.assertIsNone(self.successResultOf(self.store.fetch(b"k", Headers())))
            self.redis.error = None
            self.redis.hang = True
            pending = self.store.fetch(b"k", Headers())
            self.assertNoResult(pending)
            self.clock.advance(0.1)
            self.assertIsNone(self.successResultOf(pending))
            self.clock.advance(COMPLAINT_INTERVAL)
            self.redis.hang = False
            self.redis.error = ConnectionError("refused")
            self.store.fetch(b"k", Headers())
        warnings = [e for e in events if "answering without it" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[1]["unreported"], 2)
        self.assertEqual(self.store.counters["timeouts"], 1)
        self.assertEqual(self.store.counters["errors"], 3)

    def test_write_failures_swallowed(self):
        """
        A write or purge that fails is counted and dropped, never raised.
        """
        self.redis.error = ConnectionError("down")
        self.successResultOf(self.store.put(b"k", b"", _entry()))
        self.successResultOf(self.store.remove(b"k"))
        self.successResultOf(self.store.remove_prefix(b"k"))
        self.assertEqual(self.store.counters["write_errors"], 3)

    def test_write_hangs(self):
        """
        A write Redis does not take in time is dropped after
        WRITE_TIMEOUT, its command cancelled so none pile up.
        """
        cancelled = []
        self.redis.eval = lambda script, keys, args: Deferred(cancelled.append)
        writing = self.store.put(b"k", b"", _entry())
        self.clock.advance(WRITE_TIMEOUT - 0.01)
        self.assertNoResult(writing)
        self.clock.advance(0.01)
        self.assertIsNone(self.successResultOf(writing))
        self.assertEqual((len(cancelled), self.store.counters["write_errors"]), (1, 1))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_remove_prefix(self):
        """
        A prefix purge SCANs for the keys under the glob-escaped prefix,
        page by page, and deletes each page.
        """
        self.redis.scan_pages = [(b"7", [b"ns:http://h/a*1"]), (b"0", [b"ns:http://h/a*2"])]
        self.successResultOf(self.store.remove_prefix(b"http://h/a*"))
        self.assertEqual(self.redis.calls, [
            ("scan", 0, b"ns:http://h/a\\**"), ("delete", b"ns:http://h/a*1"),
            ("scan", b"7", b"ns:http://h/a\\**"), ("delete", b"ns:http://h/a*2")])

    def test_remove(self):
        """
        A key purge deletes the URL's hash (all its variants).
        """
        self.store.put(b"k", b"en", _entry())
        self.store.remove(b"k")
        self.assertEqual(self.redis.hashes, {})


CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:c]
type = cache
[route:r]
path = /
upstream = app
filters = c
"""


class SharedStoreFilterTests(SynchronousTestCase):
    """
    The cache filter asking its shared store when its memory misses.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.cache = self.gate.gateway.filters["c"]
        self.redis = FakeRedis()
        self.cache.shared = RedisCacheStore(self.gate.reactor, self.redis, b"ns:")

    def get(self, language=b"en"):
        """
        A GET of /a in C{language}; returns the client transport.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\nAccept-Language: " + language + b"\r\n\r\n")
        return client

    def test_hit_from_shared(self):
        """
        An entry another worker stored is answered without the upstream
        (HIT) and kept in this worker's memory too.
        """
        self.cache.shared.put(b"http://h/a", b"en", _entry(body=b"shared"))
        status, headers, body = parse_response(self.get().value())
        self.assertEqual((status, body, headers[b"x-cache"]), (200, b"shared", [b"HIT"]))
        self.assertEqual(self.gate.reactor.tcpClients, [])
        self.assertEqual(len(self.cache.store), 1)

    def test_failing_shared_store_is_a_miss(self):
        """
        A shared store that does not answer makes a miss after its
        timeout: the request goes upstream, no error.
        """
        self.redis.hang = True
        self.get(b"fr")
        self.assertEqual(self.gate.reactor.tcpClients, [])
        self.gate.reactor.advance(0.1)
        self.assertEqual(len(self.gate.reactor.tcpClients), 1)

    def test_stored_in_both(self):
        """
        A response stored by this worker goes to the shared store as
        well; a purge removes it from both.
        """
        self.redis.hang = False
        client = self.get()
        _, protocol = accept_upstream(self.gate.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(parse_response(client.value())[2], b"ok")
        self.assertIn(b"ns:http://h/a", self.redis.hashes)
        self.assertEqual(self.cache.purge(b"http://h/a"), 1)
        self.assertEqual(self.redis.hashes, {})
