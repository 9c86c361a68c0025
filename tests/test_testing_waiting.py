"""
Tests for L{gatelayer.testing.waiting}: bounded waits, and their deadlines
stretched on an interpreter whose processes start slower.
"""

import platform

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.waiting import SLOWER_START, WaitTimeout, scaled, wait_until


class ScaledTests(SynchronousTestCase):
    """
    L{scaled} turns a deadline set for CPython into one for the running
    interpreter.
    """

    def test_factor_by_interpreter(self):
        """
        CPython keeps its deadlines; PyPy, whose cold processes take about
        2.5 times CPython's CPU to start, gets three times as long.
        """
        expected = 3.0 if platform.python_implementation() == "PyPy" else 1.0
        self.assertEqual(SLOWER_START, expected)
        self.assertEqual(scaled(10), 10 * expected)
        self.assertEqual(scaled(0), 0)


class WaitUntilTests(SynchronousTestCase):
    """
    L{wait_until} polls on the reactor's clock until its predicate holds, for
    at most its scaled timeout.
    """

    def test_fires_with_the_value(self):
        """
        The wait fires with the predicate's first true value, polled every
        interval.
        """
        clock = Clock()
        values = iter([0, None, "ready"])
        d = wait_until(clock, lambda: next(values), timeout=5, interval=1)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), "ready")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_times_out_after_the_scaled_timeout(self):
        """
        A predicate that never holds fails the wait with L{WaitTimeout}
        naming what did not happen, once the scaled timeout has passed and
        not before.
        """
        clock = Clock()
        d = wait_until(clock, lambda: False, timeout=2, interval=0.5, what="the worker's respawn")
        while clock.seconds() < scaled(2):
            clock.advance(0.5)
            self.assertNoResult(d)
        clock.advance(0.5)
        failure = self.failureResultOf(d, WaitTimeout)
        self.assertIn("the worker's respawn did not happen within", str(failure.value))
        self.assertEqual(clock.getDelayedCalls(), [])
