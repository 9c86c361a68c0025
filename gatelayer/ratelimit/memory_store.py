"""
An exact in-process rate-limit store with bounded memory.

The master runs one for all of its workers (the embedded store); a process
without a master (single-process tests, a worker whose master is gone) runs
its own.
"""

import itertools

from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.ratelimit.algorithms import Decision, decide, gcra, gcra_interval_us, quota_of
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.leases import LEASE_GRACE, LEASE_LIFE, lease_terms

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
        # GCRA leases out: key -> {lease id: (count, deadline_us, interval_us)}
        self._reserved = {}
        self._idents = itertools.count(1)
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
        reserved = self._reserved.get(key)
        if reserved is not None and quota.algorithm == "gcra":
            return self._take_reserved(key, quota, now, reserved)
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

    def _take_reserved(self, key, quota, now, reserved):
        """
        A GCRA take of a key with leases out: decided as if the reserved
        takes had been made at the grant (the quota less what is reserved,
        and C{reset} that much later).
        """
        interval = gcra_interval_us(quota.rate, quota.period)
        held = self._settle(key, now, reserved)
        entry = self._entries.get(key)
        tat = entry[0] if entry is not None and entry[1] > now and entry[0].__class__ is not tuple else None
        decision, new_tat, ttl = gcra(tat, now, interval, quota.limit - held)
        if held:
            ahead = (new_tat if new_tat is not None else max(tat or now, now)) - now
            decision = Decision(decision.allowed, decision.remaining, decision.retry_after,
                                (ahead + held * interval) / 1_000_000)
        if new_tat is not None:
            self._entries[key] = (new_tat, now + ttl)
        self._counters["takes"] += 1
        self._counters["allowed" if decision.allowed else "rejected"] += 1
        return decision

    def _settle(self, key, now, reserved):
        """
        Charge the leases of C{key} whose worker never reported in time
        as wholly used; the number of takes still reserved.
        """
        held = 0
        for ident, (count, deadline, interval) in list(reserved.items()):
            if deadline <= now:
                del reserved[ident]
                self._charge(key, count, interval, now)
            else:
                held += count
        if not reserved:
            del self._reserved[key]
        return held

    def _charge(self, key, count, interval, now):
        entry = self._entries.get(key)
        tat = entry[0] if entry is not None and entry[1] > now and entry[0].__class__ is not tuple else now
        tat = max(tat, now) + count * interval
        self._entries[key] = (tat, tat)

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
            if quota.algorithm == "gcra":
                ident = next(self._idents)
                deadline = now + round((LEASE_LIFE + LEASE_GRACE) * 1_000_000)
                interval = gcra_interval_us(quota.rate, quota.period)
                self._reserved.setdefault(key, {})[ident] = (count, deadline, interval)
                terms = (*terms, ident)
            else:
                state, expires = self._entries[key]
                self._entries[key] = ((state[0], state[1] + count, state[2]), expires)
            self._counters["takes"] += count
            self._counters["allowed"] += count
            self._counters["leases"] += 1
        return decision, terms

    def give_back(self, key, quota, count, window=0, used=0, lease=0):
        """
        End a lease: C{count} of its takes were not used (the key gets them
        back, and the counters forget them) and C{used} were.

        @param window: the sliding window's index at the grant; tokens of a
            window that is over are not given back (they no longer count).
        @param lease: a GCRA lease's id: its reservation ends and the
            C{used} takes are charged now (nothing, if it was charged
            whole already because its report came too late).
        """
        quota = quota_of(quota)
        self._counters["takes"] -= count
        self._counters["allowed"] -= count
        self._counters["given_back"] += count
        now = self._now_us()
        if quota.algorithm == "gcra":
            reserved = self._reserved.get(key)
            if reserved is not None and lease in reserved:
                _, _, interval = reserved.pop(lease)
                if not reserved:
                    del self._reserved[key]
                if used:
                    self._charge(key, used, interval, now)
            return
        entry = self._entries.get(key)
        if entry is None:
            return
        state, expires = entry
        if expires <= now or state.__class__ is not tuple:
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
        Drop every key whose state has expired, and charge the leases that
        were not reported in time.
        """
        now = self._now_us()
        for key, reserved in list(self._reserved.items()):
            self._settle(key, now, reserved)
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
