"""
An exact in-process rate-limit store with bounded memory.

The master runs one for all of its workers (the embedded store); a process
without a master (single-process tests, a worker whose master is gone) runs
its own.
"""

from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.ratelimit.algorithms import decide, gcra_interval_us, quota_of
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.leases import lease_terms

__all__ = ["MemoryStore"]


@implementer(IRateLimitStore)
class MemoryStore:
    """
    Keeps each key's algorithm state in a dict with its expiry time.

    Expired keys are swept every C{sweep_interval} seconds by a
    L{LoopingCall} on the injected clock, so memory follows the number of
    clients active within one period, not the number ever seen. C{max_keys}
    is a hard bound on top: when it is reached the oldest keys are dropped
    (counted as C{evicted} in L{stats}), which forgets those clients' usage
    rather than growing without limit.
    """

    log = Logger()

    def __init__(self, clock, sweep_interval=10.0, max_keys=1_000_000):
        self._clock = clock
        self._entries = {}
        self._max_keys = max_keys
        self._counters = {"takes": 0, "allowed": 0, "rejected": 0, "swept": 0, "evicted": 0,
                          "leases": 0, "given_back": 0}
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock
        self._sweeper.start(sweep_interval, now=False)

    def _now_us(self):
        return int(round(self._clock.seconds() * 1_000_000))

    def take(self, key, quota):
        """
        Decide at once; the result is an already-fired Deferred.
        """
        return succeed(self.take_now(key, quota))

    def take_now(self, key, quota):
        """
        The synchronous form of L{take}, returning the
        L{gatelayer.ratelimit.algorithms.Decision} itself.
        """
        quota = quota_of(quota)
        now = self._now_us()
        entry = self._entries.get(key)
        state = entry[0] if entry is not None and entry[1] > now else None
        decision, new_state, ttl = decide(state, now, quota)
        if new_state is not None:
            if entry is None and len(self._entries) >= self._max_keys:
                self._make_room(now)
            self._entries[key] = (new_state, now + ttl)
        self._counters["takes"] += 1
        self._counters["allowed" if decision.allowed else "rejected"] += 1
        return decision

    take_local = take_now

    def take_lease(self, key, quota, want=8):
        """
        L{take_now}, and when it allowed the take and the key is far from
        its limit, a lease: at most C{want} more takes made at once (see
        L{gatelayer.ratelimit.leases}), counted as taken and allowed.

        @return: C{(decision, terms)} with C{terms} as from
            L{gatelayer.ratelimit.leases.lease_terms} (a count of C{0}: no
            lease).
        """
        quota = quota_of(quota)
        decision = self.take_now(key, quota)
        now = self._now_us()
        terms = lease_terms(decision, quota, now, want)
        count = terms[0]
        if count:
            state, expires = self._entries[key]
            if quota.algorithm == "gcra":
                state += count * gcra_interval_us(quota.rate, quota.period)
                expires = state
            else:
                state = (state[0], state[1] + count, state[2])
            self._entries[key] = (state, expires)
            self._counters["takes"] += count
            self._counters["allowed"] += count
            self._counters["leases"] += 1
        return decision, terms

    def give_back(self, key, quota, count, window=0):
        """
        Undo C{count} takes of a lease that were not used: the key gets
        them back (never more than a whole quota) and the counters forget
        them.

        @param window: the sliding window's index at the grant; tokens of a
            window that is over are not given back (they no longer count).
        """
        quota = quota_of(quota)
        self._counters["takes"] -= count
        self._counters["allowed"] -= count
        self._counters["given_back"] += count
        entry = self._entries.get(key)
        if entry is None:
            return
        state, expires = entry
        now = self._now_us()
        if expires <= now:
            return
        if quota.algorithm == "gcra":
            if state.__class__ is tuple:
                return
            state -= count * gcra_interval_us(quota.rate, quota.period)
            if state <= now:
                del self._entries[key]
            else:
                self._entries[key] = (state, state)
            return
        if state.__class__ is not tuple:
            return
        index, current, previous = state
        if index == window:
            current = max(0, current - count)
        elif index == window + 1:
            previous = max(0, previous - count)
        else:
            return
        self._entries[key] = ((index, current, previous), expires)

    def _make_room(self, now):
        self.sweep()
        excess = len(self._entries) - self._max_keys + 1
        if excess > 0:
            for key in list(self._entries)[:excess]:
                del self._entries[key]
            self._counters["evicted"] += excess
            self.log.warn(
                "rate-limit store full ({max_keys} keys): forgot {count} oldest keys",
                max_keys=self._max_keys, count=excess)

    def sweep(self):
        """
        Drop every key whose state has expired.
        """
        now = self._now_us()
        expired = [key for key, (_, expires) in self._entries.items() if expires <= now]
        for key in expired:
            del self._entries[key]
        self._counters["swept"] += len(expired)

    def __len__(self):
        return len(self._entries)

    def stats(self):
        """
        Counters for metrics: takes, allowed, rejected, swept, evicted,
        leases (granted), given_back (unused leased takes returned), keys.
        """
        return dict(self._counters, keys=len(self._entries))

    def close(self):
        """
        Stop the sweeper.
        """
        if self._sweeper.running:
            self._sweeper.stop()
        return succeed(None)
