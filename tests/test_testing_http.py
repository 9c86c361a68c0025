"""
Tests for L{gatelayer.testing.http}'s memory bounds for streaming tests.
"""

import platform

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.testing.http import RSS_SLACK_KB, rss_growth_limit_kb


class RssGrowthLimitTests(SynchronousTestCase):
    """
    L{rss_growth_limit_kb} turns a streaming test's bound for CPython into
    one for the running interpreter.
    """

    def test_slack_by_interpreter(self):
        """
        CPython keeps the bound as written; PyPy, whose collector frees large
        buffers in batches, gets 40 MB more.
        """
        expected = 40 * 1024 if platform.python_implementation() == "PyPy" else 0
        self.assertEqual(RSS_SLACK_KB, expected)
        self.assertEqual(rss_growth_limit_kb(16 * 1024), 16 * 1024 + expected)
