"""
The embedded store's AMP command: workers take from the master's
L{gatelayer.ratelimit.memory_store.MemoryStore} over their control channel.
"""

from twisted.protocols import amp

from gatelayer.ratelimit.algorithms import ALGORITHMS, Quota

__all__ = ["RateLimitTake", "register_master_responders"]


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


def register_master_responders(protocol, store):
    """
    Answer L{RateLimitTake} on C{protocol} (the master's
    L{gatelayer.process.control.ControlProtocol} to one worker) from
    C{store}, the master's single embedded store shared by all workers.
    """
    quotas = {}

    def take(key, rate, period, burst, algorithm):
        spec = (rate, period, burst, algorithm)
        quota = quotas.get(spec)
        if quota is None:
            if algorithm not in ALGORITHMS or rate < 1 or period <= 0 or burst < 0:
                raise ValueError(f"bad quota {spec!r}")
            if len(quotas) > 1000:
                quotas.clear()
            quota = quotas[spec] = Quota(rate=rate, period=period, burst=burst, algorithm=algorithm)
        decision = store.take_now(key, quota)
        return {
            "allowed": decision.allowed,
            "remaining": decision.remaining,
            "retry_after": decision.retry_after,
            "reset": decision.reset,
        }

    protocol.register(RateLimitTake, take)
