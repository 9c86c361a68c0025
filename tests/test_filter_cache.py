"""
Tests for the cache filter (L{gatelayer.filters.cache}) and its settings
(L{gatelayer.config.filter_cache}): through an in-memory gateway with both
server channels, an upstream fed by hand, and a memory clock.
"""

import json
import os
import re

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.python.failure import Failure

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodyFilter, RouteChain
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filter_cache import parse_filter
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters.cache import CacheFilter
from gatelayer.testing.config import parse_section
from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response, with_server

CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[upstream:canary]
servers = 10.0.0.2:80
[filter:c]
type = cache
max_entry_size = 1KB
lock_timeout = 5s
purge_from = 10.9.0.0/16, 127.0.0.1
[filter:sorted]
type = cache
key_query = sorted
key_extra = header:X-Tenant
default_ttl = 30s
[route:sorted]
path = /sorted/
upstream = app
filters = sorted
[route:split]
path = /split/
upstream = app:100, canary:0
filters = c
[route:r]
path = /
upstream = app
filters = c
"""


def response(status=200, headers=(), body=b"hello", reason=b"OK"):
    """
    An upstream response with a Content-Length.
    """
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


FRESH = ((b"Cache-Control", b"max-age=60"),)
TAGGED = ((b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"'),
          (b"Last-Modified", b"Thu, 01 Jan 1970 00:00:10 GMT"))

# (response headers, status): responses a shared cache must not store.
UNSTORED = [
    (((b"Cache-Control", b"no-store, max-age=60"),), 200),
    (((b"Cache-Control", b"private, max-age=60"),), 200),
    (((b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"session=1")), 200),
    (((b"Cache-Control", b"max-age=60"), (b"Vary", b"*")), 200),
    (((b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept, *")), 200),
    (((b"Cache-Control", b"max-age=0"),), 200),
    (((b"Cache-Control", b"max-age=-60"),), 200),
    (((b"Cache-Control", b"max-age=60, max-age=120"),), 200),
    (((b"Cache-Control", b"no-cache"),), 200),
    (((b"Expires", b"0"),), 200),
    ((), 200),
    (((b"Cache-Control", b"public"),), 200),
    (((b"Cache-Control", b"max-age=60"),), 500),
    (((b"Cache-Control", b"max-age=60"),), 206),
    (((b"Cache-Control", b"max-age=60"),), 201),
]

# (method, extra request headers): requests the cache does not answer.
BYPASSED = [
    (b"POST", ()),
    (b"PUT", ()),
    (b"DELETE", ()),
    (b"OPTIONS", ()),
    (b"PATCH", ()),
    (b"GET", ((b"Range", b"bytes=0-1"),)),
]


class CacheSettingsTests(SynchronousTestCase):
    """
    Reading a C{type = cache} section.
    """

    def test_defaults(self):
        """
        Without keys: 64MB per worker, 1MB entries, no heuristic
        freshness, 5s lock, the query as is, no PURGE.
        """
        settings, problems = parse_section(parse_filter, "filter:c", {})
        self.assertEqual(problems, [])
        self.assertEqual(settings.size, 64 * 1024 * 1024)
        self.assertEqual(settings.max_entry_size, 1024 * 1024)
        self.assertIsNone(settings.default_ttl)
        self.assertEqual(settings.lock_timeout, 5.0)
        self.assertEqual(settings.key_query, "as_is")
        self.assertEqual(settings.key_extra, ())
        self.assertEqual(settings.purge_from, ())

    def test_values(self):
        """
        Every key is read.
        """
        settings, problems = parse_section(parse_filter, "filter:c", {
            "size": "8MB", "max_entry_size": "64KB", "default_ttl": "1m", "lock_timeout": "500ms",
            "key_query": "sorted", "key_extra": "header:X-Tenant, header:Accept-Language",
            "purge_from": "10.0.0.0/8, ::1", "store": "redis://:secret@127.0.0.1:6380/2",
            "store_timeout": "250ms"})
        self.assertEqual(problems, [])
        self.assertEqual((settings.store.host, settings.store.port, settings.store.db), ("127.0.0.1", 6380, 2))
        self.assertEqual(settings.store_timeout, 0.25)
        self.assertEqual(settings.size, 8 * 1024 * 1024)
        self.assertEqual(settings.max_entry_size, 64 * 1024)
        self.assertEqual(settings.default_ttl, 60.0)
        self.assertEqual(settings.lock_timeout, 0.5)
        self.assertEqual(settings.key_query, "sorted")
        self.assertEqual(settings.key_extra, (b"x-tenant", b"accept-language"))
        self.assertEqual([str(n) for n in settings.purge_from], ["10.0.0.0/8", "::1/128"])

    def test_problems(self):
        """
        Each bad value is a configuration error naming section and key.
        """
        table = [
            ({"size": "lots"}, "[filter:c] size"),
            ({"size": "10"}, "[filter:c] size"),
            ({"size": "1MB", "max_entry_size": "2MB"}, "[filter:c] max_entry_size"),
            ({"max_entry_size": "0"}, "[filter:c] max_entry_size"),
            ({"default_ttl": "0s"}, "[filter:c] default_ttl"),
            ({"default_ttl": "soon"}, "[filter:c] default_ttl"),
            ({"lock_timeout": "2m"}, "[filter:c] lock_timeout"),
            ({"key_query": "random"}, "[filter:c] key_query"),
            ({"key_extra": "cookie:x"}, "[filter:c] key_extra"),
            ({"key_extra": "header:"}, "[filter:c] key_extra"),
            ({"key_extra": "header:a b"}, "[filter:c] key_extra"),
            ({"purge_from": "10.0.0.0/33"}, "[filter:c] purge_from"),
            ({"purge_from": "everyone"}, "[filter:c] purge_from"),
            ({"ttl": "1m"}, "[filter:c] ttl"),
            ({"store": "http://:secret@127.0.0.1/"}, "[filter:c] store"),
            ({"store": "redis://:secret@127.0.0.1:6379/0?ca=x.pem"}, "[filter:c] store"),
            ({"store": "rediss://:secret@127.0.0.1:6379/0?ca=/no/such/ca.pem"}, "[filter:c] store"),
            ({"store_timeout": "0s"}, "[filter:c] store_timeout"),
            ({"store_timeout": "2m"}, "[filter:c] store_timeout"),
        ]
        for items, where in table:
            text = "[filter:c]\ntype = cache\n" + "".join(f"{k} = {v}\n" for k, v in items.items())
            with self.subTest(items=items):
                error = self.assertRaises(ConfigError, parse_config_text, text, "gate.ini")
                self.assertIn(where, str(error))
                self.assertNotIn("secret", str(error))

    def test_documented_example(self):
        """
        The worked example of docs/cache.md is a valid configuration.
        """
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "cache.md")
        with open(path, encoding="utf-8") as f:
            example = re.search(r"```ini\n(.*?)```", f.read(), re.S).group(1)
        config = parse_config_text(example, "cache.md", cpu_count=1)
        self.assertEqual(config.filters["pages"].settings.key_query, "sorted")

    def test_build(self):
        """
        The built filter is a body filter with a memory store of the
        configured size.
        """
        config = parse_config_text(CONFIG, "gate.ini", cpu_count=1)
        services = FilterServices(reactor=MemoryReactorClock(), master=None, config=config)
        flt = build_filter(config.filters["c"], services)
        self.assertIsInstance(flt, CacheFilter)
        verifyObject(IBodyFilter, flt)
        self.assertEqual(RouteChain.build([flt]).body_hooks, (0,))
        self.assertEqual(flt.store.capacity, 64 * 1024 * 1024)


class CacheFilterTests(SynchronousTestCase):
    """
    The cache filter on a route, through the lean server channel.
    """

    http_server = "gatelayer"

    def setUp(self):
        self.gate = InMemoryGateway(with_server(CONFIG, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor
        self.connections = []
        self.cache = self.gate.gateway.filters["c"]

    def request(self, path=b"/page", headers=(), method=b"GET", peer="127.0.0.1", byte_by_byte=False):
        """
        Send one request on a new connection; returns the client transport.
        """
        lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: www.example.test"]
        lines += [name + b": " + value for name, value in headers]
        data = b"\r\n".join(lines) + b"\r\n\r\n"
        channel, client = self.gate.connect(peer)
        if byte_by_byte:
            for index in range(len(data)):
                channel.dataReceived(data[index:index + 1])
        else:
            channel.dataReceived(data)
        return client

    def upstream_requests(self):
        """
        Accept the pool's new connections; returns every request head
        sent upstream so far, in order.
        """
        while len(self.connections) < len(self.reactor.tcpClients):
            self.connections.append(accept_upstream(self.reactor, len(self.connections)))
        heads = []
        for transport, _ in self.connections:
            heads += [h for h in transport.value().split(b"\r\n\r\n") if h]
        return heads

    def answer(self, data):
        """
        Feed C{data} to the newest upstream connection as its response.
        """
        self.upstream_requests()
        self.connections[-1][1].dataReceived(data)

    def fetch(self, path=b"/page", upstream=None, headers=(), method=b"GET", **kwargs):
        """
        One request answered (if it goes upstream) with C{upstream};
        returns C{(status, headers, body)} and how many requests went
        upstream for it.
        """
        before = len(self.upstream_requests())
        client = self.request(path, headers, method, **kwargs)
        sent = len(self.upstream_requests()) - before
        if sent and upstream is not None:
            self.answer(upstream)
        return parse_response(client.value()), sent

    def test_miss_then_hit(self):
        """
        The first GET goes upstream (MISS); the next is answered from the
        cache with its Age (HIT), whole or sent byte by byte.
        """
        (status, headers, body), sent = self.fetch(upstream=response(headers=FRESH))
        self.assertEqual((status, body, sent), (200, b"hello", 1))
        self.assertEqual(headers[b"x-cache"], [b"MISS"])
        self.assertNotIn(b"age", headers)
        self.reactor.advance(7)
        for byte_by_byte in (False, True):
            (status, headers, body), sent = self.fetch(byte_by_byte=byte_by_byte)
            self.assertEqual((status, body, sent), (200, b"hello", 0))
            self.assertEqual(headers[b"x-cache"], [b"HIT"])
            self.assertEqual(headers[b"age"], [b"7"])
            self.assertEqual(headers[b"cache-control"], [b"max-age=60"])
            self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertEqual(self.cache.counts["HIT"], 2)
        self.assertEqual(self.cache.counts["MISS"], 1)

    def test_head_from_get(self):
        """
        A HEAD is answered from the GET's entry: its headers and length,
        no body.
        """
        self.fetch(upstream=response(headers=FRESH))
        client = self.request(method=b"HEAD")
        head = client.value()
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)
        self.assertIn(b"X-Cache: HIT", head)
        self.assertIn(b"Content-Length: 5", head)
        self.assertEqual(len(self.upstream_requests()), 1)

    def test_head_miss_not_stored(self):
        """
        A HEAD that misses goes upstream and stores nothing.
        """
        (status, headers, _), sent = self.fetch(method=b"HEAD", upstream=response(headers=FRESH, body=b""))
        self.assertEqual((status, sent), (200, 1))
        self.assertEqual(headers[b"x-cache"], [b"MISS"])
        self.assertEqual(len(self.cache.store), 0)

    def test_expiry(self):
        """
        Past max-age, an entry is fetched again (EXPIRED), and the new
        response is stored. One without validators or stale windows is
        gone once it expires (MISS).
        """
        kept = ((b"Cache-Control", b"max-age=60, stale-if-error=600"),)
        self.fetch(upstream=response(headers=kept, body=b"one"))
        self.reactor.advance(61)
        (status, headers, body), sent = self.fetch(upstream=response(headers=FRESH, body=b"two"))
        self.assertEqual((status, body, sent), (200, b"two", 1))
        self.assertEqual(headers[b"x-cache"], [b"EXPIRED"])
        (_, headers, body), sent = self.fetch()
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"two", 0, [b"HIT"]))
        self.reactor.advance(61)
        (_, headers, body), sent = self.fetch(upstream=response(headers=FRESH, body=b"three"))
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"three", 1, [b"MISS"]))

    def test_vary_split(self):
        """
        A response with Vary is stored per value of the named request
        header: another value misses, the same value (any spelling of
        the list) hits.
        """
        vary = FRESH + ((b"Vary", b"Accept-Language"),)
        (_, _, body), sent = self.fetch(upstream=response(headers=vary, body=b"en"),
                                        headers=[(b"Accept-Language", b"en, de")])
        self.assertEqual((body, sent), (b"en", 1))
        (_, headers, body), sent = self.fetch(upstream=response(headers=vary, body=b"fr"),
                                              headers=[(b"Accept-Language", b"fr")])
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"fr", 1, [b"MISS"]))
        (_, headers, body), sent = self.fetch(headers=[(b"Accept-Language", b"en,de")])
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"en", 0, [b"HIT"]))
        (_, headers, body), sent = self.fetch(headers=[(b"Accept-Language", b"fr")])
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"fr", 0, [b"HIT"]))
        (_, headers, body), sent = self.fetch(upstream=response(headers=vary, body=b"none"))
        self.assertEqual((body, sent), (b"none", 1))

    def test_unstored_table(self):
        """
        Responses a shared cache must not store pass through (MISS) and
        the next request goes upstream again.
        """
        for index, (headers, status) in enumerate(UNSTORED):
            path = b"/unstored/%d" % (index,)
            with self.subTest(headers=headers, status=status):
                for _ in range(2):
                    (got, out, _), sent = self.fetch(path, response(status, headers, reason=b"X"))
                    self.assertEqual((got, sent), (status, 1))
                    self.assertEqual(out[b"x-cache"], [b"MISS"])
        self.assertEqual(len(self.cache.store), 0)

    def test_authorization(self):
        """
        A response to a request with Authorization is stored only when it
        says public, s-maxage or must-revalidate.
        """
        auth = [(b"Authorization", b"Bearer x")]
        self.fetch(b"/private", response(headers=FRESH), headers=auth)
        _, sent = self.fetch(b"/private", response(headers=FRESH), headers=auth)
        self.assertEqual(sent, 1)
        public = ((b"Cache-Control", b"public, max-age=60"),)
        self.fetch(b"/public", response(headers=public), headers=auth)
        (_, headers, _), sent = self.fetch(b"/public")
        self.assertEqual((sent, headers[b"x-cache"]), (0, [b"HIT"]))

    def test_set_cookie_not_replayed(self):
        """
        A public response with Set-Cookie is stored, but the cookie goes
        only to the client it was meant for.
        """
        headers = ((b"Cache-Control", b"public, max-age=60"), (b"Set-Cookie", b"id=alice"))
        (_, first, _), _ = self.fetch(upstream=response(headers=headers))
        self.assertEqual(first[b"set-cookie"], [b"id=alice"])
        (_, second, _), sent = self.fetch()
        self.assertEqual(sent, 0)
        self.assertNotIn(b"set-cookie", second)

    def test_bypass_table(self):
        """
        Other methods and ranges go upstream marked BYPASS, and never
        read or fill the cache.
        """
        self.fetch(upstream=response(headers=FRESH))
        for method, headers in BYPASSED:
            with self.subTest(method=method, headers=headers):
                (status, out, _), sent = self.fetch(
                    b"/other", response(headers=FRESH), headers=headers, method=method)
                self.assertEqual(sent, 1)
                self.assertEqual(out[b"x-cache"], [b"BYPASS"])
        self.assertIsNone(self.cache.store.vary(b"http://www.example.test/other"))

    def test_unsafe_method_invalidates(self):
        """
        A successful POST to a URL removes its entry; a failed one does
        not.
        """
        self.fetch(upstream=response(headers=FRESH))
        self.fetch(method=b"POST", upstream=response(500, reason=b"Oops"))
        _, sent = self.fetch()
        self.assertEqual(sent, 0)
        self.fetch(method=b"POST", upstream=response(201, reason=b"Created"))
        (_, headers, _), sent = self.fetch(upstream=response(headers=FRESH))
        self.assertEqual((sent, headers[b"x-cache"]), (1, [b"MISS"]))

    def test_revalidation(self):
        """
        An expired entry with validators is revalidated with a conditional
        request; the 304 refreshes it (EXPIRED, the stored body, the 304's
        new headers) and it is fresh again.
        """
        self.fetch(upstream=response(headers=TAGGED + ((b"X-Version", b"1"),), body=b"stored"))
        self.reactor.advance(61)
        not_modified = b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=100\r\nX-Version: 2\r\n\r\n"
        (status, headers, body), sent = self.fetch(upstream=not_modified)
        self.assertEqual((status, body, sent), (200, b"stored", 1))
        self.assertEqual(headers[b"x-cache"], [b"EXPIRED"])
        self.assertEqual(headers[b"x-version"], [b"2"])
        self.assertEqual(headers[b"cache-control"], [b"max-age=100"])
        conditional = self.upstream_requests()[-1].lower()
        self.assertIn(b'if-none-match: "v1"', conditional)
        self.assertIn(b"if-modified-since: thu, 01 jan 1970 00:00:10 gmt", conditional)
        self.reactor.advance(90)
        (_, headers, body), sent = self.fetch()
        self.assertEqual((body, sent, headers[b"x-cache"]), (b"stored", 0, [b"HIT"]))

    def test_revalidation_replaced(self):
        """
        A revalidation answered with a 200 replaces the entry.
        """
        self.fetch(upstream=response(headers=TAGGED, body=b"old"))
        self.reactor.advance(61)
        new = response(headers=((b"Cache-Control", b"max-age=60"), (b"ETag", b'"v2"')), body=b"new")
        (_, headers, body), _ = self.fetch(upstream=new)
        self.assertEqual((body, headers[b"x-cache"]), (b"new", [b"EXPIRED"]))
        (_, headers, body), sent = self.fetch()
        self.assertEqual((body, sent, headers[b"etag"]), (b"new", 0, [b'"v2"']))

    def test_client_conditionals(self):
        """
        A client's If-None-Match or If-Modified-Since matching a fresh
        entry is answered 304 from the cache; one that does not match
        gets the entry.
        """
        self.fetch(upstream=response(headers=TAGGED))
        table = [
            ([(b"If-None-Match", b'"v1"')], 304),
            ([(b"If-None-Match", b'W/"v1"')], 304),
            ([(b"If-None-Match", b'"x", "v1"')], 304),
            ([(b"If-None-Match", b"*")], 304),
            ([(b"If-None-Match", b'"v2"')], 200),
            ([(b"If-None-Match", b'"v2"'), (b"If-Modified-Since", b"Thu, 01 Jan 1970 00:00:20 GMT")], 200),
            ([(b"If-Modified-Since", b"Thu, 01 Jan 1970 00:00:20 GMT")], 304),
            ([(b"If-Modified-Since", b"Thu, 01 Jan 1970 00:00:05 GMT")], 200),
            ([(b"If-Modified-Since", b"not a date")], 200),
        ]
        for headers, expected in table:
            with self.subTest(headers=headers):
                (status, out, body), sent = self.fetch(headers=headers)
                self.assertEqual((status, sent), (expected, 0))
                self.assertEqual(out[b"x-cache"], [b"HIT"])
                if expected == 304:
                    self.assertEqual(body, b"")
                    self.assertEqual(out[b"etag"], [b'"v1"'])
                else:
                    self.assertEqual(body, b"hello")

    def test_client_conditional_on_revalidation(self):
        """
        While an expired entry is revalidated, the client's own validators
        are not sent upstream; the refreshed entry answers them (304).
        """
        self.fetch(upstream=response(headers=TAGGED))
        self.reactor.advance(61)
        not_modified = b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\n\r\n"
        (status, headers, body), _ = self.fetch(upstream=not_modified, headers=[(b"If-None-Match", b'"v1"')])
        self.assertEqual((status, body, headers[b"x-cache"]), (304, b"", [b"EXPIRED"]))
        self.assertEqual(self.upstream_requests()[-1].lower().count(b"if-none-match"), 1)

    def test_coalescing(self):
        """
        Concurrent misses on one key make one upstream request; the
        others wait and are answered from the new entry.
        """
        clients = [self.request() for _ in range(20)]
        self.assertEqual(len(self.upstream_requests()), 1)
        self.answer(response(headers=FRESH, body=b"shared"))
        self.reactor.advance(0)
        for client in clients:
            status, headers, body = parse_response(client.value())
            self.assertEqual((status, body), (200, b"shared"))
        self.assertEqual(self.cache.counts["MISS"], 1)
        self.assertEqual(self.cache.counts["HIT"], 19)
        self.assertEqual(len(self.upstream_requests()), 1)
        self.assertEqual(self.cache.fetching, 0)
        self.assertFalse([c for c in self.reactor.getDelayedCalls() if "lock" in repr(c.func)])

    def test_coalescing_uncacheable(self):
        """
        When the first response turns out uncacheable, each waiting
        request goes upstream itself.
        """
        clients = [self.request() for _ in range(3)]
        self.assertEqual(len(self.upstream_requests()), 1)
        self.answer(response(headers=((b"Cache-Control", b"no-store"),)))
        self.reactor.advance(0)
        self.assertEqual(len(self.upstream_requests()), 3)
        self.assertEqual(clients[1].value(), b"")

    def test_lock_timeout(self):
        """
        Requests waiting for a slow first fetch go upstream themselves
        after lock_timeout.
        """
        self.request()
        waiting = self.request()
        self.reactor.advance(4.9)
        self.assertEqual(len(self.upstream_requests()), 1)
        self.reactor.advance(0.2)
        self.assertEqual(len(self.upstream_requests()), 2)
        self.assertEqual(waiting.value(), b"")

    def test_expired_lock_not_released_by_late_response(self):
        """
        A fetch whose lock expired does not release the lock a later
        fetch of the key took: that one's waiters keep waiting for it.
        """
        self.request()
        self.assertEqual(len(self.upstream_requests()), 1)
        self.reactor.advance(5.1)
        self.request()
        waiting = self.request()
        self.assertEqual(len(self.upstream_requests()), 2)
        self.assertEqual(self.cache.fetching, 1)
        transport, protocol = self.connections[0]
        protocol.dataReceived(response(headers=((b"Cache-Control", b"no-store"),)))
        self.reactor.advance(0)
        self.assertEqual(self.cache.fetching, 1)
        self.assertEqual(len(self.upstream_requests()), 2)
        self.assertEqual(waiting.value(), b"")

    def test_cut_off_not_stored(self):
        """
        A response broken off mid-body is not stored; a later request
        does not wait for it past the lock.
        """
        client = self.request()
        self.upstream_requests()
        transport, protocol = self.connections[-1]
        protocol.dataReceived(response(headers=FRESH, body=b"0123456789")[:-4])
        transport.loseConnection()
        protocol.connectionLost(None)
        self.assertIn(b"012345", client.value())
        self.reactor.advance(5)
        (_, headers, body), sent = self.fetch(upstream=response(headers=FRESH))
        self.assertEqual((sent, body, headers[b"x-cache"]), (1, b"hello", [b"MISS"]))

    def test_streams_while_storing(self):
        """
        The body reaches the client as it comes, before the upstream's
        response is complete; it is stored once complete.
        """
        client = self.request()
        self.answer(response(headers=FRESH, body=b"first-second")[:-6])
        self.assertTrue(client.value().endswith(b"first-"))
        self.assertEqual(len(self.cache.store), 0)
        self.connections[-1][1].dataReceived(b"second")
        self.assertEqual(len(self.cache.store), 1)

    def test_entry_size_cap(self):
        """
        A response larger than max_entry_size streams whole to the client
        and is not stored.
        """
        big = b"x" * 2048
        (_, _, body), _ = self.fetch(upstream=response(headers=FRESH, body=big))
        self.assertEqual(body, big)
        _, sent = self.fetch(upstream=response(headers=FRESH, body=big))
        self.assertEqual(sent, 1)

    def test_stale_if_error(self):
        """
        Within stale-if-error, an upstream error is answered with the
        stale entry (STALE); past it, the error passes.
        """
        headers = ((b"Cache-Control", b"max-age=10, stale-if-error=60"),)
        self.fetch(upstream=response(headers=headers, body=b"old"))
        self.reactor.advance(30)
        for status in (500, 502, 503, 504):
            (got, out, body), sent = self.fetch(upstream=response(status, body=b"err", reason=b"E"))
            self.assertEqual((got, body, sent, out[b"x-cache"]), (200, b"old", 1, [b"STALE"]))
            self.assertEqual(out[b"age"], [b"30"])
        self.reactor.advance(50)
        (got, out, body), _ = self.fetch(upstream=response(503, body=b"err", reason=b"E"))
        self.assertEqual((got, body), (503, b"err"))

    def test_stale_if_error_unreachable(self):
        """
        Within stale-if-error, an upstream that cannot be reached (the
        gateway's own 502) is answered with the stale entry.
        """
        headers = ((b"Cache-Control", b"max-age=10, stale-if-error=60"),)
        self.fetch(upstream=response(headers=headers, body=b"old"))
        self.upstream_requests()
        self.connections[-1][0].loseConnection()
        self.connections[-1][1].connectionLost(Failure(ConnectionRefusedError()))
        self.reactor.advance(30)
        client = self.request()
        attempts = len(self.reactor.tcpClients)
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.reactor.tcpClients), attempts)
        status, out, body = parse_response(client.value())
        self.assertEqual((status, body, out[b"x-cache"]), (200, b"old", [b"STALE"]))

    def test_must_revalidate_never_stale(self):
        """
        An entry with must-revalidate is never served stale.
        """
        headers = ((b"Cache-Control", b"max-age=10, stale-if-error=60, must-revalidate"),)
        self.fetch(upstream=response(headers=headers, body=b"old"))
        self.reactor.advance(30)
        (got, _, body), _ = self.fetch(upstream=response(503, body=b"err", reason=b"E"))
        self.assertEqual((got, body), (503, b"err"))

    def answer_request(self, path, data):
        """
        Feed C{data} as the response to the upstream connection whose last
        request is for C{path}.
        """
        self.upstream_requests()
        for transport, protocol in self.connections:
            heads = [h for h in transport.value().split(b"\r\n\r\n") if h]
            if heads and heads[-1].startswith(b"GET " + path + b" "):
                protocol.dataReceived(data)
                return
        self.fail(f"no upstream request for {path!r}")

    def go_stale(self, path=b"/page", body=b"old", window=60):
        """
        Store an entry (max-age=10, stale-while-revalidate=C{window}, ETag
        "a") for C{path} and let 20 seconds pass: it is stale, within its
        window.
        """
        headers = ((b"Cache-Control", b"max-age=10, stale-while-revalidate=%d" % (window,)),
                   (b"ETag", b'"a"'))
        self.fetch(path, upstream=response(headers=headers, body=body))
        self.reactor.advance(20)

    def test_stale_while_revalidate(self):
        """
        Within stale-while-revalidate, the first request after expiry is
        answered at once from the stale entry (STALE, its Age), and one
        conditional request goes upstream in the background, with the
        request's Host; the requests after it are STALE too and start no
        other. Its 304 refreshes the entry: the next request is a HIT.
        """
        self.go_stale()
        (status, out, body), sent = self.fetch(headers=[(b"If-None-Match", b'"zz"')])
        self.assertEqual((status, body, sent, out[b"x-cache"], out[b"age"]), (200, b"old", 1, [b"STALE"], [b"20"]))
        conditional = self.upstream_requests()[-1].lower()
        self.assertTrue(conditional.startswith(b"get /page http/1.1"), conditional)
        self.assertIn(b'if-none-match: "a"', conditional)
        self.assertNotIn(b'"zz"', conditional)
        self.assertIn(b"host: www.example.test", conditional)
        (status, out, body), sent = self.fetch()
        self.assertEqual((status, body, sent, out[b"x-cache"]), (200, b"old", 0, [b"STALE"]))
        self.assertEqual((self.cache.refreshing, self.cache.background_refreshes), (1, 1))
        self.answer(b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\nX-Version: 2\r\n\r\n")
        self.assertEqual(self.cache.refreshing, 0)
        (_, out, body), sent = self.fetch()
        self.assertEqual((sent, body, out[b"x-cache"], out[b"x-version"]), (0, b"old", [b"HIT"], [b"2"]))
        self.assertEqual(self.cache.counts["STALE"], 2)

    def test_stale_while_revalidate_replaced(self):
        """
        A background revalidation answered with a storable 200 replaces
        the entry.
        """
        self.go_stale()
        (_, out, body), sent = self.fetch()
        self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 1, [b"STALE"]))
        self.answer(response(headers=((b"Cache-Control", b"max-age=60"), (b"ETag", b'"b"')), body=b"new"))
        (_, out, body), sent = self.fetch()
        self.assertEqual((body, sent, out[b"x-cache"], out[b"etag"]), (b"new", 0, [b"HIT"], [b'"b"']))

    def test_stale_while_revalidate_failed(self):
        """
        A background revalidation answered with an error, or with a
        response that may not be stored, leaves the stale entry; the next
        request within the window is STALE and tries again.
        """
        self.go_stale()
        for failed in (response(503, body=b"err", reason=b"E"),
                       response(headers=((b"Cache-Control", b"no-store"),), body=b"private")):
            with self.subTest(failed=failed):
                (_, out, body), sent = self.fetch()
                self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 1, [b"STALE"]))
                self.answer(failed)
                self.assertEqual(self.cache.refreshing, 0)
        (_, out, body), sent = self.fetch()
        self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 1, [b"STALE"]))
        self.assertEqual(self.cache.background_refreshes, 3)

    def test_stale_while_revalidate_timeout(self):
        """
        A background revalidation the upstream never answers ends with the
        upstream's read timeout: the mark is cleared, the entry stays, and
        the next request within the window tries again.
        """
        self.go_stale(window=600)
        (_, out, _), sent = self.fetch()
        self.assertEqual((sent, out[b"x-cache"]), (1, [b"STALE"]))
        self.reactor.advance(self.gate.config.upstreams["app"].read_timeout + 1)
        self.assertEqual(self.cache.refreshing, 0)
        (_, out, body), sent = self.fetch()
        self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 1, [b"STALE"]))

    def test_stale_while_revalidate_window_over(self):
        """
        Past the stale-while-revalidate window, the request revalidates in
        the foreground and waits for it (EXPIRED).
        """
        self.go_stale(window=5)
        not_modified = b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\n\r\n"
        (_, out, body), sent = self.fetch(upstream=not_modified)
        self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 1, [b"EXPIRED"]))
        self.assertEqual(self.cache.background_refreshes, 0)

    def test_stale_while_revalidate_client_gone(self):
        """
        The client that started a background revalidation going away
        changes nothing: the refresh completes and stores its answer.
        """
        self.go_stale()
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /page HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
        self.assertIn(b"X-Cache: STALE", transport.value())
        channel.connectionLost(Failure(ConnectionDone()))
        self.answer(b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\n\r\n")
        (_, out, body), sent = self.fetch()
        self.assertEqual((body, sent, out[b"x-cache"]), (b"old", 0, [b"HIT"]))

    def test_stale_while_revalidate_keys_independent(self):
        """
        Two stale keys are revalidated each on its own, at the same time,
        and each answer refreshes its own entry.
        """
        headers = ((b"Cache-Control", b"max-age=10, stale-while-revalidate=60"), (b"ETag", b'"a"'))
        self.fetch(b"/a", upstream=response(headers=headers, body=b"A"))
        self.fetch(b"/b", upstream=response(headers=headers, body=b"B"))
        self.reactor.advance(20)
        for path, expected in ((b"/a", b"A"), (b"/b", b"B")):
            (_, out, body), sent = self.fetch(path)
            self.assertEqual((body, sent, out[b"x-cache"]), (expected, 1, [b"STALE"]))
        self.assertEqual(self.cache.refreshing, 2)
        self.answer_request(b"/b", response(headers=FRESH, body=b"B2"))
        self.assertEqual(self.cache.refreshing, 1)
        (_, out, body), sent = self.fetch(b"/b")
        self.assertEqual((body, sent, out[b"x-cache"]), (b"B2", 0, [b"HIT"]))
        (_, out, body), sent = self.fetch(b"/a")
        self.assertEqual((body, sent, out[b"x-cache"]), (b"A", 0, [b"STALE"]))
        self.answer_request(b"/a", b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\n\r\n")
        (_, out, body), sent = self.fetch(b"/a")
        self.assertEqual((body, sent, out[b"x-cache"]), (b"A", 0, [b"HIT"]))

    def test_stale_while_revalidate_foreground(self):
        """
        On a route not proxying to one upstream (here a split), the first
        request after expiry refreshes the entry itself (EXPIRED) while
        the others within stale-while-revalidate are served it stale at
        once.
        """
        self.go_stale(b"/split/page")
        refreshing = self.request(b"/split/page")
        (status, out, body), sent = self.fetch(b"/split/page")
        self.assertEqual((status, body, sent, out[b"x-cache"]), (200, b"old", 0, [b"STALE"]))
        self.answer(b"HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=10\r\n\r\n")
        status, out, body = parse_response(refreshing.value())
        self.assertEqual((status, body, out[b"x-cache"]), (200, b"old", [b"EXPIRED"]))
        (_, out, _), sent = self.fetch(b"/split/page")
        self.assertEqual((sent, out[b"x-cache"], self.cache.background_refreshes), (0, [b"HIT"], 0))

    def test_purge(self):
        """
        PURGE from a listed address removes every variant of the URL;
        from another address it is refused with 403.
        """
        vary = FRESH + ((b"Vary", b"Accept"),)
        self.fetch(upstream=response(headers=vary), headers=[(b"Accept", b"a")])
        self.fetch(upstream=response(headers=vary), headers=[(b"Accept", b"b")])
        (status, _, body), sent = self.fetch(method=b"PURGE", peer="192.0.2.1")
        self.assertEqual((status, sent), (403, 0))
        self.assertEqual(len(self.cache.store), 2)
        (status, _, body), sent = self.fetch(method=b"PURGE")
        self.assertEqual((status, sent, json.loads(body)), (200, 0, {"purged": 2, "workers": 1}))
        (_, out, _), sent = self.fetch(upstream=response(headers=vary), headers=[(b"Accept", b"a")])
        self.assertEqual((sent, out[b"x-cache"]), (1, [b"MISS"]))

    def test_purge_not_enabled(self):
        """
        On a cache without purge_from, PURGE is no concern of the cache:
        it goes upstream (BYPASS).
        """
        (status, out, _), sent = self.fetch(b"/sorted/x", response(), method=b"PURGE")
        self.assertEqual((status, sent, out[b"x-cache"]), (200, 1, [b"BYPASS"]))

    def test_key_options(self):
        """
        key_query = sorted makes parameter order irrelevant; key_extra
        splits the cache by the header's value; default_ttl makes a
        response without freshness cacheable.
        """
        self.fetch(b"/sorted/p?b=2&a=1", response(body=b"t0"), headers=[(b"X-Tenant", b"t0")])
        (_, out, body), sent = self.fetch(b"/sorted/p?a=1&b=2", headers=[(b"X-Tenant", b"t0")])
        self.assertEqual((sent, body, out[b"x-cache"]), (0, b"t0", [b"HIT"]))
        (_, out, body), sent = self.fetch(b"/sorted/p?a=1&b=2", response(body=b"t1"),
                                          headers=[(b"X-Tenant", b"t1")])
        self.assertEqual((sent, body), (1, b"t1"))
        (_, out, _), sent = self.fetch(b"/page?b=2&a=1", response(headers=FRESH))
        (_, out, _), sent = self.fetch(b"/page?a=1&b=2", response(headers=FRESH))
        self.assertEqual(sent, 1)

    def test_key_separators_refused(self):
        """
        Header values carrying the bytes cache keys are built with (NUL,
        SOH, LF) or other controls never reach the cache: the request is
        refused (400), whole or byte by byte, so no value can forge
        another key.
        """
        self.fetch(b"/sorted/p", response(body=b"t0"), headers=[(b"X-Tenant", b"t0")])
        for value in (b"t0\x01", b"t0\x00", b"t\n0", b"t0\x7f", b"\x01t0"):
            for byte_by_byte in (False, True):
                with self.subTest(value=value, byte_by_byte=byte_by_byte):
                    (status, _, _), sent = self.fetch(
                        b"/sorted/p", headers=[(b"X-Tenant", value)], byte_by_byte=byte_by_byte)
                    self.assertEqual((status, sent), (400, 0))
        self.assertEqual(self.gate.gateway.filters["sorted"].counts["HIT"], 0)

    def test_hostile_upstream_headers(self):
        """
        Hop-by-hop and framing headers of a stored response are not
        replayed; a hit is framed by its own length.
        """
        headers = FRESH + ((b"Connection", b"x-private"), (b"X-Private", b"1"),
                           (b"Keep-Alive", b"timeout=5"), (b"Age", b"junk"))
        self.fetch(upstream=response(headers=headers))
        (status, out, body), sent = self.fetch()
        self.assertEqual((status, body, sent), (200, b"hello", 0))
        self.assertNotIn(b"keep-alive", out)
        self.assertNotIn(b"x-private", out)
        self.assertEqual(out[b"age"], [b"0"])
        self.assertEqual(out[b"content-length"], [b"5"])


class TwistedChannelCacheFilterTests(CacheFilterTests):
    """
    The same, through the twisted.web server channel.
    """

    http_server = "twisted"
