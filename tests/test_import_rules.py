"""
The import directions the architecture states, checked on the source itself.

Every module under C{gatelayer/} is parsed with L{ast} (nothing is imported),
and every import is collected: at module level, inside functions and
methods, relative ones, C{importlib.import_module("...")} calls with a
literal name, and module names held in a dict literal (the registries that
import a filter type's module by name). The rules are written by package, not
by file, so modules added later are held to them too.
"""

import ast
import os
from collections import namedtuple

from twisted.trial.unittest import SynchronousTestCase

import gatelayer

GLOBAL_REACTOR = "twisted.internet.reactor"

Import = namedtuple("Import", "module target line")
"""One import: the importing module, the imported module (or package), and
the line it is on."""


def within(name, *prefixes):
    """
    Whether the dotted C{name} is one of C{prefixes} or inside one of them.
    """
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def module_sources(directory=None, package="gatelayer"):
    """
    The source of every module of C{package} in C{directory}: a mapping of
    dotted module name to C{(source text, is_package)}.
    """
    directory = directory or os.path.dirname(os.path.abspath(gatelayer.__file__))
    sources = {}
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        parts = [package, *os.path.relpath(folder, directory).split(os.sep)]
        parts = [part for part in parts if part != "."]
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            is_package = filename == "__init__.py"
            name = ".".join(parts if is_package else [*parts, filename[:-3]])
            with open(os.path.join(folder, filename), encoding="utf-8") as f:
                sources[name] = (f.read(), is_package)
    return sources


def _base(module, is_package, level, name):
    """
    The absolute name a C{from ... import} statement imports from.
    """
    if not level:
        return name
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _literal(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_imports(sources):
    """
    Every L{Import} of the modules in C{sources} (as L{module_sources}
    returns them).

    C{from a import b} imports C{a.b} when that is a module (or is the
    global reactor), else C{a}.
    """
    known = set(sources)
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        for node in ast.walk(ast.parse(source, filename=module)):
            if isinstance(node, ast.Import):
                found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, is_package, node.level, node.module)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in known or full == GLOBAL_REACTOR else base
                    found.append(Import(module, target, node.lineno))
            elif isinstance(node, ast.Call) and node.args:
                function = node.func
                called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
                name = _literal(node.args[0])
                if called in ("import_module", "__import__") and name:
                    found.append(Import(module, name, node.lineno))
            elif isinstance(node, ast.Dict):
                for value in node.values:
                    name = _literal(value)
                    if name in known:
                        found.append(Import(module, name, value.lineno))
    return found


def violations(imports, applies, forbidden):
    """
    The imports of modules for which C{applies(module)} holds whose target
    C{forbidden(target)} refuses, each as C{"module -> target (line N)"}.
    """
    return sorted({f"{i.module} -> {i.target} (line {i.line})"
                   for i in imports if applies(i.module) and forbidden(i.target)})


CONFIG_MAY_IMPORT = ("gatelayer.config", "gatelayer.net", "gatelayer.auth.names")
"""
What C{gatelayer.config} may import of gatelayer: itself and neutral modules
of names and syntax that load nothing (L{gatelayer.net} parses addresses and
Redis URLs; L{gatelayer.auth.names} holds algorithm and header names). Both
are held to the purity rule below, so the exception cannot hide a
dependency on the running system.
"""

RUNNING_SYSTEM = ("twisted.internet", "twisted.web", "twisted.application")
"""Twisted's reactor, web and service layers: what a running gateway is."""

PURE = ("gatelayer.routing", "gatelayer.net", "gatelayer.upstream.balancers",
        "gatelayer.ratelimit.algorithms", "gatelayer.auth.names", "gatelayer.filters.bodies",
        "gatelayer.l4.proxyproto", "gatelayer.l4.clienthello")
"""
Modules that stay pure (no sockets, no reactor, no request objects). They
may import each other and plain libraries (the standard library's pure parts,
attrs, zope.interface: the balancers declare their interface with it), and
nothing else of gatelayer.
"""

IO_MODULES = RUNNING_SYSTEM + ("socket", "ssl", "select", "selectors", "asyncio", "OpenSSL")
"""What a pure module may not import: sockets, TLS, event loops."""

SANS_IO = ("gatelayer.http1", "gatelayer.http.canonical")
"""
The HTTP/1.1 framing and the canonical request: bytes in, bytes out or a
refusal, no I/O. Of the running system they may use only
C{twisted.web.http_headers} (the header container the server channels, the
filters and the upstream client share); of gatelayer only each other and
the pure modules.
"""

SANS_IO_MAY_USE = ("twisted.web.http_headers",)

REACTOR_OWNERS = ("gatelayer.tap", "gatelayer.process.main", "gatelayer.testing.upstream_process.__main__",
                  "gatelayer.testing.echo_process.__main__")
"""
The modules that may import the global reactor: the two entry points (the
twistd plugin's C{gatelayer.tap}, and C{gatelayer.process.main}, which the
master runs as C{python -m gatelayer.process.main} in each worker), and the
entry point of the test upstream program (C{python -m
gatelayer.testing.upstream_process}), a separate process of its own.
"""

ABOVE_PROCESS = ("gatelayer.process", "gatelayer.tap", "gatelayer.testing")
"""
What may import C{gatelayer.process}: itself, C{gatelayer.tap} (which builds
the master from it) and C{gatelayer.testing}, whose harnesses run workers
and fake spawners for tests and are no part of the running gateway.
"""


def config_rule(imports):
    """
    C{gatelayer.config} imports nothing of the running system.
    """
    return violations(
        imports, lambda m: within(m, "gatelayer.config"),
        lambda t: (within(t, "gatelayer") and not within(t, *CONFIG_MAY_IMPORT)) or within(t, *RUNNING_SYSTEM))


def pure_rule(imports):
    """
    Routing, the balancers, the rate-limit algorithms, C{gatelayer.net},
    the shared names and the transform filter's body mapping stay pure.
    """
    return violations(
        imports, lambda m: within(m, *PURE),
        lambda t: (within(t, "gatelayer") and not within(t, *PURE)) or within(t, *IO_MODULES))


def sans_io_rule(imports):
    """
    The framing package and the canonical request stay sans-I/O.
    """
    return violations(
        imports, lambda m: within(m, *SANS_IO),
        lambda t: (within(t, "gatelayer") and not within(t, *SANS_IO, *PURE))
        or (within(t, *IO_MODULES) and not within(t, *SANS_IO_MAY_USE)))


def reactor_rule(imports):
    """
    Only the entry points import the global reactor.
    """
    return violations(imports, lambda m: m not in REACTOR_OWNERS, lambda t: within(t, GLOBAL_REACTOR))


def tls_rule(imports):
    """
    C{gatelayer.tls} knows certificates and contexts, not HTTP.
    """
    return violations(imports, lambda m: within(m, "gatelayer.tls"),
                      lambda t: within(t, "gatelayer.http", "gatelayer.http1"))


def upstream_rule(imports):
    """
    C{gatelayer.upstream} is terminal: it knows no filters and no chain.
    """
    return violations(imports, lambda m: within(m, "gatelayer.upstream"),
                      lambda t: within(t, "gatelayer.filters", "gatelayer.chain"))


def process_rule(imports):
    """
    Nothing below C{gatelayer.process} imports it.
    """
    return violations(imports, lambda m: not within(m, *ABOVE_PROCESS), lambda t: within(t, "gatelayer.process"))


_IMPORTS = []


def gatelayer_imports():
    """
    The imports of the gatelayer package, read once per test run.
    """
    if not _IMPORTS:
        _IMPORTS.extend(read_imports(module_sources()))
    return _IMPORTS


class ImportRuleTests(SynchronousTestCase):
    """
    The gatelayer package keeps the import directions its documentation
    states; a failure lists each offending C{module -> import}.
    """

    def assertKept(self, rule, imports=None):
        """
        Fail, listing the offending imports, when C{rule} finds any in
        C{imports} (default: the gatelayer package's).
        """
        found = rule(gatelayer_imports() if imports is None else imports)
        self.assertEqual(found, [], f"{rule.__doc__.strip()} Broken by:\n  " + "\n  ".join(found))

    def test_modules_found(self):
        """
        The checker sees the whole package, functions' imports included: the
        entry point's global reactor import sits inside a function.
        """
        modules = {i.module for i in gatelayer_imports()}
        self.assertTrue({"gatelayer.config._loader", "gatelayer.tap", "gatelayer.routing.table"} <= modules)
        self.assertIn(Import("gatelayer.tap", GLOBAL_REACTOR, _line_of("gatelayer.tap", GLOBAL_REACTOR)),
                      gatelayer_imports())

    def test_config_imports_nothing_of_the_running_system(self):
        """
        C{gatelayer.config} imports only itself and the neutral pure modules
        (no process, http, tls, auth key loading, filters, reactor).
        """
        self.assertKept(config_rule)

    def test_pure_modules(self):
        """
        Routing, balancers, rate-limit algorithms and C{gatelayer.net} import
        no reactor, sockets or request objects, and no other gatelayer code.
        """
        self.assertKept(pure_rule)

    def test_sans_io(self):
        """
        C{gatelayer.http1} and the canonical request import no reactor,
        sockets or server code: only header containers and pure modules.
        """
        self.assertKept(sans_io_rule)

    def test_global_reactor(self):
        """
        Only C{gatelayer.tap}, the worker's entry point and the test upstream
        program's entry point import the global reactor.
        """
        self.assertKept(reactor_rule)

    def test_tls_knows_no_http(self):
        """
        C{gatelayer.tls} does not import C{gatelayer.http}.
        """
        self.assertKept(tls_rule)

    def test_upstream_knows_no_filters(self):
        """
        C{gatelayer.upstream} does not import the filters or the chain.
        """
        self.assertKept(upstream_rule)

    def test_nothing_below_process_imports_it(self):
        """
        Only C{gatelayer.process} itself, C{gatelayer.tap} and the test
        harnesses import C{gatelayer.process}.
        """
        self.assertKept(process_rule)


def _line_of(module, target):
    return next(i.line for i in gatelayer_imports() if i.module == module and i.target == target)


SYNTHETIC = {
    "gatelayer": ("", True),
    "gatelayer.config": ("from gatelayer.config import model\n", True),
    "gatelayer.config.model": ("import attrs\nfrom gatelayer.net import forwarded\n", False),
    "gatelayer.config.bad": (
        "import importlib\n"
        "def load(path):\n"
        "    from gatelayer.auth import jwks\n"
        "    return importlib.import_module('gatelayer.process.master')\n", False),
    "gatelayer.config.registry": ("TYPES = {'jwt': 'gatelayer.filters.jwt'}\n", False),
    "gatelayer.net": ("", True),
    "gatelayer.net.forwarded": ("import ipaddress\n", False),
    "gatelayer.auth": ("", True),
    "gatelayer.auth.jwks": ("", False),
    "gatelayer.filters": ("", True),
    "gatelayer.filters.jwt": ("from gatelayer.chain import IFilter\n", False),
    "gatelayer.chain": ("", True),
    "gatelayer.process": ("", True),
    "gatelayer.process.master": ("from gatelayer.tls import store\n", False),
    "gatelayer.routing": ("from .table import RouteTable\n", True),
    "gatelayer.routing.table": ("import socket\n", False),
    "gatelayer.upstream": ("", True),
    "gatelayer.upstream.balancers": ("from zope.interface import Interface\n", False),
    "gatelayer.upstream.client": ("from gatelayer import filters\n", False),
    "gatelayer.ratelimit": ("", True),
    "gatelayer.ratelimit.algorithms": ("def f():\n    from twisted.internet import reactor\n", False),
    "gatelayer.tls": ("", True),
    "gatelayer.tls.store": ("from ..http import channel\n", False),
    "gatelayer.http": ("", True),
    "gatelayer.http.channel": ("from gatelayer.process.control import Begin\n", False),
    "gatelayer.http1": ("from twisted.web.http_headers import Headers\nfrom gatelayer.http import channel\n", True),
    "gatelayer.tap": ("from gatelayer.process import master\nfrom twisted.internet import reactor\n", False),
}
"""A made-up package breaking each rule once, beside imports that are allowed."""


class CheckerTests(SynchronousTestCase):
    """
    The checker itself finds violations in synthetic module sources, so a
    passing rule test means the rule holds, not that nothing was read.
    """

    def setUp(self):
        self.imports = read_imports(SYNTHETIC)

    def test_reads_every_form(self):
        """
        Module-level, in-function, relative, C{from package import module},
        C{import_module} and registry imports are all read.
        """
        targets = {(i.module, i.target) for i in self.imports}
        self.assertTrue({
            ("gatelayer.config", "gatelayer.config.model"),
            ("gatelayer.config.bad", "gatelayer.auth.jwks"),
            ("gatelayer.config.bad", "gatelayer.process.master"),
            ("gatelayer.config.registry", "gatelayer.filters.jwt"),
            ("gatelayer.routing", "gatelayer.routing.table"),
            ("gatelayer.tls.store", "gatelayer.http.channel"),
            ("gatelayer.upstream.client", "gatelayer.filters"),
            ("gatelayer.ratelimit.algorithms", GLOBAL_REACTOR),
        } <= targets, targets)

    def test_rules_catch_violations(self):
        """
        Each rule reports exactly the synthetic modules that break it, with
        the offending import and its line, and nothing that is allowed.
        """
        self.assertEqual(config_rule(self.imports), [
            "gatelayer.config.bad -> gatelayer.auth.jwks (line 3)",
            "gatelayer.config.bad -> gatelayer.process.master (line 4)",
            "gatelayer.config.registry -> gatelayer.filters.jwt (line 1)",
        ])
        self.assertEqual(pure_rule(self.imports), [
            "gatelayer.ratelimit.algorithms -> twisted.internet.reactor (line 2)",
            "gatelayer.routing.table -> socket (line 1)",
        ])
        self.assertEqual(reactor_rule(self.imports), [
            "gatelayer.ratelimit.algorithms -> twisted.internet.reactor (line 2)",
        ])
        self.assertEqual(sans_io_rule(self.imports), ["gatelayer.http1 -> gatelayer.http.channel (line 2)"])
        self.assertEqual(tls_rule(self.imports), ["gatelayer.tls.store -> gatelayer.http.channel (line 1)"])
        self.assertEqual(upstream_rule(self.imports), ["gatelayer.upstream.client -> gatelayer.filters (line 1)"])
        self.assertEqual(process_rule(self.imports), [
            "gatelayer.config.bad -> gatelayer.process.master (line 4)",
            "gatelayer.http.channel -> gatelayer.process.control (line 1)",
        ])

    def test_failure_message(self):
        """
        A broken rule fails its test with the rule and every offending
        C{module -> import} in the message.
        """
        failure = self.assertRaises(self.failureException, ImportRuleTests().assertKept, tls_rule, self.imports)
        self.assertIn("knows certificates and contexts, not HTTP", str(failure))
        self.assertIn("gatelayer.tls.store -> gatelayer.http.channel (line 1)", str(failure))
