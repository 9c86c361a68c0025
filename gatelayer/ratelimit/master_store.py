"""
The worker's side of the embedded store: every take is a question to the
master over the control channel, so all workers of a host share one exact
count.
"""

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from gatelayer.ratelimit.algorithms import Decision
from gatelayer.ratelimit.control import RateLimitTake
from gatelayer.ratelimit.interfaces import IRateLimitStore

__all__ = ["MasterStore"]


@implementer(IRateLimitStore)
class MasterStore:
    """
    An L{IRateLimitStore} answered by the master's embedded store through
    C{protocol} (the worker's L{gatelayer.process.control.ControlProtocol}).
    """

    def __init__(self, protocol):
        self._protocol = protocol

    def take(self, key, quota):
        """
        Ask the master; fails at once when the control channel is down.
        """
        if not getattr(self._protocol, "connected", True):
            return fail(ConnectionError("the control channel to the master is closed"))
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

    def close(self):
        """
        Nothing to release: the control channel belongs to the worker.
        """
        return succeed(None)


def _decision(response):
    return Decision(response["allowed"], response["remaining"], response["retry_after"], response["reset"])
