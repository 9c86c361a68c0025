"""
Tests for gatelayer.http.headers and gatelayer.net.forwarded.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gatelayer.config.model import RouteSpec, ServerSpec, UpstreamSpec
from gatelayer.http.headers import downstream_headers, relay_headers, upstream_headers
from gatelayer.http.origin import origin_policy
from gatelayer.net.forwarded import resolve_client_ip


class UpstreamHeadersTests(SynchronousTestCase):
    """
    What goes upstream: hop-by-hop removed, forwarding headers set.
    """

    def test_hop_by_hop_removed(self):
        """
        Connection, the headers it names, Keep-Alive, Proxy-*, TE, Trailer,
        Upgrade and Transfer-Encoding are not forwarded.
        """
        raw = [
            (b"Connection", [b"keep-alive, X-Secret"]), (b"X-Secret", [b"1"]),
            (b"Keep-Alive", [b"timeout=5"]), (b"Proxy-Authorization", [b"x"]),
            (b"Proxy-Connection", [b"keep-alive"]), (b"TE", [b"gzip"]), (b"Trailer", [b"x"]),
            (b"Upgrade", [b"websocket"]), (b"Transfer-Encoding", [b"chunked"]),
            (b"Accept", [b"*/*"]), (b"Host", [b"client.example"]),
        ]
        out = upstream_headers(raw, "10.1.2.3", "https", b"client.example", b"client.example")
        names = [n.lower() for n, _ in out]
        for gone in [b"connection", b"x-secret", b"keep-alive", b"proxy-authorization", b"proxy-connection",
                     b"te", b"trailer", b"upgrade", b"transfer-encoding"]:
            self.assertNotIn(gone, names)
        self.assertIn((b"Accept", b"*/*"), out)
        self.assertEqual(names.count(b"host"), 1)

    def test_te_trailers_kept(self):
        """
        Of the client's TE only the trailers token goes on, as TE: trailers,
        in any case and among other codings, even when Connection names TE
        (as it must); without that token TE is dropped.
        """
        for values, expected in [
                ([b"trailers"], [b"trailers"]), ([b"gzip;q=0.5, TRAILERS"], [b"trailers"]),
                ([b"gzip", b"trailers"], [b"trailers"]), ([b"gzip"], []), ([b"trailersx"], []),
                ([b""], [])]:
            raw = [(b"Connection", [b"TE"]), (b"TE", values)]
            out = upstream_headers(raw, "10.1.2.3", "http", b"h", b"h")
            self.assertEqual([v for n, v in out if n.lower() == b"te"], expected, values)

    def test_forwarding_headers(self):
        """
        X-Forwarded-For appends the peer; X-Forwarded-Proto/Host are ours;
        Forwarded gets an RFC 7239 element (IPv6 quoted).
        """
        raw = [(b"X-Forwarded-For", [b"1.1.1.1"]), (b"X-Forwarded-Proto", [b"gopher"]),
               (b"Forwarded", [b"for=1.1.1.1"])]
        out = dict(upstream_headers(raw, "::1", "http", b"h.example:8080", b"h.example:8080"))
        self.assertEqual(out[b"X-Forwarded-For"], b"1.1.1.1, ::1")
        self.assertEqual(out[b"X-Forwarded-Proto"], b"http")
        self.assertEqual(out[b"X-Forwarded-Host"], b"h.example:8080")
        self.assertEqual(out[b"Forwarded"], b'for=1.1.1.1, for="[::1]";proto=http;host="h.example:8080"')

    def test_downstream(self):
        """
        Response hop-by-hop headers are dropped; others kept in order.
        """
        out = downstream_headers([(b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Content-Length", b"3"),
                                  (b"Transfer-Encoding", b"chunked"), (b"Set-Cookie", b"a=1"),
                                  (b"Set-Cookie", b"b=2")])
        self.assertEqual(out, [(b"Content-Length", b"3"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])


# Response heads as an upstream sends them (pairs that passed the grammar),
# for relay_headers against downstream_headers.
RELAYED = [
    [],
    [(b"Server", b"nginx"), (b"Date", b"Tue, 01 Dec 2026 04:00:00 GMT"), (b"content-type", b"text/plain"),
     (b"Content-Length", b"12"), (b"Connection", b"keep-alive"), (b"Accept-Ranges", b"bytes")],
    [(b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Content-Length", b"3"),
     (b"Transfer-Encoding", b"chunked"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")],
    [(b"Content-Length", b"3, 3"), (b"content-length", b"3"), (b"X-A", b"1")],
    [(b"X-Hop", b"1"), (b"Connection", b"x-hop"), (b"connection", b"X-Other, content-length"),
     (b"X-Other", b"2"), (b"X-Keep", b"3"), (b"Content-Length", b"4")],
    [(b"Connection", b"Keep-Alive"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"x"), (b"Trailer", b"X"),
     (b"Upgrade", b"h2c"), (b"Proxy-Connection", b"x"), (b"Connection", b"a b, , \"q\""), (b"X", b"y")],
    [(b"Location", b"http://10.0.0.1:8080/a"), (b"X-Powered-By", b"PHP/5"), (b"server", b"app/1"),
     (b"Content-Location", b"http://10.0.0.1:8080/b"), (b"Refresh", b"1; url=http://10.0.0.1:8080/c"),
     (b"Connection", b"x-hop"), (b"X-Hop", b"1"), (b"Content-Length", b"0"),
     (b"X-Other", b"http://10.0.0.1:8080/"), (b"location", b"http://[0::1]/v6"), (b"Etag", b'"1"'),
     (b"WWW-Authenticate", b"Basic")],
]


class RelayHeadersTests(SynchronousTestCase):
    """
    L{relay_headers}: the response head the client gets, made in one pass,
    is what L{downstream_headers} relays added to a L{Headers} one by one.
    """

    def _policies(self):
        upstream = UpstreamSpec(name="app", servers=(ServerSpec("10.0.0.1", 8080), ServerSpec("::1", 80)))
        yield None
        for route in [{}, {"hide_headers": frozenset([b"x-powered-by", b"server", b"content-length"])},
                      {"rewrite_location": False, "hide_headers": frozenset([b"x-powered-by"])},
                      {"strip_prefix": "/api/"}]:
            yield origin_policy(upstream, RouteSpec(name="r", path="/", upstream="app", **route))

    def test_same_as_downstream_headers(self):
        """
        Every head, with and without a route policy, twice (the second time
        from the name cache): the same names, values and order.
        """
        for policy in self._policies():
            for headers in RELAYED * 2:
                for authority in (b"gw.example:8080", None):
                    expected = Headers()
                    for name, value in downstream_headers(headers, policy, "https", authority):
                        expected.addRawHeader(name, value)
                    out = relay_headers(headers, policy, "https", authority)
                    self.assertIsInstance(out, Headers)
                    self.assertEqual(list(out.getAllRawHeaders()), list(expected.getAllRawHeaders()),
                                     (policy, headers))

    def test_new_headers_each_time(self):
        """
        Each call gives headers of its own: a response's changes never reach
        the next one.
        """
        first = relay_headers(RELAYED[1])
        first.addRawHeader(b"Server", b"changed")
        self.assertEqual(relay_headers(RELAYED[1]).getRawHeaders(b"server"), [b"nginx"])


class ResolveClientTests(SynchronousTestCase):
    """
    The client address through trusted proxies only.
    """

    trusted = (ipaddress.ip_network("10.0.0.0/8"),)

    def test_table(self):
        """
        X-Forwarded-For is read right to left, skipping trusted hops only.
        """
        cases = [
            ("1.2.3.4", [b"9.9.9.9"], (), "1.2.3.4"),               # nothing trusted: peer
            ("1.2.3.4", [b"9.9.9.9"], self.trusted, "1.2.3.4"),     # untrusted peer: header ignored
            ("10.0.0.1", [b"9.9.9.9"], self.trusted, "9.9.9.9"),
            ("10.0.0.1", [b"6.6.6.6, 9.9.9.9, 10.0.0.2"], self.trusted, "9.9.9.9"),
            ("10.0.0.1", [b"6.6.6.6", b"10.0.0.5"], self.trusted, "6.6.6.6"),
            ("10.0.0.1", [b"garbage"], self.trusted, "10.0.0.1"),
            ("10.0.0.1", None, self.trusted, "10.0.0.1"),
            ("10.0.0.1", [b"10.0.0.2"], self.trusted, "10.0.0.2"),
        ]
        for peer, xff, trusted, expected in cases:
            with self.subTest(peer=peer, xff=xff):
                self.assertEqual(resolve_client_ip(peer, xff, trusted), expected)
