"""
Tests for the C{redis+sentinel://} store URL (L{gatelayer.net.redisurl}):
what it accepts, a table of hostile URLs each refused with a message naming
the file, section, key and what is wrong (never the password), for both the
rate-limit and the cache filter.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import filter_cache, filter_ratelimit
from gatelayer.net.redisurl import DEFAULT_SENTINEL_PORT, MAX_SENTINELS, RedisAddress, parse_store_url
from gatelayer.testing.config import parse_section

# (URL, the address it is)
ACCEPTED = [
    ("redis+sentinel://s1:26379,s2:26380/mymaster/0",
     RedisAddress("redis+sentinel", None, 0, 0, sentinels=(("s1", 26379), ("s2", 26380)), service="mymaster")),
    ("redis+sentinel://s1/mymaster",
     RedisAddress("redis+sentinel", None, 0, 0, sentinels=(("s1", DEFAULT_SENTINEL_PORT),), service="mymaster")),
    ("REDIS+SENTINEL://S1:1, 10.0.0.2:2 ,[::1]:3/my-master.v2_x/15",
     RedisAddress("redis+sentinel", None, 0, 15, sentinels=(("s1", 1), ("10.0.0.2", 2), ("::1", 3)),
                  service="my-master.v2_x")),
    ("redis+sentinel://:p%40ss@s1:26379/m/3",
     RedisAddress("redis+sentinel", None, 0, 3, password="p@ss", sentinels=(("s1", 26379),), service="m")),
    ("redis+sentinel://app:pw@s1,s2/m?db=4",
     RedisAddress("redis+sentinel", None, 0, 4, username="app", password="pw",
                  sentinels=(("s1", 26379), ("s2", 26379)), service="m")),
    ("redis+sentinel://[::1]/m/",
     RedisAddress("redis+sentinel", None, 0, 0, sentinels=(("::1", 26379),), service="m")),
    ("rediss+sentinel://:pw@s1,s2/m/1?ca=/etc/ca.pem",
     RedisAddress("rediss+sentinel", None, 0, 1, password="pw", sentinels=(("s1", 26379), ("s2", 26379)),
                  service="m", ca="/etc/ca.pem")),
]

# (URL, what the message says); every one has the password "secret".
HOSTILE = [
    ("redis+sentinel://:secret@/m/0", "has an empty Sentinel"),
    ("redis+sentinel://:secret@s1,,s2/m/0", "has an empty Sentinel"),
    ("redis+sentinel://:secret@s1,/m/0", "has an empty Sentinel"),
    ("redis+sentinel://:secret@s1:0/m/0", "whose port is not a number from 1 to 65535"),
    ("redis+sentinel://:secret@s1:65536/m/0", "whose port is not a number from 1 to 65535"),
    ("redis+sentinel://:secret@s1:-1/m/0", "whose port is not a number from 1 to 65535"),
    ("redis+sentinel://:secret@s1:x/m/0", "whose port is not a number from 1 to 65535"),
    ("redis+sentinel://:secret@s1:26379:1/m/0", "whose port is not a number from 1 to 65535"),
    ("redis+sentinel://:secret@s_1%/m/0", "which is not host:port"),
    ("redis+sentinel://:secret@s1 s2/m/0", "which is not host:port"),
    ("redis+sentinel://:secret@[::1/m/0", "which is not [IPv6]:port"),
    ("redis+sentinel://:secret@s1/m/0?db", "has a query that is not name=value pairs"),
    ("redis+sentinel://:secret@[::1]x/m/0", "which is not [IPv6]:port"),
    ("redis+sentinel://:secret@[]:1/m/0", "which is not [IPv6]:port"),
    ("redis+sentinel://:secret@s1,s1:26379/m/0", "names the Sentinel s1:26379 twice"),
    ("redis+sentinel://:secret@" + ",".join(f"s{i}" for i in range(MAX_SENTINELS + 1)) + "/m",
     f"names {MAX_SENTINELS + 1} Sentinels (at most {MAX_SENTINELS})"),
    ("redis+sentinel://:secret@s1", "names no service"),
    ("redis+sentinel://:secret@s1/", "names no service"),
    ("redis+sentinel://:secret@s1//0", "names no service"),
    ("redis+sentinel://:secret@s1/m/0/1", "has a path longer than /SERVICE/db"),
    ("redis+sentinel://:secret@s1/m%20x/0", "has the service name 'm x'"),
    ("redis+sentinel://:secret@s1/m%0a/0", "has the service name"),
    ("redis+sentinel://:secret@s1/" + "m" * 65 + "/0", "has the service name"),
    ("redis+sentinel://:secret@s1/m/x", "has the database 'x', which is not a number"),
    ("redis+sentinel://:secret@s1/m/-1", "has the database -1, which is out of range"),
    ("redis+sentinel://:secret@s1/m/1?db=2", "gives the database twice"),
    ("redis+sentinel://:secret@s1/m/0?ca=ca.pem", "has ca, which only applies to rediss+sentinel:// (TLS)"),
    ("rediss+sentinel://:secret@s1/m/0?ca=", "has an empty ca"),
    ("rediss+sentinel://:secret@s1/m/0?tls=no", "has the unknown query parameter 'tls'"),
    ("redis+sentinel://:secret@s1/m/0?sentinel_password=x", "unknown query parameter 'sentinel_password'"),
    ("redis+sentinel://:secret@s1/m/0#frag", "has a #fragment"),
    ("redis+sentinel://app:secret@s1/m/0?x=1", "has the unknown query parameter 'x'"),
    ("redis+sentinel://app@s1/m/0", "has user@ without :password"),
    ("sentinel://:secret@s1/m/0", "is not a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL"),
]


class SentinelUrlTests(SynchronousTestCase):
    """
    C{redis+sentinel://} URLs.
    """

    def test_accepted(self):
        """
        Sentinels in order with their ports (26379 when left out), the
        service, the database in the path or in C{?db=}, user and password.
        """
        for text, expected in ACCEPTED:
            address = parse_store_url(text)
            self.assertEqual(address, expected, text)
            self.assertTrue(address.sentinel)
            self.assertEqual(address.tls, text.startswith("rediss"))

    def test_display(self):
        """
        The display form lists every Sentinel and hides the password, as
        does C{repr}; it reads back as the same address.
        """
        address = parse_store_url("redis+sentinel://:hunter2@s1,[::1]:7000/m/2")
        self.assertEqual(address.display(), "redis+sentinel://***@s1:26379,[::1]:7000/m/2")
        self.assertNotIn("hunter2", repr(address))
        plain = parse_store_url("redis+sentinel://s1,[::1]:7000/m/2")
        self.assertEqual(parse_store_url(plain.display()), plain)

    def test_hostile(self):
        """
        Each hostile URL raises L{ValueError} saying what is wrong.
        """
        for text, message in HOSTILE:
            with self.subTest(url=text):
                error = self.assertRaises(ValueError, parse_store_url, text)
                self.assertIn(message, str(error))

    def test_config_errors(self):
        """
        In gate.ini, each hostile URL is one problem naming the file,
        section, key and URL (without the password), for the rate-limit
        and the cache filter alike.
        """
        for parse, section, extra in [(filter_ratelimit.parse_filter, "filter:rl", {"rate": "20/minute"}),
                                      (filter_cache.parse_filter, "filter:c", {})]:
            for text, message in HOSTILE:
                with self.subTest(section=section, url=text):
                    settings, problems = parse_section(parse, section, dict(extra, store=text))
                    self.assertEqual(len(problems), 1, problems)
                    self.assertTrue(problems[0].startswith(f"gate.ini [{section}] store: "), problems)
                    self.assertIn(message, problems[0])
                    self.assertIn("s1" if "s1" in text else "sentinel", problems[0])
                    self.assertNotIn("secret", problems[0])

    def test_tls_ca(self):
        """
        rediss+sentinel:// may name a CA file, relative to the
        configuration's directory, shown in the display form; a CA that is
        not a file is a configuration error.
        """
        address = parse_store_url("rediss+sentinel://s1/m/0?ca=certs/ca.pem", "/etc/gatelayer")
        self.assertEqual(address.ca, "/etc/gatelayer/certs/ca.pem")
        self.assertEqual(address.display(), "rediss+sentinel://s1:26379/m/0?ca=/etc/gatelayer/certs/ca.pem")
        for parse, section, extra in [(filter_ratelimit.parse_filter, "filter:rl", {"rate": "20/minute"}),
                                      (filter_cache.parse_filter, "filter:c", {})]:
            settings, problems = parse_section(
                parse, section, dict(extra, store="rediss+sentinel://:secret@s1/m/0?ca=/no/such/ca.pem"))
            self.assertEqual(len(problems), 1, problems)
            self.assertIn(f"gate.ini [{section}] store: ", problems[0])
            self.assertIn("which is not a file", problems[0])
            self.assertNotIn("secret", problems[0])

    def test_config_accepts(self):
        """
        Both filters keep a Sentinel store's address.
        """
        url = "redis+sentinel://:pw@s1:26379,s2:26379/mymaster/1"
        for parse, section, extra in [(filter_ratelimit.parse_filter, "filter:rl", {"rate": "20/minute"}),
                                      (filter_cache.parse_filter, "filter:c", {})]:
            settings, problems = parse_section(parse, section, dict(extra, store=url))
            self.assertEqual(problems, [])
            self.assertEqual(settings.store, parse_store_url(url))
