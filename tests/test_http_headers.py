"""
Tests for gatelayer.http.headers and gatelayer.net.forwarded.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http.headers import downstream_headers, upstream_headers
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
