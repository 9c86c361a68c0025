"""
Tests for raising the open-file limit (gatelayer.process.rlimits) against
a fake resource module.
"""

import resource

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.process.rlimits import OpenFilesLimit, raise_open_files_limit

INFINITY = -1


class FakeResource:
    """
    The parts of the resource module the function uses; C{ceiling} is the
    highest soft limit the fake kernel accepts.
    """

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = INFINITY

    def __init__(self, soft, hard, ceiling=None, get_error=None):
        self.limits = (soft, hard)
        self.ceiling = ceiling
        self.get_error = get_error
        self.set_calls = []

    def getrlimit(self, kind):
        """
        The current limits (or the error given).
        """
        assert kind == self.RLIMIT_NOFILE
        if self.get_error is not None:
            raise self.get_error
        return self.limits

    def setrlimit(self, kind, limits):
        """
        Set the limits as a kernel would, refusing above its ceiling.
        """
        assert kind == self.RLIMIT_NOFILE
        self.set_calls.append(limits)
        soft, hard = limits
        if hard != self.limits[1]:
            raise ValueError("not allowed to raise maximum limit")
        if self.ceiling is not None and (soft == INFINITY or soft > self.ceiling):
            raise ValueError("current limit exceeds maximum limit")
        self.limits = limits


class RaiseTests(SynchronousTestCase):
    """
    The soft limit goes up to the hard one; failures are reported, never
    raised.
    """

    def test_table(self):
        """
        (soft, hard, kernel ceiling) -> the limit after, and the setrlimit
        calls made.
        """
        cases = [
            # the usual: 1024 soft, a high hard limit
            ((1024, 524288, None), OpenFilesLimit(524288, 524288, 1024), [(524288, 524288)]),
            # already at the hard limit: nothing to do
            ((4096, 4096, None), OpenFilesLimit(4096, 4096, 4096), []),
            # unlimited hard limit: the highest soft limit the kernel takes
            ((1024, INFINITY, 65536), OpenFilesLimit(65536, None, 1024, "setrlimit(1048576) failed: "
                                                     "current limit exceeds maximum limit"),
             [(1048576, INFINITY), (524288, INFINITY), (65536, INFINITY)]),
            # the kernel refuses even the hard limit: kept as it is
            ((256, 1024, 512), OpenFilesLimit(256, 1024, 256, "setrlimit(1024) failed: "
                                              "current limit exceeds maximum limit"), [(1024, 1024)]),
        ]
        for (soft, hard, ceiling), expected, calls in cases:
            fake = FakeResource(soft, hard, ceiling)
            self.assertEqual(raise_open_files_limit(fake), expected, (soft, hard, ceiling))
            self.assertEqual(fake.set_calls, calls)

    def test_getrlimit_fails(self):
        """
        A getrlimit error is reported in the result.
        """
        result = raise_open_files_limit(FakeResource(0, 0, get_error=OSError("nope")))
        self.assertEqual(result, OpenFilesLimit(None, None, None, "getrlimit failed: nope"))

    def test_status_shape(self):
        """
        /status shows soft and hard.
        """
        self.assertEqual(OpenFilesLimit(10, 20, 5).as_dict(), {"soft": 10, "hard": 20})

    def test_real_module(self):
        """
        With the real resource module the soft limit ends at the hard one
        (or stays, with a reason).
        """
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, before)
        result = raise_open_files_limit()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(result.soft, None if soft == resource.RLIM_INFINITY else soft)
        self.assertTrue(result.error is not None or soft == hard)
