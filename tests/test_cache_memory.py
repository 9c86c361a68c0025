"""
Tests for the per-worker memory store of the cache
(L{gatelayer.cache.memory.MemoryStore}): LRU by bytes, Vary names, purges.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.cache import ICacheStore, MemoryStore, VARIANT_SEPARATOR, make_entry


def _entry(body, vary=b"", max_age=60, etag=None):
    headers = [(b"cache-control", b"max-age=%d" % (max_age,))]
    if vary:
        headers.append((b"vary", vary))
    if etag:
        headers.append((b"etag", etag))
    return make_entry(200, headers, body, 0.0, 0.0, None)


def _key(primary, variant=b""):
    return primary + VARIANT_SEPARATOR + variant


class MemoryStoreTests(SynchronousTestCase):
    """
    L{MemoryStore}.
    """

    def setUp(self):
        self.clock = Clock()

    def test_interface(self):
        """
        It provides L{ICacheStore}.
        """
        verifyObject(ICacheStore, MemoryStore(1024, self.clock))

    def test_get_put(self):
        """
        What is put is found under its key, with the URL's Vary names.
        """
        store = MemoryStore(1 << 20, self.clock)
        entry = _entry(b"x", vary=b"Accept")
        self.assertIsNone(store.vary(b"http://a/"))
        store.put(_key(b"http://a/", b"json"), entry)
        self.assertIs(store.get(_key(b"http://a/", b"json")), entry)
        self.assertIsNone(store.get(_key(b"http://a/", b"xml")))
        self.assertEqual(store.vary(b"http://a/"), (b"accept",))
        self.assertEqual(store.used, entry.size)

    def test_lru_by_bytes(self):
        """
        Past the capacity, the least recently used entries go first; a
        read makes an entry recent.
        """
        one = _entry(b"a" * 1000)
        store = MemoryStore(one.size * 3, self.clock)
        for name in (b"1", b"2", b"3"):
            store.put(_key(name), _entry(b"a" * 1000))
        store.get(_key(b"1"))
        store.put(_key(b"4"), _entry(b"a" * 1000))
        self.assertIsNone(store.get(_key(b"2")))
        for name in (b"1", b"3", b"4"):
            self.assertIsNotNone(store.get(_key(name)), name)
        self.assertLessEqual(store.used, store.capacity)
        self.assertEqual(len(store), 3)

    def test_too_large(self):
        """
        An entry larger than the whole store is not kept and evicts
        nothing.
        """
        store = MemoryStore(2000, self.clock)
        store.put(_key(b"small"), _entry(b"s"))
        store.put(_key(b"big"), _entry(b"b" * 5000))
        self.assertIsNone(store.get(_key(b"big")))
        self.assertIsNotNone(store.get(_key(b"small")))

    def test_replace(self):
        """
        Putting a key again replaces its entry and its size.
        """
        store = MemoryStore(1 << 20, self.clock)
        store.put(_key(b"k"), _entry(b"a" * 100))
        second = _entry(b"b")
        store.put(_key(b"k"), second)
        self.assertIs(store.get(_key(b"k")), second)
        self.assertEqual(store.used, second.size)

    def test_new_vary_drops_variants(self):
        """
        When a URL's Vary names change, its variants stored under the old
        names are dropped.
        """
        store = MemoryStore(1 << 20, self.clock)
        store.put(_key(b"u", b"gzip"), _entry(b"1", vary=b"Accept-Encoding"))
        store.put(_key(b"u", b"br"), _entry(b"2", vary=b"Accept-Encoding"))
        store.put(_key(b"u", b"en"), _entry(b"3", vary=b"Accept-Language"))
        self.assertIsNone(store.get(_key(b"u", b"gzip")))
        self.assertIsNone(store.get(_key(b"u", b"br")))
        self.assertEqual(store.vary(b"u"), (b"accept-language",))
        self.assertEqual(len(store), 1)

    def test_expiry(self):
        """
        An entry is dropped once its freshness and stale windows are over
        (kept longer when it can be revalidated).
        """
        store = MemoryStore(1 << 20, self.clock)
        store.put(_key(b"plain"), _entry(b"1", max_age=10))
        store.put(_key(b"tagged"), _entry(b"2", max_age=10, etag=b'"t"'))
        self.clock.advance(11)
        self.assertIsNone(store.get(_key(b"plain")))
        self.assertIsNone(store.vary(b"plain"))
        self.assertIsNotNone(store.get(_key(b"tagged")))
        self.assertEqual(store.used, store.get(_key(b"tagged")).size)

    def test_remove(self):
        """
        Removing a URL key removes all its variants; a prefix removes
        every URL under it and nothing else.
        """
        store = MemoryStore(1 << 20, self.clock)
        for primary in (b"http://h/a", b"http://h/a/b", b"http://h/c"):
            store.put(_key(primary, b"1"), _entry(b"1", vary=b"Accept"))
            store.put(_key(primary, b"2"), _entry(b"2", vary=b"Accept"))
        self.assertEqual(store.remove(b"http://h/c"), 2)
        self.assertEqual(store.remove(b"http://h/c"), 0)
        self.assertEqual(store.remove_prefix(b"http://h/a"), 4)
        self.assertEqual(len(store), 0)
        self.assertEqual(store.used, 0)
