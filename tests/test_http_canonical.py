"""
Tests for the canonical request (L{gatelayer.http.canonical}) and for the
gateway deciding on it: path normalization, targets, methods, Host, header
policy, and a table of ways around a protected route, each sent whole and
byte by byte through both server channels with an upstream behind.
"""

import os

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gatelayer.auth.apikeys import hash_key
from gatelayer.http.canonical import (
    HeaderPolicy, canonical_host, cgi_name, check_method, normalize_path, parse_target,
)
from gatelayer.http1 import BadRequest
from gatelayer.observe.accesslog import AccessLog
from gatelayer.testing.server import InMemoryGateway, accept_upstream, feed, parse_response
from gatelayer.testing.server import with_server

# (raw path, normalized) with the defaults (merge_slashes, escaped_slashes = reject).
NORMALIZED = [
    (b"/", b"/"),
    (b"/admin", b"/admin"),
    (b"/admin/", b"/admin/"),
    (b"/%61dmin", b"/admin"),
    (b"/%41%44MIN", b"/ADMIN"),
    (b"/a%7eb%2D%2e%5F", b"/a~b-._"),
    (b"/x/../admin", b"/admin"),
    (b"/./admin", b"/admin"),
    (b"/x/%2e%2e/admin", b"/admin"),
    (b"/x/%2E./admin", b"/admin"),
    (b"/x/.%2e/admin", b"/admin"),
    (b"//admin", b"/admin"),
    (b"///admin//x", b"/admin/x"),
    (b"/admin/.", b"/admin/"),
    (b"/admin/x/..", b"/admin/"),
    (b"/a/b/c/./../../g", b"/a/g"),
    (b"/caf%c3%a9", b"/caf%C3%A9"),
    (b"/q%3fx", b"/q%3Fx"),
    (b"/%25", b"/%25"),
    (b"/%252e%252e/admin", b"/%252e%252e/admin"),
    (b"/.well-known/x", b"/.well-known/x"),
    (b"/a..b/c", b"/a..b/c"),
    (b"/...", b"/..."),
    (b"/admin;jsessionid=1", b"/admin;jsessionid=1"),
    (b"/a/..", b"/"),
]

# Raw paths refused with 400 whatever the settings.
REFUSED = [
    b"/%00", b"/admin%00.json", b"/%0a", b"/%0D", b"/%1f", b"/%7F",
    b"/%", b"/a%", b"/%z", b"/%zz", b"/%2", b"/%g0",
    b"/..", b"/../admin", b"/x/../../admin", b"/%2e%2e/admin", b"/./../x",
    b"/admin#x", b"/#",
    b"/x/..;/admin", b"/.;/admin", b"/..;/x",
]


class NormalizePathTests(SynchronousTestCase):
    """
    L{normalize_path} as RFC 3986 section 6.2.2 describes it, with refusals.
    """

    def test_normalized(self):
        """
        Unreserved escapes are decoded, others upper-cased, dot segments
        removed, slashes merged.
        """
        for raw, expected in NORMALIZED:
            self.assertEqual(normalize_path(raw), expected, raw)

    def test_idempotent(self):
        """
        A normalized path normalizes to itself (the upstream, normalizing
        again, sees what the gateway decided on).
        """
        for raw, expected in NORMALIZED:
            self.assertEqual(normalize_path(expected), expected, raw)

    def test_refused(self):
        """
        Control bytes, malformed escapes, climbing above the root, fragments
        and parameters on dot segments are 400 under every setting.
        """
        for raw in REFUSED:
            for slashes in ("keep", "reject", "decode"):
                for merge in (True, False):
                    with self.assertRaises(BadRequest, msg=(raw, slashes, merge)) as caught:
                        normalize_path(raw, merge, slashes)
                    self.assertEqual(caught.exception.status, 400)

    def test_escaped_slashes(self):
        """
        C{%2F}, C{%5C} and a raw backslash follow C{escaped_slashes}.
        """
        cases = [
            (b"/a%2fb", {"keep": b"/a%2Fb", "decode": b"/a/b"}),
            (b"/a%5Cb", {"keep": b"/a%5Cb", "decode": b"/a/b"}),
            (b"/a\\b", {"keep": b"/a\\b", "decode": b"/a/b"}),
            (b"/x/..%2fadmin", {"keep": b"/x/..%2Fadmin", "decode": b"/admin"}),
            (b"/x%2f..%2f..%2fadmin", {"keep": b"/x%2F..%2F..%2Fadmin"}),
        ]
        for raw, expected in cases:
            with self.assertRaises(BadRequest):
                normalize_path(raw, True, "reject")
            for mode, result in expected.items():
                self.assertEqual(normalize_path(raw, True, mode), result, (raw, mode))
        with self.assertRaises(BadRequest):
            normalize_path(b"/x%2f..%2f..%2fadmin", True, "decode")

    def test_merge_slashes_off(self):
        """
        With C{merge_slashes = no} empty segments stay.
        """
        self.assertEqual(normalize_path(b"//admin", False), b"//admin")
        self.assertEqual(normalize_path(b"/a//b/../c", False), b"/a//c")


class TargetTests(SynchronousTestCase):
    """
    Request-target forms (RFC 9112 section 3.2) and method checks.
    """

    def test_forms(self):
        """
        Origin, absolute, asterisk and authority forms are told apart.
        """
        cases = [
            (b"GET", b"/a?b=1", ("origin", None, b"/a", b"b=1")),
            (b"GET", b"http://API.example.test/x?y", ("absolute", b"API.example.test", b"/x", b"y")),
            (b"GET", b"https://h:8443", ("absolute", b"h:8443", b"/", b"")),
            (b"GET", b"HTTP://h?q", ("absolute", b"h", b"/", b"q")),
            (b"OPTIONS", b"*", ("asterisk", None, b"*", b"")),
            (b"CONNECT", b"db.internal:5432", ("authority", b"db.internal:5432", b"/", b"")),
        ]
        for method, target, expected in cases:
            parsed = parse_target(method, target)
            self.assertEqual((parsed.form, parsed.authority, parsed.path, parsed.query), expected, target)

    def test_refused_targets(self):
        """
        Targets that are none of the forms, or the wrong form for the
        method, are 400.
        """
        cases = [
            (b"GET", b"*"), (b"GET", b"admin"), (b"GET", b"ftp://h/x"), (b"GET", b"http:///x"),
            (b"GET", b"http://user@h/x"), (b"GET", b"http://u:p@h/x"),
            (b"CONNECT", b"/x"), (b"CONNECT", b"http://h/"), (b"CONNECT", b"a@b:1"),
            (b"GET", b"?x"), (b"POST", b"h:80"),
        ]
        for method, target in cases:
            with self.assertRaises(BadRequest, msg=(method, target)):
                parse_target(method, target)

    def test_methods(self):
        """
        Methods are tokens and case-sensitive: a standard method in another
        case is refused; extension methods pass.
        """
        for good in (b"GET", b"PROPFIND", b"M-SEARCH", b"purge"):
            check_method(good)
        for bad in (b"get", b"Get", b"pOST", b"trace", b"connect", b"GE(T", b"G\x00T", b""):
            with self.assertRaises(BadRequest, msg=bad):
                check_method(bad)


class HostTests(SynchronousTestCase):
    """
    L{canonical_host}: validated, lower-cased, default port and one
    trailing dot stripped.
    """

    def test_canonical(self):
        """
        The routing name and the forwarded authority.
        """
        cases = [
            (b"Example.COM", 80, ("example.com", b"example.com")),
            (b"example.com.", 80, ("example.com", b"example.com")),
            (b"example.com:80", 80, ("example.com", b"example.com")),
            (b"example.com:443", 443, ("example.com", b"example.com")),
            (b"example.com:443", 80, ("example.com", b"example.com:443")),
            (b"Example.com.:8080", 80, ("example.com", b"example.com:8080")),
            (b"example.com:", 80, ("example.com", b"example.com")),
            (b"127.0.0.1:8080", 80, ("127.0.0.1", b"127.0.0.1:8080")),
            (b"[::1]:8443", 443, ("::1", b"[::1]:8443")),
            (b"[::1]:443", 443, ("::1", b"[::1]")),
            (b"[FE80::1]", 80, ("fe80::1", b"[fe80::1]")),
            (b"my_host.internal", 80, ("my_host.internal", b"my_host.internal")),
        ]
        for value, port, expected in cases:
            self.assertEqual(canonical_host(value, port), expected, value)

    def test_invalid(self):
        """
        Spaces, slashes, userinfo, empty values, bad IPv6 literals and
        ports out of range are 400.
        """
        bad = [
            b"", b" ", b"a b", b"a/b", b"evil.com/x", b"user@a", b"a@evil.com", b"[::1", b"[::g]",
            b"[::1]x", b"[1.2.3.4]", b"a:0", b"a:65536", b"a:99999999", b"a:-1", b"a:8o", b"a:1:2",
            b"..", b".", b"a..b", b"-a.com", b"caf\xc3\xa9.com", b"a\tb", b"a%2fb", b"a\\b",
        ]
        for value in bad:
            with self.assertRaises(BadRequest, msg=value) as caught:
                canonical_host(value, 80)
            self.assertEqual(caught.exception.status, 400)


class HeaderPolicyTests(SynchronousTestCase):
    """
    L{HeaderPolicy}: underscores and identity headers.
    """

    def headers(self, *names):
        h = Headers()
        for name in names:
            h.addRawHeader(name, b"v")
        return h

    def test_cgi_name(self):
        """
        Spellings a CGI upstream folds together map to one name.
        """
        self.assertEqual({cgi_name(n) for n in (b"X-Consumer", b"x_consumer", b"X_CONSUMER")},
                         {b"X_CONSUMER"})

    def test_drop(self):
        """
        C{drop}: underscore names go, identity headers go in every spelling,
        the rest stays.
        """
        policy = HeaderPolicy("drop", [b"x-consumer", b"x-user-role"])
        h = self.headers(b"Accept", b"X-Consumer", b"x_consumer", b"X-USER-ROLE", b"X_User_Role",
                         b"My_Header", b"X-Other")
        policy.apply(h._rawHeaders)
        self.assertEqual(sorted(name for name, _ in h.getAllRawHeaders()), [b"Accept", b"X-Other"])

    def test_allow(self):
        """
        C{allow}: underscore names stay unless they spell an identity header.
        """
        policy = HeaderPolicy("allow", [b"x-consumer"])
        h = self.headers(b"My_Header", b"X_Consumer", b"x-consumer")
        policy.apply(h._rawHeaders)
        self.assertEqual([name.lower() for name, _ in h.getAllRawHeaders()], [b"my_header"])

    def test_reject(self):
        """
        C{reject}: an underscore name is 400; identity headers are dropped
        quietly.
        """
        policy = HeaderPolicy("reject", [b"x-consumer"])
        h = self.headers(b"X-Consumer", b"Accept")
        policy.apply(h._rawHeaders)
        self.assertEqual([name for name, _ in h.getAllRawHeaders()], [b"Accept"])
        with self.assertRaises(BadRequest):
            policy.apply(self.headers(b"My_Header")._rawHeaders)


KEY = b"glk_canonical-test-key"

GATE = """
[gateway]
max_body_size = 1MB
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[filter:keys]
type = api_key
keys = apikeys.ini
query = api_key
[filter:claims]
type = jwt
secret_file = secret.txt
algorithms = HS256
forward_claims = role: X-User-Role
[route:admin]
path = /admin
upstream = app
filters = keys
[route:admin-host]
host = admin.example.test
path = /
upstream = app
filters = keys
[route:traced]
path = /traced
methods = TRACE, GET
respond = 200 traced
[route:open]
path = /
upstream = app
[route:v1]
path = /v1/
upstream = app
strip_prefix = /v1
"""

# Every way around [route:admin] (or [route:admin-host]): refused by the
# gateway (400), or routed to the protected route (401 from the key filter);
# never proxied without the key.
ATTACKS = [
    b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%61dmin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%61%64%6d%69%6e HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x/../admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /./admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x/%2E%2E/admin/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET //admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/./users HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin;x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin?api_key=wrong HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin%2f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x%2f..%2fadmin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x\\..\\admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/../admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/%61dmin HTTP/1.1\r\nHost: other\r\n\r\n",
    b"GET http://admin.example.test/ HTTP/1.1\r\nHost: open.example.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: ADMIN.example.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: admin.example.test.\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: admin.example.test:80\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: admin.example.test.:80\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: admin.example.test/x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x@admin.example.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: admin.example.test x\r\n\r\n",
    b"get /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ADMIN/../admin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/%2e HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/x/%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n",
]


class _CanonicalGatewayMixin:
    """
    A gateway with a protected route and an upstream behind it, in memory.
    """

    http_server = "gatelayer"

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "apikeys.ini"), "w") as f:
            f.write(f"[consumers]\nalice = {hash_key(KEY)}\n")
        with open(os.path.join(directory, "secret.txt"), "w") as f:
            f.write("a-secret-of-at-least-thirty-two-bytes!!")
        self.gate = InMemoryGateway(with_server(self.config_text(), self.http_server),
                                    path=os.path.join(directory, "gate.ini"), with_upstreams=True)
        self.reactor = self.gate.reactor

    def config_text(self):
        return GATE

    def upstream_request(self, index=-1, answer=False):
        """
        Complete the pool's latest connection; returns the bytes sent on it
        (after answering 200 when C{answer}).
        """
        transport, protocol = accept_upstream(self.reactor, index)
        sent = transport.value()
        if answer:
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return sent

    def send(self, data, byte_by_byte=False):
        channel, client = self.gate.connect()
        feed(channel, data, byte_by_byte)
        return client


class CanonicalGatewayTests(_CanonicalGatewayMixin, SynchronousTestCase):
    """
    Through the lean server channel.
    """

    def test_no_way_around(self):
        """
        Every spelling of the protected path or host, sent whole and byte by
        byte, is refused or meets the key filter; none is proxied.
        """
        for attack in ATTACKS:
            for byte_by_byte in (False, True):
                before = len(self.reactor.tcpClients)
                client = self.send(attack, byte_by_byte)
                status = parse_response(client.value())[0]
                self.assertIn(status, (400, 401), (attack, byte_by_byte, client.value()))
                self.assertEqual(len(self.reactor.tcpClients), before, (attack, "reached the upstream"))

    def test_normalized_path_upstream(self):
        """
        With the key, the upstream receives the normalized path (and the
        key is gone from the query: hide_credentials).
        """
        cases = [
            (b"/x/../admin/%7Eme/./a//b?api_key=" + KEY + b"&q=1", b"/admin/~me/a/b?q=1"),
            (b"/%61dmin?q=%2e&api_key=" + KEY, b"/admin?q=%2e"),
        ]
        for target, expected in cases:
            self.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            sent = self.upstream_request()
            self.assertTrue(sent.startswith(b"GET " + expected + b" HTTP/1.1\r\n"), sent)

    def test_strip_prefix_after_normalization(self):
        """
        C{strip_prefix} applies to the normalized path: C{/v1/./a/%2e%2e/b}
        goes up as C{/b}, and C{/v1/../x} is the open route's C{/x}.
        """
        self.send(b"GET /v1/./a/%2e%2e/b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.upstream_request().startswith(b"GET /b HTTP/1.1\r\n"))
        self.send(b"GET /v1/../x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.upstream_request().startswith(b"GET /x HTTP/1.1\r\n"))

    def test_canonical_host_forwarded(self):
        """
        The upstream receives the canonical Host; an absolute-form target's
        authority replaces the client's Host and the target goes up in
        origin form.
        """
        self.send(b"GET /p HTTP/1.1\r\nHost: Open.Example.TEST.:80\r\n\r\n")
        sent = self.upstream_request()
        self.assertIn(b"\r\nHost: open.example.test\r\n", sent)
        self.send(b"GET http://Other.test:8080/p?x HTTP/1.1\r\nHost: ignored.test\r\n\r\n")
        sent = self.upstream_request()
        self.assertTrue(sent.startswith(b"GET /p?x HTTP/1.1\r\n"), sent)
        self.assertIn(b"\r\nHost: other.test:8080\r\n", sent)
        self.assertNotIn(b"ignored.test", sent.split(b"X-Forwarded")[0])

    def test_identity_and_underscore_headers(self):
        """
        Identity headers in every spelling, and underscore names, never
        arrive from the client, on a route without any auth filter.
        """
        self.send(b"GET /p HTTP/1.1\r\nHost: x\r\nX-Consumer: admin\r\nX_Consumer: admin\r\n"
                  b"x-user-role: root\r\nX_USER_ROLE: root\r\nMy_Var: 1\r\nX-Fine: 1\r\n\r\n")
        sent = self.upstream_request().lower()
        for name in (b"x-consumer", b"x_consumer", b"x-user-role", b"x_user_role", b"my_var"):
            self.assertNotIn(b"\r\n" + name + b":", sent)
        self.assertIn(b"\r\nx-fine: 1\r\n", sent)

    def test_options_asterisk(self):
        """
        C{OPTIONS *} is answered by the gateway.
        """
        status, headers, body = parse_response(
            self.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").value())
        self.assertEqual((status, body), (200, b""))
        self.assertIn(b"GET", headers[b"allow"][0])
        self.assertEqual(len(self.reactor.tcpClients), 0)

    def test_trace_and_connect(self):
        """
        TRACE and CONNECT are 405 unless a route lists them.
        """
        for request in (b"TRACE /p HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
                        b"TRACE /admin HTTP/1.1\r\nHost: x\r\n\r\n"):
            status, headers, _ = parse_response(self.send(request).value())
            self.assertEqual(status, 405, request)
            self.assertNotIn(b"TRACE", headers[b"allow"][0])
        status, _, body = parse_response(self.send(b"TRACE /traced HTTP/1.1\r\nHost: x\r\n\r\n").value())
        self.assertEqual((status, body), (200, b"traced"))
        self.assertEqual(len(self.reactor.tcpClients), 0)

    def test_access_log_sees_canonical_request(self):
        """
        The access log records the normalized path with credentials in the
        query redacted.
        """
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, self.reactor, format="combined")
        self.gate.gateway.access_log = log
        log.redact = frozenset([b"api_key", b"access_token"])
        self.send(b"GET /x/../admin?api_key=" + KEY + b"&access_token=t&q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.upstream_request(answer=True)
        log.close()
        with open(path, "rb") as f:
            line = f.read()
        self.assertIn(b'"GET /admin?api_key=REDACTED&access_token=REDACTED&q=1 HTTP/1.1"', line)
        self.assertNotIn(KEY, line)

    def test_redirect_uses_validated_host(self):
        """
        C{redirect_https} builds the location from the validated host and
        the normalized path: an absolute-form target cannot redirect the
        client elsewhere.
        """
        gate = InMemoryGateway(with_server(
            "[gateway]\n[listener:web]\nbind = 127.0.0.1:8080\nredirect_https = 443\n"
            "[route:r]\nrespond = 200 x\n", self.http_server))
        cases = [
            (b"GET /a/../b?q HTTP/1.1\r\nHost: Site.test\r\n\r\n", b"https://site.test/b?q"),
            (b"GET http://site.test//evil.test/x HTTP/1.1\r\nHost: evil.test\r\n\r\n",
             b"https://site.test/evil.test/x"),
        ]
        for request, location in cases:
            status, headers, _ = parse_response(gate.exchange(request))
            self.assertEqual((status, headers[b"location"][0]), (308, location))
        self.assertEqual(parse_response(gate.exchange(
            b"GET / HTTP/1.1\r\nHost: evil.test/x\r\n\r\n"))[0], 400)


class TwistedCanonicalGatewayTests(CanonicalGatewayTests):
    """
    The same through twisted.web's server channel.
    """

    http_server = "twisted"


class SettingsGatewayTests(_CanonicalGatewayMixin, SynchronousTestCase):
    """
    C{merge_slashes}, C{escaped_slashes} and C{underscore_headers} change
    what is forwarded.
    """

    def config_text(self):
        return GATE.replace(
            "[gateway]\n",
            "[gateway]\nmerge_slashes = no\nescaped_slashes = keep\nunderscore_headers = reject\n")

    def test_settings(self):
        """
        Slashes are kept unmerged, encoded slashes stay encoded, and an
        underscore header is 400.
        """
        self.send(b"GET /a//b%2fc HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(self.upstream_request().startswith(b"GET /a//b%2Fc HTTP/1.1\r\n"))
        status = parse_response(self.send(b"GET /a HTTP/1.1\r\nHost: x\r\nMy_Var: 1\r\n\r\n").value())[0]
        self.assertEqual(status, 400)
        # Identity headers are still dropped quietly, underscore or not.
        self.send(b"GET /b HTTP/1.1\r\nHost: x\r\nX-Consumer: a\r\n\r\n")
        self.assertNotIn(b"X-Consumer", self.upstream_request())
