"""
The cache's Redis store against a real redis-server: entries written and
read back (binary bodies, Vary), purges by key and by prefix, a store that
is down answering misses; and two real workers sharing entries through it.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from gatelayer.cache import make_entry
from gatelayer.cache.redis_store import RedisCacheStore
from gatelayer.testing.cacheable import CacheableOrigin, origin_path
from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.http import fetch
from gatelayer.testing.redis import RedisServer
from gatelayer.testing.upstreams import serve_quietly
from gatelayer.testing.waiting import wait_until


def _entry(body, vary=b"Accept-Language"):
    return make_entry(200, [(b"cache-control", b"max-age=60"), (b"vary", vary)], body,
                      reactor.seconds(), reactor.seconds(), None)


class RedisCacheStoreTests(TestCase):
    """
    L{RedisCacheStore} on a redis-server started for each test.
    """

    timeout = 60

    def setUp(self):
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.store = RedisCacheStore.from_url(reactor, self.redis.url, b"test:", timeout=2.0)
        self.addCleanup(self.store.close)

    @inlineCallbacks
    def test_round_trip(self):
        """
        What is put is fetched back for its variant, body bytes intact.
        """
        body = bytes(range(256)) * 40
        yield self.store.put(b"http://h/a", b"en", _entry(body))
        yield self.store.put(b"http://h/a", b"fr", _entry(b"fr"))
        variant, entry = yield self.store.fetch(b"http://h/a", Headers({b"Accept-Language": [b"en"]}))
        self.assertEqual((variant, entry.body), (b"en", body))
        _, entry = yield self.store.fetch(b"http://h/a", Headers({b"Accept-Language": [b"fr"]}))
        self.assertEqual(entry.body, b"fr")
        missing = yield self.store.fetch(b"http://h/a", Headers({b"Accept-Language": [b"de"]}))
        self.assertIsNone(missing)
        ttl = self.redis.command("PTTL", "test:http://h/a")
        self.assertIn(b":", ttl)
        self.assertGreater(int(ttl.strip().lstrip(b":")), 50000)

    @inlineCallbacks
    def test_new_vary_replaces(self):
        """
        Storing a URL under other Vary names drops its old variants.
        """
        yield self.store.put(b"http://h/v", b"en", _entry(b"en"))
        yield self.store.put(b"http://h/v", b"gzip", _entry(b"gz", vary=b"Accept-Encoding"))
        old = yield self.store.fetch(b"http://h/v", Headers({b"Accept-Language": [b"en"]}))
        self.assertIsNone(old)
        new = yield self.store.fetch(b"http://h/v", Headers({b"Accept-Encoding": [b"gzip"]}))
        self.assertEqual(new[1].body, b"gz")

    @inlineCallbacks
    def test_purges(self):
        """
        A key purge removes one URL; a prefix purge every URL under it,
        glob characters in the prefix taken literally.
        """
        for path in (b"/p/1", b"/p/2", b"/p*/3", b"/q"):
            yield self.store.put(b"http://h" + path, b"", _entry(path, vary=b""))
        yield self.store.remove(b"http://h/q")
        self.assertIsNone((yield self.store.fetch(b"http://h/q", Headers())))
        yield self.store.remove_prefix(b"http://h/p*")
        self.assertIsNone((yield self.store.fetch(b"http://h/p*/3", Headers())))
        self.assertIsNotNone((yield self.store.fetch(b"http://h/p/1", Headers())))
        yield self.store.remove_prefix(b"http://h/p/")
        self.assertIsNone((yield self.store.fetch(b"http://h/p/2", Headers())))

    @inlineCallbacks
    def test_down_is_a_miss(self):
        """
        With the server gone, a lookup is a miss within the timeout and a
        write fails quietly.
        """
        yield self.store.put(b"http://h/d", b"", _entry(b"d", vary=b""))
        self.redis.stop()
        quick = RedisCacheStore(reactor, self.store.redis, b"test:", timeout=0.3)
        started = reactor.seconds()
        found = yield quick.fetch(b"http://h/d", Headers())
        self.assertIsNone(found)
        self.assertLess(reactor.seconds() - started, 5)
        yield quick.put(b"http://h/d", b"", _entry(b"d", vary=b""))
        self.assertEqual(quick.counters["write_errors"], 1)


GATE = """
[gateway]
workers = 2
admin = 127.0.0.1:0
[listener:web]
bind = 127.0.0.1:0
[upstream:origin]
servers = 127.0.0.1:{port}
[filter:cache]
type = cache
store = {redis}
store_timeout = 500ms
[route:cached]
path = /
upstream = origin
filters = cache
"""


class SharedCacheGatewayTests(TestCase):
    """
    Two real workers with one Redis store: what one fetched, the other
    answers without the origin.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.redis = RedisServer()
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.origin = CacheableOrigin(reactor)
        port = serve_quietly(reactor, self.origin)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        self.gate = GatewayProcess(reactor, directory, GATE.format(
            port=port.getHost().port, redis=self.redis.url))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()

    @inlineCallbacks
    def test_shared_between_workers(self):
        """
        Requests spread over both workers (until both hold the entry) make
        one origin request: the second worker found it in Redis.
        """
        target = origin_path("/shared", cc="max-age=300")
        url = self.gate.url("web", target.decode("ascii"))
        first = yield fetch(reactor, url)
        self.assertEqual(first.header(b"x-cache"), b"MISS")

        @inlineCallbacks
        def both_hold_it():
            responses = yield gatherResults([fetch(reactor, url) for _ in range(8)])
            self.assertEqual({r.header(b"x-cache") for r in responses}, {b"HIT"})
            status = yield fetch(reactor, self.gate.admin_url("/status"))
            return status.json()["cache"]["cache"]["entries"] == 2
        yield wait_until(reactor, both_hold_it, timeout=30, what="both workers holding the entry")
        self.assertEqual(self.origin.requests[b"/shared"], 1)

    @inlineCallbacks
    def test_redis_down(self):
        """
        With Redis gone, requests are answered through the origin (MISS),
        never with an error, and the workers stay up.
        """
        self.redis.stop()
        target = origin_path("/down", cc="max-age=300")
        for _ in range(3):
            response = yield fetch(reactor, self.gate.url("web", target.decode("ascii")))
            self.assertEqual(response.status, 200)
            self.assertIn(response.header(b"x-cache"), (b"MISS", b"HIT"))
        health = yield fetch(reactor, self.gate.admin_url("/healthz"))
        self.assertEqual(health.status, 200)
