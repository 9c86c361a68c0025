"""
Tests for the cache's RFC 9111 rules (L{gatelayer.cache.policy}) and its
entries (L{gatelayer.cache.entry}): Cache-Control parsing with its edge
cases, freshness lifetime, age, storability and Vary, table by table.
"""

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from gatelayer.cache.entry import make_entry, refreshed
from gatelayer.cache.policy import (
    MAX_DELTA, current_age, delta_seconds, freshness_lifetime, parse_cache_control, parse_vary,
    refusal, variant_of)

# (Cache-Control lines, directive, seconds() expected)
SECONDS_TABLE = [
    ([b"max-age=60"], "max-age", 60),
    ([b"MAX-AGE=60"], "max-age", 60),
    ([b"max-age = 60"], "max-age", 60),
    ([b'max-age="60"'], "max-age", 60),
    ([b"max-age=060"], "max-age", 60),
    ([b"public, max-age=60, must-revalidate"], "max-age", 60),
    ([b"public", b"max-age=60"], "max-age", 60),
    ([b"max-age=60, max-age=60"], "max-age", 60),
    ([b"max-age=60, max-age=120"], "max-age", -1),
    ([b"max-age=60", b"max-age=5"], "max-age", -1),
    ([b"max-age=abc"], "max-age", -1),
    ([b"max-age=-1"], "max-age", -1),
    ([b"max-age=+5"], "max-age", -1),
    ([b"max-age=1.5"], "max-age", -1),
    ([b"max-age="], "max-age", -1),
    ([b"max-age"], "max-age", -1),
    ([b"max-age=\xd9\xa3"], "max-age", -1),
    ([b"max-age=99999999999999999999999"], "max-age", MAX_DELTA),
    ([b"s-maxage=10"], "max-age", None),
    ([b""], "max-age", None),
    ([b",,, ,max-age=7,,"], "max-age", 7),
    ([b'no-cache="set-cookie, x-a", max-age=9'], "max-age", 9),
    ([b'ext="a,max-age=1", max-age=9'], "max-age", 9),
    ([b'ext="quoted \\" comma, max-age=1", max-age=9'], "max-age", 9),
    ([b"stale-while-revalidate=30"], "stale-while-revalidate", 30),
    ([b"stale-if-error=oops"], "stale-if-error", -1),
]

# (directive lines, date, Expires lines, default_ttl, lifetime)
LIFETIME_TABLE = [
    ([b"s-maxage=10, max-age=100"], None, None, None, 10),
    ([b"max-age=100"], 1000.0, [b"Thu, 01 Jan 1970 00:00:00 GMT"], None, 100),
    ([b"max-age=0"], None, None, 60.0, 0),
    ([b"max-age=bad"], None, None, 60.0, 0),
    ([b"s-maxage=-5, max-age=100"], None, None, None, 0),
    ([], 0.0, [b"Thu, 01 Jan 1970 00:01:00 GMT"], None, 60),
    ([], 120.0, [b"Thu, 01 Jan 1970 00:01:00 GMT"], None, 0),
    ([], 0.0, [b"0"], None, 0),
    ([], 0.0, [b"-1"], 60.0, 0),
    ([], None, [b"Thu, 01 Jan 1970 00:01:00 GMT"], None, 0),
    ([], 0.0, [b"Thu, 01 Jan 1970 00:01:00 GMT", b"Thu, 01 Jan 1970 00:02:00 GMT"], None, 0),
    ([], None, None, None, 0),
    ([], None, None, 30.0, 30),
    ([b"public"], None, None, None, 0),
]

# (status, Authorization sent, Cache-Control, Set-Cookie, explicit, default_ttl, refusal)
REFUSAL_TABLE = [
    (200, False, b"max-age=60", False, True, None, None),
    (200, False, b"", False, False, None, "no freshness"),
    (200, False, b"", False, False, 60.0, None),
    (200, False, b"public", False, False, None, "no freshness"),
    (404, False, b"", False, False, 60.0, None),
    (302, False, b"", False, False, 60.0, "no freshness"),
    (302, False, b"max-age=60", False, True, None, None),
    (206, False, b"max-age=60", False, True, None, "status"),
    (304, False, b"max-age=60", False, True, None, "status"),
    (500, False, b"max-age=60", False, True, None, "status"),
    (502, False, b"max-age=60", False, True, None, "status"),
    (999, False, b"max-age=60", False, True, None, "status"),
    (200, False, b"no-store, max-age=60", False, True, None, "no-store"),
    (200, False, b"private, max-age=60", False, True, None, "private"),
    (200, False, b'private="x-user", max-age=60', False, True, None, "private"),
    (200, True, b"max-age=60", False, True, None, "authorization"),
    (200, True, b"public, max-age=60", False, True, None, None),
    (200, True, b"s-maxage=60", False, True, None, None),
    (200, True, b"must-revalidate, max-age=60", False, True, None, None),
    (200, False, b"max-age=60", True, True, None, "set-cookie"),
    (200, False, b"public, max-age=60", True, True, None, None),
    (200, False, b"s-maxage=60", True, True, None, None),
    (200, False, b"no-cache", False, True, None, None),
]

# (Vary lines, names)
VARY_TABLE = [
    (None, ()),
    ([b""], ()),
    ([b"Accept-Encoding"], (b"accept-encoding",)),
    ([b"accept-language, Accept-Encoding"], (b"accept-encoding", b"accept-language")),
    ([b"Accept", b"accept , ,ACCEPT"], (b"accept",)),
    ([b"*"], b"*"),
    ([b"Accept, *"], b"*"),
    ([b"Accept", b" * "], b"*"),
]


def _headers(pairs):
    raw = Headers()
    for name, value in pairs:
        raw.addRawHeader(name, value)
    return raw


class CacheControlTests(SynchronousTestCase):
    """
    L{parse_cache_control} and L{delta_seconds}.
    """

    def test_seconds_table(self):
        """
        Each directive line set gives the expected seconds: quoted values
        unquoted, commas inside quotes kept, duplicates that disagree and
        bad numbers invalid (-1), huge numbers capped.
        """
        for lines, name, expected in SECONDS_TABLE:
            with self.subTest(lines=lines):
                self.assertEqual(parse_cache_control(lines).seconds(name), expected)

    def test_flags(self):
        """
        Directives without values are present by lower-case name; a
        qualified no-cache keeps its field names.
        """
        cc = parse_cache_control([b'Public, NO-STORE, no-cache="Set-Cookie"'])
        self.assertIn("public", cc)
        self.assertIn("no-store", cc)
        self.assertIn("no-cache", cc)
        self.assertTrue(cc.has_field_names("no-cache"))
        self.assertFalse(cc.has_field_names("public"))
        self.assertNotIn("private", cc)

    def test_garbage(self):
        """
        Garbage between commas is skipped; nothing raises.
        """
        for lines in ([b"=,=,=="], [b"\x00\xff, max-age=5"], [b'"unterminated, max-age=5'],
                      [b"max-age=5 6"], [b";;;"], None, []):
            with self.subTest(lines=lines):
                parse_cache_control(lines).seconds("max-age")
        self.assertEqual(parse_cache_control([b"\x00\xff, max-age=5"]).seconds("max-age"), 5)

    def test_delta_seconds(self):
        """
        Only ASCII digits are delta-seconds.
        """
        self.assertEqual(delta_seconds("0"), 0)
        self.assertEqual(delta_seconds("00012"), 12)
        for text in ("", " 1", "1 ", "-1", "+1", "1e3", "0x10", "1_0", None):
            self.assertIsNone(delta_seconds(text))


class FreshnessTests(SynchronousTestCase):
    """
    L{freshness_lifetime} and L{current_age}.
    """

    def test_lifetime_table(self):
        """
        s-maxage wins over max-age over Expires less Date over the
        configured default; invalid or conflicting values mean stale.
        """
        for lines, date, expires, ttl, expected in LIFETIME_TABLE:
            with self.subTest(lines=lines, expires=expires, ttl=ttl):
                self.assertEqual(
                    freshness_lifetime(parse_cache_control(lines), date, expires, ttl), expected)

    def test_age(self):
        """
        The age is the larger of the apparent age and the corrected Age,
        plus the time resident (RFC 9111 section 4.2.3).
        """
        self.assertEqual(current_age(None, None, 100.0, 100.0, 130.0), 30.0)
        self.assertEqual(current_age(90.0, None, 100.0, 100.0, 100.0), 10.0)
        self.assertEqual(current_age(110.0, None, 100.0, 100.0, 100.0), 0.0)
        self.assertEqual(current_age(100.0, 20, 99.0, 100.0, 105.0), 26.0)
        self.assertEqual(current_age(50.0, 5, 100.0, 100.0, 100.0), 50.0)


class StorabilityTests(SynchronousTestCase):
    """
    L{refusal}, L{parse_vary} and L{variant_of}.
    """

    def test_refusal_table(self):
        """
        Each response is refused for its reason, or stored.
        """
        for status, auth, cc, cookie, explicit, ttl, expected in REFUSAL_TABLE:
            with self.subTest(status=status, auth=auth, cc=cc, cookie=cookie, ttl=ttl):
                self.assertEqual(
                    refusal(status, auth, parse_cache_control([cc]), cookie, explicit, ttl), expected)

    def test_vary_table(self):
        """
        Vary names are lower-cased, sorted and deduplicated; C{*} anywhere
        wins.
        """
        for lines, expected in VARY_TABLE:
            with self.subTest(lines=lines):
                self.assertEqual(parse_vary(lines), expected)

    def test_variants(self):
        """
        Two spellings of one header list select one variant; a missing
        header differs from an empty one; other headers do not matter.
        """
        names = (b"accept-encoding", b"accept-language")
        one = variant_of(names, _headers([(b"Accept-Encoding", b"gzip,br"), (b"X-Other", b"1")]))
        two = variant_of(names, _headers([(b"accept-encoding", b"gzip , br")]))
        three = variant_of(names, _headers([(b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"br")]))
        self.assertEqual(one, two)
        self.assertEqual(one, three)
        empty = variant_of(names, _headers([(b"Accept-Encoding", b"gzip,br"), (b"Accept-Language", b"")]))
        self.assertNotEqual(one, empty)
        self.assertNotEqual(one, variant_of(names, _headers([(b"Accept-Encoding", b"br,gzip")])))
        self.assertEqual(variant_of((), _headers([(b"Accept", b"x")])), b"")


class EntryTests(SynchronousTestCase):
    """
    L{make_entry} and L{refreshed}.
    """

    def test_stored_headers(self):
        """
        Framing, hop-by-hop, Age and Set-Cookie headers are not stored;
        the others are, in order.
        """
        entry = make_entry(200, [
            (b"content-type", b"text/plain"), (b"content-length", b"2"), (b"connection", b"close"),
            (b"transfer-encoding", b"chunked"), (b"age", b"3"), (b"set-cookie", b"a=1"),
            (b"cache-control", b"public, max-age=60"), (b"etag", b'"x"')], b"ok", 10.0, 10.0, None)
        self.assertEqual(entry.headers, (
            (b"content-type", b"text/plain"), (b"cache-control", b"public, max-age=60"),
            (b"etag", b'"x"')))
        self.assertEqual(entry.lifetime, 60)
        self.assertEqual(entry.age(10.0), 3)
        self.assertEqual(entry.staleness(67.0), 0)
        self.assertEqual(entry.etag, b'"x"')
        self.assertTrue(entry.validators)

    def test_windows(self):
        """
        The stale windows and must-revalidate are read once; no-cache
        makes an entry always stale; a bad Age is ignored.
        """
        entry = make_entry(200, [
            (b"cache-control", b"max-age=10, stale-while-revalidate=5, stale-if-error=50"),
            (b"age", b"bad")], b"", 0.0, 0.0, None)
        self.assertEqual((entry.stale_while_revalidate, entry.stale_if_error), (5, 50))
        self.assertFalse(entry.must_revalidate)
        self.assertEqual(entry.age(0.0), 0)
        always = make_entry(200, [(b"cache-control", b"no-cache, max-age=100, proxy-revalidate"),
                                  (b"etag", b'"e"')], b"", 0.0, 0.0, None)
        self.assertGreater(always.staleness(0.0), 0)
        self.assertTrue(always.must_revalidate)

    def test_refreshed(self):
        """
        A 304's headers replace the stored ones of their names (not the
        body's type or framing) and its freshness applies from then.
        """
        entry = make_entry(200, [
            (b"content-type", b"text/plain"), (b"cache-control", b"max-age=10"),
            (b"etag", b'"1"'), (b"x-version", b"a")], b"body", 0.0, 0.0, None)
        new = refreshed(entry, [
            (b"cache-control", b"max-age=100"), (b"content-type", b"text/evil"),
            (b"content-length", b"0"), (b"x-version", b"b")], 50.0, 50.0, None)
        self.assertEqual(new.body, b"body")
        self.assertEqual(dict(new.headers)[b"content-type"], b"text/plain")
        self.assertEqual(dict(new.headers)[b"x-version"], b"b")
        self.assertNotIn(b"content-length", dict(new.headers))
        self.assertEqual(new.lifetime, 100)
        self.assertEqual(new.staleness(100.0), -50)
