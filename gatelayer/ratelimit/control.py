"""
The embedded store's AMP command: workers take from the master's
L{gatelayer.ratelimit.memory_store.MemoryStore} over their control channel;
L{EmbeddedStorePart} is that store as the master's C{ratelimit} service.
"""

import json

from twisted.protocols import amp

from gatelayer.ratelimit.algorithms import ALGORITHMS, Quota
from gatelayer.ratelimit.memory_store import MemoryStore
from gatelayer.service import MasterPart

__all__ = [
    "EmbeddedStorePart", "RateLimitGiveBack", "RateLimitTake", "RateLimitTakeBatch",
    "register_master_responders",
]


class RateLimitTake(amp.Command):
    """
    Worker -> master: take one unit of a quota for a key in the embedded
    store, and say whether the request may pass.
    """

    commandName = b"RateLimitTake"
    arguments = [
        (b"key", amp.Unicode()),
        (b"rate", amp.Integer()),
        (b"period", amp.Float()),
        (b"burst", amp.Integer()),
        (b"algorithm", amp.Unicode()),
    ]
    response = [
        (b"allowed", amp.Boolean()),
        (b"remaining", amp.Integer()),
        (b"retry_after", amp.Float()),
        (b"reset", amp.Float()),
    ]
    errors = {ValueError: b"BAD_QUOTA"}


class RateLimitTakeBatch(amp.Command):
    """
    Worker -> master: several takes in one message (those a worker collected
    during one reactor turn), answered in order. Under load this divides the
    control channel's cost per request by the batch size.

    The takes travel packed as one JSON array of C{[key, rate, period, burst,
    algorithm]} (and the answers as C{[allowed, remaining, retry_after,
    reset]}): one value to parse instead of a box per take, which is what
    the master, serving every worker, spends its time on.

    A take may carry a sixth element, a count, asking for a lease of at
    most that many takes (see
    L{gatelayer.ratelimit.leases}); its answer then has four or five more:
    the lease's count, step, life and window, as from
    L{gatelayer.ratelimit.leases.lease_terms}, and a GCRA lease's id.
    """

    commandName = b"RateLimitTakeBatch"
    arguments = [(b"takes", amp.String())]
    response = [(b"decisions", amp.String())]
    errors = {ValueError: b"BAD_QUOTA"}


class RateLimitGiveBack(amp.Command):
    """
    Worker -> master: the ends of leases, as one JSON array of C{[key, rate,
    period, burst, algorithm, unused, window, used, lease id]}.
    """

    commandName = b"RateLimitGiveBack"
    arguments = [(b"leases", amp.String())]
    response = []
    errors = {ValueError: b"BAD_QUOTA"}


def register_master_responders(protocol, store):
    """
    Answer L{RateLimitTake} and L{RateLimitTakeBatch} on C{protocol} (the
    master's L{gatelayer.process.control.ControlProtocol} to one worker)
    from C{store}, the master's single embedded store shared by all workers.
    """
    quotas = {}

    def quota_for(rate, period, burst, algorithm):
        spec = (rate, period, burst, algorithm)
        quota = quotas.get(spec)
        if quota is None:
            if algorithm not in ALGORITHMS or rate < 1 or period <= 0 or burst < 0:
                raise ValueError(f"bad quota {spec!r}")
            if len(quotas) > 1000:
                quotas.clear()
            quota = quotas[spec] = Quota(rate=rate, period=period, burst=burst, algorithm=algorithm)
        return quota

    def take(key, rate, period, burst, algorithm):
        decision = store.take_now(key, quota_for(rate, period, burst, algorithm))
        return {
            "allowed": decision.allowed,
            "remaining": decision.remaining,
            "retry_after": decision.retry_after,
            "reset": decision.reset,
        }

    def take_batch(takes):
        try:
            items = json.loads(takes)
        except ValueError:
            raise ValueError("takes are not a JSON array") from None
        answers = []
        for item in items:
            quota = quota_for(*item[1:5])
            if len(item) > 5 and item[5]:
                decision, terms = store.take_lease(item[0], quota, int(item[5]))
                if terms[0]:
                    answers.append((decision.allowed, decision.remaining, decision.retry_after,
                                    decision.reset, *terms))
                    continue
            else:
                decision = store.take_now(item[0], quota)
            answers.append((decision.allowed, decision.remaining, decision.retry_after, decision.reset))
        return {"decisions": json.dumps(answers, separators=(",", ":")).encode("ascii")}

    def give_back(leases):
        try:
            items = json.loads(leases)
        except ValueError:
            raise ValueError("leases are not a JSON array") from None
        for key, rate, period, burst, algorithm, count, window, *rest in items:
            store.give_back(key, quota_for(rate, period, burst, algorithm), count, window, *rest[:2])
        return {}

    protocol.register(RateLimitTake, take)
    protocol.register(RateLimitTakeBatch, take_batch)
    protocol.register(RateLimitGiveBack, give_back)


class EmbeddedStorePart(MasterPart):
    """
    The embedded store as the master's C{ratelimit} service: one
    L{MemoryStore} for the whole host, answering every worker's
    L{RateLimitTake}.

    Keep the same part across configuration reloads so that counters
    survive them (keys carry the filter name, so renamed filters simply
    start afresh): its C{reconfigure} keeps the store.
    """

    def __init__(self, reactor, store=None):
        self.name = "ratelimit"
        self.store = store if store is not None else MemoryStore(reactor)

    def register(self, control, record=None):
        """
        Answer C{control}'s (one worker's channel) rate-limit takes.
        """
        register_master_responders(control, self.store)

    def start(self):
        """
        Nothing to start: the store sweeps itself.
        """

    def stop(self):
        """
        Stop the store's sweeper.
        """
        return self.store.close()

    def stopService(self):
        """
        Stop the store's sweeper (the master stops this part once its
        workers have exited, so in-flight takes are still answered).
        """
        super().stopService()
        return self.stop()

    def status(self):
        """
        The store's counters, for /status and metrics.
        """
        return {"ratelimit": self.store.stats()}
