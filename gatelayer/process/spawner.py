"""
Starting worker processes: the seam between the master's logic and the OS.
"""

import os
import sys

from zope.interface import Interface, implementer

import gatelayer


class ISpawner(Interface):
    """
    Starts a worker process.
    """

    def spawn(protocol, args, child_fds):
        """
        Start C{python -m gatelayer.process.main ARGS} with C{protocol} (an
        L{IProcessProtocol}) and the file descriptor map C{child_fds} (as
        C{spawnProcess}'s C{childFDs}). Returns the process transport.
        """


@implementer(ISpawner)
class ReactorSpawner:
    """
    Spawns workers with C{reactor.spawnProcess}, using the interpreter the
    master runs on.
    """

    def __init__(self, reactor, executable=None, env=None):
        self.reactor = reactor
        self.executable = executable or sys.executable
        self.env = env

    def spawn(self, protocol, args, child_fds):
        """
        See L{ISpawner.spawn}.
        """
        env = dict(os.environ) if self.env is None else dict(self.env)
        # The worker imports gatelayer from where the master did, installed
        # or not.
        root = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        argv = [self.executable, "-m", "gatelayer.process.main", *args]
        return self.reactor.spawnProcess(
            protocol, self.executable, argv, env=env, childFDs=child_fds)
