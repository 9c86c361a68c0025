"""
Leases of the embedded store: a worker answers a busy key from a few takes
the master made for it in advance, instead of asking the master for each
request.

When a worker asks for one, the master, right after a take it allowed,
sets C{n} more takes of the same key aside for it: exactly the decisions
C{n} requests arriving at that moment would get, handed to the worker. The
worker then lets its next C{n} requests of that key through without a round
trip, each with the decision the master made for it, and when the lease
ends says how many it used and gives back the rest. The host can never
admit more than the quota: what is set aside counts as taken for every
other request until the lease ends. Under GCRA a lease is a reservation:
the requests used are charged to the key when the lease ends (later than
they came, which is never less strict), so a quota that refills while the
lease lasts does not hand its takes out twice; a reservation whose worker
never reports (a worker that died) is charged whole after L{LEASE_LIFE}
plus L{LEASE_GRACE} seconds. Under the sliding window the takes are
counted in the current window at once, and the lease ends with the window.

Leases are only granted far from the limit: from the part of what remains
above a margin of a quarter of the quota, and each lease at most half of
that part, so that near the limit every take is decided by the master
alone, in arrival order. A lease ends when it is used up, after
L{LEASE_IDLE} seconds without a take of its key, after L{LEASE_LIFE}
seconds, or (sliding window) with its window.
"""

import math

from gatelayer.ratelimit.algorithms import Decision, gcra_interval_us, sliding_window_ms

__all__ = [
    "LEASE_GRACE", "LEASE_IDLE", "LEASE_LIFE", "LEASE_MIN", "LEASE_SPAN", "Lease", "LeaseTable", "lease_terms",
]

LEASE_LIFE = 1.0
"""The longest a lease lives, in seconds. Unused takes are given back to
the master when it ends."""

LEASE_GRACE = 1.0
"""How much longer than L{LEASE_LIFE} the master waits for a worker to
report a GCRA lease before it charges the whole lease."""

LEASE_IDLE = 0.25
"""A lease whose key had no take for this many seconds ends (its unused
takes go back to the master, where other workers can have them)."""

LEASE_SPAN = 0.1
"""A lease covers at most what the quota refills in this many seconds (or
L{LEASE_MIN} takes when that is more), and never more than half the spare
part above the margin."""

LEASE_MIN = 8
"""The size of a key's first lease in a worker; each lease used up doubles
the next one, one that ended unused makes the next as large as what it
used (but not below this)."""

_MARGIN_PART = 4
_SPLIT = 2


def lease_terms(decision, quota, now_us, want=LEASE_MIN):
    """
    How large a lease the master may grant right after the allowed
    C{decision}, and on what terms.

    @param decision: the master's decision for the take that asked.
    @param quota: its L{gatelayer.ratelimit.algorithms.Quota}.
    @param now_us: the master's time in microseconds.
    @param want: how many takes the worker asked for.
    @return: C{(count, step, life, window)}: the number of extra takes
        (C{0}: no lease), the seconds that each further take adds to
        C{reset}, how many seconds the lease may be used, and the sliding
        window's index (C{0} for GCRA) for giving tokens back.
    """
    if not decision.allowed:
        return 0, 0.0, 0.0, 0
    margin = max(1, quota.limit // _MARGIN_PART)
    spare = (decision.remaining - margin) // _SPLIT
    if spare < 1 or want < 1:
        return 0, 0.0, 0.0, 0
    count = min(spare, want, max(LEASE_MIN, math.ceil(quota.rate * LEASE_SPAN / quota.period)))
    if quota.algorithm == "gcra":
        return count, gcra_interval_us(quota.rate, quota.period) / 1_000_000, LEASE_LIFE, 0
    window_ms = sliding_window_ms(quota.period)
    window = (now_us // 1000) // window_ms
    return count, 0.0, min(LEASE_LIFE, decision.reset), window


class Lease:
    """
    The takes a worker holds for one key: C{left} more requests may pass,
    the first of them with C{remaining} and C{reset} as given (each further
    one with one less remaining and C{step} more seconds of reset), until
    C{expires}, or until it has not been used for L{LEASE_IDLE} seconds.
    """

    __slots__ = ("spec", "left", "used", "remaining", "reset", "step", "granted", "expires",
                 "window", "call", "last_used", "ident")

    def __init__(self, spec, count, remaining, reset, step, granted, life, window, ident=0):
        self.spec = spec
        self.left = count
        self.used = 0
        self.remaining = remaining
        # whole microseconds, as the master's decisions are made of
        self.reset = round(reset * 1_000_000)
        self.step = round(step * 1_000_000)
        self.granted = granted
        self.expires = granted + life
        self.window = window
        self.ident = ident
        self.call = None
        self.last_used = granted

    def ends_at(self):
        """
        When the lease ends unless it is used before.
        """
        return min(self.expires, self.last_used + LEASE_IDLE)

    def use(self, now):
        """
        Take one of the lease's requests: the decision the master made for
        it, its C{reset} shortened by the time since the grant.
        """
        self.left -= 1
        self.used += 1
        self.last_used = now
        reset = (self.reset + self.used * self.step) / 1_000_000
        if now > self.granted:
            reset = max(0.0, reset - (now - self.granted))
        return Decision(True, self.remaining - self.used, 0.0, reset)


class LeaseTable:
    """
    A worker's leases, one per key at most, with their expiry timers on
    C{clock}, and what it takes to ask for them: which keys are in demand,
    how large a lease to ask for, and the takes of a key held while its
    lease is being asked for (served from the lease when it comes, so that
    a granted lease is used at once rather than lying idle).

    Ended leases with unused takes, or reserved ones (GCRA: the master
    learns what was used), are handed to C{give_back} as C{(key, spec,
    unused, window, used, ident)}.
    """

    MAX_KEYS = 4096

    def __init__(self, clock, give_back):
        self._clock = clock
        self._give_back = give_back
        self._leases = {}
        self._asking = {}
        self._asked_at = {}
        self._recent = {}
        self._sizes = {}
        self._denied = {}

    def __len__(self):
        return len(self._leases)

    def use(self, key, spec):
        """
        A decision from the lease of C{key} for a quota of C{spec} (the
        tuple C{(rate, period, burst, algorithm)}), or L{None} when there
        is no usable lease.
        """
        lease = self._leases.get(key)
        if lease is None:
            return None
        now = self._clock.seconds()
        if (lease.spec is not spec and lease.spec != spec) or now >= lease.expires \
                or now - lease.last_used >= LEASE_IDLE:
            self._end(key, lease)
            return None
        decision = lease.use(now)
        if lease.left <= 0:
            self._end(key, lease)
        return decision

    def hold(self, key, spec, result):
        """
        Keep the take C{result} (a Deferred) for C{key} aside when a lease
        for C{key} is being asked for; C{False} when none is, or when the
        master has not answered that for L{LEASE_LIFE} seconds (the take
        then asks the master itself rather than wait on).
        """
        waiting = self._asking.get(key)
        if waiting is None or self._clock.seconds() - self._asked_at.get(key, 0.0) > LEASE_LIFE:
            return False
        waiting.append((spec, result))
        return True

    def wants(self, keys, now):
        """
        How large a lease to ask for with the last take of each of C{keys}
        (the keys of one batch, in order): a dict from key to count, for the
        keys in demand (taken more than once in the batch, or within
        L{LEASE_IDLE} before it) and not refused a lease within
        L{LEASE_IDLE}. Their later takes are held (L{hold}) until the answer.
        """
        for table in (self._recent, self._sizes, self._denied, self._asked_at):
            if len(table) > self.MAX_KEYS:
                table.clear()
        recent, denied = self._recent, self._denied
        wanted = {}
        seen = set()
        for key in keys:
            if (key in seen or now - recent.get(key, -LEASE_IDLE) < LEASE_IDLE) \
                    and now - denied.get(key, -LEASE_IDLE) >= LEASE_IDLE and key not in self._asking:
                wanted[key] = self._sizes.get(key, LEASE_MIN)
            seen.add(key)
            recent[key] = now
        for key in wanted:
            self._asking[key] = []
            self._asked_at[key] = now
        return wanted

    def answered(self, key, spec, decision, terms, asked_at):
        """
        The master's answer to the take that asked for a lease of C{key}:
        keep the lease it granted (C{terms} as from L{lease_terms}, or
        L{None}), serve the held takes from it, and return those it could
        not serve, as C{(spec, result)}, to be asked for.
        """
        waiting = self._asking.pop(key, [])
        if terms is None:
            self._denied[key] = self._clock.seconds()
            return waiting
        self.add(key, spec, decision, terms, asked_at)
        left = []
        for spec_, result in waiting:
            if result.called:
                continue  # given up on (timed out) while held
            decision = self.use(key, spec_)
            if decision is None:
                left.append((spec_, result))
            else:
                result.callback(decision)
        return left

    def failed(self, key):
        """
        The take that asked for a lease of C{key} failed: the held takes,
        as C{(spec, result)}, to be failed as well.
        """
        return self._asking.pop(key, [])

    def add(self, key, spec, decision, terms, granted):
        """
        Keep the lease the master granted with C{decision} on C{terms}
        (as from L{lease_terms}); C{granted} is when the worker asked, so
        that the lease never outlives the master's reckoning.
        """
        count, step, life, window = terms[:4]
        ident = terms[4] if len(terms) > 4 else 0
        old = self._leases.get(key)
        if old is not None:
            self._end(key, old)
        lease = Lease(spec, count, decision.remaining, decision.reset, step, granted, life, window, ident)
        # idle from its arrival: a master slow to answer must not make it
        # arrive idle already
        lease.last_used = max(granted, self._clock.seconds())
        self._leases[key] = lease
        self._arm(key, lease)

    def _arm(self, key, lease):
        lease.call = self._clock.callLater(max(0.0, lease.ends_at() - self._clock.seconds()),
                                           self._expired, key, lease)

    def _expired(self, key, lease):
        lease.call = None
        if self._leases.get(key) is not lease:
            return
        if self._clock.seconds() < lease.ends_at():
            self._arm(key, lease)  # used since the timer was set
        else:
            self._end(key, lease)

    def _end(self, key, lease):
        del self._leases[key]
        if lease.call is not None and lease.call.active():
            lease.call.cancel()
        lease.call = None
        # The next lease of the key: twice as large when this one was used
        # up, as large as what was used when it was not.
        size = lease.used + lease.left
        self._sizes[key] = size * 2 if lease.left <= 0 else max(LEASE_MIN, lease.used)
        if lease.left > 0 or lease.ident:
            self._give_back(key, lease.spec, lease.left, lease.window, lease.used, lease.ident)
            lease.left = 0

    def close(self):
        """
        Stop every timer. Unused takes are given back.
        """
        for key, lease in list(self._leases.items()):
            self._end(key, lease)
