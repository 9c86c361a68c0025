"""
Tests for gatelayer.http.split: the terminal of a route split over weighted
versions, in an in-memory gateway whose upstreams are fake terminals that
answer with their own name.
"""

import os
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.auth.testing import hmac_token
from gatelayer.chain import Exchange, ITerminal
from gatelayer.http.proxy import RouteProxy
from gatelayer.http.split import SplitTerminal, split_key_reader
from gatelayer.routing.split import WeightedRendezvous
from gatelayer.testing.exchange import raw_headers
from gatelayer.testing.server import InMemoryGateway, parse_response

CONFIG = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:v1]
servers = 10.0.0.1:80
[upstream:v2]
servers = 10.0.0.2:80
[route:by-user]
path = /user/
upstream = v1:90, v2:10
split_key = header:X-User
[route:by-cookie]
path = /cookie/
upstream = v1:50, v2:50
split_key = cookie:session
[route:by-ip]
path = /ip/
upstream = v1:50, v2:50
[route:plain]
path = /plain/
upstream = v1
[route:dark]
path = /dark/
upstream = v1:0, v2:1
"""


@implementer(ITerminal)
class NamedTerminal:
    """
    A fake upstream terminal: answers 200 with its upstream's name and
    counts what it served.
    """

    def __init__(self, name, route):
        self.name = name
        self.route = route
        self.served = []

    def serve(self, exchange):
        """
        Answer with the name.
        """
        self.served.append(exchange)
        exchange.send(200, [(b"content-type", b"text/plain")], self.name.encode("ascii"))


class NamedUpstream:
    """
    A fake of L{gatelayer.http.proxy.UpstreamTerminal}: one
    L{NamedTerminal} per route.
    """

    def __init__(self, name):
        self.name = name
        self.terminals = {}

    def for_route(self, route_spec):
        """
        The route's fake terminal.
        """
        terminal = self.terminals[route_spec.name] = NamedTerminal(self.name, route_spec.name)
        return terminal


class SplitGatewayTests(SynchronousTestCase):
    """
    Requests of a split route go to the version their key hashes to.
    """

    def setUp(self):
        self.upstreams = {"v1": NamedUpstream("v1"), "v2": NamedUpstream("v2")}
        self.gate = InMemoryGateway(CONFIG, upstreams=self.upstreams)

    def get(self, path, headers=b"", peer="127.0.0.1"):
        """
        The name of the version that answered C{GET path}.
        """
        response = self.gate.exchange(
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", peer=peer)
        status, _, body = parse_response(response)
        self.assertEqual(status, 200)
        return body.decode("ascii")

    def test_header_key_shares_and_stickiness(self):
        """
        2000 users on a 90/10 split: v2 gets 10% within 2 points, and each
        user gets the same version again.
        """
        seen = {}
        for i in range(2000):
            seen[i] = self.get(b"/user/a", b"X-User: user-%d\r\n" % (i,))
        share = Counter(seen.values())["v2"] / 2000
        self.assertTrue(0.08 <= share <= 0.12, share)
        for i in range(0, 2000, 37):
            self.assertEqual(self.get(b"/user/b", b"X-User: user-%d\r\n" % (i,)), seen[i])

    def test_same_key_as_rendezvous(self):
        """
        The version is the one the rendezvous hash of the key names (the
        same in every worker).
        """
        split = WeightedRendezvous((("v1", 90), ("v2", 10)))
        for user in [b"alice", b"bob", b"carol", b"dave", b"erin"]:
            self.assertEqual(self.get(b"/user/", b"X-User: " + user + b"\r\n"), split.name_for(user))

    def test_cookie_key(self):
        """
        The cookie's value is the key, wherever it is among the cookies.
        """
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        for session in [b"s1", b"s2", b"s3", b"s4", b"s5", b"s6"]:
            expected = split.name_for(session)
            for cookie in [b"session=" + session, b"a=1; session=" + session + b"; b=2"]:
                self.assertEqual(self.get(b"/cookie/", b"Cookie: " + cookie + b"\r\n"), expected)

    def test_missing_key_falls_back_to_ip(self):
        """
        Without the header or cookie, the client address is the key.
        """
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        for peer in ["192.0.2.%d" % (i,) for i in range(1, 12)]:
            expected = split.name_for(peer.encode("ascii"))
            self.assertEqual(self.get(b"/cookie/", peer=peer), expected)
            self.assertEqual(self.get(b"/cookie/", b"Cookie: other=1\r\n", peer=peer), expected)
            self.assertEqual(self.get(b"/ip/", peer=peer), expected)

    def test_ip_key_spreads_clients(self):
        """
        The default key, the client address, sends different clients to
        both versions.
        """
        answers = {self.get(b"/ip/", peer="198.51.100.%d" % (i,)) for i in range(1, 60)}
        self.assertEqual(answers, {"v1", "v2"})

    def test_weight_zero_version_unused(self):
        """
        A version of weight 0 gets nothing.
        """
        answers = {self.get(b"/dark/", b"X-User: %d\r\n" % (i,), peer="10.1.0.%d" % (i,))
                   for i in range(1, 50)}
        self.assertEqual(answers, {"v2"})

    def test_one_terminal_per_version_built_once(self):
        """
        Each version's terminal is built once, at load, for the route; a
        route with one upstream gets that upstream's terminal itself.
        """
        route = self.gate.gateway.table.match("x", b"/user/", "GET").route
        self.assertIsInstance(route.terminal, SplitTerminal)
        self.assertEqual([t.name for t in route.terminal.terminals], ["v1", "v2"])
        plain = self.gate.gateway.table.match("x", b"/plain/", "GET").route
        self.assertIs(plain.terminal, self.upstreams["v1"].terminals["plain"])

    def test_describe(self):
        """
        describe() gives the versions, weights and key as data.
        """
        route = self.gate.gateway.table.match("x", b"/user/", "GET").route
        verifyObject(ITerminal, route.terminal)
        self.assertEqual(route.terminal.describe(), {
            "versions": [{"upstream": "v1", "weight": 90}, {"upstream": "v2", "weight": 10}],
            "split_key": "header:x-user",
        })
        ip = self.gate.gateway.table.match("x", b"/ip/", "GET").route
        self.assertEqual(ip.terminal.describe()["split_key"], "ip")


class RealUpstreamTerminalTests(SynchronousTestCase):
    """
    With the worker's real upstream terminals, a single-upstream route is
    the plain proxy and a split route holds one proxy per version.
    """

    def test_terminals(self):
        """
        The plain route's terminal is a L{RouteProxy}; the split's versions
        are proxies on their own upstreams.
        """
        gate = InMemoryGateway(CONFIG, with_upstreams=True)
        plain = gate.gateway.table.match("x", b"/plain/", "GET").route.terminal
        self.assertIs(type(plain), RouteProxy)
        split = gate.gateway.table.match("x", b"/user/", "GET").route.terminal
        self.assertEqual([t.upstream.spec.name for t in split.terminals], ["v1", "v2"])


def exchange_for(headers=(), context=None, client_ip="203.0.113.9"):
    """
    An L{Exchange} with C{headers} (name, value) pairs and C{context}.
    """
    raw = raw_headers(headers)
    return Exchange(method=b"GET", path=b"/", query=b"", headers=raw, client_ip=client_ip,
                    context=context or {})


class SplitKeyReaderTests(SynchronousTestCase):
    """
    What each kind of split key reads from a request, and the fallback to
    the client address.
    """

    def test_table(self):
        """
        Each source gives its value; a missing or empty one gives the
        client address.
        """
        ip = b"203.0.113.9"
        cases = [
            (("ip", None), [], None, ip),
            (("ip", None), [(b"x-user", b"u1")], None, ip),
            (("header", "x-user"), [(b"X-User", b"u1")], None, b"u1"),
            (("header", "x-user"), [(b"x-user", b"u1"), (b"x-user", b"u2")], None, b"u1, u2"),
            (("header", "x-user"), [], None, ip),
            (("header", "x-user"), [(b"x-user", b"")], None, ip),
            (("cookie", "sid"), [(b"cookie", b"a=1; sid=abc")], None, b"abc"),
            (("cookie", "sid"), [(b"cookie", b'sid="q"')], None, b"q"),
            (("cookie", "sid"), [(b"cookie", b"sidx=1; a=sid")], None, ip),
            (("cookie", "sid"), [(b"cookie", b"sid=")], None, ip),
            (("cookie", "sid"), [(b"cookie", b";;;=")], None, ip),
            (("jwt", "sub"), [], {"jwt.claims": {"sub": "alice"}}, b"alice"),
            (("jwt", "tenant"), [], {"jwt.claims": {"tenant": 42}}, b"42"),
            (("jwt", "groups"), [], {"jwt.claims": {"groups": ["b", "a"]}}, b'["b","a"]'),
            (("jwt", "sub"), [], {"jwt.claims": {}}, ip),
            (("jwt", "sub"), [], {"jwt.claims": {"sub": ""}}, ip),
            (("jwt", "sub"), [], {}, ip),
            (("jwt", "sub"), [(b"x-sub", b"forged")], None, ip),
        ]
        for key, headers, context, expected in cases:
            with self.subTest(key=key, headers=headers, context=context):
                self.assertEqual(split_key_reader(key)(exchange_for(headers, context)), expected)


JWT_CONFIG = """
[listener:web]
bind = 127.0.0.1:8080
[upstream:v1]
servers = 10.0.0.1:80
[upstream:v2]
servers = 10.0.0.2:80
[filter:auth]
type = jwt
secret_file = {secret}
[route:by-subject]
path = /
filters = auth
upstream = v1:50, v2:50
split_key = jwt:sub
"""


class JwtSplitTests(SynchronousTestCase):
    """
    C{split_key = jwt:sub}: the subject of the token the route's jwt filter
    validated picks the version; nothing a client sends besides the token
    does.
    """

    def setUp(self):
        self.secret = b"k" * 32
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(self.secret)
        self.upstreams = {"v1": NamedUpstream("v1"), "v2": NamedUpstream("v2")}
        self.gate = InMemoryGateway(JWT_CONFIG.format(secret=path), upstreams=self.upstreams)

    def get(self, subject, extra=b""):
        """
        The status and body of a request with a token for C{subject}.
        """
        token = hmac_token(self.secret, {"alg": "HS256", "typ": "JWT"},
                           {"sub": subject, "exp": 4102444800})
        response = self.gate.exchange(b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
                                      + b"\r\n" + extra + b"\r\n")
        status, _, body = parse_response(response)
        return status, body.decode("ascii", "replace")

    def test_subject_picks_version(self):
        """
        Each subject goes to the version its hash names, every time, and
        a forged header or cookie changes nothing.
        """
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        subjects = ["user-%d" % (i,) for i in range(40)]
        for subject in subjects:
            expected = split.name_for(subject.encode("utf-8"))
            self.assertEqual(self.get(subject), (200, expected))
            self.assertEqual(self.get(subject, b"X-Sub: other\r\nCookie: sub=other\r\n"), (200, expected))
        self.assertEqual({split.name_for(s.encode("utf-8")) for s in subjects}, {"v1", "v2"})

    def test_refused_token_reaches_no_version(self):
        """
        Without a valid token the jwt filter answers 401 and no version is
        asked.
        """
        response = self.gate.exchange(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(parse_response(response)[0], 401)
        served = [len(t.served) for u in self.upstreams.values() for t in u.terminals.values()]
        self.assertEqual(served, [0, 0])


class WeightChangeTests(SynchronousTestCase):
    """
    New weights are a new configuration: the gateway built from it makes
    new split terminals, and only clients moving to the version that gained
    weight change version.
    """

    def test_rebuilt_config_moves_few_clients(self):
        """
        From 90/10 to 80/20, about 10% of users move, all of them to v2.
        """
        def versions(config):
            gate = InMemoryGateway(config, upstreams={"v1": NamedUpstream("v1"), "v2": NamedUpstream("v2")})
            answers = []
            for i in range(1000):
                response = gate.exchange(b"GET /user/ HTTP/1.1\r\nHost: x\r\nX-User: u%d\r\n\r\n" % (i,))
                answers.append(parse_response(response)[2].decode("ascii"))
            return answers
        before = versions(CONFIG)
        after = versions(CONFIG.replace("upstream = v1:90, v2:10", "upstream = v1:80, v2:20"))
        moves = [(a, b) for a, b in zip(before, after) if a != b]
        self.assertEqual(set(moves), {("v1", "v2")})
        self.assertTrue(70 <= len(moves) <= 130, len(moves))
