"""
Tests for L{gatelayer.config.filter_ratelimit}: the [filter:NAME] type =
rate_limit section, and the Redis store URL syntax it shares with the store
(L{gatelayer.net.redisurl}).
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config import filter_ratelimit
from gatelayer.config.filter_ratelimit import RateLimitSettings, parse_key, parse_rate
from gatelayer.net.redisurl import RedisAddress, parse_store_url
from gatelayer.ratelimit import redis_store

BASE = """
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = 127.0.0.1:9001
[route:api]
path = /api/
upstream = app
filters = rl
[filter:rl]
type = rate_limit
"""


def settings(text):
    """
    Parse a whole config whose [filter:rl] section ends with C{text}.
    """
    return parse_config_text(BASE + text, "/etc/gate.ini").filters["rl"].settings


def problems(text):
    """
    The problems reported for a [filter:rl] section ending with C{text}.
    """
    try:
        parse_config_text(BASE + text, "/etc/gate.ini")
    except ConfigError as e:
        return e.problems
    raise AssertionError("no problem reported")


class ParseFilterTests(SynchronousTestCase):
    """
    C{parse_filter} through the whole loader.
    """

    def test_defaults(self):
        """
        Only rate is required; the rest has documented defaults (the
        embedded store's timeout is 1s).
        """
        self.assertEqual(settings("rate = 100/minute\n"), RateLimitSettings(
            key=("ip",), rate=100, period=60.0, burst=0, algorithm="gcra", store=None,
            store_timeout=1.0, on_store_error="local", mode="enforce", legacy_headers=False))

    def test_store_timeout_default(self):
        """
        A Redis store waits 100ms by default, the embedded store 1s.
        """
        self.assertEqual(settings("rate = 1/second\nstore = redis://127.0.0.1:6379/0\n").store_timeout, 0.1)
        self.assertEqual(settings("rate = 1/second\n").store_timeout, 1.0)

    def test_every_key(self):
        """
        Every key of the section is read.
        """
        s = settings(
            "key = route, header:X-Api-Key, jwt.sub\nrate = 5/second\nburst = 3\n"
            "algorithm = sliding_window\nstore = redis://:s3cret@cache:6380/2\n"
            "store_timeout = 250ms\non_store_error = closed\nmode = shadow\nlegacy_headers = yes\n")
        self.assertEqual(s.key, ("route", "header:x-api-key", "jwt.sub"))
        self.assertEqual((s.rate, s.period, s.burst, s.limit), (5, 1.0, 3, 8))
        self.assertEqual(s.algorithm, "sliding_window")
        self.assertEqual(s.store, RedisAddress("redis", "cache", 6380, 2, password="s3cret"))
        self.assertEqual((s.store_timeout, s.on_store_error, s.mode, s.legacy_headers),
                         (0.25, "closed", "shadow", True))

    def test_rate_required(self):
        """
        A missing rate is reported with file, section and key.
        """
        self.assertIn("/etc/gate.ini [filter:rl] rate: is required", problems("key = ip\n"))

    def test_all_problems_at_once(self):
        """
        Every bad value is reported, naming key and value.
        """
        found = problems(
            "rate = 10/fortnight\nburst = -1\nalgorithm = leaky\nstore = http://x\n"
            "store_timeout = 2m\non_store_error = maybe\nmode = loud\nlegacy_headers = perhaps\n"
            "key = cookie\ncolour = red\n")
        expected = [
            "[filter:rl] rate: '10/fortnight' has the unknown unit 'fortnight'",
            "[filter:rl] burst: '-1' must be at least 0",
            "[filter:rl] algorithm: 'leaky' is not one of gcra, sliding_window",
            "[filter:rl] store: 'http://x' is not a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL",
            "[filter:rl] store_timeout: '2m' must be from 1ms to 60s",
            "[filter:rl] on_store_error: 'maybe' is not one of open, closed, local",
            "[filter:rl] mode: 'loud' is not one of enforce, shadow",
            "[filter:rl] legacy_headers: 'perhaps' is not yes or no",
            "[filter:rl] key: 'cookie' has 'cookie', which is not a key source",
            "[filter:rl] colour: is not a known key",
        ]
        for text in expected:
            self.assertTrue(any(text in p for p in found), (text, found))

    def test_missing_ca_file(self):
        """
        A CA file that does not exist is reported.
        """
        found = problems("rate = 1/second\nstore = rediss://cache:6380/0?ca=nowhere.pem\n")
        self.assertIn("/etc/gate.ini [filter:rl] store: 'rediss://cache:6380/0?ca=nowhere.pem' "
                      "has ca=/etc/nowhere.pem, which is not a file", found)

    def test_password_not_shown(self):
        """
        A bad store URL is reported without its password.
        """
        found = problems("rate = 1/second\nstore = redis://user:hunter2@host:99999/0\n")
        self.assertTrue(any("store:" in p for p in found), found)
        self.assertFalse(any("hunter2" in p for p in found), found)


class ValueParserTests(SynchronousTestCase):
    """
    The value parsers, table style.
    """

    def test_rates(self):
        """
        N/unit in the documented units and their short forms.
        """
        for text, expected in [("100/minute", (100, 60.0)), ("5/second", (5, 1.0)),
                               ("1/day", (1, 86400.0)), ("10 / hour", (10, 3600.0)),
                               ("7/s", (7, 1.0)), ("3/min", (3, 60.0))]:
            self.assertEqual(parse_rate(text), expected, text)
        for text in ["100", "0/second", "x/minute", "5/week", "2000000/second", "-1/second"]:
            self.assertRaises(ValueError, parse_rate, text)

    def test_keys(self):
        """
        Key sources, composites and their errors.
        """
        self.assertEqual(parse_key("ip"), ("ip",))
        self.assertEqual(parse_key("Header:X-Tenant, IP, ip"), ("header:x-tenant", "ip"))
        self.assertEqual(parse_key("jwt.org.id, consumer"), ("jwt.org.id", "consumer"))
        for text in ["", "header:", "header:bad name", "jwt.", "global, ip", "cookie:x"]:
            self.assertRaises(ValueError, parse_key, text)

    def test_store_urls(self):
        """
        redis://, rediss:// and unix:// URLs.
        """
        cases = [
            ("redis://127.0.0.1:6379/0", RedisAddress("redis", "127.0.0.1", 6379, 0)),
            ("redis://localhost", RedisAddress("redis", "localhost", 6379, 0)),
            ("rediss://:pw@cache.example.com:6380/3",
             RedisAddress("rediss", "cache.example.com", 6380, 3, password="pw")),
            ("redis://app:pw@[::1]:7000?db=4", RedisAddress("redis", "::1", 7000, 4, username="app", password="pw")),
            ("unix:///run/redis.sock", RedisAddress("unix", None, 0, 0, path="/run/redis.sock")),
            ("unix:///run/redis.sock?db=5", RedisAddress("unix", None, 0, 5, path="/run/redis.sock")),
        ]
        for text, expected in cases:
            self.assertEqual(parse_store_url(text), expected, text)
        self.assertTrue(parse_store_url("rediss://h:1/0").tls)
        for text in ["redis://", "redis://h:port/0", "redis://h/x", "unix://relative.sock",
                     "memcached://h", "redis://h/1?db=2", "redis://h/0?timeout=1"]:
            self.assertRaises(ValueError, parse_store_url, text)

    def test_one_url_syntax(self):
        """
        The config and the Redis store use the same neutral parser, and the
        config module still offers it under its old names.
        """
        self.assertIs(filter_ratelimit.parse_store_url, parse_store_url)
        self.assertIs(filter_ratelimit.RedisAddress, RedisAddress)
        self.assertIs(redis_store.parse_store_url, parse_store_url)
        self.assertIs(redis_store.RedisAddress, RedisAddress)

    def test_ca(self):
        """
        rediss:// may name a CA file, relative to the config's directory;
        other schemes may not.
        """
        address = parse_store_url("rediss://cache:6380/0?ca=certs/ca.pem", "/etc/gatelayer")
        self.assertEqual(address.ca, "/etc/gatelayer/certs/ca.pem")
        self.assertEqual(address.display(), "rediss://cache:6380/0?ca=/etc/gatelayer/certs/ca.pem")
        self.assertRaises(ValueError, parse_store_url, "redis://cache/0?ca=ca.pem")

    def test_display_hides_password(self):
        """
        The display form and repr never show the password.
        """
        address = parse_store_url("redis://:hunter2@cache:6379/1")
        self.assertEqual(address.display(), "redis://***@cache:6379/1")
        self.assertNotIn("hunter2", repr(address))
        self.assertEqual(parse_store_url("unix:///r.sock?db=2").display(), "unix:///r.sock?db=2")
        self.assertEqual(parse_store_url("redis://[::1]:7000").display(), "redis://[::1]:7000/0")
