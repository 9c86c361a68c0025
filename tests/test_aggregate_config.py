"""
Tests for gatelayer.config.aggregate: the aggregate route keys, the part
syntax, target templates and the dependency graph compiled at load.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.aggregate import PartValue, parse_target
from gatelayer.config.filter_transform import Variable

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:users]
servers = 127.0.0.1:9001
[upstream:orders]
servers = 127.0.0.1:9002
"""


def parse(route):
    """
    Parse BASE with the route section text C{route}.
    """
    return parse_config_text(BASE + "[route:dash]\npath = /dash\n" + route, "gate.ini", cpu_count=1)


class AggregateConfigTests(SynchronousTestCase):
    """
    Good aggregate routes parse into parts and a graph.
    """

    def test_issue_example(self):
        """
        The issue's route: three parts (a trailing C{optional} word), the
        keys, and a dependency read from C{$part.user.id}.
        """
        config = parse(
            "aggregate = user:    users    GET /users/$jwt.sub\n"
            "            orders:  orders   GET /orders?user=$part.user.id&limit=5\n"
            "            recs:    users    GET /recommendations/$jwt.sub   optional ; a comment\n"
            "part_timeout = 800ms\ndeadline = 1500ms\non_part_error = null\npart_max_size = 64KB\n")
        route = config.routes[0]
        self.assertEqual(route.terminal, "aggregate")
        self.assertEqual(route.methods, frozenset({"GET", "HEAD"}))
        aggregate = route.aggregate
        self.assertEqual([p.name for p in aggregate.parts], ["user", "orders", "recs"])
        self.assertEqual([p.optional for p in aggregate.parts], [False, False, True])
        self.assertEqual([p.needs for p in aggregate.parts], [(), (0,), ()])
        self.assertEqual(aggregate.roots, (0, 2))
        self.assertEqual(aggregate.dependents, ((1,), (), ()))
        self.assertEqual((aggregate.part_timeout, aggregate.deadline, aggregate.on_part_error,
                          aggregate.part_max_size), (0.8, 1.5, "null", 64 * 1024))
        orders = aggregate.parts[1]
        self.assertEqual((orders.upstream, orders.method, orders.path, orders.has_query),
                         ("orders", b"GET", (b"/orders",), True))
        self.assertEqual(orders.query, (b"user=", PartValue("user", ("id",)), b"&limit=5"))

    def test_defaults(self):
        """
        Without the other keys: 1s per part, 3s in all, null on error, 1MB
        per part.
        """
        aggregate = parse("aggregate = a: users GET /a\n").routes[0].aggregate
        self.assertEqual((aggregate.part_timeout, aggregate.deadline, aggregate.on_part_error,
                          aggregate.part_max_size), (1.0, 3.0, "null", 1024 * 1024))

    def test_targets(self):
        """
        Targets split at the first literal C{?}; C{$part} paths take
        numbers as list indexes; the braced forms end a variable; C{$$} is
        a dollar sign.
        """
        cases = [
            ("/a", ((b"/a",), (), False)),
            ("/a?", ((b"/a",), (), True)),
            ("/u/$jwt.sub/x", ((b"/u/", Variable("jwt", "sub"), b"/x"), (), False)),
            ("/u/${part.a.items.0.id}.json", ((b"/u/", PartValue("a", ("items", 0, "id")), b".json"), (), False)),
            ("/u/$part.a.b?q=$query.q&h=${header.X-Tenant}",
             ((b"/u/", PartValue("a", ("b",))), (b"q=", Variable("query", "q"), b"&h=", Variable("header", "x-tenant")),
              True)),
            ("/$$/$consumer", ((b"/$/", Variable("consumer")), (), False)),
            ("/a/%2F", ((b"/a/%2F",), (), False)),
        ]
        for text, expected in cases:
            self.assertEqual(parse_target(text), expected, text)

    def test_graph(self):
        """
        A part reading two others waits for both; a diamond compiles.
        """
        aggregate = parse(
            "aggregate = a: users GET /a\n"
            "            b: users GET /b/$part.a.id\n"
            "            c: users GET /c/$part.a.id\n"
            "            d: users GET /d/$part.b.id/$part.c.id/$part.b.x\n").routes[0].aggregate
        self.assertEqual([p.needs for p in aggregate.parts], [(), (0,), (0,), (1, 2)])
        self.assertEqual(aggregate.roots, (0,))
        self.assertEqual(aggregate.dependents, ((1, 2), (3,), (3,), ()))


class AggregateConfigErrorTests(SynchronousTestCase):
    """
    Bad aggregate routes are refused with messages naming section, key and
    part.
    """

    CASES = [
        ("aggregate = a: users GET /a\n        b: users GET /b/$part.c.id\n",
         "[route:dash] aggregate: has the part b reading $part.c.id, but no part is called c"),
        ("aggregate = a: users GET /a/$part.b.id\n        b: users GET /b/$part.a.id\n",
         "[route:dash] aggregate: has a dependency cycle between parts: a -> b -> a"),
        ("aggregate = a: users GET /a/$part.c.id\n        b: users GET /b/$part.a.id\n"
         "        c: users GET /c/$part.b.id\n",
         "dependency cycle between parts: a -> c -> b -> a"),
        ("aggregate = a: users GET /a/$part.a.id\n", "dependency cycle between parts: a -> a"),
        ("aggregate = a: users GET /a\n        a: users GET /b\n", "has the part a twice"),
        ("aggregate = errors: users GET /a\n", "has the part 'errors': that key is kept"),
        ("aggregate = 1a: users GET /a\n", "is not NAME: UPSTREAM METHOD TARGET [optional]"),
        ("aggregate = a-b: users GET /a\n", "is not NAME: UPSTREAM METHOD TARGET [optional]"),
        ("aggregate = users GET /a\n", "is not NAME: UPSTREAM METHOD TARGET [optional]"),
        ("aggregate = a: users GET\n", "the part a: 'users GET' is not UPSTREAM METHOD TARGET [optional]"),
        ("aggregate = a: users GET /a maybe\n", "is not UPSTREAM METHOD TARGET [optional]"),
        ("aggregate = a: users POST /a\n", "the part a: 'POST' is not a part method (GET)"),
        ("aggregate = a: nowhere GET /a\n",
         "[route:dash] aggregate: the part a names no section [upstream:nowhere]"),
        ("aggregate = a: users GET a\n", "'a' is not a target starting with /"),
        ("aggregate = a: users GET http://evil.test/\n", "is not a target starting with /"),
        ("aggregate = a: users GET //evil.test/a\n", "not in normal form"),
        ("aggregate = a: users GET /a/../admin\n", "not in normal form"),
        ("aggregate = a: users GET /a/./b\n", "not in normal form"),
        ("aggregate = a: users GET /a\\b\n", "not in normal form"),
        ("aggregate = a: users GET /%61\n", "needless or control percent-escape (%61)"),
        ("aggregate = a: users GET /%zz\n", "percent-escape (%)"),
        ("aggregate = a: users GET /%00\n", "percent-escape (%00)"),
        ("aggregate = a: users GET /\u00e9\n", "non-ASCII character or #"),
        ("aggregate = a: users GET /$nope\n", "has the unknown variable $nope"),
        ("aggregate = a: users GET /${part}\n", "a part's target also takes $part.NAME.<path>"),
        ("aggregate = a: users GET /$path\n", "has $path: a part's target names its own path"),
        ("aggregate = a: users GET /$part.a\n", "has $part.a: name a value inside the part"),
        ("aggregate = a: users GET /${part.1x.y}\n", "'1x' is not a part name"),
        ("aggregate = a: users GET /a$\n", "has a lone $"),
        ("aggregate = a: users GET /${header.a:b}\n", "is not a header name"),
        ("aggregate =\n", "[route:dash] aggregate: lists no part"),
        ("aggregate = a: users GET /a\non_part_error = ignore\n",
         "[route:dash] on_part_error: 'ignore' is not one of null, omit, fail"),
        ("aggregate = a: users GET /a\npart_timeout = soon\n", "[route:dash] part_timeout: 'soon' is not a duration"),
        ("aggregate = a: users GET /a\npart_timeout = 0s\n", "[route:dash] part_timeout: '0s' must be more than 0"),
        ("aggregate = a: users GET /a\ndeadline = 0\n", "[route:dash] deadline: '0' must be more than 0"),
        ("aggregate = a: users GET /a\npart_max_size = 0\n", "[route:dash] part_max_size: '0' must be more than 0"),
        ("aggregate = a: users GET /a\npart_max_size = big\n", "[route:dash] part_max_size: 'big' is not a size"),
        ("aggregate = a: users GET /a\npart_timeout = 2s\ndeadline = 1s\n",
         "[route:dash] deadline: '1s' is shorter than part_timeout (2s)"),
        ("aggregate = a: users GET /a\nmethods = GET, POST\n",
         "[route:dash] methods: 'GET, POST' may only list GET and HEAD on an aggregate route"),
        ("aggregate = a: users GET /a\nstrip_prefix = /dash\n",
         "[route:dash] strip_prefix: does not apply to an aggregate route"),
        ("aggregate = a: users GET /a\npreserve_host = no\n",
         "[route:dash] preserve_host: does not apply to an aggregate route"),
        ("aggregate = a: users GET /a\nupstream = users\n",
         "[route:dash]: has upstream and aggregate: a route has exactly one of respond, static, upstream, aggregate, resource"),
        ("respond = 200 x\npart_timeout = 1s\n", "[route:dash] part_timeout: only applies with aggregate"),
        ("upstream = users\ndeadline = 1s\non_part_error = fail\n",
         "[route:dash] deadline: only applies with aggregate"),
        ("upstream = users\npart_max_size = 1KB\n", "[route:dash] part_max_size: only applies with aggregate"),
    ]

    def test_cases(self):
        """
        Each bad route is refused with a message naming the file, section,
        key and what is wrong.
        """
        for route, expected in self.CASES:
            with self.assertRaises(ConfigError, msg=route) as caught:
                parse(route)
            text = str(caught.exception)
            self.assertIn(expected, text, route)
            self.assertIn("gate.ini [route:dash]", text, route)

    def test_comment_swallows_optional(self):
        """
        C{; optional} is an INI comment, as the file format says: the part
        is required. Only the word C{optional} makes it optional.
        """
        aggregate = parse("aggregate = a: users GET /a   ; optional\n"
                          "            b: users GET /b   optional\n").routes[0].aggregate
        self.assertEqual([p.optional for p in aggregate.parts], [False, True])
