"""
Tests for gatelayer.routing: which route a request gets.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import RouteSpec
from gatelayer.routing import RouteTable


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
