"""
House conventions that a reader relies on, checked so they stay true: one
naming style for tests, and a docstring on every test saying the behaviour.
"""

import ast
import os
import re

from twisted.trial.unittest import SynchronousTestCase

_HERE = os.path.dirname(os.path.abspath(__file__))
_SNAKE = re.compile(r"test_[a-z0-9_]+")


def find_tests(directory=_HERE):
    """
    C{(path, name, has_docstring)} for every C{test_*} method or function
    under C{directory}.
    """
    found = []
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            if not (name.startswith("test_") and name.endswith(".py")):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                    found.append((os.path.relpath(path, directory), node.name,
                                  ast.get_docstring(node) is not None))
    return found


class TestConventionTests(SynchronousTestCase):
    """
    The tests follow one style.
    """

    def test_found_tests(self):
        """
        The scan sees the suite (so the rules below are not vacuous).
        """
        self.assertGreater(len(find_tests()), 500)

    def test_snake_case_names(self):
        """
        Every test is named C{test_lower_snake_case}.
        """
        bad = [f"{path}: {name}" for path, name, _ in find_tests() if not _SNAKE.fullmatch(name)]
        self.assertEqual(bad, [])

    def test_docstrings(self):
        """
        Every test has a docstring saying the behaviour it checks.
        """
        bad = [f"{path}: {name}" for path, name, documented in find_tests() if not documented]
        self.assertEqual(bad, [])
