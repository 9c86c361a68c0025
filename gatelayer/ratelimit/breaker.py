"""
A circuit breaker on a rate-limit store, so that a dead or hanging store
costs a few requests one C{store_timeout} each instead of every request.
"""

from twisted.internet.defer import CancelledError, TimeoutError, fail
from twisted.logger import Logger

from gatelayer.ratelimit.interfaces import StoreUnavailable

__all__ = ["StoreBreaker", "GuardedStore"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class StoreBreaker:
    """
    Counts consecutive store errors; after C{threshold} of them the breaker
    opens and the store is skipped for C{cooldown} seconds. Then a single
    probe is let through (half open): success closes the breaker, failure
    opens it for another cool-down. Pure apart from reading C{clock}.
    """

    def __init__(self, clock, threshold=3, cooldown=2.0):
        self._clock = clock
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = CLOSED
        self.failures = 0
        self.opened = 0
        self._open_until = 0.0
        self._probing = False

    def allow(self):
        """
        Whether the next take may go to the store.
        """
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock.seconds() >= self._open_until:
            self.state = HALF_OPEN
            self._probing = False
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self):
        """
        The store answered: close the breaker.
        """
        self.state = CLOSED
        self.failures = 0
        self._probing = False

    def failure(self):
        """
        The store failed or was too slow.

        @return: C{True} when this failure opened the breaker.
        """
        self.failures += 1
        self._probing = False
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.state = OPEN
            self._open_until = self._clock.seconds() + self.cooldown
            self.opened += 1
            return True
        return False


def _note(result, answered):
    answered.append(True)
    return result


class _Window:
    """
    Takes sharing one timeout timer.
    """

    __slots__ = ("started", "takes", "pending", "call")

    def __init__(self, started):
        self.started = started
        self.takes = []
        self.pending = 0
        self.call = None


class GuardedStore:
    """
    Wraps a store with a per-take timeout and a L{StoreBreaker}: C{take}
    either fires with a decision within C{timeout} seconds or fails with
    L{StoreUnavailable}, at once when the breaker is open.

    @ivar counters: C{errors}, C{timeouts}, C{skipped} (breaker open) and
        C{breaker_opened}, for metrics.
    """

    log = Logger()
    WINDOW = 0.005

    def __init__(self, store, clock, timeout, breaker=None, name="store"):
        self.store = store
        self._clock = clock
        self._timeout = timeout
        self.breaker = breaker if breaker is not None else StoreBreaker(clock)
        self._name = name
        self.counters = {"errors": 0, "timeouts": 0, "skipped": 0, "breaker_opened": 0}
        self._window = None
        local = getattr(store, "take_local", None)
        if local is not None:
            # the wrapped store's own method, without a call in between
            self.take_local = local

    def take_local(self, key, quota):
        """
        The wrapped store's answer without waiting (from a lease, or from a
        memory store), or L{None} when it must be asked with L{take}. Such
        answers cannot fail or be late, so they bypass the breaker. (A store
        that has a C{take_local} of its own replaces this method.)
        """
        return None

    def take(self, key, quota):
        """
        Take from the wrapped store, bounded in time and guarded by the
        breaker.
        """
        if not self.breaker.allow():
            self.counters["skipped"] += 1
            return fail(StoreUnavailable("breaker_open", f"{self._name} skipped for a cool-down"))
        try:
            d = self.store.take(key, quota)
        except Exception as e:
            d = fail(e)
        answered = []
        d.addBoth(_note, answered)
        if not answered:
            # (d.called is no help: it is also true while d waits on a
            # Deferred returned by one of its callbacks)
            self._watch(d, answered)
        return d.addCallbacks(self._succeeded, self._failed)

    def _watch(self, d, answered):
        """
        Cancel C{d} if it has no answer by its deadline. Takes started
        within C{WINDOW} seconds of each other share one timer (deadline:
        the first one's start plus the timeout), so a busy worker arms a
        few timers a second instead of one per request; no take waits
        longer than the timeout. The timer goes as soon as every take of
        its window is answered.
        """
        now = self._clock.seconds()
        window = self._window
        if window is None or now - window.started > self.WINDOW:
            window = self._window = _Window(now)
            window.call = self._clock.callLater(self._timeout, self._expire, window)
        window.takes.append((d, answered))
        window.pending += 1
        d.addBoth(self._answered, window)

    def _answered(self, result, window):
        window.pending -= 1
        if window.pending == 0:
            if window.call.active():
                window.call.cancel()
            if self._window is window:
                self._window = None
        return result

    def _expire(self, window):
        if self._window is window:
            self._window = None
        for d, answered in window.takes:
            if not answered:
                d.cancel()

    def _succeeded(self, decision):
        self.breaker.success()
        return decision

    def _failed(self, failure):
        if failure.check(TimeoutError, CancelledError):
            self.counters["timeouts"] += 1
            reason, detail = "timeout", f"{self._name} took longer than {self._timeout * 1000:g}ms"
        else:
            self.counters["errors"] += 1
            reason, detail = "error", f"{self._name}: {failure.getErrorMessage() or failure.type.__name__}"
        if self.breaker.failure():
            self.counters["breaker_opened"] += 1
            self.log.warn(
                "rate-limit {store} failed {count} times in a row: skipping it for {cooldown}s",
                store=self._name, count=self.breaker.failures, cooldown=self.breaker.cooldown)
        raise StoreUnavailable(reason, detail)

    def close(self):
        """
        Close the wrapped store.
        """
        return self.store.close()
