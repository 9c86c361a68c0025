"""
Tests for L{gatelayer.http.conditional}: byte ranges, entity tags and the
conditional headers, as pure functions.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http.conditional import (
    UNSATISFIABLE, entity_tag, if_range_matches, modified_since, none_match, parse_range)

# (Range header value, expected parse_range result for a 100-byte file).
RANGES_OF_100 = [
    ("bytes=0-99", (0, 99)),
    ("bytes=0-0", (0, 0)),
    ("bytes=10-19", (10, 19)),
    ("bytes=99-99", (99, 99)),
    ("bytes=90-", (90, 99)),
    ("bytes=0-", (0, 99)),
    ("bytes=-10", (90, 99)),
    ("bytes=-100", (0, 99)),
    ("bytes=-1000", (0, 99)),
    ("bytes=95-1000", (95, 99)),
    ("bytes=0-99999999999999999999999999", (0, 99)),
    ("bytes=00000000000000000000000001-2", (1, 2)),
    ("BYTES=0-1", (0, 1)),
    ("Bytes=0-1", (0, 1)),
    ("bytes= 0-1", (0, 1)),
    ("bytes=0-1 ", (0, 1)),
    ("bytes=0-1,", (0, 1)),
    ("bytes=, 0-1, ,", (0, 1)),
    # Starts past the end, or the empty suffix: 416.
    ("bytes=100-", UNSATISFIABLE),
    ("bytes=100-200", UNSATISFIABLE),
    ("bytes=1000-", UNSATISFIABLE),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=-000", UNSATISFIABLE),
    ("bytes=99999999999999999999999-", UNSATISFIABLE),
    ("bytes=99999999999999999999999-99999999999999999999999", UNSATISFIABLE),
    # More than one range: the whole file.
    ("bytes=0-1,5-6", None),
    ("bytes=0-1,0-1", None),
    ("bytes=0-1, -5", None),
    ("bytes=100-,200-", None),
    # Malformed: ignored, the whole file.
    ("bytes=10-5", None),
    ("bytes=99999999999999999999999-1", None),
    ("bytes=", None),
    ("bytes", None),
    ("bytes=,", None),
    ("bytes=-", None),
    ("bytes=--1", None),
    ("bytes=1-2-3", None),
    ("bytes=abc", None),
    ("bytes=1", None),
    ("bytes=+1-2", None),
    ("bytes=1-+2", None),
    ("bytes=-+2", None),
    ("bytes=1_0-20", None),
    ("bytes=0x1-2", None),
    ("bytes=1.5-2", None),
    ("bytes=\u00b2-3", None),
    ("bytes=\u0663-9", None),
    ("bytes=1 -2", None),
    ("bytes=1- 2", None),
    ("bytes =0-1", None),
    (" bytes=0-1", None),
    ("items=0-1", None),
    ("=0-1", None),
    ("0-1", None),
    ("", None),
    ("bytes=" + "9" * 5000 + "-", UNSATISFIABLE),
    ("bytes=-" + "9" * 5000, (0, 99)),
]

ETAG = b'"5f5e100-64"'
MTIME = 100000000  # Sat, 03 Mar 1973 09:46:40 GMT
LAST_MODIFIED = "Sat, 03 Mar 1973 09:46:40 GMT"


class ParseRangeTests(SynchronousTestCase):
    """
    L{parse_range}: one range, RFC 9110 section 14.1 grammar, strict ASCII
    digits, malformed headers ignored.
    """

    def test_table(self):
        """
        Every row of the table gives its range, L{UNSATISFIABLE} or
        L{None}.
        """
        for value, expected in RANGES_OF_100:
            with self.subTest(value=value[:40]):
                self.assertEqual(parse_range(value, 100), expected)

    def test_one_byte_file(self):
        """
        A one-byte file: C{0-0}, C{0-} and any suffix give that byte; C{1-}
        is unsatisfiable.
        """
        for value in ("bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-5", "bytes=0-9"):
            with self.subTest(value=value):
                self.assertEqual(parse_range(value, 1), (0, 0))
        self.assertIs(parse_range("bytes=1-", 1), UNSATISFIABLE)

    def test_large_file(self):
        """
        Positions beyond 32 bits work (files over 4 GB).
        """
        size = 10 * 2 ** 32
        self.assertEqual(parse_range("bytes=%d-" % (size - 5,), size), (size - 5, size - 1))
        self.assertEqual(parse_range("bytes=-5", size), (size - 5, size - 1))


class ValidatorTests(SynchronousTestCase):
    """
    Entity tags and the C{If-Range}, C{If-None-Match} and
    C{If-Modified-Since} comparisons.
    """

    def test_entity_tag(self):
        """
        The tag is the modification time and size in hex, quoted (nginx's
        shape); fractions of a second are dropped.
        """
        self.assertEqual(entity_tag(MTIME + 0.7, 100), ETAG)

    def test_if_range(self):
        """
        C{If-Range} matches the exact strong tag or the exact
        C{Last-Modified} date; weak tags, other tags, other dates and
        garbage do not.
        """
        table = [
            (ETAG.decode(), True),
            (" " + ETAG.decode() + " ", True),
            (LAST_MODIFIED, True),
            ("Saturday, 03-Mar-73 09:46:40 GMT", True),
            ("W/" + ETAG.decode(), False),
            ('"other"', False),
            ('"5f5e100-64', False),
            ("Sat, 03 Mar 1973 09:46:41 GMT", False),
            ("Sat, 03 Mar 1973 09:46:39 GMT", False),
            ("yesterday", False),
            ("", False),
            ("*", False),
        ]
        for value, expected in table:
            with self.subTest(value=value):
                self.assertEqual(if_range_matches(value, ETAG, MTIME), expected)

    def test_none_match(self):
        """
        C{If-None-Match} uses weak comparison over a list, and C{*} matches
        any file.
        """
        table = [
            (ETAG.decode(), True),
            ("W/" + ETAG.decode(), True),
            ('"a", ' + ETAG.decode(), True),
            ('"a",W/' + ETAG.decode() + ', "b"', True),
            ("*", True),
            ('"a"', False),
            ('"a", "b"', False),
            (ETAG.decode()[1:-1], False),
            ("", False),
        ]
        for value, expected in table:
            with self.subTest(value=value):
                self.assertEqual(none_match(value, ETAG), expected)

    def test_modified_since(self):
        """
        A file is modified since a date earlier than its time; the same or
        a later date is not; an unparseable date counts as modified.
        """
        table = [
            (LAST_MODIFIED, False),
            ("Sat, 03 Mar 1973 09:46:41 GMT", False),
            ("Sat, 03 Mar 1973 09:46:39 GMT", True),
            ("garbage", True),
            ("", True),
        ]
        for value, expected in table:
            with self.subTest(value=value):
                self.assertEqual(modified_since(value, MTIME), expected)
