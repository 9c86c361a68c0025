"""
Tests for the pure parts of OpenAPI request checking
(L{gatelayer.filters.openapi_match}): path template matching, query and
cookie parsing, coercion of strings to the schema's types.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.filters.openapi_match import (
    MAX_QUERY_PAIRS, PathMatcher, coerce, decode, parse_cookies, parse_query,
)


class PathMatcherTests(SynchronousTestCase):
    """
    Paths match templates segment by segment, literal segments first.
    """

    def setUp(self):
        templates = ["/users", "/users/{id}", "/users/me", "/users/{id}/posts/{post}", "/users/me/posts/latest",
                     "/files/{name}.json", "/files/{name}", "/a/{x}-{y}", "/", "/users/{id}/"]
        self.matcher = PathMatcher([(t, t) for t in templates])

    def test_table(self):
        """
        Each path finds its template and raw values, or nothing: a literal
        segment beats a templated one (also where the literal branch fails
        deeper down), a variable never spans a C{/} and never matches an
        empty segment, a trailing slash is significant.
        """
        table = [
            ("/users", ("/users", {})),
            ("/users/7", ("/users/{id}", {"id": "7"})),
            ("/users/me", ("/users/me", {})),
            ("/users/me/posts/latest", ("/users/me/posts/latest", {})),
            ("/users/me/posts/3", ("/users/{id}/posts/{post}", {"id": "me", "post": "3"})),
            ("/users/7/", ("/users/{id}/", {"id": "7"})),
            ("/users/", None),
            ("/users/7/8", None),
            ("/users//posts/1", None),
            ("/files/a.json", ("/files/{name}.json", {"name": "a"})),
            ("/files/a.txt", ("/files/{name}", {"name": "a.txt"})),
            ("/a/1-2-3", ("/a/{x}-{y}", {"x": "1", "y": "2-3"})),
            ("/a/-", None),
            ("/", ("/", {})),
            ("/users/%6De", ("/users/me", {})),
            ("/users/a%2Fb", ("/users/{id}", {"id": "a%2Fb"})),
            ("/users/%ff", ("/users/{id}", {"id": "%ff"})),
            ("/nothing", None),
        ]
        for path, expected in table:
            self.assertEqual(self.matcher.match(path), expected, path)

    def test_many_templates(self):
        """
        A thousand templates of the same shape but different literals each
        find their own.
        """
        matcher = PathMatcher([(f"/t{i}/{{id}}/x{i}", i) for i in range(1000)])
        self.assertEqual(matcher.match("/t512/abc/x512"), (512, {"id": "abc"}))
        self.assertIsNone(matcher.match("/t512/abc/x513"))


class ParsingTests(SynchronousTestCase):
    """
    Query strings and cookies are split and percent-decoded as UTF-8.
    """

    def test_query_table(self):
        """
        Repeated names keep every value in order; C{+} is a space; empty
        pairs are skipped; a name without C{=} has an empty value.
        """
        table = [
            ("", {}),
            ("a=1&a=2&b", {"a": ["1", "2"], "b": [""]}),
            ("q=caf%C3%A9+au+lait&&x=%26", {"q": ["café au lait"], "x": ["&"]}),
            ("%61=1", {"a": ["1"]}),
        ]
        for query, expected in table:
            self.assertEqual(parse_query(query), expected, query)

    def test_query_refused(self):
        """
        A query that is not UTF-8, or with too many pairs, is refused.
        """
        for query, message in [("a=%ff", "not percent-encoded UTF-8"), ("%c3=1", "not percent-encoded UTF-8"),
                               ("a=1&" * MAX_QUERY_PAIRS + "a=1", "more than 1000")]:
            with self.assertRaises(ValueError) as caught:
                parse_query(query)
            self.assertIn(message, str(caught.exception))

    def test_cookies(self):
        """
        Cookie lines are split on C{;}, values unquoted and decoded.
        """
        self.assertEqual(parse_cookies(['a=1; b="x%20y"', "a=2;junk; =v"]), {"a": ["1", "2"], "b": ["x y"]})
        self.assertRaises(ValueError, parse_cookies, ["a=%ff"])

    def test_decode(self):
        """
        Percent-decoding is strict UTF-8; C{+} is a space only when asked.
        """
        self.assertEqual((decode("a+b"), decode("a+b", True), decode("%E2%82%AC")), ("a+b", "a b", "€"))
        self.assertRaises(ValueError, decode, "%80")


class CoerceTests(SynchronousTestCase):
    """
    Strings become the first JSON type of the schema they spell.
    """

    def test_table(self):
        """
        Integers, numbers and booleans are recognized only in their JSON
        spelling; what is not stays a string (the validation then names
        the type).
        """
        table = [
            ("12", ("integer",), 12),
            ("-3", ("integer", "null"), -3),
            ("012", ("integer",), "012"),
            ("1.5", ("integer",), "1.5"),
            ("1.5", ("number",), 1.5),
            ("2", ("number",), 2),
            ("1e3", ("number",), 1000.0),
            ("1e999", ("number",), "1e999"),
            ("NaN", ("number",), "NaN"),
            ("9" * 40, ("integer",), "9" * 40),
            ("true", ("boolean",), True),
            ("True", ("boolean",), "True"),
            ("7", ("string",), "7"),
            ("7", (), "7"),
            ("7", ("string", "integer"), 7),
        ]
        for text, types, expected in table:
            value = coerce(text, types)
            self.assertEqual((value, type(value)), (expected, type(expected)), (text, types))
