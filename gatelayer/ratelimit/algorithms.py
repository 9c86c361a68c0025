"""
Rate-limit arithmetic: pure functions of a stored state, the current time and
a quota. No clock, no I/O: the memory store calls them directly and the Redis
Lua scripts in L{gatelayer.ratelimit.redis_store} mirror them line by line.

Times are whole numbers (microseconds for GCRA, milliseconds for the sliding
window) so that every decision is exact: a float accumulating C{1/rate} steps
would let one request more or less through at the edge of a burst. Whole
numbers below 2**53 are also exact in Redis Lua (which only has doubles).
"""

from attrs import field, frozen

__all__ = [
    "ALGORITHMS", "Decision", "Quota", "gcra", "sliding_window", "decide",
]

ALGORITHMS = ("gcra", "sliding_window")

_US = 1_000_000
_MS = 1_000


@frozen
class Decision:
    """
    The answer to one request for one unit of a quota.

    @ivar allowed: whether the request may pass.
    @ivar remaining: how many more requests would pass right now.
    @ivar retry_after: seconds until a request would pass again (0 when
        allowed).
    @ivar reset: seconds until the quota is whole again (when rejected, the
        same as C{retry_after} or more).
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset: float


def _positive(instance, attribute, value):
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@frozen
class Quota:
    """
    What a rate limit allows: C{rate} requests per C{period} seconds with
    C{burst} extra at once, decided by C{algorithm}.

    Anything with these four attributes (such as the filter's parsed
    settings) can be given to a store instead.
    """

    rate: int = field(validator=_positive)
    period: float = field(validator=_positive)
    burst: int = 0
    algorithm: str = "gcra"

    @property
    def limit(self):
        """
        How many requests a fresh key admits at once: C{rate + burst}.
        """
        return self.rate + self.burst


def quota_of(settings):
    """
    A L{Quota} from anything that has C{rate}, C{period}, C{burst} and
    C{algorithm} (a L{Quota} is returned as it is).
    """
    if isinstance(settings, Quota):
        return settings
    return Quota(rate=settings.rate, period=settings.period,
                 burst=settings.burst, algorithm=settings.algorithm)


def gcra_interval_us(rate, period):
    """
    The emission interval of GCRA in whole microseconds (at least one): the
    time one request's worth of quota takes to come back.
    """
    return max(1, round(period * _US / rate))


def sliding_window_ms(period):
    """
    The sliding window's length in whole milliseconds (at least one).
    """
    return max(1, round(period * _MS))


def gcra(tat, now_us, interval_us, limit):
    """
    One GCRA (generic cell rate algorithm) decision.

    The state is a single number, the theoretical arrival time C{tat}: when
    the bucket would be full again. A request is admitted if, after adding
    its C{interval_us}, the bucket is no more than C{limit} intervals ahead
    of now. That is a token bucket of C{limit} tokens refilled one per
    interval, kept in one integer and without a refill timer.

    @param tat: the stored state, or L{None} for a fresh key.
    @return: C{(decision, new_tat, ttl_us)}; C{new_tat} is L{None} when
        nothing must be written; C{ttl_us} is how long the state matters.
    """
    capacity = interval_us * limit
    if tat is None or tat < now_us:
        tat = now_us
    new_tat = tat + interval_us
    used = new_tat - now_us
    if used <= capacity:
        remaining = (capacity - used) // interval_us
        return Decision(True, remaining, 0.0, used / _US), new_tat, used
    retry = used - capacity
    return Decision(False, 0, retry / _US, (tat - now_us) / _US), None, tat - now_us


def _sliding_retry_ms(prev, curr, window, elapsed, limit):
    """
    Milliseconds until the weighted count of a sliding window drops below
    C{limit}, when it is not below now.
    """
    if curr < limit and prev > 0:
        # still in this window: ceil(prev * (window - t) / window) + curr < limit
        # holds from t = window - floor((limit - curr - 1) * window / prev)
        at = window - (limit - curr - 1) * window // prev
        if at < window:
            return max(1, at - elapsed)
    # only in a later window, where this window's count becomes the previous one
    wait = window - elapsed
    if curr > 0:
        wait += max(0, window - (limit - 1) * window // curr)
    return max(1, wait)


def sliding_window(state, now_ms, window_ms, limit):
    """
    One sliding-window decision (the two-counter estimate).

    The state holds the index of the current fixed window, its count and the
    previous window's count. The count of the last C{window_ms} is estimated
    as the previous window's count weighted by how much of it still overlaps
    (rounded up, so the estimate errs on the strict side) plus the current
    count; a request passes while that is below C{limit}.
    Unlike a fixed window this never lets two full windows' worth through
    at a window edge.

    @param state: C{(window_index, current, previous)} or L{None}.
    @return: C{(decision, new_state, ttl_ms)}; C{new_state} is L{None} when
        nothing must be written.
    """
    index = now_ms // window_ms
    elapsed = now_ms - index * window_ms
    curr = prev = 0
    if state is not None:
        stored_index, stored_curr, stored_prev = state
        if stored_index == index - 1:
            prev = stored_curr
        elif stored_index >= index:
            # same window; or a store clock that stepped back: keep counting
            # in the later window rather than forgetting it
            index, curr, prev = stored_index, stored_curr, stored_prev
    weighted = -(-prev * (window_ms - elapsed) // window_ms) + curr
    if weighted < limit:
        curr += 1
        decision = Decision(True, limit - weighted - 1, 0.0, (window_ms - elapsed) / _MS)
        return decision, (index, curr, prev), 2 * window_ms - elapsed
    retry = _sliding_retry_ms(prev, curr, window_ms, elapsed, limit)
    return Decision(False, 0, retry / _MS, retry / _MS), None, 2 * window_ms - elapsed


def decide(state, now_us, quota):
    """
    Run C{quota}'s algorithm on C{state} at C{now_us} (microseconds).

    @return: C{(decision, new_state, ttl_us)} with C{new_state} L{None} when
        the stored state stays as it is.
    """
    # A state of the other algorithm's shape under this key: a reload
    # changed the filter's algorithm. The key starts afresh.
    if quota.algorithm == "gcra":
        if state.__class__ is tuple:
            state = None
        return gcra(state, now_us, gcra_interval_us(quota.rate, quota.period), quota.limit)
    if quota.algorithm == "sliding_window":
        if state is not None and state.__class__ is not tuple:
            state = None
        decision, new_state, ttl_ms = sliding_window(
            state, now_us // _US * _MS + (now_us % _US) // _MS,
            sliding_window_ms(quota.period), quota.limit)
        return decision, new_state, ttl_ms * _MS
    raise ValueError(f"unknown rate-limit algorithm {quota.algorithm!r}")
