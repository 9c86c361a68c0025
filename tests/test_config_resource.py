"""
Tests for a route's C{resource} key: its spelling in gate.ini
(L{gatelayer.config.route_resource} and the loader around it) and the
check, before a configuration is used, that it names a twisted.web
resource (L{gatelayer.http.resource_load}, run by
L{gatelayer.process.checking.check_config_file}).
"""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.http.resource_load import ResourceLoadError, load_resource
from gatelayer.process.checking import check_config_file
from gatelayer.testing.config import config_problems

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:u]
servers = 127.0.0.1:9001
[route:r]
path = /r/
"""

# (resource value, what the problem says): spellings refused by the loader.
BAD_SPELLINGS = [
    ("", "[route:r] resource: is empty (use package.module:attribute)"),
    ("   ", "[route:r] resource: is empty"),
    ("gatelayer.testing.resources", "'gatelayer.testing.resources' has no ':'"),
    (":tree", "':tree' names no module before ':'"),
    ("gatelayer.testing.resources:", "names no attribute after ':'"),
    ("mod:a:b", "'mod:a:b' names no attribute after ':'"),
    ("1mod:tree", "names no module"),
    ("mod.:tree", "names no module"),
    ("mod..x:tree", "names no module"),
    ("mod:a..b", "names no attribute"),
    ("mod:a b", "names no attribute"),
    ("mod/x:tree", "names no module"),
    ("../../etc/passwd:x", "names no module"),
    ("mod:tree()", "names no attribute"),
    ("mod:__import__('os').system", "names no attribute"),
    ("mód:tree", "names no module"),
    ("mod;x:tree", "names no module"),
]

# (resource value, what the problem says): well spelled, but no resource.
NOT_RESOURCES = [
    ("gatelayer_no_such_module:tree", "cannot import module 'gatelayer_no_such_module'"),
    ("gatelayer.testing.no_such_module:tree", "cannot import module 'gatelayer.testing.no_such_module'"),
    ("gatelayer.testing.resources:no_such_thing",
     "module 'gatelayer.testing.resources' has no attribute 'no_such_thing'"),
    ("gatelayer.testing.resources:tree.missing", "has no attribute 'tree.missing'"),
    ("gatelayer.testing.resources:not_callable",
     "'not_callable' is neither a twisted.web resource nor a factory of one (it is a int)"),
    ("gatelayer.testing.resources:broken_factory",
     "calling broken_factory() raised RuntimeError: the factory failed"),
    ("gatelayer.testing.resources:not_a_resource",
     "not_a_resource() returned a dict, not a twisted.web resource (IResource)"),
    ("gatelayer.testing.resources:Echo.render_GET", "calling Echo.render_GET() raised TypeError"),
]


class ResourceKeyTests(SynchronousTestCase):
    """
    The C{resource} key's spelling, and how it combines with the other
    terminals.
    """

    def test_accepted(self):
        """
        A module and an attribute, either dotted, make the route a
        resource route; spaces around the colon are dropped.
        """
        config = parse_config_text(BASE + "resource = gatelayer.testing.klein_app : app.resource\n")
        route = config.routes[0]
        self.assertEqual((route.resource, route.terminal), ("gatelayer.testing.klein_app:app.resource", "resource"))

    def test_bad_spellings(self):
        """
        Each badly spelled name is refused naming the section, the key and
        the value.
        """
        for value, expected in BAD_SPELLINGS:
            with self.subTest(value=value):
                problems = config_problems(self, BASE + f"resource = {value}\n", "/etc/gate/gate.ini")
                self.assertIn(expected, problems)
                self.assertIn("/etc/gate/gate.ini [route:r] resource: ", problems)

    def test_one_terminal(self):
        """
        A resource route has no other terminal.
        """
        for other in ("upstream = u", "respond = 200 hi", "static = .",
                      "aggregate = a: u GET /a"):
            with self.subTest(other=other):
                problems = config_problems(self, BASE + f"resource = gatelayer.testing.resources:tree\n{other}\n")
                self.assertIn("[route:r]: has ", problems)
                self.assertIn(" and resource: a route has exactly one of respond, static, upstream, "
                              "aggregate, resource", problems)

    def test_proxy_keys_refused(self):
        """
        The keys about forwarding a request are refused on a resource
        route, naming the key.
        """
        for key, value in (("strip_prefix", "/r"), ("preserve_host", "no"), ("retry_non_idempotent", "yes")):
            with self.subTest(key=key):
                problems = config_problems(
                    self, BASE + f"resource = gatelayer.testing.resources:tree\n{key} = {value}\n")
                self.assertIn(f"[route:r] {key}: does not apply to a resource route", problems)

    def test_not_imported_by_the_parser(self):
        """
        Parsing checks the spelling only: a module that does not exist is
        the runtime check's business.
        """
        config = parse_config_text(BASE + "resource = gatelayer_no_such_module:tree\n")
        self.assertEqual(config.routes[0].resource, "gatelayer_no_such_module:tree")


class ResourceLoadTests(SynchronousTestCase):
    """
    Loading the named resource: a factory is called, a resource is taken
    as it is, anything else is refused saying why.
    """

    def test_factory(self):
        """
        A factory is called with no arguments, each load anew.
        """
        first = load_resource("gatelayer.testing.resources:tree")
        self.assertTrue(IResource.providedBy(first))
        self.assertIsNot(first, load_resource("gatelayer.testing.resources:tree"))

    def test_dotted_attribute(self):
        """
        A dotted attribute is followed: a Klein app's C{resource} method.
        """
        from klein.resource import KleinResource
        self.assertIsInstance(load_resource("gatelayer.testing.klein_app:app.resource"), KleinResource)

    def test_resource_as_is(self):
        """
        An attribute that is already a resource is mounted as it is (it is
        not called).
        """
        from gatelayer.testing import resources
        self.assertIs(load_resource("gatelayer.testing.resources:shared"), resources.shared)

    def test_import_raises(self):
        """
        A module whose import raises is refused with the exception's type
        and message.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "gatelayer_raising_module.py"), "w") as f:
            f.write("raise KeyError('missing setting')\n")
        self.patch(sys, "path", [directory, *sys.path])
        error = self.assertRaises(ResourceLoadError, load_resource, "gatelayer_raising_module:x")
        self.assertEqual(str(error), "importing module 'gatelayer_raising_module' raised KeyError: "
                                     "'missing setting'")
        self.assertNotIn("gatelayer_raising_module", sys.modules)

    def test_not_resources(self):
        """
        Each name that leads to no resource is refused saying why.
        """
        for value, expected in NOT_RESOURCES:
            with self.subTest(value=value):
                error = self.assertRaises(ResourceLoadError, load_resource, value)
                self.assertIn(expected, str(error))


class ResourceCheckTests(SynchronousTestCase):
    """
    The check every configuration passes before it is used (C{--check},
    the start, a reload) loads each route's resource.
    """

    def write(self, text):
        """
        Write a configuration file; return its path.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_checked(self):
        """
        A configuration whose resources all load passes the check.
        """
        path = self.write(BASE + "resource = gatelayer.testing.resources:tree\n"
                          "[route:api]\npath = /api\nresource = gatelayer.testing.klein_app:app.resource\n")
        checked = check_config_file(path)
        self.assertEqual([r.terminal for r in checked.config.routes], ["resource", "resource"])

    def test_refused(self):
        """
        Every route whose resource cannot be loaded is listed, naming
        file, section, key, value and the reason.
        """
        path = self.write(BASE + "resource = gatelayer.testing.resources:not_a_resource\n"
                          "[route:two]\npath = /two\nresource = gatelayer_no_such_module:x\n")
        error = self.assertRaises(ConfigError, check_config_file, path)
        self.assertEqual(len(error.problems), 2)
        self.assertIn(f"{path} [route:r] resource: 'gatelayer.testing.resources:not_a_resource': "
                      "not_a_resource() returned a dict", error.problems[0])
        self.assertIn(f"{path} [route:two] resource: 'gatelayer_no_such_module:x': cannot import module",
                      error.problems[1])
