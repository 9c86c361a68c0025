"""
Tests for purges and counters of the cache across workers
(L{gatelayer.cache.control}): the master's C{cache} part talking AMP to
workers over in-memory connections, and the URL keys operators write.
"""

from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.cache import VARIANT_SEPARATOR, make_entry
from gatelayer.cache.control import CachePart, PurgeEverywhere, key_of_url, register_worker_responders
from gatelayer.config.filter_cache import CacheSettings
from gatelayer.filters.cache import CacheFilter
from gatelayer.process.control import ControlProtocol

# (URL as written, URL key)
KEY_TABLE = [
    (b"http://www.example.test/a?b=1", b"http://www.example.test/a?b=1"),
    (b"http://WWW.Example.TEST:8080/a", b"http://www.example.test/a"),
    (b"HTTPS://h:443", b"https://h"),
    (b"http://h?x", b"http://h?x"),
    (b"http://[::1]:8080/p", b"http://::1/p"),
    (b"http://[::1/p", b"http://[::1/p"),
    (b"/just/a/path", b"/just/a/path"),
    (b"", b""),
]


def _filled_filter(name, urls):
    flt = CacheFilter(name, CacheSettings(), Clock())
    for url in urls:
        flt.store.put(url + VARIANT_SEPARATOR, make_entry(
            200, [(b"cache-control", b"max-age=60")], b"x", 0.0, 0.0, None))
    flt.counts["HIT"] = 3
    return flt


class CachePartTests(SynchronousTestCase):
    """
    L{CachePart} with two workers over in-memory AMP connections.
    """

    def setUp(self):
        self.workers = []
        self.pumps = []
        self.filters = []
        controls = []
        for index in range(2):
            master_side, worker_side, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
            flt = _filled_filter("c", [b"http://h/a", b"http://h/b/1", b"http://h/b/2"])
            register_worker_responders(worker_side, lambda flt=flt: {"c": flt})
            controls.append(master_side)
            self.workers.append(worker_side)
            self.pumps.append(pump)
            self.filters.append(flt)
        self.part = CachePart(lambda: controls)
        for control in controls:
            self.part.register(control)

    def flush(self):
        """
        Deliver what is in flight on every connection.
        """
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()

    def test_purge_key(self):
        """
        A purge by key reaches every worker and counts what went.
        """
        result = self.part.purge(key=b"http://h/a")
        self.flush()
        self.assertEqual(self.successResultOf(result), (2, 2))
        for flt in self.filters:
            self.assertEqual(len(flt.store), 2)

    def test_purge_prefix(self):
        """
        A purge by prefix removes every URL under it in every worker.
        """
        result = self.part.purge(prefix=b"http://h/b/")
        self.flush()
        self.assertEqual(self.successResultOf(result), (4, 2))

    def test_worker_asks(self):
        """
        A worker's PURGE goes to the master, which sends it to all.
        """
        result = self.workers[0].callRemote(PurgeEverywhere, key=b"http://h/a")
        self.flush()
        self.assertEqual(self.successResultOf(result), {"purged": 2, "workers": 2})

    def test_status(self):
        """
        /status gets each filter's counters and store use summed over
        workers.
        """
        result = self.part.status()
        self.flush()
        row = self.successResultOf(result)["cache"]["c"]
        self.assertEqual((row["HIT"], row["MISS"], row["entries"]), (6, 0, 6))
        self.assertEqual(row["bytes"], sum(f.store.used for f in self.filters))

    def test_no_workers(self):
        """
        With no worker connected a purge removes nothing, at once.
        """
        part = CachePart(lambda: [])
        self.assertEqual(self.successResultOf(part.purge(key=b"x")), (0, 0))
        self.assertEqual(self.successResultOf(part.status()), {"cache": {}})

    def test_key_table(self):
        """
        The URL an operator writes becomes the filter's URL key: host in
        lower case, no port.
        """
        for url, key in KEY_TABLE:
            with self.subTest(url=url):
                self.assertEqual(key_of_url(url), key)
