"""
Sharing stores between the rate-limit filters of one process.

There is no process-wide registry: a worker's service tree owns one
(L{gatelayer.process.worker_services.StoresService}), hands it to the
filters it builds and closes it when it stops.
"""

from twisted.internet.defer import DeferredList

from gatelayer.ratelimit.memory_store import MemoryStore

__all__ = ["StoreRegistry"]


class StoreRegistry:
    """
    Hands out one L{RedisStore} per Redis address and one L{MemoryStore}
    per reactor, so that ten filters using one Redis share one connection
    pool, and a reload that keeps the address keeps the connections.
    """

    def __init__(self, redis_factory=None, memory_factory=MemoryStore):
        """
        @param redis_factory: makes a Redis store from C{(reactor, address)};
            L{gatelayer.ratelimit.redis_store.RedisStore} by default,
            imported only when a filter uses Redis.
        """
        self._redis_factory = redis_factory
        self._memory_factory = memory_factory
        self._stores = {}

    def redis(self, reactor, address):
        """
        The store for C{address} (a L{gatelayer.config.filter_ratelimit.RedisAddress}).
        """
        key = ("redis", id(reactor), address)
        store = self._stores.get(key)
        if store is None:
            factory = self._redis_factory
            if factory is None:
                from gatelayer.ratelimit.redis_store import RedisStore as factory
            store = self._stores[key] = factory(reactor, address)
        return store

    def memory(self, reactor):
        """
        The process-local memory store for C{reactor}.
        """
        key = ("memory", id(reactor))
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = self._memory_factory(reactor)
        return store

    def close(self):
        """
        Close every store handed out (at worker shutdown).

        @return: a Deferred firing when all are closed.
        """
        stores, self._stores = list(self._stores.values()), {}
        return DeferredList([store.close() for store in stores], consumeErrors=True)

