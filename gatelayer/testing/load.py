"""
Keep-alive clients looping requests against a gateway while a test changes
it (a reload): each client has one persistent connection and never retries
by itself, so every failure shows.
"""

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.web.client import HTTPConnectionPool

from gatelayer.testing.http import fetch

__all__ = ["KeepAliveLoad"]


class KeepAliveLoad:
    """
    C{clients} keep-alive clients, each sending C{GET url} again as soon as
    the previous answer is in, until L{stop} or C{limit} requests each.

    @ivar results: C{(client, status, X-Upstream value)} per answer.
    @ivar failures: C{(client, error text)} per request that got no answer.
    """

    def __init__(self, reactor, url, clients=8, limit=5000, context_factory=None):
        """
        @param context_factory: the C{IPolicyForHTTPS} of an C{https} C{url}
            (L{None}: the C{Agent}'s default).
        """
        self.reactor = reactor
        self.url = url
        self.context_factory = context_factory
        self.clients = clients
        self.limit = limit
        self.results = []
        self.failures = []
        self._stopping = False
        self._pools = []
        self._loops = None

    def start(self):
        """
        Start every client's loop.
        """
        self._loops = gatherResults([self._loop(index) for index in range(self.clients)])
        return self

    @inlineCallbacks
    def _loop(self, index):
        pool = HTTPConnectionPool(self.reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        pool.retryAutomatically = False
        self._pools.append(pool)
        for _ in range(self.limit):
            if self._stopping:
                break
            try:
                response = yield fetch(self.reactor, self.url, pool=pool, context_factory=self.context_factory)
            except Exception as e:
                self.failures.append((index, repr(e)))
                continue
            self.results.append((index, response.status, response.header(b"x-upstream")))

    def count(self):
        """
        Answers received so far.
        """
        return len(self.results)

    def bad(self):
        """
        Failures and answers other than 200.
        """
        return self.failures + [r for r in self.results if r[1] != 200]

    @inlineCallbacks
    def stop(self):
        """
        End the loops (each after its request in flight) and close the
        connections.
        """
        self._stopping = True
        if self._loops is not None:
            yield self._loops
        yield gatherResults([pool.closeCachedConnections() for pool in self._pools])
