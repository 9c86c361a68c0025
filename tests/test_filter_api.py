"""
Tests for the public filter API (L{gatelayer.filters.api}): the facade
exports what it lists, declared keys parse with the gateway's value syntax
and messages, settings are immutable, the exchange provides the documented
view, and problem replies carry the request's id.
"""

import json
import operator
import types

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import Exchange, RouteChain
from gatelayer.filters import api
from gatelayer.testing.config import parse_section
from gatelayer.testing.exchange import request_exchange


def read(keys, items, check=None):
    """
    C{(settings, problems)} of a section C{[filter:x]} of C{items} read
    through C{keys}.
    """
    filter_type = api.FilterType(keys=keys, build=None, check=check)
    return parse_section(filter_type.parse_filter, "filter:x", items, base_dir="/etc/gate")


class FacadeTests(SynchronousTestCase):
    """
    The facade's C{__all__} and its names agree.
    """

    def test_all_agrees(self):
        """
        Every name in C{__all__} exists, and every public name the module
        holds (other than modules) is in C{__all__}.
        """
        for name in api.__all__:
            self.assertTrue(hasattr(api, name), name)
        public = {name for name, value in vars(api).items()
                  if not name.startswith("_") and not isinstance(value, types.ModuleType)}
        self.assertEqual(public, set(api.__all__))

    def test_exchange_provides_view(self):
        """
        The exchange filters get provides L{api.IExchange}.
        """
        verifyObject(api.IExchange, request_exchange(body=b"x"))
        self.assertTrue(api.IExchange.implementedBy(Exchange))


class KeyTests(SynchronousTestCase):
    """
    Declared keys read with the built-in types' syntax and messages.
    """

    def test_values(self):
        """
        Each parser reads its syntax; defaults apply to absent keys; a path
        is relative to the configuration's directory.
        """
        keys = (
            api.Key("name"), api.Key("wait", api.duration), api.Key("limit", api.size),
            api.Key("strict", api.boolean), api.Key("count", api.integer(1, 10)),
            api.Key("mode", api.choice("fast", "safe")), api.Key("hosts", api.list_of()),
            api.Key("waits", api.list_of(api.duration)), api.Key("file", api.PATH),
            api.Key("absent", api.duration, 7.0), api.Key("text_key", api.text, "as written"),
        )
        settings, problems = read(keys, {
            "name": " alice ", "wait": "250ms", "limit": "2KB", "strict": "yes", "count": "10",
            "mode": "SAFE", "hosts": "a, b ,,c", "waits": "1s, 2m", "file": "keys/secret",
        })
        self.assertEqual(problems, [])
        self.assertEqual(dict(settings), {
            "name": "alice", "wait": 0.25, "limit": 2048, "strict": True, "count": 10, "mode": "safe",
            "hosts": ("a", "b", "c"), "waits": (1.0, 120.0), "file": "/etc/gate/keys/secret",
            "absent": 7.0, "text_key": "as written",
        })
        self.assertEqual(settings.wait, 0.25)

    def test_hostile_values(self):
        """
        Values a parser refuses, a missing required key and an unknown key
        are each reported in the gateway's words, naming section, key and
        value; the check does not run while a key is wrong.
        """
        checked = []
        keys = (api.Key("name"), api.Key("wait", api.duration, 1.0), api.Key("count", api.integer(1, 10), 1),
                api.Key("mode", api.choice("fast", "safe"), "fast"), api.Key("strict", api.boolean, False),
                api.Key("waits", api.list_of(api.duration), ()), api.Key("limit", api.size, 0))
        table = [
            ({"wait": "soon"}, "gate.ini [filter:x] wait: 'soon' is not a duration (use e.g. 500ms, 2s, 1m, 1h)"),
            ({"count": "11"}, "gate.ini [filter:x] count: '11' must be at most 10"),
            ({"count": "1; drop"}, "gate.ini [filter:x] count: '1; drop' is not a whole number"),
            ({"mode": "turbo"}, "gate.ini [filter:x] mode: 'turbo' is not one of fast, safe"),
            ({"strict": "maybe"}, "gate.ini [filter:x] strict: 'maybe' is not yes or no"),
            ({"waits": "1s, later"}, "gate.ini [filter:x] waits: '1s, later' has 'later', which is not a duration"),
            ({"waits": ", ,"}, "gate.ini [filter:x] waits: ', ,' lists nothing"),
            ({"limit": "lots"}, "gate.ini [filter:x] limit: 'lots' is not a size"),
            ({"nmae": "typo"}, "gate.ini [filter:x] nmae: is not a known key"),
        ]
        for items, message in table:
            _, problems = read(keys, dict({"name": "n"}, **items), check=checked.append)
            self.assertTrue(any(p.startswith(message) for p in problems), (items, problems))
        _, problems = read(keys, {}, check=checked.append)
        self.assertEqual(problems, ["gate.ini [filter:x] name: is required"])
        self.assertEqual(len(checked), 1)

    def test_check_problems(self):
        """
        The type's check reports problems for a key or the whole section.
        """
        def check(settings):
            return [("name", "names nobody"), (None, "contradicts itself")]
        _, problems = read((api.Key("name"),), {"name": "n"}, check=check)
        self.assertEqual(problems, ["gate.ini [filter:x] name: names nobody",
                                    "gate.ini [filter:x]: contradicts itself"])

    def test_key_names(self):
        """
        A key name must be lower-case letters, digits and underscores.
        """
        for name in ("Max", "max-skew", "", "1st", "a b", 3):
            self.assertRaises(ValueError, api.Key, name)
        self.assertTrue(api.Key("ok_1").required)
        self.assertFalse(api.Key("ok", default=None).required)


class SettingsTests(SynchronousTestCase):
    """
    Settings are an immutable mapping readable as attributes.
    """

    def test_immutable(self):
        """
        Setting an attribute fails; a missing one is an AttributeError; two
        settings with the same values are equal and hash alike.
        """
        settings = api.Settings({"a": 1, "b": ("x",)})
        self.assertRaises(AttributeError, setattr, settings, "a", 2)
        self.assertRaises(AttributeError, getattr, settings, "c")
        self.assertRaises(TypeError, operator.setitem, settings, "a", 2)
        self.assertEqual(settings, api.Settings({"b": ("x",), "a": 1}))
        self.assertEqual(hash(settings), hash(api.Settings({"b": ("x",), "a": 1})))
        self.assertEqual((settings.a, settings["b"], len(settings)), (1, ("x",), 2))


class ReplyTests(SynchronousTestCase):
    """
    The reply helpers make the gateway's problem documents.
    """

    def test_problem_reply(self):
        """
        A problem reply is C{application/problem+json} with the members
        given, and gets the request's id when sent.
        """
        reply = api.problem_reply(401, "Unauthorized", "signature refused", reason="stale",
                                  headers=[(b"www-authenticate", b"Signature")])
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.headers, ((b"content-type", api.PROBLEM_JSON), (b"www-authenticate", b"Signature")))
        self.assertEqual(json.loads(reply.body), {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                                  "detail": "signature refused", "reason": "stale"})
        sent = []

        class Request:
            """
            Records what the responder sends.
            """

            disconnected = finished = False

            def __init__(self):
                from twisted.web.http_headers import Headers
                self.responseHeaders = Headers()

            def setResponseCode(self, code):
                sent.append(code)

            def write(self, data):
                sent.append(data)

            def finish(self):
                sent.append("end")
        exchange = Exchange(method=b"GET", path=b"/", query=b"", headers=None, client_ip="",
                            request=Request(), chain=RouteChain(), request_id=b"abc-1")
        exchange.reply(reply)
        self.assertEqual(json.loads(sent[1])["request_id"], "abc-1")
        self.assertEqual(sent[-1], "end")
