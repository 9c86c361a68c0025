"""
Tests for how C{[filter:NAME] type} names are found
(L{gatelayer.config.filtertypes}): built-in and installed types through the
entry point group C{gatelayer.filters}, with clear errors for a name
registered twice, a plugin that fails to import, or an object that is no
filter type; and the common C{timeout} key.
"""

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.filtertypes import BUILTIN, GROUP, FilterTypes, installed_entry_points
from gatelayer.filters import FilterServices, build_filter
from gatelayer.filters.api import FilterType, IFilter, Key, duration
from gatelayer.filters.builtin import BuiltinFilterType
from gatelayer.testing.filtertypes import FakeEntryPoint, registered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
[listener:web]
bind = 127.0.0.1:0
[route:r]
path = /
respond = 200 ok
filters = f
[filter:f]
{section}
"""


@implementer(IFilter)
class Passing:
    """
    A filter that passes every request.
    """

    def __init__(self, name, settings):
        self.name = name
        self.settings = settings

    def on_request(self, exchange):
        """
        Pass.
        """

    def on_response(self, exchange):
        """
        Nothing to add.
        """


TAGGING = FilterType(keys=(Key("tag"), Key("wait", duration, 1.0)),
                     build=lambda name, settings, reactor: Passing(name, settings))


def problems(section, types):
    """
    The problems of a config whose C{[filter:f]} is C{section}, with the
    filter types C{types}.
    """
    try:
        parse_config_text(CONFIG.format(section=section), "gate.ini", cpu_count=1, filter_types=types)
    except ConfigError as e:
        return "\n".join(e.problems)
    raise AssertionError("the configuration was accepted")


def load(section, types):
    """
    The L{FilterSpec} of C{[filter:f]} holding C{section}.
    """
    config = parse_config_text(CONFIG.format(section=section), "gate.ini", cpu_count=1, filter_types=types)
    return config.filters["f"]


class RegistryTests(SynchronousTestCase):
    """
    Built-in and installed filter types are found by name.
    """

    def test_builtins_registered_in_setup_cfg(self):
        """
        setup.cfg registers exactly the built-in types, under the group,
        with the targets the registry falls back to.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        lines = parser["options.entry_points"][GROUP].strip().splitlines()
        registered_there = dict(line.replace(" ", "").split("=", 1) for line in lines)
        self.assertEqual(registered_there, BUILTIN)

    def test_builtins_installed(self):
        """
        The installed gatelayer registers its built-in types through the
        group, each loading to a built-in filter type of that name.
        """
        installed = {ep.name: ep for ep in installed_entry_points() if ep.value in BUILTIN.values()}
        self.assertEqual(set(installed), set(BUILTIN))
        self.assertEqual(installed["cors"].load(), BuiltinFilterType("cors"))

    def test_builtins_known_without_metadata(self):
        """
        Without any entry point (a source tree without package metadata) the
        built-in types are still known, and none is counted as installed.
        """
        types = FilterTypes([])
        self.assertEqual(set(types.builtin), set(BUILTIN))
        self.assertEqual(types.installed, ())
        self.assertEqual(types.load("jwt").name, "jwt")

    def test_installed_type_used(self):
        """
        A type another distribution registers is read through its keys and
        built through its C{build}, with its default timeout.
        """
        spec = load("type = tagging\ntag = blue", registered(tagging=TAGGING))
        self.assertEqual((spec.type, spec.settings.tag, spec.settings.wait, spec.timeout),
                         ("tagging", "blue", 1.0, 30.0))
        built = build_filter(spec, FilterServices(reactor=None, master=None, config=None))
        self.assertEqual((built.name, built.settings.tag), ("f", "blue"))

    def test_loaded_once(self):
        """
        An entry point is loaded once per load of the configuration, however
        many sections use it, and not at all when none does.
        """
        loads = []

        class Counting(FakeEntryPoint):
            """
            Counts its loads.
            """

            def load(self):
                """
                Count, then load.
                """
                loads.append(self.name)
                return super().load()
        types = FilterTypes([Counting("tagging", TAGGING), Counting("unused", ImportError("nope"))])
        text = CONFIG.format(section="type = tagging\ntag = a") + "[filter:g]\ntype = tagging\ntag = b\n"
        parse_config_text(text, "gate.ini", cpu_count=1, filter_types=types)
        self.assertEqual(loads, ["tagging"])

    def test_unknown_type_lists_known(self):
        """
        An unknown type is an error listing the built-in types, then the
        installed ones.
        """
        found = problems("type = nope", registered(tagging=TAGGING))
        self.assertIn("gate.ini [filter:f] type: 'nope' is not a filter type (api_key, cache,", found)
        self.assertIn("waf; installed: tagging)", found)

    def test_registered_twice(self):
        """
        A name two distributions register is an error naming both entry
        points and distributions, even for a built-in name; the same
        target listed twice is one registration.
        """
        types = FilterTypes([FakeEntryPoint("tagging", TAGGING, "one:tagging", "first-dist"),
                             FakeEntryPoint("tagging", TAGGING, "two:tagging", "second-dist"),
                             FakeEntryPoint("cors", TAGGING, "evil:cors", "shadowing-dist"),
                             FakeEntryPoint("jwt", BuiltinFilterType("jwt"), BUILTIN["jwt"], "gatelayer")])
        found = problems("type = tagging\ntag = x", types)
        self.assertIn("gate.ini [filter:f] type: 'tagging' is registered more than once in the entry point "
                      "group gatelayer.filters: entry point tagging = one:tagging (distribution first-dist 1.0) "
                      "and entry point tagging = two:tagging (distribution second-dist 1.0)", found)
        found = problems("type = cors\norigins = https://a.example.com", types)
        self.assertIn("evil:cors (distribution shadowing-dist 1.0)", found)
        self.assertNotIn("tag", found)
        self.assertEqual(load("type = jwt\nsecret_file = " + os.path.join(ROOT, "setup.cfg"), types).type, "jwt")

    def test_import_failure(self):
        """
        A plugin that fails to import is an error naming its entry point,
        distribution and exception; its keys are not reported as unknown.
        """
        found = problems("type = broken\nwhatever = 1", registered(broken=ImportError("No module named 'x'")))
        self.assertIn("gate.ini [filter:f] type: 'broken' cannot be loaded: entry point broken = "
                      "example_filters:broken (distribution example-filters 1.0) raised ImportError: "
                      "No module named 'x'", found)
        self.assertNotIn("whatever", found)

    def test_not_a_filter_type(self):
        """
        An entry point naming something without C{parse_filter},
        C{build_filter} and C{default_timeout} is an error saying so.
        """
        for thing in (object(), Passing, "text"):
            found = problems("type = odd", registered(odd=thing))
            self.assertIn("type: 'odd' is not usable: entry point odd = example_filters:odd "
                          "(distribution example-filters 1.0) names", found)
            self.assertIn("which is not a filter type", found)

    def test_parse_failure_contained(self):
        """
        A filter type whose reading of the section raises is a problem of
        the section, not a crash of the check.
        """
        def bad_check(settings):
            raise RuntimeError("bug in check")
        found = problems("type = buggy\ntag = x", registered(buggy=FilterType(
            keys=(Key("tag"),), build=Passing, check=bad_check)))
        self.assertIn("gate.ini [filter:f]: the filter type 'buggy' failed to read the section: "
                      "RuntimeError: bug in check", found)

    def test_build_must_give_a_filter(self):
        """
        A type whose C{build} returns no L{IFilter} provider fails the
        build with a message naming the section.
        """
        spec = load("type = empty", registered(empty=FilterType(keys=(), build=lambda *a: object())))
        error = self.assertRaises(TypeError, build_filter, spec, FilterServices(None, None, None))
        self.assertIn("[filter:f]", str(error))


class TimeoutKeyTests(SynchronousTestCase):
    """
    Every filter section accepts C{timeout}.
    """

    def test_defaults(self):
        """
        A built-in type has no timeout unless set; another package's type
        has its own default (30s unless it says otherwise).
        """
        types = registered(tagging=TAGGING, quick=FilterType(keys=(), build=Passing, default_timeout=2.0))
        self.assertIsNone(load("type = cors\norigins = https://a.example.com", types).timeout)
        self.assertEqual(load("type = quick", types).timeout, 2.0)
        self.assertEqual(load("type = cors\norigins = https://a.example.com\ntimeout = 1500ms", types).timeout,
                         1.5)
        self.assertEqual(load("type = tagging\ntag = x\ntimeout = 2m", types).timeout, 120.0)

    def test_bad_values(self):
        """
        A timeout that is no duration, zero, negative or over an hour is an
        error naming section, key and value.
        """
        table = [
            ("soon", "'soon' is not a duration"),
            ("0s", "'0s' must be more than 0s and at most 1h"),
            ("-1s", "'-1s' is not a duration"),
            ("2h", "'2h' must be more than 0s and at most 1h"),
            ("1e3", "'1e3' is not a duration"),
            ("30s; rm -rf /", None),
        ]
        for value, message in table:
            found = problems(f"type = tagging\ntag = x\ntimeout = {value}", registered(tagging=TAGGING))
            self.assertIn("gate.ini [filter:f] timeout: ", found)
            if message is not None:
                self.assertIn(message, found)

    def test_declaring_common_keys_refused(self):
        """
        A filter type cannot declare C{type} or C{timeout}, nor a key twice.
        """
        self.assertRaises(ValueError, Key, "timeout")
        self.assertRaises(ValueError, Key, "type")
        self.assertRaises(ValueError, FilterType, keys=(Key("a"), Key("a")), build=Passing)
