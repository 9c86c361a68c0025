"""
Tests for what an install of gatelayer contains: every package of the source
tree is listed in setup.cfg, so a wheel built from it is the whole gateway.
"""

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase

import gatelayer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))


def source_packages():
    """
    The dotted names of every directory under C{gatelayer/} with an
    C{__init__.py}.
    """
    found = set()
    for directory, _, files in os.walk(os.path.join(ROOT, "gatelayer")):
        if "__init__.py" in files:
            found.add(os.path.relpath(directory, ROOT).replace(os.sep, "."))
    return found


class PackagesListedTests(SynchronousTestCase):
    """
    setup.cfg's C{packages} and the source tree agree.
    """

    def test_every_package_listed(self):
        """
        No package of the tree is missing from setup.cfg (a wheel would
        lack it) and none listed is gone from the tree.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = {name for name in config["options"]["packages"].split() if name.startswith("gatelayer")}
        self.assertEqual(source_packages() - listed, set())
        self.assertEqual(listed - source_packages(), set())

    def test_dashboard_page_is_package_data(self):
        """
        The dashboard page, read from the package at run time, is declared
        as package data.
        """
        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        self.assertIn("dashboard.html", config["options.package_data"]["gatelayer.process"])
        self.assertTrue(os.path.exists(os.path.join(ROOT, "gatelayer", "process", "dashboard.html")))
