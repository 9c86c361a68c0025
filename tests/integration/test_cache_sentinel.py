"""
The cache's Redis store on a Redis watched by Sentinels: a real master,
replica and three Sentinels on free loopback ports; the master killed with
SIGKILL. The store answers misses while no master is reachable and follows
the promoted replica, where the entries replicated before the failover are
still found.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from gatelayer.cache import make_entry
from gatelayer.cache.redis_store import RedisCacheStore
from gatelayer.testing.redis import SentinelCluster, ask_redis
from gatelayer.testing.waiting import wait_until

NO_VARY = Headers()


def _entry(body):
    return make_entry(200, [(b"cache-control", b"max-age=60")], body, reactor.seconds(), reactor.seconds(), None)


class SentinelCacheStoreTests(TestCase):
    """
    L{RedisCacheStore} with a C{redis+sentinel://} URL across a failover.
    """

    timeout = 90

    @inlineCallbacks
    def test_follows_the_promoted_replica(self):
        """
        Entries written to the master are found through the promoted
        replica after the master is killed; new entries are written there.
        """
        cluster = SentinelCluster().start()
        self.addCleanup(cluster.stop)
        store = RedisCacheStore.from_url(reactor, cluster.url, b"test:", timeout=0.5)
        self.addCleanup(store.close)

        @inlineCallbacks
        def stored(path, body):
            yield store.put(path, b"", _entry(body))
            found = yield store.fetch(path, NO_VARY)
            return found is not None and found[1].body == body
        yield wait_until(reactor, lambda: stored(b"http://h/before", b"before"), timeout=15,
                         what="a first entry stored through the Sentinels")
        yield wait_until(reactor, lambda: ask_redis(cluster.replica.port, "EXISTS", "test:http://h/before") == 1,
                         what="the entry reaching the replica")

        cluster.master.kill()
        killed = reactor.seconds()
        yield wait_until(reactor, lambda: stored(b"http://h/after", b"after"), timeout=15, interval=0.1,
                         what="an entry stored through the promoted replica")
        self.assertLess(reactor.seconds() - killed, 15)
        self.assertEqual(cluster.role(cluster.replica), "master")
        self.assertEqual(ask_redis(cluster.replica.port, "EXISTS", "test:http://h/after"), 1)
        _, entry = yield store.fetch(b"http://h/before", NO_VARY)
        self.assertEqual(entry.body, b"before")
        self.assertGreater(store.counters["errors"] + store.counters["timeouts"]
                           + store.counters["write_errors"], 0)
