"""
The worker's side of the embedded store: every take is a question to the
master over the control channel, so all workers of a host share one exact
count.
"""

import json

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from gatelayer.ratelimit.algorithms import Decision
from gatelayer.ratelimit.control import RateLimitTake, RateLimitTakeBatch
from gatelayer.ratelimit.interfaces import IRateLimitStore

__all__ = ["MasterStore"]


@implementer(IRateLimitStore)
class MasterStore:
    """
    An L{IRateLimitStore} answered by the master's embedded store through
    C{protocol} (the worker's L{gatelayer.process.control.ControlProtocol}).
    """

    MAX_BATCH_BYTES = 48 * 1024  # AMP carries at most 64 KB in one value

    def __init__(self, protocol, clock=None):
        """
        @param clock: when given, takes made during one reactor turn are
            sent together as one L{RateLimitTakeBatch} (flushed by a
            C{callLater(0)} on this clock); without it each take is its own
            command.
        """
        self._protocol = protocol
        self._clock = clock
        self._pending = []
        self._pending_bytes = 0
        self._flush_call = None

    def take(self, key, quota):
        """
        Ask the master; fails at once when the control channel is down.
        """
        if not getattr(self._protocol, "connected", True):
            return fail(ConnectionError("the control channel to the master is closed"))
        if self._clock is not None:
            result = Deferred()
            item = (key, quota.rate, float(quota.period), quota.burst, quota.algorithm)
            size = len(key) * 6 + 64  # worst case of JSON's escaping
            if self._pending_bytes + size > self.MAX_BATCH_BYTES:
                self._flush()
            self._pending.append((item, result))
            self._pending_bytes += size
            if self._flush_call is None:
                self._flush_call = self._clock.callLater(0, self._flush)
            return result
        asked = self._protocol.callRemote(
            RateLimitTake, key=key, rate=quota.rate, period=float(quota.period),
            burst=quota.burst, algorithm=quota.algorithm)
        # AMP drops the whole connection when a command's failure is still
        # unhandled as the answer arrives; hand it over to a Deferred of our
        # own so that one bad take can never cut the worker off its master.
        # A caller that gave up (cancelled) simply never hears the answer.
        result = Deferred()
        asked.addCallbacks(lambda response: result.callback(_decision(response)), result.errback)
        return result

    def _flush(self):
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        if not batch:
            return
        if not getattr(self._protocol, "connected", True):
            for _, result in batch:
                result.errback(ConnectionError("the control channel to the master is closed"))
            return
        packed = json.dumps([item for item, _ in batch], separators=(",", ":")).encode("ascii")
        asked = self._protocol.callRemote(RateLimitTakeBatch, takes=packed)

        def answered(response):
            decisions = json.loads(response["decisions"])
            for (_, result), decision in zip(batch, decisions):
                if not result.called:
                    result.callback(Decision(*decision))

        def failed(failure):
            for _, result in batch:
                if not result.called:
                    result.errback(failure)
        # As above: every outcome is consumed here, never left to AMP.
        asked.addCallbacks(answered, failed)

    def close(self):
        """
        Nothing to release: the control channel belongs to the worker.
        """
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        return succeed(None)


def _decision(response):
    return Decision(response["allowed"], response["remaining"], response["retry_after"], response["reset"])
