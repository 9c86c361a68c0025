"""
The worker's side of the embedded store: every take is a question to the
master over the control channel, so all workers of a host share one exact
count; a busy key far from its limit is answered from a lease the master
handed out (L{gatelayer.ratelimit.leases}).
"""

import json

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from gatelayer.ratelimit.algorithms import Decision
from gatelayer.ratelimit.control import RateLimitGiveBack, RateLimitTake, RateLimitTakeBatch
from gatelayer.ratelimit.interfaces import IRateLimitStore
from gatelayer.ratelimit.leases import LeaseTable

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
            C{callLater(0)} on this clock), and keys in demand are leased
            (see L{LeaseTable}); without it each take is its own command.
        """
        self._protocol = protocol
        self._clock = clock
        self._pending = []
        self._pending_bytes = 0
        self._flush_call = None
        self._returns = []
        self._specs = {}
        self._leases = LeaseTable(clock, self._returned) if clock is not None else None

    def take_local(self, key, quota):
        """
        The decision for C{key} from this worker's lease, at once, or
        L{None} when there is none (the take must then ask the master).
        """
        leases = self._leases
        if leases is None or not leases:
            return None
        return leases.use(key, self._spec_of(quota))

    def _spec_of(self, quota):
        # The filter passes the same quota object on every take: keep its
        # tuple rather than build one per request.
        cached = self._specs.get(id(quota))
        if cached is not None and cached[0] is quota:
            return cached[1]
        spec = (quota.rate, float(quota.period), quota.burst, quota.algorithm)
        if len(self._specs) > 64:
            self._specs.clear()
        self._specs[id(quota)] = (quota, spec)
        return spec

    def take(self, key, quota):
        """
        Answer from a lease, or ask the master; fails at once when the
        control channel is down.
        """
        decision = self.take_local(key, quota)
        if decision is not None:
            return succeed(decision)
        if not getattr(self._protocol, "connected", True):
            return fail(ConnectionError("the control channel to the master is closed"))
        if self._clock is not None:
            result = Deferred()
            spec = self._spec_of(quota)
            if not self._leases.hold(key, spec, result):
                self._enqueue(key, spec, result)
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

    def _enqueue(self, key, spec, result):
        size = len(key) * 6 + 64  # worst case of JSON's escaping
        if self._pending_bytes + size > self.MAX_BATCH_BYTES:
            self._flush()
        self._pending.append(([key, *spec], result))
        self._pending_bytes += size
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self):
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        returns, self._returns = self._returns, []
        connected = getattr(self._protocol, "connected", True)
        if returns and connected:
            self._protocol.callRemote(
                RateLimitGiveBack, leases=json.dumps(returns, separators=(",", ":")).encode("ascii")
            ).addErrback(lambda _: None)  # the master is gone: nothing to give back to
        if not batch:
            return
        if not connected:
            for _, result in batch:
                result.errback(ConnectionError("the control channel to the master is closed"))
            return
        asked_at = self._clock.seconds()
        # Only the last take of a key asks for its lease: a lease granted
        # earlier would be counted before the batch's later takes of the
        # key, which would then be refused near the limit while it lay
        # unused.
        wants = self._leases.wants([item[0] for item, _ in batch], asked_at)
        for item, _ in reversed(batch):
            want = wants.get(item[0])
            if want is not None and len(item) == 5:
                item.append(want)
                wants[item[0]] = None
        packed = json.dumps([item for item, _ in batch], separators=(",", ":")).encode("ascii")
        asked = self._protocol.callRemote(RateLimitTakeBatch, takes=packed)

        def answered(response):
            decisions = json.loads(response["decisions"])
            for (item, result), answer in zip(batch, decisions):
                decision = Decision(*answer[:4])
                if not result.called:
                    result.callback(decision)
                if len(item) > 5:
                    key, spec = item[0], tuple(item[1:5])
                    terms = answer[4:] if len(answer) > 4 else None
                    for spec_, held in self._leases.answered(key, spec, decision, terms, asked_at):
                        self._enqueue(key, spec_, held)

        def failed(failure):
            for item, result in batch:
                if not result.called:
                    result.errback(failure)
                if len(item) > 5:
                    for _, held in self._leases.failed(item[0]):
                        if not held.called:
                            held.errback(failure)
        # As above: every outcome is consumed here, never left to AMP.
        asked.addCallbacks(answered, failed)

    def _returned(self, key, spec, count, window, used, lease):
        self._returns.append([key, *spec, count, window, used, lease])
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def close(self):
        """
        Give back the unused takes of every lease and stop the timers; the
        control channel itself belongs to the worker.
        """
        if self._leases is not None:
            self._leases.close()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._flush()
        return succeed(None)


def _decision(response):
    return Decision(response["allowed"], response["remaining"], response["retry_after"], response["reset"])
