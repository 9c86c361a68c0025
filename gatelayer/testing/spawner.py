"""
A fake spawner and process transport for testing the master without
processes.
"""

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from zope.interface import implementer

from gatelayer.process.spawner import ISpawner


class FakeProcess:
    """
    A process transport that records what the master does to it.
    """

    def __init__(self, protocol, args, child_fds, pid):
        self.protocol = protocol
        self.args = args
        self.child_fds = child_fds
        self.pid = pid
        self.written = {}
        self.closed = set()
        self.signals = []

    def writeToChild(self, fd, data):
        self.written.setdefault(fd, []).append(data)

    def closeChildFD(self, fd):
        self.closed.add(fd)

    def signalProcess(self, name):
        self.signals.append(name)

    def exit(self, code=0, signal=None):
        """
        Make the process end with C{code} (or by C{signal}).
        """
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, signal))
        self.protocol.processEnded(reason)


@implementer(ISpawner)
class FakeSpawner:
    """
    Records spawns and hands out L{FakeProcess}es with increasing pids.

    @ivar failures: exceptions to raise from the next spawns, one per call
        (e.g. C{OSError(errno.EAGAIN, "Resource temporarily unavailable")}
        for a failing fork), before spawning works again.
    @ivar attempts: how many times C{spawn} was called.
    """

    def __init__(self):
        self.processes = []
        self.failures = []
        self.attempts = 0
        self._next_pid = 1000

    def spawn(self, protocol, args, child_fds):
        """
        See L{ISpawner.spawn}; raises the next of C{failures} if any.
        """
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self._next_pid += 1
        process = FakeProcess(protocol, args, child_fds, self._next_pid)
        self.processes.append(process)
        protocol.makeConnection(process)
        return process
