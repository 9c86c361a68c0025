"""
Rate limits: the arithmetic and the stores behind the C{rate_limit} filter.

- L{gatelayer.ratelimit.algorithms}: GCRA and sliding window, pure.
- L{gatelayer.ratelimit.memory_store}: exact, bounded, in one process; the
  master runs one for all its workers (the embedded store).
- L{gatelayer.ratelimit.control}: the AMP command workers ask the master
  with, and L{gatelayer.ratelimit.master_store}: the worker's side of it.
- L{gatelayer.ratelimit.redis_store}: shared by hosts, one atomic Lua script
  run per batch of takes (those of one reactor turn).
- L{gatelayer.ratelimit.breaker}: timeout and circuit breaker around a store.

Nothing is imported here, so that using one part does not load the Redis
client.
"""
