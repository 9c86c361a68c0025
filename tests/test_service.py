"""
Tests for L{gatelayer.service}: ordered start and stop of named children,
reconfiguration walking the tree, and the no-op master part.
"""

from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.service import (
    IMasterPart, IReconfigurable, MasterPart, OrderedMultiService, ReconfigurableService,
)


class RecordingService(ReconfigurableService):
    """
    A child that records its start, stop and reconfigure calls in a shared
    list; its stop and reconfigure return C{self.pending} when set.
    """

    def __init__(self, name, calls):
        self.name = name
        self.calls = calls
        self.pending = None
        self.fail = False

    def startService(self):
        """
        Record the start.
        """
        super().startService()
        self.calls.append(("start", self.name))

    def stopService(self):
        """
        Record the stop; fail or wait if told to.
        """
        super().stopService()
        self.calls.append(("stop", self.name))
        if self.fail:
            raise RuntimeError(f"{self.name} cannot stop")
        return self.pending

    def reconfigure(self, new_config):
        """
        Record the new config.
        """
        self.calls.append(("reconfigure", self.name, new_config))
        return self.pending


def tree(*names):
    """
    An L{OrderedMultiService} with one L{RecordingService} per name, and
    the list they record into.
    """
    calls = []
    parent = OrderedMultiService()
    for name in names:
        RecordingService(name, calls).setServiceParent(parent)
    return parent, calls


class OrderedMultiServiceTests(SynchronousTestCase):
    """
    Children start in order and stop in reverse order, one after the other.
    """

    def test_start_order(self):
        """
        Children start in the order they were added; they are found by name.
        """
        parent, calls = tree("a", "b", "c")
        parent.startService()
        self.assertEqual(calls, [("start", "a"), ("start", "b"), ("start", "c")])
        self.assertEqual(parent.child_names(), ["a", "b", "c"])
        self.assertEqual(parent.getServiceNamed("b").name, "b")

    def test_stop_waits_for_each_child(self):
        """
        A child stops only once the child after it has finished stopping.
        """
        parent, calls = tree("a", "b", "c")
        parent.startService()
        del calls[:]
        waiting = parent.getServiceNamed("c").pending = Deferred()
        d = parent.stopService()
        self.assertEqual(calls, [("stop", "c")])
        self.assertNoResult(d)
        waiting.callback(None)
        self.assertEqual(calls, [("stop", "c"), ("stop", "b"), ("stop", "a")])
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(parent.running)

    def test_failed_stop_logged(self):
        """
        A child whose stop fails is logged; the children before it still stop.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        parent, calls = tree("a", "b")
        parent.startService()
        parent.getServiceNamed("b").fail = True
        self.successResultOf(parent.stopService())
        self.assertEqual(calls[-2:], [("stop", "b"), ("stop", "a")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(any(e.get("name") == "b" for e in events if "log_failure" in e))

    def test_reconfigure_walks_in_order(self):
        """
        reconfigure reaches every child in start order, each after the one
        before it is done.
        """
        parent, calls = tree("a", "b")
        verifyObject(IReconfigurable, parent)
        waiting = parent.getServiceNamed("a").pending = Deferred()
        d = parent.reconfigure("new")
        self.assertEqual(calls, [("reconfigure", "a", "new")])
        waiting.callback(None)
        self.assertEqual(calls, [("reconfigure", "a", "new"), ("reconfigure", "b", "new")])
        self.successResultOf(d)

    def test_nested(self):
        """
        reconfigure and the stop order reach the children of a child tree.
        """
        parent, calls = tree("a")
        inner, inner_calls = tree("x", "y")
        inner.name = "inner"
        inner.setServiceParent(parent)
        parent.startService()
        parent.reconfigure("new")
        self.assertEqual([c[1] for c in inner_calls if c[0] == "reconfigure"], ["x", "y"])
        parent.stopService()
        self.assertEqual([c[1] for c in inner_calls if c[0] == "stop"], ["y", "x"])


class MasterPartTests(SynchronousTestCase):
    """
    The base part answers every question the master asks with nothing.
    """

    def test_no_ops(self):
        """
        The base part provides IMasterPart and does nothing.
        """
        part = MasterPart()
        part.name = "nothing"
        verifyObject(IMasterPart, part)
        self.assertIsNone(part.register(object(), None))
        self.assertIsNone(part.sync(object()))
        self.assertEqual(part.status(), {})
        self.assertIsNone(part.reload())
        self.assertIsNone(part.reconfigure(object()))
