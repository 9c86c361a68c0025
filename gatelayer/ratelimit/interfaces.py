"""
The seam between the rate-limit filter and where counters are kept.
"""

from zope.interface import Interface

__all__ = ["IRateLimitStore", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """
    A store could not decide: it failed, was too slow, or its breaker is
    open. The filter then applies its C{on_store_error} policy.

    @ivar reason: C{"error"}, C{"timeout"} or C{"breaker_open"}.
    """

    def __init__(self, reason, detail=""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class IRateLimitStore(Interface):
    """
    Keeps rate-limit state and decides, atomically per key, whether one more
    request fits a quota.
    """

    def take(key, quota):
        """
        Take one unit of C{quota} for C{key}.

        @param key: the full, namespaced key (C{gatelayer:rl:<filter>:<key>}).
        @param quota: anything with C{rate}, C{period}, C{burst} and
            C{algorithm} (a L{gatelayer.ratelimit.algorithms.Quota} or the
            filter's settings).
        @return: a L{Deferred} firing with a
            L{gatelayer.ratelimit.algorithms.Decision}, or failing when the
            store cannot decide.
        """

    def close():
        """
        Release connections and timers.

        @return: a L{Deferred} firing when done.
        """
