"""
The cache filter through a real worker in front of a real origin
(L{gatelayer.testing.cacheable.CacheableOrigin}) that counts the requests
it gets: a HIT after a MISS with its Age, a Vary split, revalidation with
a 304 (in the foreground, and in the background within
stale-while-revalidate), and 100 concurrent misses making one upstream
request.
"""

import os
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.cacheable import CacheableOrigin, origin_path
from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.http import fetch, send_raw
from gatelayer.testing.server import parse_response
from gatelayer.testing.upstreams import serve_quietly
from gatelayer.testing.waiting import wait_until

GATE = """
[gateway]
workers = 1
http_server = {http_server}
[listener:web]
bind = 127.0.0.1:0
[upstream:origin]
servers = 127.0.0.1:{port}
[filter:cache]
type = cache
size = 8MB
max_entry_size = 256KB
lock_timeout = 10s
purge_from = 127.0.0.1
[route:cached]
path = /
upstream = origin
filters = cache
"""


def _quoted(url):
    """
    C{url} (bytes) percent-encoded as a query value.
    """
    return quote(url, safe="").encode("ascii")


class CacheGatewayIntegrationTests(TestCase):
    """
    One real worker (lean channel) caching what the origin lets it.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.origin = CacheableOrigin(reactor)
        port = serve_quietly(reactor, self.origin)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        self.gate = GatewayProcess(
            reactor, directory, GATE.format(http_server=self.http_server, port=port.getHost().port))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()

    def get(self, target, headers=None, method=b"GET"):
        """
        One request to the gateway; fires with a
        L{gatelayer.testing.http.Response}.
        """
        return fetch(reactor, self.gate.url("web", target.decode("ascii")), method=method,
                     headers=headers)

    @inlineCallbacks
    def test_hit_after_miss(self):
        """
        The first GET is a MISS; the next is a HIT with the same body, an
        Age no smaller than the origin's, and no request to the origin.
        """
        target = origin_path("/hit", cc="max-age=300", age="5")
        first = yield self.get(target)
        self.assertEqual((first.status, first.header(b"x-cache")), (200, b"MISS"))
        second = yield self.get(target)
        self.assertEqual((second.status, second.header(b"x-cache")), (200, b"HIT"))
        self.assertEqual(second.body, first.body)
        self.assertGreaterEqual(int(second.header(b"age")), 5)
        self.assertEqual(second.json()["count"], 1)
        head = yield self.get(target, method=b"HEAD")
        self.assertEqual((head.status, head.header(b"x-cache"), head.body), (200, b"HIT", b""))
        self.assertEqual(self.origin.requests[b"/hit"], 1)

    @inlineCallbacks
    def test_vary_split(self):
        """
        A response varying on Accept-Language is stored per language.
        """
        target = origin_path("/vary", cc="max-age=300", vary="Accept-Language")
        for language, outcome in ((b"en", b"MISS"), (b"fr", b"MISS"), (b"en", b"HIT"), (b"fr", b"HIT")):
            response = yield self.get(target, {b"Accept-Language": [language]})
            self.assertEqual(response.header(b"x-cache"), outcome, language)
            self.assertEqual(response.json()["varied"], {"Accept-Language": language.decode("ascii")})
        self.assertEqual(self.origin.requests[b"/vary"], 2)

    @inlineCallbacks
    def test_revalidation(self):
        """
        An entry that must be revalidated before each use (max-age=0, an
        ETag) is revalidated with If-None-Match; the origin's 304
        refreshes it and the client gets the stored body (EXPIRED).
        """
        target = origin_path("/reval", cc="max-age=0", etag='"r1"')
        first = yield self.get(target)
        self.assertEqual((first.header(b"x-cache"), first.json()["count"]), (b"MISS", 1))
        for _ in range(2):
            again = yield self.get(target)
            self.assertEqual((again.status, again.header(b"x-cache")), (200, b"EXPIRED"))
            self.assertEqual(again.body, first.body)
        self.assertEqual(self.origin.not_modified[b"/reval"], 2)
        mine = yield self.get(target, {b"If-None-Match": [b'"r1"']})
        self.assertEqual((mine.status, mine.body), (304, b""))

    @inlineCallbacks
    def test_stale_while_revalidate(self):
        """
        Once an entry with stale-while-revalidate and an ETag expires, the
        first request gets it at once (STALE, its Age) while one
        conditional request refreshes it in the background: the origin
        answers 304 (with a longer max-age, so the refreshed entry is fresh
        whatever the machine's load), and the next request is a HIT.
        """
        target = origin_path("/swr", cc="max-age=1, stale-while-revalidate=30", etag='"s1"',
                             refreshed_cc="max-age=60, stale-while-revalidate=30")
        first = yield self.get(target)
        self.assertEqual(first.header(b"x-cache"), b"MISS")

        @inlineCallbacks
        def past_max_age():
            response = yield self.get(target)
            return response if response.header(b"x-cache") != b"HIT" else None
        stale = yield wait_until(reactor, past_max_age, timeout=10, interval=0.1, what="the entry expiring")
        self.assertEqual((stale.status, stale.header(b"x-cache"), stale.body), (200, b"STALE", first.body))
        self.assertGreaterEqual(int(stale.header(b"age")), 1)
        yield wait_until(reactor, lambda: self.origin.not_modified[b"/swr"] == 1, timeout=10,
                         what="the background revalidation")
        self.assertEqual(self.origin.requests[b"/swr"], 2)
        hit = yield self.get(target)
        self.assertEqual((hit.header(b"x-cache"), hit.body), (b"HIT", first.body))
        self.assertEqual(self.origin.requests[b"/swr"], 2)

    @inlineCallbacks
    def test_stale_if_error(self):
        """
        An entry already past its freshness (the origin's Age is larger
        than its max-age) but within stale-if-error answers for an origin
        that fails (STALE); one without the window lets the failure
        through.
        """
        target = origin_path("/sie", cc="max-age=10, stale-if-error=600", age="100")
        plain = origin_path("/plain", cc="max-age=10", age="100", etag='"p"')
        first = yield self.get(target)
        yield self.get(plain)
        self.origin.failing = True
        stale = yield self.get(target)
        self.assertEqual((stale.status, stale.header(b"x-cache"), stale.body),
                         (200, b"STALE", first.body))
        self.assertGreaterEqual(int(stale.header(b"age")), 100)
        failed = yield self.get(plain)
        self.assertEqual((failed.status, failed.header(b"x-cache")), (503, b"EXPIRED"))

    @inlineCallbacks
    def test_concurrent_misses(self):
        """
        100 concurrent requests for one uncached URL make one request to
        the origin; every client gets its body.
        """
        target = origin_path("/crowd", cc="max-age=300", delay="0.5")
        responses = yield gatherResults([self.get(target) for _ in range(100)])
        self.assertEqual(self.origin.requests[b"/crowd"], 1)
        self.assertEqual({r.status for r in responses}, {200})
        self.assertEqual({r.json()["count"] for r in responses}, {1})
        outcomes = sorted(r.header(b"x-cache") for r in responses)
        self.assertEqual(outcomes, [b"HIT"] * 99 + [b"MISS"])

    @inlineCallbacks
    def test_not_stored(self):
        """
        Responses a shared cache must not keep (no-store, private,
        Set-Cookie, Vary *) reach the origin every time.
        """
        table = [
            origin_path("/ns/1", cc="no-store"),
            origin_path("/ns/2", cc="private, max-age=60"),
            origin_path("/ns/3", cc="max-age=60", cookie="id=1"),
            origin_path("/ns/4", cc="max-age=60", vary="*"),
        ]
        for target in table:
            for _ in range(2):
                response = yield self.get(target)
                self.assertEqual(response.header(b"x-cache"), b"MISS", target)
        for index in range(1, 5):
            self.assertEqual(self.origin.requests[b"/ns/%d" % (index,)], 2)

    @inlineCallbacks
    def test_purge(self):
        """
        PURGE from a listed address removes the entry; the next GET goes
        to the origin again.
        """
        target = origin_path("/purged", cc="max-age=300")
        yield self.get(target)
        purged = yield self.get(target, method=b"PURGE")
        self.assertEqual((purged.status, purged.json()), (200, {"purged": 1, "workers": 1}))
        again = yield self.get(target)
        self.assertEqual((again.header(b"x-cache"), self.origin.requests[b"/purged"]), (b"MISS", 2))

    @inlineCallbacks
    def test_hostile_requests(self):
        """
        Malformed requests get the gateway's 400 and never reach the
        origin or the cache, whole or byte by byte; the worker keeps
        serving hits.
        """
        target = origin_path("/hostile", cc="max-age=300")
        yield self.get(target)
        bad = [
            b"GET " + target + b" HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"get " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ]
        for data in bad:
            for byte_by_byte in (False, True):
                raw = yield send_raw(reactor, self.gate.address("web"), data, byte_by_byte)
                self.assertEqual(parse_response(raw)[0], 400, data)
        hit = yield self.get(target)
        self.assertEqual(hit.header(b"x-cache"), b"HIT")
        self.assertEqual(self.origin.requests[b"/hostile"], 1)


class TwistedChannelCacheGatewayIntegrationTests(CacheGatewayIntegrationTests):
    """
    The same through the twisted.web server channel.
    """

    http_server = "twisted"


TWO_WORKERS = """
[gateway]
workers = 2
admin = 127.0.0.1:0
[listener:web]
bind = 127.0.0.1:0
[upstream:origin]
servers = 127.0.0.1:{port}
[filter:cache]
type = cache
purge_from = 127.0.0.1
[route:cached]
path = /
upstream = origin
filters = cache
"""


class CachePurgeEverywhereIntegrationTests(TestCase):
    """
    Two real workers, each with its own memory store: a purge through the
    admin endpoint or a PURGE request reaches both, and /status adds up
    their counters.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.origin = CacheableOrigin(reactor)
        port = serve_quietly(reactor, self.origin)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        self.gate = GatewayProcess(reactor, directory, TWO_WORKERS.format(port=port.getHost().port))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()

    @inlineCallbacks
    def cache_status(self):
        """
        The C{cache} filter's row of the admin /status.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()["cache"]["cache"]

    @inlineCallbacks
    def stored_by_both(self, target):
        """
        Send requests for C{target} (new connections, spread over the
        workers by the kernel) until both workers have stored it.
        """
        url = self.gate.url("web", target.decode("ascii"))

        @inlineCallbacks
        def both():
            yield gatherResults([fetch(reactor, url) for _ in range(8)])
            status = yield self.cache_status()
            return status["entries"] == 2
        yield wait_until(reactor, both, timeout=30, what="both workers storing " + target.decode())

    @inlineCallbacks
    def test_admin_purge(self):
        """
        POST /cache/purge?key= removes the entry from both workers; the
        counters show every outcome.
        """
        target = origin_path("/both", cc="max-age=300")
        yield self.stored_by_both(target)
        status = yield self.cache_status()
        self.assertEqual(status["MISS"], 2)
        self.assertGreater(status["HIT"], 0)
        key = self.gate.url("web", target.decode("ascii"))
        purged = yield fetch(reactor, self.gate.admin_url("/cache/purge?key=") + _quoted(key), method=b"POST")
        self.assertEqual((purged.status, purged.json()), (200, {"purged": 2, "workers": 2}))
        status = yield self.cache_status()
        self.assertEqual(status["entries"], 0)

    @inlineCallbacks
    def test_admin_purge_prefix_and_errors(self):
        """
        A prefix purge removes every URL under it; a request naming
        neither key nor prefix, or both, is refused with 400.
        """
        yield self.stored_by_both(origin_path("/tree/a", cc="max-age=300"))
        prefix = self.gate.url("web", "/tree/")
        purged = yield fetch(reactor, self.gate.admin_url("/cache/purge?prefix=") + _quoted(prefix),
                             method=b"POST")
        self.assertEqual(purged.json(), {"purged": 2, "workers": 2})
        for query in (b"", b"?key=a&prefix=b", b"?key=", b"?other=1"):
            refused = yield fetch(reactor, self.gate.admin_url("/cache/purge") + query, method=b"POST")
            self.assertEqual(refused.status, 400, query)
        wrong = yield fetch(reactor, self.gate.admin_url("/cache/purge?key=x"))
        self.assertEqual(wrong.status, 405)

    @inlineCallbacks
    def test_purge_request_reaches_both(self):
        """
        A PURGE request received by one worker goes through the master to
        both.
        """
        target = origin_path("/purge-both", cc="max-age=300")
        yield self.stored_by_both(target)
        purged = yield fetch(reactor, self.gate.url("web", target.decode("ascii")), method=b"PURGE")
        self.assertEqual((purged.status, purged.json()), (200, {"purged": 2, "workers": 2}))
        status = yield self.cache_status()
        self.assertEqual(status["entries"], 0)
