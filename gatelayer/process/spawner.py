"""
Starting worker processes: the seam between the master's logic and the OS.
"""

import os
import sys

from zope.interface import Interface, implementer

import gatelayer

#: The nursery (young generation) of a worker on PyPy, unless the
#: environment sets C{PYPY_GC_NURSERY}. PyPy sizes it from the CPU's cache
#: (1 MB on a core with 1 MB of L2); a worker fills that every few requests
#: (each socket read allocates Twisted's 64 KB buffer in it) and promotes
#: whatever is in flight at that moment to the old generation, which then
#: needs major collections. With 8 MB a worker spends about a quarter of the
#: time in its collector, at the same resident memory (docs/performance.md).
PYPY_NURSERY = "8MB"


def worker_environment(base, pypy=None):
    """
    The environment of a worker: C{base} with gatelayer's own import root
    first on C{PYTHONPATH} (the worker imports gatelayer from where the
    master did, installed or not) and, on PyPy, L{PYPY_NURSERY} as the
    nursery size when C{base} sets none.

    @param pypy: whether the worker runs on PyPy (default: whether this
        interpreter is PyPy, the one workers are started with).
    """
    env = dict(base)
    root = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if pypy is None:
        pypy = sys.implementation.name == "pypy"
    if pypy and not env.get("PYPY_GC_NURSERY"):
        env["PYPY_GC_NURSERY"] = PYPY_NURSERY
    return env


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
    master runs on, in the environment L{worker_environment} makes.
    """

    def __init__(self, reactor, executable=None, env=None):
        self.reactor = reactor
        self.executable = executable or sys.executable
        self.env = env

    def spawn(self, protocol, args, child_fds):
        """
        See L{ISpawner.spawn}.
        """
        env = worker_environment(os.environ if self.env is None else self.env)
        argv = [self.executable, "-m", "gatelayer.process.main", *args]
        return self.reactor.spawnProcess(
            protocol, self.executable, argv, env=env, childFDs=child_fds)
