"""
A rate-limit store in Redis, shared by every gateway host using it.

Each decision is one Lua script run with EVALSHA (loaded again on NOSCRIPT):
Redis runs a script atomically, so reading the state, deciding and writing it
back cannot interleave with another gateway's take (no read-then-increment
race). The script reads the Redis server's own clock (TIME), so hosts whose
clocks disagree still share one timeline, and sets the key's expiry itself,
so no key outlives its usefulness.

The connection pool is txredisapi's lazy pool: it connects and reconnects in
the background, and a take while no connection is up waits (bounded by the
caller's timeout, see L{gatelayer.ratelimit.breaker.GuardedStore}) instead of
failing. txredisapi schedules its reconnect timers on the global reactor; in
a gateway process that is the reactor given here.
"""

import hashlib

import txredisapi
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.config.filter_ratelimit import RedisAddress, parse_store_url
from gatelayer.ratelimit.algorithms import Decision, gcra_interval_us, sliding_window_ms
from gatelayer.ratelimit.interfaces import IRateLimitStore

__all__ = ["RedisStore", "GCRA_SCRIPT", "SLIDING_WINDOW_SCRIPT"]

# Mirrors gatelayer.ratelimit.algorithms.gcra; times in whole microseconds.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local capacity = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local used = new_tat - now
if used <= capacity then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(used / 1000))
  return {1, math.floor((capacity - used) / interval), 0, used}
end
return {0, 0, used - capacity, tat - now}
"""

# Mirrors gatelayer.ratelimit.algorithms.sliding_window; times in whole
# milliseconds, answers in microseconds like the GCRA script.
SLIDING_WINDOW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local index = math.floor(now / window)
local elapsed = now - index * window
local curr, prev = 0, 0
local s = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(s[1])
if w ~= nil then
  if w == index - 1 then
    prev = tonumber(s[2]) or 0
  elseif w >= index then
    index = w
    curr = tonumber(s[2]) or 0
    prev = tonumber(s[3]) or 0
  end
end
local weighted = math.ceil(prev * (window - elapsed) / window) + curr
if weighted < limit then
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', index), 'c', curr + 1, 'p', prev)
  redis.call('PEXPIRE', KEYS[1], 2 * window - elapsed)
  return {1, limit - weighted - 1, 0, (window - elapsed) * 1000}
end
local retry = nil
if curr < limit and prev > 0 then
  local at = window - math.floor((limit - curr - 1) * window / prev)
  if at < window then retry = math.max(1, at - elapsed) end
end
if retry == nil then
  retry = window - elapsed
  if curr > 0 then retry = retry + math.max(0, window - math.floor((limit - 1) * window / curr)) end
  retry = math.max(1, retry)
end
return {0, 0, retry * 1000, retry * 1000}
"""

_SCRIPTS = {
    "gcra": (GCRA_SCRIPT, hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()),
    "sliding_window": (SLIDING_WINDOW_SCRIPT, hashlib.sha1(SLIDING_WINDOW_SCRIPT.encode()).hexdigest()),
}


def _script_args(quota):
    if quota.algorithm == "gcra":
        return (gcra_interval_us(quota.rate, quota.period), quota.rate + quota.burst)
    if quota.algorithm == "sliding_window":
        return (sliding_window_ms(quota.period), quota.rate + quota.burst)
    raise ValueError(f"unknown rate-limit algorithm {quota.algorithm!r}")


def redis_endpoint(reactor, address, connect_timeout):
    """
    The client endpoint for C{address} (a L{RedisAddress}): TCP, TCP wrapped
    in TLS with the server's certificate checked against the host name (and
    against the address's C{ca} file, or the system's trust store), or a
    Unix socket. Reads the C{ca} file: call it when the store is made, not
    per request.
    """
    if address.scheme == "unix":
        return UNIXClientEndpoint(reactor, address.path, timeout=connect_timeout)
    endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=connect_timeout)
    if address.tls:
        trust = None
        if address.ca is not None:
            with open(address.ca, "rb") as f:
                trust = Certificate.loadPEM(f.read())
        endpoint = wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust), endpoint)
    return endpoint


@implementer(IRateLimitStore)
class RedisStore:
    """
    An L{IRateLimitStore} in Redis (see the module docstring).

    @param reactor: the reactor to connect with.
    @param url: a C{redis://}, C{rediss://} or C{unix://} URL, or a parsed
        L{RedisAddress}.
    @param pool_size: connections kept open (commands are pipelined on
        them, so a few suffice).
    @param stall_limit: after this many takes in a row were abandoned by
        their caller (timed out), the connections are dropped and made
        again: a connection to a host that vanished without a reset would
        otherwise hang every take forever.
    @param reconnect_max_delay: the longest wait between reconnection
        attempts, so limits resume soon after Redis is back.
    """

    log = Logger()

    def __init__(self, reactor, url, pool_size=2, connect_timeout=1.0,
                 stall_limit=3, reconnect_max_delay=2.0):
        self.address = url if isinstance(url, RedisAddress) else parse_store_url(url)
        self._stall_limit = stall_limit
        self._stalled = 0
        self.counters = {"takes": 0, "allowed": 0, "rejected": 0, "script_loads": 0,
                         "failures": 0, "abandoned": 0, "reconnects_forced": 0}
        factory = txredisapi.RedisFactory(
            self.address.display(), self.address.db or None, pool_size, isLazy=True,
            handler=txredisapi.ConnectionHandler, password=self.address.password,
            username=self.address.username)
        factory.initialDelay = 0.1
        factory.maxDelay = reconnect_max_delay
        factory.startConnecting(redis_endpoint(reactor, self.address, connect_timeout))
        self._factory = factory
        self._redis = factory.handler

    def take(self, key, quota):
        """
        Run the quota's script for C{key} in Redis.
        """
        script, sha = _SCRIPTS[quota.algorithm]
        args = _script_args(quota)
        d = self._redis.evalsha(sha, [key], args)
        d.addErrback(self._maybe_load, script, sha, key, args)
        return d.addCallbacks(self._decided, self._failed)

    def _maybe_load(self, failure, script, sha, key, args):
        failure.trap(txredisapi.ScriptDoesNotExist)
        self.counters["script_loads"] += 1
        d = self._redis.script_load(script)
        d.addCallback(lambda _: self._redis.evalsha(sha, [key], args))
        return d

    def _decided(self, reply):
        self._stalled = 0
        allowed, remaining, retry_us, reset_us = reply
        self.counters["takes"] += 1
        self.counters["allowed" if allowed else "rejected"] += 1
        return Decision(bool(allowed), int(remaining), retry_us / 1e6, reset_us / 1e6)

    def _failed(self, failure):
        if failure.check(CancelledError):
            self.counters["abandoned"] += 1
            self._stalled += 1
            if self._stalled >= self._stall_limit:
                self._stalled = 0
                self._drop_connections()
        else:
            self.counters["failures"] += 1
        return failure

    def _drop_connections(self):
        connections = [c for c in self._factory.pool if c.transport is not None]
        if not connections:
            return
        self.counters["reconnects_forced"] += 1
        self.log.warn(
            "Redis {address} stopped answering: dropping {count} connection(s) to reconnect",
            address=self.address.display(), count=len(connections))
        for connection in connections:
            connection.transport.abortConnection()

    def stats(self):
        """
        Counters for metrics, plus C{connections}: how many are up.
        """
        return dict(self.counters, connections=self._factory.size)

    def close(self):
        """
        Stop reconnecting and close every connection.

        @return: a Deferred firing when the pool is empty.
        """
        if self._factory.disconnectCalled:
            return succeed(None)
        return self._factory.disconnect()
