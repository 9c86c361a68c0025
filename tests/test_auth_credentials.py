"""
Tests for L{gatelayer.auth.credentials} and L{gatelayer.auth.cache}.
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gatelayer.auth.cache import ExpiringCache
from gatelayer.auth.credentials import (
    bearer_tokens, challenge, cookie_values, header_safe, query_values, refusal, remove_cookie,
    without_query_param,
)


class QueryTests(SynchronousTestCase):
    """
    Query parameters, found and removed byte-exactly.
    """

    def test_values(self):
        """
        Values are percent- and plus-decoded, in order; names are matched
        after decoding.
        """
        self.assertEqual(query_values(b"a=1&b=2&a=%41+x", b"a"), [b"1", b"A x"])
        self.assertEqual(query_values(b"a%5Fb=1", b"a_b"), [b"1"])
        self.assertEqual(query_values(b"a&a=", b"a"), [b"", b""])
        self.assertEqual(query_values(b"", b"a"), [])
        self.assertEqual(query_values(b"&&=&", b"a"), [])
        self.assertEqual(query_values(b"a=%zz%", b"a"), [b"%zz%"])

    def test_without(self):
        """
        Removing a parameter keeps the others exactly as sent.
        """
        self.assertEqual(without_query_param(b"x=%2F&token=a&y=+&token=b", b"token"), b"x=%2F&y=+")
        self.assertEqual(without_query_param(b"token=a", b"token"), b"")
        self.assertEqual(without_query_param(b"", b"token"), b"")


class HeaderTests(SynchronousTestCase):
    """
    Cookies, bearer tokens and header-safe values.
    """

    def test_cookies(self):
        """
        Cookie values are found across headers, quotes removed; removing one
        keeps the rest.
        """
        headers = Headers({b"cookie": [b"a=1; s=\"tok\"", b"s=two;b=2", b"junk"]})
        self.assertEqual(cookie_values(headers, b"s"), [b"tok", b"two"])
        remove_cookie(headers, b"s")
        self.assertEqual(headers.getRawHeaders(b"cookie"), [b"a=1", b"b=2", b"junk"])
        remove_cookie(headers, b"a")
        remove_cookie(headers, b"b")
        remove_cookie(headers, b"junk")
        self.assertIsNone(headers.getRawHeaders(b"cookie"))

    def test_bearer(self):
        """
        Only the Bearer scheme counts, in any case.
        """
        headers = Headers({b"authorization": [b"Bearer  abc ", b"bearer def", b"Basic xyz", b"Bearer"]})
        self.assertEqual(bearer_tokens(headers), [b"abc", b"def", b""])

    def test_header_safe(self):
        """
        Control characters other than tab make a value unsafe.
        """
        self.assertTrue(header_safe(b"a b\tc \xc3\xa9"))
        for bad in (b"a\r\nb", b"a\nb", b"a\x00", b"\x7f"):
            self.assertFalse(header_safe(bad))


class RefusalTests(SynchronousTestCase):
    """
    Challenges and refusal replies.
    """

    def test_challenge(self):
        """
        Parameters are quoted, with quotes and backslashes escaped.
        """
        self.assertEqual(challenge("Bearer", "invalid_token", 'say "hi" \\'),
                         b'Bearer error="invalid_token", error_description="say \\"hi\\" \\\\"')
        self.assertEqual(challenge("Bearer", "insufficient_scope", "d", (("scope", "a b"),)),
                         b'Bearer error="insufficient_scope", error_description="d", scope="a b"')

    def test_refusal(self):
        """
        A refusal is a short JSON reply with the challenge, not cacheable.
        """
        reply = refusal(401, "Bearer", "invalid_token", "token has expired")
        self.assertEqual(reply.status, 401)
        self.assertEqual(json.loads(reply.body), {"error": "invalid_token", "error_description": "token has expired"})
        headers = dict(reply.headers)
        self.assertEqual(headers[b"cache-control"], b"no-store")
        self.assertIn(b"www-authenticate", headers)
        self.assertLess(len(reply.body), 200)


class ExpiringCacheTests(SynchronousTestCase):
    """
    The bounded cache with per-entry expiry.
    """

    def test_expiry(self):
        """
        Entries are returned until their time, not at or after it.
        """
        cache = ExpiringCache(10)
        cache.put(b"k", "v", 100)
        self.assertEqual(cache.get(b"k", 99.9), "v")
        self.assertIsNone(cache.get(b"k", 100))
        self.assertEqual(len(cache), 0)

    def test_lru(self):
        """
        When full, the least recently used entry goes.
        """
        cache = ExpiringCache(2)
        cache.put(1, "a", 100)
        cache.put(2, "b", 100)
        cache.get(1, 0)
        cache.put(3, "c", 100)
        self.assertEqual((cache.get(1, 0), cache.get(2, 0), cache.get(3, 0)), ("a", None, "c"))
        cache.clear()
        self.assertEqual(len(cache), 0)

    def test_disabled(self):
        """
        Size 0 keeps nothing.
        """
        cache = ExpiringCache(0)
        cache.put(1, "a", 100)
        self.assertIsNone(cache.get(1, 0))
