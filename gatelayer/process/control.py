"""
The AMP control channel between the master and each worker.

Both ends use L{ControlProtocol}: an AMP protocol to which subsystems register
responders for their own commands (the TLS store registers certificate reload
on the worker side, the embedded rate-limit store registers its take command
on the master side, ...). Commands are defined next to the subsystem they
belong to; this module only defines the process-level ones.
"""

from twisted.protocols import amp
from twisted.python.failure import Failure


HEARTBEAT_INTERVAL = 1.0


def heartbeat_interval(timeout):
    """
    How often a worker sends L{Heartbeat} for a master that kills it after
    C{timeout} seconds without one (C{[gateway] heartbeat_timeout}; C{0}
    means no watchdog): every second, or five times per timeout when that
    is shorter, so a few late heartbeats never cost a healthy worker.
    """
    if not timeout or timeout <= 0:
        return HEARTBEAT_INTERVAL
    return min(HEARTBEAT_INTERVAL, timeout / 5.0)


class Heartbeat(amp.Command):
    """
    Worker -> master: the worker is alive; carries its counters, its
    open-file limit and the state of its connection limits.
    """

    arguments = [
        (b"pid", amp.Integer()),
        (b"connections", amp.Integer()),
        (b"requests", amp.Integer()),
        (b"active", amp.Integer()),
        (b"open_files", amp.Integer(optional=True)),
        (b"paused", amp.Boolean(optional=True)),
        (b"refused_full", amp.Integer(optional=True)),
        (b"refused_per_ip", amp.Integer(optional=True)),
        (b"accept_errors", amp.Integer(optional=True)),
        (b"unanswered", amp.Integer(optional=True)),
        # JSON: {listener: counters} of the tcp/tls_passthrough listeners.
        (b"l4", amp.Unicode(optional=True)),
    ]
    response = []
    requiresAnswer = False


class Drain(amp.Command):
    """
    Master -> worker: stop accepting, finish in-flight requests within
    C{timeout} seconds, then exit.
    """

    arguments = [(b"timeout", amp.Float())]
    response = []


class ReopenLogs(amp.Command):
    """
    Master -> worker: write out the access log lines collected so far and
    open the access log file again (SIGUSR1, after a rotation renamed it).
    """

    arguments = []
    response = []


class Begin(amp.Command):
    """
    Master -> worker: the initial state (health verdicts, certificates) has
    been sent; start accepting connections.
    """

    arguments = []
    response = []


class ControlProtocol(amp.AMP):
    """
    An AMP connection whose responders are registered at run time.

    @ivar connection_lost: called with the reason when the pipe closes (a
        worker uses it to exit when its master is gone).
    """

    def __init__(self, connection_lost=None):
        super().__init__()
        self._registered = {}
        self._on_lost = connection_lost
        self.connected = False

    def register(self, command, responder):
        """
        Answer C{command} (an L{amp.Command} subclass) with C{responder}, a
        function taking the command's arguments as keywords and returning the
        response dict (or a Deferred of it).
        """
        self._registered[command.commandName] = (command, responder)

    def locateResponder(self, name):
        """
        Prefer registered responders over C{@Command.responder} methods.
        """
        entry = self._registered.get(name)
        if entry is None:
            return super().locateResponder(name)
        command, responder = entry
        return self._wrapWithSerialization(responder, command)

    def makeConnection(self, transport):
        """
        Connect without AMP's log line (one per worker start is noise).
        """
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self):
        """
        Note that the channel is up.
        """
        self.connected = True
        super().connectionMade()

    def connectionLost(self, reason):
        """
        Tell the owner the other end is gone.
        """
        if not self.connected:
            return
        self.connected = False
        if not isinstance(reason, Failure):
            reason = Failure(reason)
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        if self._on_lost is not None:
            self._on_lost(reason)
