"""
Tests for a route's upstream keys in gate.ini: C{upstream} with weighted
versions, C{split_key} and C{mirror} (gatelayer.config.route_upstreams and
the loader around it).
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.testing.config import config_problems

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:v1]
servers = 127.0.0.1:9001
[upstream:v2]
servers = 127.0.0.1:9002
[upstream:shadow]
servers = 127.0.0.1:9003
[filter:auth]
type = jwt
secret_file = {secret}
[filter:cors]
type = cors
origins = https://app.example
"""


class RouteUpstreamTests(SynchronousTestCase):
    """
    Good values become the route's spec; bad ones are refused naming
    [route:NAME] and the key.
    """

    def setUp(self):
        secret = os.path.abspath(self.mktemp())
        with open(secret, "wb") as f:
            f.write(b"s" * 32)
        self.base = BASE.format(secret=secret)

    def route(self, body):
        """
        The spec of C{[route:r]} with C{body}.
        """
        config = parse_config_text(self.base + "[route:r]\npath = /\n" + body, "/etc/gate/gate.ini")
        return config.routes[0]

    def problems(self, body):
        """
        The problems (one string) of C{[route:r]} with C{body}.
        """
        return config_problems(self, self.base + "[route:r]\npath = /\n" + body, "/etc/gate/gate.ini")

    def test_single_upstream_unchanged(self):
        """
        C{upstream = NAME} is one upstream, as always: no split, no mirror.
        """
        spec = self.route("upstream = v1\n")
        self.assertEqual((spec.upstream, spec.split, spec.split_key, spec.mirror, spec.terminal),
                         ("v1", (), ("ip", None), None, "upstream"))

    def test_split_parsed(self):
        """
        Versions with weights become C{split}, in order; C{upstream} is
        L{None}; the default key is the client address.
        """
        for text, split in [
            ("v1:90, v2:10", (("v1", 90), ("v2", 10))),
            ("v1:90,v2:10", (("v1", 90), ("v2", 10))),
            ("v2 : 1 , v1 : 0", (("v2", 1), ("v1", 0))),
            ("v1:100, v2:0, shadow:0", (("v1", 100), ("v2", 0), ("shadow", 0))),
        ]:
            with self.subTest(text=text):
                spec = self.route(f"upstream = {text}\n")
                self.assertEqual((spec.upstream, spec.split, spec.split_key, spec.terminal),
                                 (None, split, ("ip", None), "upstream"))

    def test_one_weighted_version_is_plain(self):
        """
        A single C{NAME:WEIGHT} is the same as C{NAME}: no split work per
        request.
        """
        spec = self.route("upstream = v1:100\n")
        self.assertEqual((spec.upstream, spec.split), ("v1", ()))

    def test_split_keys(self):
        """
        Each kind of split key is read, header names lower-cased.
        """
        for text, key, extra in [
            ("ip", ("ip", None), ""),
            ("IP", ("ip", None), ""),
            ("header:X-User", ("header", "x-user"), ""),
            ("cookie:session_id", ("cookie", "session_id"), ""),
            ("jwt:sub", ("jwt", "sub"), "filters = auth\n"),
            ("jwt:tenant", ("jwt", "tenant"), "filters = cors, auth\n"),
        ]:
            with self.subTest(text=text):
                spec = self.route(f"upstream = v1:90, v2:10\nsplit_key = {text}\n{extra}")
                self.assertEqual(spec.split_key, key)

    def test_mirror(self):
        """
        C{mirror = NAME [P%]} names the shadow and the share copied (100%
        by default), with one upstream or a split.
        """
        for body, mirror in [
            ("upstream = v1\nmirror = shadow\n", ("shadow", 100.0)),
            ("upstream = v1\nmirror = shadow 10%\n", ("shadow", 10.0)),
            ("upstream = v1\nmirror = shadow 0.5%\n", ("shadow", 0.5)),
            ("upstream = v1:90, v2:10\nmirror = shadow 100%\n", ("shadow", 100.0)),
            ("upstream = v1\nmirror = v1\n", ("v1", 100.0)),
        ]:
            with self.subTest(body=body):
                spec = self.route(body)
                self.assertEqual((spec.mirror, spec.mirror_percent), mirror)

    def test_bad_values(self):
        """
        Each bad value is refused with file, section, key and what is wrong.
        """
        cases = [
            ("upstream = v1:90, v2\n", "[route:r] upstream: 'v1:90, v2' has 'v2', which is not NAME:WEIGHT"),
            ("upstream = v1:90, v2:ten\n", "has 'v2:ten', whose weight is not a whole number"),
            ("upstream = v1:90, v2:-5\n", "has 'v2:-5', whose weight is not a whole number"),
            ("upstream = v1:1.5, v2:1\n", "has 'v1:1.5', whose weight is not a whole number"),
            ("upstream = v1:90, v2:10000001\n", "whose weight is not a whole number from 0 to 1000000"),
            ("upstream = v1:90, v1:10\n", "[route:r] upstream: 'v1:90, v1:10' names 'v1' twice"),
            ("upstream = v1:0, v2:0\n", "gives every version weight 0"),
            ("upstream = v1:0\n", "gives every version weight 0"),
            ("upstream = :5, v2:1\n", "has ':5', which is not NAME:WEIGHT"),
            ("upstream = ,\n", "[route:r] upstream: ',' names no upstream"),
            ("upstream = v1:90, v3:10\n", "[route:r] upstream: no section [upstream:v3]"),
            ("upstream = v1\nsplit_key = header:X-User\n",
             "[route:r] split_key: only applies with weighted versions"),
            ("upstream = v1:90, v2:10\nsplit_key = client\n",
             "[route:r] split_key: 'client' is not ip, header:NAME, cookie:NAME or jwt:CLAIM"),
            ("upstream = v1:90, v2:10\nsplit_key = header:\n", "'header:' needs a name after header:"),
            ("upstream = v1:90, v2:10\nsplit_key = header:X User\n", "has 'X User', which is not a header name"),
            ("upstream = v1:90, v2:10\nsplit_key = cookie:a;b\n", "has 'a;b', which is not a cookie name"),
            ("upstream = v1:90, v2:10\nsplit_key = ip:x\n", "'ip:x' takes no name"),
            ("upstream = v1:90, v2:10\nsplit_key = jwt:sub\n",
             "[route:r] split_key: 'jwt:sub' needs a jwt filter in the route's filters"),
            ("upstream = v1:90, v2:10\nsplit_key = jwt:sub\nfilters = cors\n",
             "'jwt:sub' needs a jwt filter"),
            ("upstream = v1\nmirror = nowhere\n", "[route:r] mirror: no section [upstream:nowhere]"),
            ("upstream = v1\nmirror = shadow 0%\n", "[route:r] mirror: 'shadow 0%' has '0%': the share must be over 0%"),
            ("upstream = v1\nmirror = shadow 101%\n", "the share must be over 0% and at most 100%"),
            ("upstream = v1\nmirror = shadow 10\n", "has '10', which is not a percentage like 10%"),
            ("upstream = v1\nmirror = shadow 10% x\n", "is not NAME or NAME P%"),
            ("respond = 200\nmirror = shadow\n", "[route:r] mirror: only applies to a route with upstream"),
            ("respond = 200\nsplit_key = ip\n", "[route:r] split_key: only applies with weighted versions"),
        ]
        for body, expected in cases:
            with self.subTest(body=body):
                text = self.problems(body)
                self.assertIn(expected, text)
                self.assertEqual(len(text.splitlines()), 1, text)
                self.assertIn("/etc/gate/gate.ini", text)
