"""
Tests for the twistd plugin and the command line (gatelayer.tap).
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twistd(*args, cwd=None):
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
         "sys.argv=['twistd']+sys.argv[1:]; run()", *args],
        capture_output=True, text=True, cwd=cwd or HERE, env=env, timeout=60)


class PluginTests(SynchronousTestCase):
    """
    C{twistd --help} lists gatelayer and C{--check} validates configs.
    """

    def test_listed(self):
        """
        twistd --help lists the gatelayer plugin, from a directory other
        than the checkout (the installed package is found).
        """
        result = twistd("--help", cwd=os.path.abspath(self.mktemp().rsplit("/", 1)[0]))
        self.assertIn("gatelayer", result.stdout)

    def test_check_valid(self):
        """
        --check on the shipped config exits 0.
        """
        result = twistd("gatelayer", "-c", os.path.join(HERE, "etc", "gate.ini"), "--check")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("is valid", result.stdout)

    def test_check_invalid(self):
        """
        --check on a bad config exits 1 listing every problem.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[gateway]\nworkers = lots\n[listener:web]\nbind = nowhere\n")
        result = twistd("gatelayer", "-c", path, "--check")
        self.assertEqual(result.returncode, 1)
        self.assertIn("[gateway] workers: 'lots' is not a whole number", result.stderr)
        self.assertIn("[listener:web] bind: 'nowhere' is not host:port", result.stderr)
        self.assertIn("no [route:NAME] section", result.stderr)

    def test_bad_config_does_not_start(self):
        """
        Without --check, a bad config stops twistd before it binds anything.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[listener:web]\nbind = 127.0.0.1:1\n")
        result = twistd("-n", "--pidfile=", "gatelayer", "-c", path)
        self.assertEqual(result.returncode, 1)
        self.assertIn("no [route:NAME] section", result.stderr)
