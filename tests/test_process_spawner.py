"""
Tests for L{gatelayer.process.spawner}: how a worker process is started.
"""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

import gatelayer
from gatelayer.process.spawner import PYPY_NURSERY, ReactorSpawner, worker_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))


class SpawnRecorder:
    """
    The C{spawnProcess} of a reactor, recording what it is asked to start.
    """

    def __init__(self):
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):
        """
        Record the call; return a stand-in for the process transport.
        """
        self.spawned.append((protocol, executable, args, env, childFDs))
        return object()


class WorkerEnvironmentTests(SynchronousTestCase):
    """
    A worker's environment: gatelayer's import root, and PyPy's nursery.
    """

    def test_import_root_first(self):
        """
        gatelayer's import root goes first on C{PYTHONPATH}, before what
        the master's environment had; the rest is passed on unchanged.
        """
        env = worker_environment({"PYTHONPATH": "/elsewhere", "LANG": "C"}, pypy=False)
        self.assertEqual(env["PYTHONPATH"], os.pathsep.join([ROOT, "/elsewhere"]))
        self.assertEqual(env["LANG"], "C")
        self.assertEqual(worker_environment({}, pypy=False)["PYTHONPATH"], ROOT)

    def test_pypy_nursery(self):
        """
        A PyPy worker gets L{PYPY_NURSERY} unless the environment sets a
        nursery itself; a CPython worker gets no PyPy setting.
        """
        self.assertEqual(worker_environment({}, pypy=True)["PYPY_GC_NURSERY"], PYPY_NURSERY)
        chosen = worker_environment({"PYPY_GC_NURSERY": "32MB"}, pypy=True)
        self.assertEqual(chosen["PYPY_GC_NURSERY"], "32MB")
        empty = worker_environment({"PYPY_GC_NURSERY": ""}, pypy=True)
        self.assertEqual(empty["PYPY_GC_NURSERY"], PYPY_NURSERY)
        self.assertNotIn("PYPY_GC_NURSERY", worker_environment({}, pypy=False))

    def test_this_interpreter(self):
        """
        By default the worker is taken to run on the interpreter the master
        runs on.
        """
        on_pypy = sys.implementation.name == "pypy"
        self.assertEqual("PYPY_GC_NURSERY" in worker_environment({}), on_pypy)

    def test_spawn(self):
        """
        L{ReactorSpawner} starts C{python -m gatelayer.process.main} with
        the arguments, descriptors and the worker environment.
        """
        reactor = SpawnRecorder()
        protocol = object()
        spawner = ReactorSpawner(reactor, executable="/usr/bin/python3", env={"LANG": "C"})
        spawner.spawn(protocol, ["--slot", "0"], {0: "w"})
        self.assertEqual(reactor.spawned, [(
            protocol, "/usr/bin/python3", ["/usr/bin/python3", "-m", "gatelayer.process.main", "--slot", "0"],
            worker_environment({"LANG": "C"}), {0: "w"})])
