"""
A rate-limit store in Redis, shared by every gateway host using it.

The takes made during one reactor turn are sent together, as one EVALSHA of
L{BATCH_SCRIPT} (loaded again on NOSCRIPT), and answered in the order they
were made. Redis runs a script atomically, so reading each counter, deciding
and writing it back cannot interleave with another gateway's takes (no
read-then-increment race), and two takes of one key in a batch see each
other like two takes in a row. The script reads the Redis server's own clock
(TIME), so hosts whose clocks disagree still share one timeline, and sets
each key's expiry itself, so no key outlives its usefulness.

Batching is what keeps the filter cheap: one command, one reply and one
Deferred chain in the client per turn instead of per request.

The connection pool is txredisapi's lazy pool (L{redis_pool}): it connects
and reconnects in the background (to whichever server the Sentinels name
the master, for a C{redis+sentinel://} URL: see
L{gatelayer.ratelimit.sentinel}), and a take while no connection is up waits (bounded by the
caller's timeout, see L{gatelayer.ratelimit.breaker.GuardedStore}) instead of
failing. txredisapi schedules its reconnect timers on the global reactor; in
a gateway process that is the reactor given here.
"""

import hashlib

import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.net.redisurl import RedisAddress, parse_store_url
from gatelayer.ratelimit.algorithms import Decision, gcra_interval_us, sliding_window_ms
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.sentinel import (
    RECONNECT_MAX_DELAY, SentinelMasterEndpoint, is_readonly, master_role_protocol)

__all__ = ["RedisStore", "BatchReplyError", "BATCH_SCRIPT", "BATCH_SCRIPT_SHA", "quota_spec", "redis_endpoint",
           "redis_pool"]

# One decision per key of KEYS, in order, all at the server's one TIME.
# ARGV[i] is the quota of take i: "g <interval_us> <limit>" (GCRA, mirroring
# gatelayer.ratelimit.algorithms.gcra in whole microseconds) or
# "s <window_ms> <limit>" (sliding window, mirroring
# gatelayer.ratelimit.algorithms.sliding_window in whole milliseconds).
# A single ARGV is the quota of every take (the usual batch: one filter's),
# which spares the client encoding it once per take.
# The answer is one string of four whole numbers per take: allowed (1/0),
# remaining, retry-after and reset, both in microseconds; one string is far
# cheaper for the client to read than a nested array.
BATCH_SCRIPT = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quotas = {}
local qs = {}
local shared = #ARGV == 1
if not shared and #ARGV ~= #KEYS then return redis.error_reply('one quota, or one per key, expected') end
for i = 1, #KEYS do
  local spec = ARGV[shared and 1 or i]
  local q = quotas[spec]
  if q == nil then
    local kind, a, b = string.match(spec, '^([gs]) (%d+) (%d+)$')
    if kind == nil then return redis.error_reply('bad quota ' .. spec) end
    q = {kind, tonumber(a), tonumber(b)}
    quotas[spec] = q
  end
  qs[i] = q
end
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local q = qs[i]
  local limit = q[3]
  if q[1] == 'g' then
    local interval = q[2]
    local capacity = interval * limit
    local tat = tonumber(redis.call('GET', key) or '')
    if tat == nil or tat < now_us then tat = now_us end
    local new_tat = tat + interval
    local used = new_tat - now_us
    if used <= capacity then
      redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil(used / 1000))
      out[i] = string.format('1 %.0f 0 %.0f', math.floor((capacity - used) / interval), used)
    else
      out[i] = string.format('0 0 %.0f %.0f', used - capacity, tat - now_us)
    end
  else
    local window = q[2]
    local index = math.floor(now_ms / window)
    local elapsed = now_ms - index * window
    local curr, prev = 0, 0
    local s = redis.call('HMGET', key, 'w', 'c', 'p')
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
      redis.call('HSET', key, 'w', string.format('%.0f', index), 'c', curr + 1, 'p', prev)
      redis.call('PEXPIRE', key, 2 * window - elapsed)
      out[i] = string.format('1 %.0f 0 %.0f', limit - weighted - 1, (window - elapsed) * 1000)
    else
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
      out[i] = string.format('0 0 %.0f %.0f', retry * 1000, retry * 1000)
    end
  end
end
return table.concat(out, ' ')
"""

BATCH_SCRIPT_SHA = hashlib.sha1(BATCH_SCRIPT.encode()).hexdigest()

_US = 1e6


def quota_spec(quota):
    """
    The batch script's ARGV entry for C{quota} (anything with C{rate},
    C{period}, C{burst} and C{algorithm}), as bytes.

    @raise ValueError: for an algorithm the script does not know.
    """
    limit = quota.rate + quota.burst
    if quota.algorithm == "gcra":
        return b"g %d %d" % (gcra_interval_us(quota.rate, quota.period), limit)
    if quota.algorithm == "sliding_window":
        return b"s %d %d" % (sliding_window_ms(quota.period), limit)
    raise ValueError(f"unknown rate-limit algorithm {quota.algorithm!r}")


def redis_endpoint(reactor, address, connect_timeout):
    """
    The client endpoint for C{address} (a L{RedisAddress}): TCP, TCP wrapped
    in TLS with the server's certificate checked against the host name (and
    against the address's C{ca} file, or the system's trust store), a
    Unix socket, or the master the Sentinels name. Reads the C{ca} file:
    call it when the store is made, not per request.
    """
    if address.sentinel:
        return SentinelMasterEndpoint(reactor, address, connect_timeout)
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


def redis_pool(reactor, address, pool_size=2, connect_timeout=1.0, reconnect_max_delay=2.0,
               charset="utf-8"):
    """
    A lazy txredisapi connection pool to C{address} (a L{RedisAddress}),
    connecting and reconnecting in the background, first after 0.1s, then
    backing off to C{reconnect_max_delay}. For a Sentinel address every
    connection is checked to be to a master before the pool uses it, and
    the back-off stops at L{RECONNECT_MAX_DELAY} if that is shorter.
    """
    factory = txredisapi.RedisFactory(
        address.display(), address.db or None, pool_size, isLazy=True,
        handler=txredisapi.ConnectionHandler, password=address.password,
        username=address.username, charset=charset)
    if address.sentinel:
        factory.protocol = master_role_protocol(reactor, connect_timeout)
        reconnect_max_delay = min(reconnect_max_delay, RECONNECT_MAX_DELAY)
    factory.initialDelay = 0.1
    factory.maxDelay = reconnect_max_delay
    factory.startConnecting(redis_endpoint(reactor, address, connect_timeout))
    return factory


class _Batch:
    """
    Takes gathered for one EVALSHA: their keys, quota specs and Deferreds,
    in the order they were made.

    @ivar mixed: whether the takes have different quotas (otherwise the
        script is sent the one quota once).
    @ivar waiting: takes whose caller has not given up (cancelled) yet.
    @ivar sent: the command's Deferred once sent; cancelled when every
        caller has given up, so that a command still waiting for a
        connection is never sent at all.
    """

    __slots__ = ("store", "keys", "specs", "results", "mixed", "waiting", "sent")

    def __init__(self, store):
        self.store = store
        self.keys = []
        self.specs = []
        self.results = []
        self.mixed = False
        self.waiting = 0
        self.sent = None

    def abandon(self, result):
        """
        The canceller of each take's Deferred: its caller gave up on it.
        """
        self.waiting -= 1
        self.store.counters["abandoned"] += 1
        if self.waiting == 0 and self.sent is not None:
            self.sent.cancel()
            self.store._stalled_command()


class BatchReplyError(Exception):
    """
    Redis answered a batch with something that is not one decision per
    take (a script of another version under the same name, say).
    """


@implementer(IRateLimitStore)
class RedisStore:
    """
    An L{IRateLimitStore} in Redis (see the module docstring).

    @param reactor: the reactor to connect with, and whose C{callLater(0)}
        ends a batch: the takes of one reactor turn go as one command.
    @param url: a C{redis://}, C{rediss://}, C{unix://} or
        C{redis+sentinel://} URL, or a parsed L{RedisAddress}.
    @param pool_size: connections kept open (commands are pipelined on
        them, so a few suffice).
    @param stall_limit: after this many commands in a row had every take
        abandoned by its caller (timed out), the connections are dropped
        and made again: a connection to a host that vanished without a
        reset would otherwise hang every take forever. Commands, not takes,
        are counted so that one slow moment under load (one batch timing
        out together) does not cost the connections.
    @param reconnect_max_delay: the longest wait between reconnection
        attempts, so limits resume soon after Redis is back.
    @param max_batch: the most takes sent in one command; more takes in one
        turn are sent as several commands, so that one script never holds
        Redis (which runs nothing else meanwhile) for long.
    """

    log = Logger()

    def __init__(self, reactor, url, pool_size=2, connect_timeout=1.0,
                 stall_limit=3, reconnect_max_delay=2.0, max_batch=128):
        self.address = url if isinstance(url, RedisAddress) else parse_store_url(url)
        self._reactor = reactor
        self._stall_limit = stall_limit
        self._stalled = 0
        self._max_batch = max_batch
        self._batch = None
        self._flush_call = None
        self._specs = {}
        self._last_quota = self._last_spec = None
        self.counters = {"takes": 0, "allowed": 0, "rejected": 0, "script_loads": 0,
                         "failures": 0, "abandoned": 0, "reconnects_forced": 0,
                         "batches": 0}
        factory = redis_pool(reactor, self.address, pool_size, connect_timeout, reconnect_max_delay)
        self._factory = factory
        self._redis = factory.handler

    def take(self, key, quota):
        """
        Queue a take of C{quota} for C{key}; it goes to Redis with the other
        takes of this reactor turn. Quotas are taken to be immutable (as
        every quota and filter setting in gatelayer is): a quota's script
        arguments are worked out once.

        @raise ValueError: for an unknown algorithm.
        """
        if quota is self._last_quota:
            spec = self._last_spec
        else:
            spec = self._spec(quota)
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self)
            if self._flush_call is None:
                self._flush_call = self._reactor.callLater(0, self._flush)
        elif not batch.mixed and spec is not batch.specs[0]:
            batch.mixed = True
        result = Deferred(batch.abandon)
        batch.keys.append(key)
        batch.specs.append(spec)
        batch.results.append(result)
        batch.waiting += 1
        if len(batch.results) >= self._max_batch:
            self._batch = None
            self._send(batch)
        return result

    def _spec(self, quota):
        which = (quota.algorithm, quota.rate, quota.period, quota.burst)
        spec = self._specs.get(which)
        if spec is None:
            spec = quota_spec(quota)
            if len(self._specs) >= 1024:
                self._specs.clear()
            self._specs[which] = spec
        # the same quota object comes back with every take of a filter
        self._last_quota, self._last_spec = quota, spec
        return spec

    def _flush(self):
        self._flush_call = None
        batch, self._batch = self._batch, None
        if batch is not None:
            self._send(batch)

    def _send(self, batch):
        if batch.waiting == 0:
            return
        keys, specs, results = batch.keys, batch.specs, batch.results
        if batch.waiting < len(results):
            # some callers gave up before the batch left: leave them out
            live = [i for i, result in enumerate(results) if not result.called]
            keys = [keys[i] for i in live]
            specs = [specs[i] for i in live]
            results = batch.results = [results[i] for i in live]
        if not batch.mixed:
            specs = specs[:1]
        self.counters["batches"] += 1
        try:
            d = self._redis.evalsha(BATCH_SCRIPT_SHA, keys, specs)
        except Exception as e:
            d = Deferred()
            d.errback(e)
        d.addErrback(self._maybe_load, keys, specs)
        d.addCallback(self._answered, results)
        d.addErrback(self._batch_failed, results)
        batch.sent = d

    def _maybe_load(self, failure, keys, specs):
        failure.trap(txredisapi.ScriptDoesNotExist)
        self.counters["script_loads"] += 1
        d = self._redis.script_load(BATCH_SCRIPT)
        d.addCallback(lambda _: self._redis.evalsha(BATCH_SCRIPT_SHA, keys, specs))
        return d

    def _answered(self, reply, results):
        values = reply.split() if isinstance(reply, (str, bytes)) else ()
        if len(values) != 4 * len(results):
            raise BatchReplyError(
                f"Redis answered {len(results)} rate-limit take(s) with {reply!r:.80}")
        self._stalled = 0
        counters = self.counters
        allowed_count = 0
        delivered = 0
        for i, result in enumerate(results):
            if result.called:
                continue  # its caller gave up
            j = 4 * i
            allowed = values[j] in ("1", b"1")
            delivered += 1
            allowed_count += allowed
            result.callback(Decision(allowed, int(values[j + 1]),
                                     int(values[j + 2]) / _US, int(values[j + 3]) / _US))
        counters["takes"] += delivered
        counters["allowed"] += allowed_count
        counters["rejected"] += delivered - allowed_count

    def _batch_failed(self, failure, results):
        if is_readonly(failure):
            # a connection to a master since demoted: find the new one
            self._drop_connections("answers as a replica (READONLY)")
        for result in results:
            if not result.called:
                self.counters["failures"] += 1
                result.errback(failure)

    def _stalled_command(self):
        """
        Every take of a sent command was abandoned: one more command in a
        row that Redis did not answer in time.
        """
        self._stalled += 1
        if self._stalled >= self._stall_limit:
            self._stalled = 0
            self._drop_connections("stopped answering")

    def _drop_connections(self, why):
        connections = [c for c in self._factory.pool if c.transport is not None]
        if not connections:
            return
        self.counters["reconnects_forced"] += 1
        self.log.warn(
            "Redis {address} {why}: dropping {count} connection(s) to reconnect",
            address=self.address.display(), why=why, count=len(connections))
        for connection in connections:
            connection.transport.abortConnection()

    def stats(self):
        """
        Counters for metrics, plus C{connections}: how many are up.
        """
        return dict(self.counters, connections=self._factory.size)

    def close(self):
        """
        Fail the takes not sent yet, stop reconnecting and close every
        connection.

        @return: a Deferred firing when the pool is empty.
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._batch = self._batch, None
        if batch is not None:
            self._batch_failed(txredisapi.ConnectionError("the Redis store was closed"), batch.results)
        if self._factory.disconnectCalled:
            return succeed(None)
        return self._factory.disconnect()
