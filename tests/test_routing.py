"""
Tests for gatelayer.routing: which route a request gets.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import RouteSpec
from gatelayer.config.route_match import parse_conditions
from gatelayer.config import parse_config_text
from gatelayer.routing import RouteTable, route_groups, route_table_view


def table(*specs):
    return RouteTable([(spec, spec.name) for spec in specs])


class RouteTableTests(SynchronousTestCase):
    """
    Longest prefix, host precedence and methods.
    """

    def setUp(self):
        self.table = table(
            RouteSpec(name="root", path="/"),
            RouteSpec(name="api", path="/api"),
            RouteSpec(name="api-v1", path="/api/v1/"),
            RouteSpec(name="write", path="/api/v1/", methods=frozenset({"POST"}), host="admin.example.com"),
            RouteSpec(name="exact-host", path="/", host="api.example.com"),
            RouteSpec(name="wild-host", path="/", host="*.example.com"),
            RouteSpec(name="only-get", path="/ro/", methods=frozenset({"GET", "HEAD"})),
        )

    def test_table(self):
        """
        Each (host, path, method) gets the expected route or status.
        """
        cases = [
            ("", b"/", "GET", "root"),
            ("", b"/api", "GET", "api"),
            ("", b"/api/users", "GET", "api"),
            ("", b"/apix", "GET", "root"),
            ("", b"/api/v1/users", "GET", "api-v1"),
            ("api.example.com", b"/api/v1/users", "GET", "exact-host"),
            ("www.example.com", b"/anything", "GET", "wild-host"),
            ("a.b.example.com", b"/", "GET", "root"),
            ("example.com", b"/", "GET", "root"),
            ("admin.example.com", b"/api/v1/x", "POST", "write"),
            ("admin.example.com", b"/api/v1/x", "GET", "wild-host"),
            ("", b"/ro/file", "GET", "only-get"),
            ("", b"/ro/file", "DELETE", "root"),
        ]
        for host, path, method, expected in cases:
            with self.subTest(host=host, path=path, method=method):
                self.assertEqual(self.table.match(host, path, method).route, expected)

    def test_method_not_allowed(self):
        """
        A path matched only by routes refusing the method is 405 with the
        allowed methods.
        """
        match = table(
            RouteSpec(name="ro", path="/ro/", methods=frozenset({"GET", "HEAD"})),
        ).match("", b"/ro/file", "DELETE")
        self.assertEqual((match.status, match.allowed), (405, ("GET", "HEAD")))

    def test_not_found(self):
        """
        No matching route is 404.
        """
        self.assertEqual(table(RouteSpec(name="a", path="/a")).match("", b"/b", "GET").status, 404)


def conditions(source, *lines):
    """
    The parsed conditions of C{lines} for C{source} (C{"header"},
    C{"query"} or C{"cookie"}), as the loader parses them.
    """
    parsed, problems = parse_conditions(source, "\n".join(lines))
    assert not problems, problems
    return parsed


def route(name, path="/", host=None, methods=None, header=(), query=(), cookie=()):
    """
    A L{RouteSpec} with the given conditions (lists of condition lines).
    """
    return RouteSpec(
        name=name, path=path, host=host, methods=frozenset(methods) if methods else None,
        conditions=conditions("header", *header) + conditions("query", *query) + conditions("cookie", *cookie))


class ConditionTests(SynchronousTestCase):
    """
    Header, query and cookie conditions: what each test compares, against
    the lower-case header mapping the table defaults to.
    """

    def check(self, spec, cases):
        """
        For each C{(headers, query, expected)} of C{cases}: the table of
        C{spec} and a catch-all C{other} route answers C{expected}.
        """
        routes = table(spec, RouteSpec(name="other", path="/"))
        for headers, query, expected in cases:
            with self.subTest(headers=headers, query=query):
                self.assertEqual(routes.match("", b"/api", "GET", headers, query).route, expected)

    def test_header_tests(self):
        """
        Exact value, presence, absence and a regex that must match the
        whole value; a header sent several times is its combined value.
        """
        spec = route("api", "/api", header=[
            "X-Api-Version: 2", "X-Beta", "!X-Legacy", "Accept: ~application/(json|xml)"])
        good = {b"x-api-version": [b"2"], b"x-beta": [b""], b"accept": [b"application/json"]}
        cases = [
            (good, b"", "api"),
            ({**good, b"x-api-version": [b"3"]}, b"", "other"),
            ({**good, b"x-api-version": [b"2 "]}, b"", "other"),
            ({**good, b"x-api-version": [b"20"]}, b"", "other"),
            ({**good, b"x-api-version": [b"2", b"2"]}, b"", "other"),
            ({**good, b"x-api-version": [b"1", b"2"]}, b"", "other"),
            ({**good, b"x-api-version": []}, b"", "other"),
            ({k: v for k, v in good.items() if k != b"x-beta"}, b"", "other"),
            ({**good, b"x-legacy": [b""]}, b"", "other"),
            ({**good, b"accept": [b"application/xml"]}, b"", "api"),
            ({**good, b"accept": [b"application/json; charset=utf-8"]}, b"", "other"),
            ({**good, b"accept": [b"text/html, application/json"]}, b"", "other"),
            ({}, b"", "other"),
            (None, b"", "other"),
        ]
        self.check(spec, cases)

    def test_combined_value_regex(self):
        """
        A regex sees a repeated header's lines joined with ", ".
        """
        spec = route("api", "/api", header=["X-Tag: ~(.*, )?beta(, .*)?"])
        self.check(spec, [
            ({b"x-tag": [b"alpha", b"beta"]}, b"", "api"),
            ({b"x-tag": [b"alpha, beta, gamma"]}, b"", "api"),
            ({b"x-tag": [b"alphabeta"]}, b"", "other"),
        ])

    def test_query_tests(self):
        """
        The first occurrence of a parameter counts, decoded as the gateway
        decodes query values (+ is a space, then percent-escapes); a
        parameter without = is present with an empty value.
        """
        spec = route("api", "/api", query=["version=2", "q=a b", "debug", "!legacy"])
        cases = [
            (None, b"version=2&q=a+b&debug", "api"),
            (None, b"debug&q=a%20b&version=%32", "api"),
            (None, b"version=2&q=a+b&debug=", "api"),
            (None, b"version=2&q=a+b&debug=1&&", "api"),
            (None, b"version=3&version=2&q=a+b&debug", "other"),
            (None, b"version=2&version=3&q=a+b&debug", "api"),
            (None, b"version=2&q=a+b", "other"),
            (None, b"version=2&q=a+b&debug&legacy", "other"),
            (None, b"version=2&q=a+b&debug&legacy=", "other"),
            (None, b"Version=2&q=a+b&debug", "other"),
            (None, b"version=2;q=a+b&debug", "other"),
            (None, b"version=2&q=a%2Bb&debug", "other"),
            (None, b"", "other"),
            ({b"version": [b"2"]}, b"", "other"),
        ]
        self.check(spec, cases)

    def test_query_decoding_agrees(self):
        """
        A query condition reads the value the transform filter's
        C{$query.NAME} reads, for hostile spellings too.
        """
        from gatelayer.filters.transform import query_value
        from gatelayer.routing.conditions import parse_query
        queries = [b"a=1", b"a=%31", b"a=1+2", b"a=%2B", b"a=%", b"a=%zz", b"a=%E2%82%AC", b"a=%ff",
                   b"%61=1", b"a+b=1", b"a=1&a=2", b"a", b"a=", b"=1&a=2", b"&&a=x=y", b"a=%00", b"a=%0d%0a"]
        for query in queries:
            for name in (b"a", b"a b"):
                with self.subTest(query=query, name=name):
                    self.assertEqual(parse_query(query).get(name), query_value(query, name))

    def test_cookie_tests(self):
        """
        A cookie's value is that of its first occurrence over every Cookie
        header, surrounding double quotes removed, not otherwise decoded.
        """
        spec = route("api", "/api", cookie=["beta=1", "session", "!tracking"])
        cases = [
            ({b"cookie": [b"beta=1; session=abc"]}, b"", "api"),
            ({b"cookie": [b"session=; beta=1"]}, b"", "api"),
            ({b"cookie": [b"beta=1", b"session=x"]}, b"", "api"),
            ({b"cookie": [b'beta="1";session=x']}, b"", "api"),
            ({b"cookie": [b"  beta = 1 ;\tsession=x  "]}, b"", "api"),
            ({b"cookie": [b"beta=0; beta=1; session=x"]}, b"", "other"),
            ({b"cookie": [b"beta=1; session=x; tracking=y"]}, b"", "other"),
            ({b"cookie": [b"beta=%31; session=x"]}, b"", "other"),
            ({b"cookie": [b"Beta=1; session=x"]}, b"", "other"),
            ({b"cookie": [b"beta=1"]}, b"", "other"),
            ({b"cookie": [b"session; beta=1"]}, b"", "other"),
            ({b"cookie": [b"xbeta=1; session=x"]}, b"", "other"),
            ({b"cookie": [b";;=;beta=1;session=x"]}, b"", "api"),
            ({b"x-cookie": [b"beta=1; session=x"]}, b"", "other"),
            ({}, b"beta=1&session=x", "other"),
        ]
        self.check(spec, cases)

    def test_all_sources_together(self):
        """
        Every condition of every source must hold.
        """
        spec = route("api", "/api", header=["X-A: 1"], query=["b=2"], cookie=["c=3"])
        headers = {b"x-a": [b"1"], b"cookie": [b"c=3"]}
        self.check(spec, [
            (headers, b"b=2", "api"),
            ({b"cookie": [b"c=3"]}, b"b=2", "other"),
            (headers, b"b=3", "other"),
            ({b"x-a": [b"1"]}, b"b=2", "other"),
        ])

    def test_header_key(self):
        """
        Header names are looked up as C{header_key} spells them: once, when
        the table is built.
        """
        looked_up = []

        def key(name):
            looked_up.append(name)
            return name.title()
        routes = RouteTable([(route("api", "/api", header=["x-api-version: 2"]), "api")], header_key=key)
        self.assertEqual(sorted(looked_up), [b"cookie", b"x-api-version"])
        self.assertEqual(routes.match("", b"/api", "GET", {b"X-Api-Version": [b"2"]}).route, "api")
        self.assertEqual(routes.match("", b"/api", "GET", {b"x-api-version": [b"2"]}).status, 404)
        self.assertEqual(len(looked_up), 2)

    def test_parsed_once_and_only_when_tested(self):
        """
        The query and the cookies are parsed at most once per request, and
        only when a route testing them is reached: not for a request that
        an earlier route answers or whose header condition fails first.
        """
        from gatelayer.routing import conditions as conditions_module
        calls = []
        for name in ("parse_query", "parse_cookies"):
            original = getattr(conditions_module, name)
            self.patch(conditions_module, name,
                       lambda *a, name=name, original=original: (calls.append(name), original(*a))[1])
        routes = table(
            route("longer", "/api/v1"),
            route("three", "/api", header=["X-A: 1"], query=["b=2"], cookie=["c=3"]),
            route("two", "/api", query=["b"], cookie=["c"]),
            route("one", "/api", cookie=["d"]),
            route("plain", "/api"),
        )
        self.assertEqual(routes.match("", b"/api/v1/x", "GET", {b"cookie": [b"c=3"]}, b"b=2").route, "longer")
        self.assertEqual(calls, [])
        self.assertEqual(routes.match("", b"/api", "GET", {b"cookie": [b"d=1"]}, b"x=1").route, "one")
        self.assertEqual(calls, ["parse_query", "parse_cookies"])
        del calls[:]
        self.assertEqual(routes.match("", b"/api", "GET", {b"cookie": [b"c=3"]}, b"b=2").route, "two")
        self.assertEqual(calls, ["parse_query", "parse_cookies"])
        del calls[:]
        headers_first = table(route("h", "/api", header=["X-A: 1"], query=["b"], cookie=["c"]), route("plain", "/api"))
        self.assertEqual(headers_first.match("", b"/api", "GET", {b"cookie": [b"c=3"]}, b"b=2").route, "plain")
        self.assertEqual(calls, [])


class PrecedenceTests(SynchronousTestCase):
    """
    Host group first, then the longest path prefix, then more conditions,
    then file order.
    """

    def setUp(self):
        """
        Routes in an order that is not their precedence.
        """
        self.specs = [
            route("any-root", "/"),
            route("any-api", "/api"),
            route("any-api-header", "/api", header=["X-V: 2"]),
            route("any-api-two", "/api", header=["X-V: 2"], query=["beta"]),
            route("any-api-query", "/api", query=["v=2"]),
            route("any-api-v1", "/api/v1"),
            route("wild-api", "/api", host="*.example.com"),
            route("wild-api-cookie", "/api", host="*.example.com", cookie=["beta=1"]),
            route("exact-root-header", "/", host="api.example.com", header=["X-V: 2"]),
            route("exact-api", "/api", host="api.example.com"),
            route("post-only", "/api", methods=["POST"], header=["X-V: 2"], query=["beta"]),
        ]
        self.table = table(*self.specs)

    def test_table(self):
        """
        Each request gets the route precedence says.
        """
        v2 = {b"x-v": [b"2"]}
        beta = {b"x-v": [b"2"], b"cookie": [b"beta=1"]}
        cases = [
            ("", b"/", "GET", {}, b"", "any-root"),
            ("", b"/api", "GET", {}, b"", "any-api"),
            ("", b"/api", "GET", v2, b"", "any-api-header"),
            ("", b"/api", "GET", v2, b"beta", "any-api-two"),
            ("", b"/api", "POST", v2, b"beta", "any-api-two"),
            ("", b"/api", "GET", {}, b"v=2", "any-api-query"),
            ("", b"/api", "GET", v2, b"v=2", "any-api-header"),
            ("", b"/api/v1/x", "GET", v2, b"beta", "any-api-v1"),
            ("www.example.com", b"/api", "GET", {}, b"", "wild-api"),
            ("www.example.com", b"/api", "GET", beta, b"", "wild-api-cookie"),
            ("www.example.com", b"/other", "GET", v2, b"", "any-root"),
            ("api.example.com", b"/api", "GET", v2, b"", "exact-api"),
            ("api.example.com", b"/other", "GET", v2, b"", "exact-root-header"),
            ("api.example.com", b"/other", "GET", {}, b"", "any-root"),
        ]
        for host, path, method, headers, query, expected in cases:
            with self.subTest(host=host, path=path, headers=headers, query=query):
                self.assertEqual(self.table.match(host, path, method, headers, query).route, expected)

    def test_order(self):
        """
        route_groups orders exact hosts, then wildcards, then the
        catch-all; within each, longest prefix, more conditions, file
        order.
        """
        groups = [(group.kind, group.host, [spec.name for spec in group.routes])
                  for group in route_groups(self.specs)]
        self.assertEqual(groups, [
            ("exact", "api.example.com", ["exact-api", "exact-root-header"]),
            ("wildcard", "*.example.com", ["wild-api-cookie", "wild-api"]),
            ("any", None, ["any-api-v1", "any-api-two", "post-only", "any-api-header", "any-api-query",
                           "any-api", "any-root"]),
        ])

    def test_table_and_view_agree(self):
        """
        The route table tries each host group's routes in the order the
        /status view lists them: both come from route_groups.
        """
        view = route_table_view(self.specs)
        groups = {("exact", "api.example.com"): self.table._exact["api.example.com"],
                  ("wildcard", "*.example.com"): self.table._wildcard[".example.com"],
                  ("any", None): self.table._any}
        self.assertEqual([(g["kind"], g["host"]) for g in view], list(groups))
        for group in view:
            tried = [item[2] for item in groups[(group["kind"], group["host"])]]
            self.assertEqual([row["name"] for row in group["routes"]], tried)

    def test_view(self):
        """
        A route's row names its host, path, methods, conditions as written,
        terminal and filters.
        """
        specs = [
            RouteSpec(name="v2", path="/api", methods=frozenset({"POST", "GET"}), upstream="v2",
                      filters=("jwt", "limit"),
                      conditions=conditions("header", "X-Api-Version: 2", "!X-Old", "Accept: ~.*json")
                      + conditions("query", "beta") + conditions("cookie", "b=~1|2")),
            RouteSpec(name="files", path="/files/", host="*.example.com", static="/srv/www"),
            RouteSpec(name="hello", path="/hello", host="www.example.com", respond_status=204),
        ]
        self.assertEqual(route_table_view(specs), [
            {"host": "www.example.com", "kind": "exact", "routes": [
                {"name": "hello", "host": "www.example.com", "path": "/hello", "methods": None,
                 "conditions": {"header": [], "query": [], "cookie": []},
                 "terminal": {"type": "respond", "status": 204}, "filters": []}]},
            {"host": "*.example.com", "kind": "wildcard", "routes": [
                {"name": "files", "host": "*.example.com", "path": "/files/", "methods": None,
                 "conditions": {"header": [], "query": [], "cookie": []},
                 "terminal": {"type": "static", "directory": "/srv/www"}, "filters": []}]},
            {"host": None, "kind": "any", "routes": [
                {"name": "v2", "host": None, "path": "/api", "methods": ["GET", "POST"],
                 "conditions": {"header": ["x-api-version: 2", "!x-old", "accept: ~.*json"],
                                "query": ["beta"], "cookie": ["b=~1|2"]},
                 "terminal": {"type": "upstream", "upstreams": ["v2"]}, "filters": ["jwt", "limit"]}]},
        ])


    def test_view_of_split_mirror_and_aggregate(self):
        """
        A weighted route's row lists its versions, weights and split key, a
        mirrored route its shadow, and an aggregate route its parts.
        """
        text = "\n".join([
            "[gateway]", "workers = 1",
            "[listener:web]", "bind = 127.0.0.1:8080",
            "[upstream:v1]", "servers = 127.0.0.1:9001",
            "[upstream:v2]", "servers = 127.0.0.1:9002",
            "[route:canary]", "path = /api", "upstream = v1:90, v2:10", "split_key = header:X-User",
            "[route:copied]", "path = /copied", "upstream = v1", "mirror = v2 25%",
            "[route:board]", "path = /board",
            "aggregate = user: v1 GET /users/$query.id",
            "    recs: v2 GET /recs/$part.user.id optional",
            "part_timeout = 200ms", "deadline = 500ms", "on_part_error = omit",
        ])
        specs = parse_config_text(text, "gate.ini").routes
        rows = {row["name"]: row["terminal"] for row in route_table_view(specs)[-1]["routes"]}
        self.assertEqual(rows["canary"], {
            "type": "upstream", "upstreams": ["v1", "v2"], "weights": {"v1": 90, "v2": 10},
            "split_key": "header:x-user"})
        self.assertEqual(rows["copied"], {
            "type": "upstream", "upstreams": ["v1"], "mirror": {"upstream": "v2", "percent": 25.0}})
        self.assertEqual(rows["board"], {
            "type": "aggregate",
            "parts": [{"name": "user", "upstream": "v1", "optional": False},
                      {"name": "recs", "upstream": "v2", "optional": True}],
            "part_timeout": 0.2, "deadline": 0.5, "on_part_error": "omit"})


class ConditionStatusTests(SynchronousTestCase):
    """
    A route whose conditions do not hold is skipped entirely: it neither
    answers nor counts towards 405's Allow.
    """

    def test_method_not_allowed(self):
        """
        Only routes whose conditions hold give their methods to Allow.
        """
        routes = table(
            route("v2-write", "/api", methods=["POST", "PUT"], header=["X-V: 2"]),
            route("beta-delete", "/api", methods=["DELETE"], cookie=["beta=1"]),
            route("read", "/api", methods=["GET", "HEAD"]),
        )
        cases = [
            ({}, "PATCH", 405, ("GET", "HEAD")),
            ({b"x-v": [b"2"]}, "PATCH", 405, ("GET", "HEAD", "POST", "PUT")),
            ({b"x-v": [b"2"], b"cookie": [b"beta=1"]}, "PATCH", 405, ("DELETE", "GET", "HEAD", "POST", "PUT")),
            ({}, "POST", 405, ("GET", "HEAD")),
            ({b"x-v": [b"2"]}, "POST", 200, ()),
            ({b"cookie": [b"beta=1"]}, "DELETE", 200, ()),
        ]
        for headers, method, status, allowed in cases:
            with self.subTest(headers=headers, method=method):
                match = routes.match("", b"/api", method, headers)
                self.assertEqual((match.status, match.allowed), (status, allowed))

    def test_not_found(self):
        """
        When no route's conditions hold and no other route matches the
        path, the answer is 404, not 405.
        """
        routes = table(route("v2", "/api", methods=["GET"], header=["X-V: 2"]), route("a", "/a"))
        self.assertEqual(routes.match("", b"/api", "GET", {}).status, 404)
        self.assertEqual(routes.match("", b"/api", "POST", {b"x-v": [b"2"]}).status, 405)
        self.assertEqual(routes.match("", b"/api", "GET", {b"x-v": [b"2"]}).route, "v2")

    def test_explicit_methods(self):
        """
        TRACE still needs a route listing it, conditions or not.
        """
        routes = table(route("v2", "/api", header=["X-V: 2"]), route("trace", "/api", methods=["TRACE"]))
        self.assertEqual(routes.match("", b"/api", "TRACE", {b"x-v": [b"2"]}).route, "trace")
        self.assertEqual(routes.match("", b"/api", "TRACE", {}).route, "trace")


class FastPathTests(SynchronousTestCase):
    """
    Groups without conditioned routes are matched as before conditions
    existed: plain lists, no header or query access.
    """

    def test_plain_groups(self):
        """
        Only routes with conditions carry compiled conditions; the others'
        items hold none, so matching them tests no header or query.
        """
        routes = table(
            route("exact", "/", host="api.example.com"),
            route("exact-v2", "/", host="api.example.com", header=["X-V: 2"]),
            route("wild", "/", host="*.example.com"),
            route("root", "/"),
        )
        self.assertEqual([item[3] is None for item in routes._exact["api.example.com"]], [False, True])
        self.assertEqual([item[3] for item in routes._wildcard[".example.com"]], [None])
        self.assertEqual([item[3] for item in routes._any], [None])

    def test_match_made_once(self):
        """
        A route's match is made when the table is built: each lookup of
        the same route returns the same object.
        """
        routes = table(route("root", "/"), route("api", "/api", methods=["GET"]))
        first = routes.match("www.example.com", b"/api/x", "GET")
        self.assertEqual((first.route, first.status), ("api", 200))
        self.assertIs(routes.match("other.example.com", b"/api/y", "GET"), first)
        self.assertIs(routes.match("", b"/x", "GET"), routes.match("", b"/y", "POST"))

    def test_headers_untouched(self):
        """
        Matching in plain groups reads neither the headers nor the query,
        so any object may stand in for them.
        """
        routes = table(route("exact-v2", "/x", host="api.example.com", header=["X-V: 2"]), route("root", "/"))
        untouchable = object()
        self.assertEqual(routes.match("www.example.com", b"/x", "GET", untouchable, untouchable).route, "root")
        self.assertEqual(routes.match("api.example.com", b"/y", "GET", untouchable, untouchable).route, "root")

    def test_same_answers(self):
        """
        The table of RouteTableTests answers the same with headers and a
        query given as without them.
        """
        plain = RouteTableTests("test_table")
        plain.setUp()
        for host, path, method in [("", b"/api/v1/x", "GET"), ("admin.example.com", b"/api/v1/x", "POST"),
                                   ("", b"/ro/file", "DELETE"), ("", b"/nope", "TRACE")]:
            self.assertEqual(plain.table.match(host, path, method),
                             plain.table.match(host, path, method, {b"x": [b"1"]}, b"a=1"))
