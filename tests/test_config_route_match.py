"""
Tests for gatelayer.config.route_match: the match_header, match_query and
match_cookie keys of a route, parsed into conditions at config load, and
the errors a bad condition gets.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.route_match import MatchCondition
from gatelayer.testing.config import config_problems

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:v1]
servers = 127.0.0.1:9001
[upstream:v2]
servers = 127.0.0.1:9002
[route:v1]
path = /api
upstream = v1
"""


def parse(text):
    return parse_config_text(text, "/etc/gate/gate.ini", cpu_count=1)


def route_section(**keys):
    """
    A C{[route:v2]} section on C{/api} with C{keys} (a value may be a list:
    one line each, as INI continuation lines).
    """
    lines = ["[route:v2]", "path = /api", "upstream = v2"]
    for key, value in keys.items():
        if isinstance(value, (list, tuple)):
            value = "\n    ".join(value)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


class ParseTests(SynchronousTestCase):
    """
    Good conditions become MatchConditions, in line order.
    """

    def test_header(self):
        """
        Name: value, Name, !Name and Name: ~regex; names in lower case,
        spaces around the colon ignored, blank lines skipped.
        """
        config = parse(BASE + route_section(match_header=[
            "X-Api-Version: 2", "", "X-Beta", "!X-Legacy", "Accept :  ~application/(json|xml)", "X-Empty:~"]))
        conditions = config.routes[1].conditions
        self.assertEqual(conditions[:3], (
            MatchCondition("header", b"x-api-version", "equals", b"2"),
            MatchCondition("header", b"x-beta", "present"),
            MatchCondition("header", b"x-legacy", "absent"),
        ))
        self.assertEqual((conditions[3].test, conditions[3].value.pattern), ("regex", b"application/(json|xml)"))
        self.assertEqual((conditions[4].test, conditions[4].value.pattern), ("regex", b""))
        self.assertEqual([c.text for c in conditions],
                         ["x-api-version: 2", "x-beta", "!x-legacy", "accept: ~application/(json|xml)", "x-empty: ~"])

    def test_query_and_cookie(self):
        """
        name=value, name, !name and name=~regex; values keep their case and
        what follows the first =.
        """
        config = parse(BASE + route_section(
            match_query=["version=2", "debug", "!legacy", "q=a=b", "filter[x]=Yes"],
            match_cookie=["beta=1", "session", "!opt_out", "ab=~[AB]"]))
        texts = [(c.source, c.text) for c in config.routes[1].conditions]
        self.assertEqual(texts, [
            ("query", "version=2"), ("query", "debug"), ("query", "!legacy"), ("query", "q=a=b"),
            ("query", "filter[x]=Yes"),
            ("cookie", "beta=1"), ("cookie", "session"), ("cookie", "!opt_out"), ("cookie", "ab=~[AB]"),
        ])
        self.assertEqual(config.routes[1].conditions[3].value, b"a=b")

    def test_utf8_values(self):
        """
        Values are compared as UTF-8 bytes.
        """
        config = parse(BASE + route_section(match_query="city=Zürich"))
        self.assertEqual(config.routes[1].conditions[0].value, "Zürich".encode("utf-8"))

    def test_none(self):
        """
        A route without the keys has no conditions.
        """
        self.assertEqual(parse(BASE).routes[0].conditions, ())


class ConditionErrorTests(SynchronousTestCase):
    """
    Bad conditions are refused at load (and by --check), each naming the
    file, section, key and line.
    """

    cases = [
        (dict(match_header="X Api: 2"), "match_header: 'X Api: 2' has 'X Api', which is not a header name"),
        (dict(match_header=": 2"), "match_header: ': 2' has no header name"),
        (dict(match_header="!"), "match_header: '!' has no header name"),
        (dict(match_header="X-Api-Version:"), "match_header: 'X-Api-Version:' has no value after ':'"),
        (dict(match_header="X-A: ~("), "match_header: 'X-A: ~(' has a bad regular expression '('"),
        (dict(match_header="!X-A: 1"),
         "match_header: '!X-A: 1' tests that the header is absent, which takes no value"),
        (dict(match_header="Host: api.example.com"), "cannot test host: the canonical host is routed on with host"),
        (dict(match_header="Cookie: a=1"), "cannot test cookie: use match_cookie"),
        (dict(match_header="Ümlaut: 1"), "has 'Ümlaut', which is not a header name"),
        (dict(match_header="X(A): 1"), "has 'X(A)', which is not a header name"),
        (dict(match_header=["X-A: 1", "x-a: 2"]), "match_header: 'x-a: 2' names a header that an earlier line"),
        (dict(match_header=["X-A", "!X-A"]), "match_header: '!X-A' names a header that an earlier line"),
        (dict(match_query="=2"), "match_query: '=2' has no query parameter name"),
        (dict(match_query="a b=2"), "has 'a b', which is not a query parameter name"),
        (dict(match_query="a&b=2"), "has 'a&b', which is not a query parameter name"),
        (dict(match_query="a%20b=2"), "has 'a%20b', which is not a query parameter name (write it decoded"),
        (dict(match_query="version="), "match_query: 'version=' has no value after '='"),
        (dict(match_query="v=~[1-"), "match_query: 'v=~[1-' has a bad regular expression"),
        (dict(match_query=["v=1", "v=2"]), "match_query: 'v=2' names a query parameter that an earlier line"),
        (dict(match_cookie="be ta=1"), "has 'be ta', which is not a cookie name"),
        (dict(match_cookie="beta=1;x=2"), "match_cookie: 'beta=1;x=2' has a value with a control character or ;"),
        (dict(match_cookie="beta="), "match_cookie: 'beta=' has no value after '='"),
        (dict(match_cookie=["beta", "beta=1"]), "match_cookie: 'beta=1' names a cookie that an earlier line"),
        (dict(match_header="X-Consumer: alice"), "match_header: 'x-consumer' is an identity header"),
        (dict(match_header="X_Consumer"), "match_header: 'x_consumer' is an identity header"),
        (dict(match_header="X_Api_Version: 2"),
         "match_header: 'x_api_version' has an underscore, and [gateway] underscore_headers = drop"),
        (dict(match_headers="X-A: 1"), "[route:v2] match_headers: is not a known key"),
    ]

    def test_cases(self):
        """
        Each bad condition is reported with file, section, key and line.
        """
        for keys, expected in self.cases:
            with self.subTest(keys=keys):
                text = config_problems(self, BASE + route_section(**keys), "/etc/gate/gate.ini")
                self.assertIn("/etc/gate/gate.ini [route:v2] ", text)
                self.assertIn(expected, text)

    def test_every_bad_line(self):
        """
        Every bad line of a key is reported, the good ones are not.
        """
        error = self.assertRaises(ConfigError, parse, BASE + route_section(
            match_header=["X-A: 1", "X B", "X-C: ~(", "X-D"]))
        self.assertEqual(error.problems, [
            "/etc/gate/gate.ini [route:v2] match_header: 'X B' has 'X B', which is not a header name "
            "(letters, digits and !#$%&'*+.^_`|~-)",
            "/etc/gate/gate.ini [route:v2] match_header: 'X-C: ~(' has a bad regular expression '(': "
            "missing ), unterminated subpattern at position 0",
        ])

    def test_claim_header(self):
        """
        A header a JWT filter forwards a claim in is an identity header: a
        condition on it could never hold.
        """
        text = BASE + route_section(match_header="X-User: alice") + """
[filter:jwt]
type = jwt
secret_file = /etc/hostname
forward_claims = sub:X-User
"""
        self.assertIn("/etc/gate/gate.ini [route:v2] match_header: 'x-user' is an identity header",
                      config_problems(self, text, "/etc/gate/gate.ini"))

    def test_underscores_allowed(self):
        """
        With underscore_headers = allow, an underscore name may be tested.
        """
        config = parse("[gateway]\nunderscore_headers = allow\n" + BASE + route_section(match_header="X_A: 1"))
        self.assertEqual(config.routes[1].conditions[0].name, b"x_a")


class DuplicateRouteTests(SynchronousTestCase):
    """
    Two routes are duplicates only when their host, path, methods and
    conditions are all the same (conditions in any order).
    """

    def test_conditions_distinguish(self):
        """
        The same host, path and methods with different conditions are two
        routes.
        """
        for keys in [dict(match_header="X-A: 1"), dict(match_query="a"), dict(match_cookie="a=~1")]:
            with self.subTest(keys=keys):
                self.assertEqual(len(parse(BASE + route_section(**keys)).routes), 2)

    def test_same_conditions(self):
        """
        The same conditions, in another order or spelling, are a duplicate.
        """
        text = (BASE + route_section(match_header=["X-A: 1", "X-B"], match_cookie="c=~x+")
                + route_section(match_cookie="c=~x+", match_header=["x-b", "x-a: 1"]).replace("v2]", "v3]"))
        error = self.assertRaises(ConfigError, parse, text)
        self.assertEqual(error.problems, [
            "/etc/gate/gate.ini [route:v3]: matches exactly what [route:v2] matches "
            "(same host, path, methods and conditions)"])

    def test_unconditioned_duplicate(self):
        """
        Two routes without conditions on the same host, path and methods
        are still a duplicate.
        """
        error = self.assertRaises(ConfigError, parse, BASE + route_section())
        self.assertTrue(re.search(r"\[route:v2\]: matches exactly what \[route:v1\] matches", error.problems[0]))
