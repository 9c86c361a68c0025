"""
Tests for gatelayer.http.origin and gatelayer.config.route_origin: rewriting
URLs that name an upstream server, hiding response headers, and the route
keys that ask for both.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config.model import RouteSpec, ServerSpec, UpstreamSpec
from gatelayer.http.headers import downstream_headers
from gatelayer.http.origin import origin_policy, rewrite_refresh, rewrite_url
from gatelayer.testing.config import config_problems
from gatelayer.testing.server import InMemoryGateway, accept_upstream, feed, parse_response, with_server

SERVERS = frozenset([(b"10.0.0.1", 8080), (b"app.internal", 80), (b"::1", 9000)])
CLIENT = b"api.example.com"


def _rewrite(value, scheme=b"https", authority=CLIENT, prefix=b""):
    return rewrite_url(value, SERVERS, scheme, authority, prefix)


def _config(route_keys):
    text = (
        "[listener:web]\nbind = 127.0.0.1:8080\n"
        "[upstream:app]\nservers = 10.0.0.1:8080\n"
        "[route:app]\npath = /\nupstream = app\n" + route_keys)
    return parse_config_text(text, "/etc/gate/gate.ini", cpu_count=1)


class RewriteUrlTests(SynchronousTestCase):
    """
    L{rewrite_url}: what points at a server gets the client's scheme and
    Host; anything else is returned as it came.
    """

    def test_rewritten(self):
        """
        The server's own address, in each spelling that names it, becomes
        the client's scheme and authority; path, query and fragment stay.
        """
        cases = [
            (b"http://10.0.0.1:8080/login?next=/a#top", b"https://api.example.com/login?next=/a#top"),
            (b"http://10.0.0.1:8080", b"https://api.example.com"),
            (b"http://10.0.0.1:8080?x=1", b"https://api.example.com?x=1"),
            (b"HTTP://10.0.0.1:8080/x", b"https://api.example.com/x"),
            (b"http://APP.Internal/x", b"https://api.example.com/x"),
            (b"http://app.internal:80/x", b"https://api.example.com/x"),
            (b"http://app.internal./x", b"https://api.example.com/x"),
            (b"http://[::1]:9000/x", b"https://api.example.com/x"),
            (b"http://[0:0:0:0:0:0:0:1]:9000/x", b"https://api.example.com/x"),
            (b"https://10.0.0.1:8080/x", b"https://api.example.com/x"),
            (b"http://10.0.0.1:8080//evil.example/", b"https://api.example.com//evil.example/"),
        ]
        for value, expected in cases:
            self.assertEqual(_rewrite(value), expected, value)

    def test_scheme_relative(self):
        """
        A scheme-relative URL is resolved with the client's scheme (its
        port defaults from it) and stays scheme-relative.
        """
        self.assertEqual(_rewrite(b"//10.0.0.1:8080/x"), b"//api.example.com/x")
        self.assertEqual(_rewrite(b"//app.internal/x", scheme=b"http"), b"//api.example.com/x")
        # Over https, //app.internal means port 443: not the server.
        self.assertEqual(_rewrite(b"//app.internal/x", scheme=b"https"), b"//app.internal/x")

    def test_client_authority_and_scheme(self):
        """
        The client's non-default port and plain http are what it gets back.
        """
        self.assertEqual(_rewrite(b"http://10.0.0.1:8080/x", b"http", b"gw.example:8443"),
                         b"http://gw.example:8443/x")

    def test_prefix_put_back(self):
        """
        With strip_prefix, the stripped prefix goes back in front of the
        path (a URL without a path gets the prefix and a slash).
        """
        for value, expected in [
                (b"http://10.0.0.1:8080/login", b"https://api.example.com/api/login"),
                (b"http://10.0.0.1:8080", b"https://api.example.com/api/"),
                (b"http://10.0.0.1:8080?q", b"https://api.example.com/api/?q"),
                (b"http://evil.example/login", b"http://evil.example/login")]:
            self.assertEqual(_rewrite(value, prefix=b"/api"), expected, value)

    def test_hostile_left_alone(self):
        """
        Values that only look like a server, relative references, other
        ports and schemes, userinfo tricks and malformed authorities are
        returned unchanged (the same object): never an open redirect, never
        a guess.
        """
        hostile = [
            b"http://10.0.0.1:8080@evil.example/",
            b"http://user@10.0.0.1:8080/",
            b"http://10.0.0.1:8080\\@evil.example/",
            b"http://10.0.0.1:8080%40evil.example/",
            b"http://10.0.0.1:8081/x",
            b"http://10.0.0.1/x",
            b"http://10.0.0.1:08080x/",
            b"http://10.0.0.1.evil.example:8080/",
            b"http://evil.example/10.0.0.1:8080/",
            b"http://app.internal:8080/x",
            b"https://app.internal/x",
            b"ftp://10.0.0.1:8080/x",
            b"http:/10.0.0.1:8080/x",
            b"http:10.0.0.1:8080/x",
            b"/login",
            b"login",
            b"?x=http://10.0.0.1:8080/",
            b"//evil.example/x",
            b"///10.0.0.1:8080/x",
            b"http://[::1]/x",
            b"http://[::1:9000/x",
            b"http://[::g]:9000/x",
            b"http://::1:9000/x",
            b"http:// 10.0.0.1:8080/x",
            b"http://10.0.0.1:8080 /x",
            b"http://10.0.0.1:123456/x",
            b"",
            b"javascript://10.0.0.1:8080/%0aalert(1)",
        ]
        for value in hostile:
            self.assertIs(_rewrite(value), value, value)


class RewriteRefreshTests(SynchronousTestCase):
    """
    L{rewrite_refresh}: the URL of a C{delay; url=...} value.
    """

    def test_table(self):
        """
        The delay, separator, C{url=} spelling and quotes are kept; only a
        URL naming a server changes.
        """
        cases = [
            (b"5; url=http://10.0.0.1:8080/x", b"5; url=https://api.example.com/x"),
            (b"0;URL=http://10.0.0.1:8080/x", b"0;URL=https://api.example.com/x"),
            (b"3, http://10.0.0.1:8080/x", b"3, https://api.example.com/x"),
            (b"1.5; url='http://10.0.0.1:8080/x'", b"1.5; url='https://api.example.com/x'"),
            (b'2; url="http://10.0.0.1:8080/x"', b'2; url="https://api.example.com/x"'),
            (b"5", b"5"),
            (b"5; url=/x", b"5; url=/x"),
            (b"5; url=http://10.0.0.1:8080@evil.example/", b"5; url=http://10.0.0.1:8080@evil.example/"),
            (b"soon; url=http://10.0.0.1:8080/x", b"soon; url=http://10.0.0.1:8080/x"),
            (b"5; url='http://10.0.0.1:8080/x", b"5; url='http://10.0.0.1:8080/x"),
        ]
        for value, expected in cases:
            self.assertEqual(rewrite_refresh(value, SERVERS, b"https", CLIENT), expected, value)


class DownstreamOriginTests(SynchronousTestCase):
    """
    L{downstream_headers} with a route's policy: hidden headers removed,
    URL headers rewritten, the rest as without a policy.
    """

    def _policy(self, **route):
        upstream = UpstreamSpec(name="app", servers=(ServerSpec("10.0.0.1", 8080), ServerSpec("::1", 80)))
        return origin_policy(upstream, RouteSpec(name="r", path="/", upstream="app", **route))

    def test_no_policy_when_nothing_to_do(self):
        """
        A route that neither rewrites nor hides has no policy: its
        responses take the plain path.
        """
        self.assertIsNone(self._policy(rewrite_location=False))

    def test_rewrite_and_hide(self):
        """
        Location, Content-Location and Refresh are rewritten, names in
        hide_headers removed whatever their case, hop-by-hop still dropped.
        """
        policy = self._policy(hide_headers=frozenset([b"x-powered-by", b"server"]))
        out = downstream_headers([
            (b"Location", b"http://10.0.0.1:8080/a"), (b"X-Powered-By", b"PHP/5"),
            (b"server", b"app/1"), (b"Content-Location", b"http://10.0.0.1:8080/b"),
            (b"Refresh", b"1; url=http://10.0.0.1:8080/c"), (b"Connection", b"x-hop"),
            (b"X-Hop", b"1"), (b"Content-Length", b"0"), (b"X-Other", b"http://10.0.0.1:8080/"),
            (b"Location", b"http://[0::1]/v6")],
            policy, "http", b"gw.example:8080")
        self.assertEqual(out, [
            (b"Location", b"http://gw.example:8080/a"),
            (b"Content-Location", b"http://gw.example:8080/b"),
            (b"Refresh", b"1; url=http://gw.example:8080/c"),
            (b"Content-Length", b"0"), (b"X-Other", b"http://10.0.0.1:8080/"),
            (b"Location", b"http://gw.example:8080/v6")])

    def test_rewrite_off(self):
        """
        rewrite_location = no relays Location as sent, still hiding.
        """
        policy = self._policy(rewrite_location=False, hide_headers=frozenset([b"x-powered-by"]))
        out = downstream_headers([(b"Location", b"http://10.0.0.1:8080/a"), (b"X-Powered-By", b"x")],
                                 policy, "http", b"gw.example")
        self.assertEqual(out, [(b"Location", b"http://10.0.0.1:8080/a")])

    def test_no_client_host(self):
        """
        A client that sent no Host (HTTP/1.0) has no authority to put in:
        the Location is relayed as sent.
        """
        out = downstream_headers([(b"Location", b"http://10.0.0.1:8080/a")], self._policy(), "http", None)
        self.assertEqual(out, [(b"Location", b"http://10.0.0.1:8080/a")])

    def test_prefix_from_route(self):
        """
        The route's strip_prefix (with or without its trailing slash) is
        put back in front of the rewritten path.
        """
        for prefix in ("/api", "/api/"):
            policy = self._policy(strip_prefix=prefix)
            out = downstream_headers([(b"Location", b"http://10.0.0.1:8080/a")], policy, "http", b"gw")
            self.assertEqual(out, [(b"Location", b"http://gw/api/a")], prefix)


class OriginConfigTests(SynchronousTestCase):
    """
    The route keys C{rewrite_location} and C{hide_headers}.
    """

    def test_defaults(self):
        """
        URLs are rewritten by default; nothing is hidden.
        """
        route = _config("").routes[0]
        self.assertTrue(route.rewrite_location)
        self.assertEqual(route.hide_headers, frozenset())

    def test_parsed(self):
        """
        hide_headers is a case-insensitive list kept as lower-case bytes.
        """
        route = _config("rewrite_location = no\nhide_headers = X-Powered-By, server, X-AspNet-Version\n").routes[0]
        self.assertFalse(route.rewrite_location)
        self.assertEqual(route.hide_headers, frozenset([b"x-powered-by", b"server", b"x-aspnet-version"]))

    def test_refused(self):
        """
        Framing headers, names that are not tokens and bad booleans are
        refused naming section, key and value; neither key applies to a
        route without upstream.
        """
        cases = [
            ("hide_headers = Content-Length\n", "[route:app] hide_headers: 'Content-Length' has 'Content-Length'"),
            ("hide_headers = X-A, transfer-encoding\n", "cannot be hidden"),
            ("hide_headers = Connection\n", "cannot be hidden"),
            ("hide_headers = X Powered\n", "which is not a header name"),
            ("hide_headers = X-A:b\n", "which is not a header name"),
            ("rewrite_location = maybe\n", "[route:app] rewrite_location: 'maybe' is not yes or no"),
        ]
        for keys, message in cases:
            with self.assertRaises(ConfigError) as caught:
                _config(keys)
            self.assertIn(message, str(caught.exception), keys)
        text = ("[listener:web]\nbind = 127.0.0.1:8080\n[route:hello]\npath = /\nrespond = 200 hi\n"
                "rewrite_location = yes\nhide_headers = x-a\n")
        problems = config_problems(self, text, "/etc/gate/gate.ini")
        for key in ("rewrite_location", "hide_headers"):
            self.assertIn(f"[route:hello] {key}: only applies to a route with upstream", problems)


PROXY_CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:8080, [fd00::1]:80
[route:app]
path = /app/
upstream = app
strip_prefix = /app
preserve_host = no
hide_headers = X-Powered-By, Server
"""

#: Location values an upstream sends, and what the client of
#: C{Host: gw.example:8443} behind the C{/app} prefix gets.
PROXIED_LOCATIONS = [
    (b"http://10.0.0.1:8080/login?x=1", b"http://gw.example:8443/app/login?x=1"),
    (b"http://[FD00:0::1]/v6", b"http://gw.example:8443/app/v6"),
    (b"http://10.0.0.1:8080@evil.example/", b"http://10.0.0.1:8080@evil.example/"),
    (b"http://10.0.0.1:9090/x", b"http://10.0.0.1:9090/x"),
    (b"//evil.example/x", b"//evil.example/x"),
    (b"/relative", b"/relative"),
]


class ProxyOriginTests(SynchronousTestCase):
    """
    Origin hiding through a whole gateway in memory, on both channels,
    the upstream's response fed whole and byte by byte.
    """

    def test_locations_and_hidden(self):
        """
        Each Location of the table reaches the client as the table says;
        X-Powered-By and Server never do; the upstream got the server's
        address as Host (preserve_host = no).
        """
        for http_server in ("gatelayer", "twisted"):
            for location, expected in PROXIED_LOCATIONS:
                for byte_by_byte in (False, True):
                    gate = InMemoryGateway(with_server(PROXY_CONFIG, http_server), with_upstreams=True)
                    channel, client = gate.connect()
                    channel.dataReceived(b"GET /app/a HTTP/1.1\r\nHost: GW.example:8443\r\n\r\n")
                    upstream, protocol = accept_upstream(gate.reactor)
                    self.assertIn(b"\r\nHost: 10.0.0.1:8080\r\n", upstream.value())
                    response = (b"HTTP/1.1 302 Found\r\nLocation: " + location
                                + b"\r\nX-Powered-By: php\r\nServer: app\r\nContent-Length: 0\r\n\r\n")
                    feed(protocol, response, byte_by_byte)
                    status, headers, _ = parse_response(client.value())
                    case = (http_server, location, byte_by_byte)
                    self.assertEqual(status, 302, case)
                    self.assertEqual(headers[b"location"], [expected], case)
                    self.assertNotIn(b"x-powered-by", headers, case)
                    self.assertNotIn(b"server", headers, case)
