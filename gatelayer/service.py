"""
The service tree both processes are built of (the master's and the
worker's, in L{gatelayer.process}): named child services started
in order and stopped one after the other in reverse order, each able to
C{reconfigure(new_config)}.

The master asks the same four things of each of its parts (answer a worker's
commands, send a new worker the current state, report for C{/status}, reload
on SIGHUP); L{IMasterPart} names them and L{MasterPart} gives the no-op of
each, so the master never asks whether a part has a method.

It imports nothing of the gateway, so a subsystem (the rate-limit store,
the health monitor) can provide a part without importing the process
package that runs it.
"""

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "IMasterPart", "IReconfigurable", "MasterPart", "OrderedMultiService", "ReconfigurableService",
]


class IReconfigurable(Interface):
    """
    A service that can take a new, already validated configuration.
    """

    def reconfigure(new_config):
        """
        Switch to C{new_config} (a L{gatelayer.config.model.GateConfig}).

        @return: L{None} or a Deferred firing when the switch is done.
        """


class IMasterPart(IService, IReconfigurable):
    """
    A master-side subsystem (certificates, health checks, the embedded
    rate-limit store) as the master sees it.
    """

    name = Attribute("The part's name in the master's service tree.")

    def register(control, record):
        """
        Answer a worker's commands on C{control} (its
        L{gatelayer.process.control.ControlProtocol}); C{record} is its
        L{gatelayer.process.supervision.WorkerRecord}.
        """

    def sync(control):
        """
        Send a worker that just connected the current shared state, before
        it begins accepting.

        @return: L{None} or a Deferred firing when the worker has it.
        """

    def status():
        """
        What this part adds to the admin C{/status} document.

        @return: a dict or a Deferred firing with one.
        """

    def reload():
        """
        SIGHUP: re-read what this part loads from files.

        @return: L{None} or a Deferred firing when done.
        """

    def reloaded(outcome):
        """
        A configuration reload was decided (applied or refused): C{outcome}
        is its L{gatelayer.process.reload.ReloadOutcome}.
        """


@implementer(IReconfigurable)
class ReconfigurableService(Service):
    """
    A leaf service whose C{reconfigure} does nothing yet: what it holds is
    built from a configuration once.
    """

    def reconfigure(self, new_config):
        """
        Nothing to switch yet.
        """


@implementer(IMasterPart)
class MasterPart(ReconfigurableService):
    """
    A master part that does nothing of its own: subclasses override what
    they take part in.
    """

    def register(self, control, record):
        """
        No commands to answer.
        """

    def sync(self, control):
        """
        No state to send.
        """

    def status(self):
        """
        Nothing to report.
        """
        return {}

    def reload(self):
        """
        Nothing to reload.
        """

    def reloaded(self, outcome):
        """
        Nothing to note.
        """


@implementer(IReconfigurable)
class OrderedMultiService(MultiService):
    """
    A L{MultiService} whose children stop one after the other, in the
    reverse of the order they started (Twisted's stops them all at once):
    a worker drains before the listeners it used are closed, and a store
    outlives the requests that take from it. A child whose stop fails is
    logged and the next one is stopped all the same.
    """

    log = Logger()

    def stopService(self):
        """
        Stop each child once the one after it has stopped.

        @return: a Deferred firing when the first child has stopped; it
            fires at once when every child stops at once.
        """
        Service.stopService(self)
        done = succeed(None)
        for child in reversed(list(self)):
            done.addCallback(lambda _, child=child: maybeDeferred(child.stopService))
            done.addErrback(self._stop_failed, child)
        return done.addCallback(lambda _: None)

    def _stop_failed(self, failure, child):
        self.log.failure("service {name} did not stop cleanly", failure, name=child.name)

    def reconfigure(self, new_config):
        """
        Walk the children in start order, each reconfigured once the one
        before it is done.

        @return: a Deferred firing when every child is done.
        """
        done = succeed(None)
        for child in list(self):
            done.addCallback(lambda _, child=child: maybeDeferred(child.reconfigure, new_config))
        return done.addCallback(lambda _: None)

    def child_names(self):
        """
        The names of the children, in start order.
        """
        return [child.name for child in self]
