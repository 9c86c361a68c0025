"""
Running the request phase of a route's filters, in order (the response phases run in the
exchange's responder, reversed), and the log phase once a request is over.

A filter answers synchronously (L{None} or a L{Reply}: no Deferred, no
timer), or asynchronously: a L{Deferred} or a coroutine (C{async def
on_request}), which the chain waits for, bounded by the filter's
C{timeout} (L{RouteChain.timeouts}).
"""

from types import CoroutineType

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gatelayer.chain._exchange import Reply

__all__ = ["FilterResultError", "FilterTimeout", "report_failure", "run_log_phase", "run_request_phase"]

_log = Logger(namespace="gatelayer.chain")


class FilterTimeout(Exception):
    """
    A filter's asynchronous request phase did not answer within its
    C{timeout}.
    """

    def __init__(self, name, timeout):
        self.name = name
        self.timeout = timeout
        super().__init__(f"filter {name} did not answer within {timeout:g}s")


class FilterResultError(TypeError):
    """
    A filter's request phase returned (or its Deferred fired with)
    something other than L{None}, a L{Reply}, a Deferred or a coroutine.
    """

    def __init__(self, name, result):
        super().__init__(f"filter {name} returned {type(result).__name__}, not None or a Reply")


def run_request_phase(filters, exchange, done, start=0):
    """
    Run C{filters[start:]} on C{exchange}, then call C{done(reply, ran)}
    where C{reply} is the L{Reply} a filter answered with (or L{None} when
    all passed) and C{ran} is how many filters' C{on_request} ran (the
    response phase runs for those only).

    Synchronous filters cost no Deferred; the first one returning a Deferred
    (or a coroutine, wrapped in one) makes the rest of the chain continue
    when it fires. A filter that raises, fails, returns something that is
    not a reply or, bounded by a C{timeout}, does not answer in time is
    reported to C{done} as the exception (the caller answers 500 and logs
    it with the filter's name, L{report_failure}): a bug in one filter
    never leaves a request hanging.
    """
    index = start
    count = len(filters)
    while index < count:
        try:
            result = filters[index].on_request(exchange)
        except Exception as e:
            done(e, index + 1)
            return
        index += 1
        if result is None:
            continue
        if isinstance(result, Reply):
            done(result, index)
            return
        if isinstance(result, CoroutineType):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            _Waiting(filters, exchange, done, index).wait(result)
            return
        done(FilterResultError(filters[index - 1].name, result), index)
        return
    done(None, index)


class _Waiting:
    """
    The chain waiting for the Deferred of C{filters[index - 1]}: the first
    of its result and its timeout settles it; what comes later is ignored.
    """

    __slots__ = ("filters", "exchange", "done", "index", "timer", "settled")

    def __init__(self, filters, exchange, done, index):
        self.filters = filters
        self.exchange = exchange
        self.done = done
        self.index = index
        self.timer = None
        self.settled = False

    def wait(self, deferred):
        """
        Go on when C{deferred} fires, or fail the request when the filter's
        timeout (if any) passes first; the Deferred is then cancelled.
        """
        deferred.addCallbacks(self._resumed, self._failed)
        if self.settled:
            return
        chain = self.exchange.chain
        position = self.index - 1
        if chain.clock is not None and position < len(chain.timeouts):
            timeout = chain.timeouts[position]
            if timeout is not None:
                self.timer = chain.clock.callLater(timeout, self._expired, deferred, timeout)

    def _settle(self):
        self.settled = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _resumed(self, value):
        if self.settled:
            return None
        self._settle()
        if value is None:
            run_request_phase(self.filters, self.exchange, self.done, self.index)
        elif isinstance(value, Reply):
            self.done(value, self.index)
        else:
            self.done(FilterResultError(self.filters[self.index - 1].name, value), self.index)
        return None

    def _failed(self, failure):
        if self.settled:
            # The CancelledError of a timed-out filter, or a late failure.
            return None
        self._settle()
        self.done(failure.value, self.index)
        return None

    def _expired(self, deferred, timeout):
        self.timer = None
        self.settled = True
        try:
            deferred.cancel()
        except Exception:
            _log.failure("cancelling filter {filter} failed", filter=self.filters[self.index - 1].name)
        self.done(FilterTimeout(self.filters[self.index - 1].name, timeout), self.index)


def report_failure(flt, error, request_id=b""):
    """
    Log the failure C{error} of the filter C{flt} in the gateway log, with
    the filter's name, the route and the request's id; the traceback goes to
    the log (never to the client), except for a timeout, which has none
    worth reading.
    """
    name = getattr(flt, "name", repr(flt))
    rid = request_id.decode("ascii", "replace") if isinstance(request_id, bytes) else request_id
    if isinstance(error, FilterTimeout):
        _log.error("filter {filter} timed out after {timeout}s (request {request_id})",
                   filter=name, timeout=error.timeout, request_id=rid)
        return
    from twisted.python.failure import Failure
    failure = Failure(error, type(error), error.__traceback__)
    _log.failure("filter {filter} failed (request {request_id})", failure=failure, filter=name, request_id=rid)


def run_log_phase(exchange):
    """
    The log phase: once the request is over (the response finished or the
    client gone), call C{on_log(exchange)} of each filter providing
    L{gatelayer.chain.ILogFilter} whose request phase ran, in reverse
    order. A filter that raises is logged with its name; the others still
    run.
    """
    chain = exchange.chain
    ran = exchange.ran
    filters = chain.filters
    for index in reversed(chain.log_hooks):
        if index >= ran:
            continue
        try:
            filters[index].on_log(exchange)
        except Exception:
            _log.failure("log phase of filter {filter} failed (request {request_id})", filter=filters[index].name,
                         request_id=exchange.request_id.decode("ascii", "replace"))
