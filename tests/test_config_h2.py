"""
Tests for the HTTP/2 keys of C{[listener:NAME]}
(L{gatelayer.config.listener_h2}): on by default on TLS listeners, refused
on plain ones, the limits read and checked with errors naming section, key
and value.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.config.listener_h2 import H2Settings
from gatelayer.testing.config import config_problems

ROUTE = "[upstream:app]\nservers = 127.0.0.1:9000\n[route:all]\npath = /\nupstream = app\n"


class H2ListenerKeyTests(SynchronousTestCase):
    """
    C{http2} and the C{h2_*} keys.
    """

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.pem = os.path.join(directory, "site.pem")
        with open(self.pem, "w") as f:
            f.write("not read by the loader\n")
        self.tls = "[tls:main]\ncertificates = %s\n" % (self.pem,)

    def listener(self, extra="", tls=True):
        text = "[listener:web]\nbind = 127.0.0.1:0\n"
        if tls:
            text += "tls = main\n"
        return text + extra + self.tls + ROUTE

    def test_default_on_tls(self):
        """
        A TLS listener offers HTTP/2 with the default limits; a plain one
        does not.
        """
        config = parse_config_text(self.listener(), "gate.ini", cpu_count=1)
        self.assertEqual((config.listeners[0].http2, config.listeners[0].h2), (True, H2Settings()))
        config = parse_config_text(self.listener(tls=False), "gate.ini", cpu_count=1)
        self.assertFalse(config.listeners[0].http2)

    def test_defaults(self):
        """
        The defaults: 100 streams, a 32 KB header list, 100 resets, 20
        PINGs and 20 SETTINGS per 10 seconds.
        """
        self.assertEqual(
            (H2Settings().max_concurrent_streams, H2Settings().max_header_list_size,
             H2Settings().max_resets, H2Settings().max_pings, H2Settings().max_settings,
             H2Settings().flood_window),
            (100, 32768, 100, 20, 20, 10.0))

    def test_off(self):
        """
        C{http2 = no} leaves a TLS listener on HTTP/1.1.
        """
        config = parse_config_text(self.listener("http2 = no\n"), "gate.ini", cpu_count=1)
        self.assertFalse(config.listeners[0].http2)

    def test_limits_read(self):
        """
        Every C{h2_*} key is read into the listener's settings.
        """
        config = parse_config_text(self.listener(
            "h2_max_concurrent_streams = 32\nh2_max_header_list_size = 16KB\nh2_max_resets = 50\n"
            "h2_max_pings = 5\nh2_max_settings = 6\nh2_flood_window = 30s\n"), "gate.ini", cpu_count=1)
        self.assertEqual(config.listeners[0].h2, H2Settings(32, 16384, 50, 5, 6, 30.0))

    def test_errors(self):
        """
        Bad values and keys that do not apply are refused, naming the
        section, the key and the value.
        """
        cases = [
            (self.listener("http2 = yes\n", tls=False),
             "gate.ini [listener:web] http2: 'yes' needs a TLS listener of mode = http"),
            (self.listener("http2 = maybe\n"), "[listener:web] http2: 'maybe' is not yes or no"),
            (self.listener("h2_max_concurrent_streams = 0\n"),
             "[listener:web] h2_max_concurrent_streams: '0' must be at least 1"),
            (self.listener("h2_max_concurrent_streams = lots\n"),
             "[listener:web] h2_max_concurrent_streams: 'lots' is not a whole number"),
            (self.listener("h2_max_header_list_size = 10\n"),
             "[listener:web] h2_max_header_list_size: '10' is not between 1KB and 1MB"),
            (self.listener("h2_max_resets = -1\n"), "[listener:web] h2_max_resets: '-1' must be at least 1"),
            (self.listener("h2_max_pings = 0\n"), "[listener:web] h2_max_pings: '0' must be at least 1"),
            (self.listener("h2_max_settings = x\n"), "[listener:web] h2_max_settings: 'x' is not a whole number"),
            (self.listener("h2_flood_window = 0s\n"),
             "[listener:web] h2_flood_window: '0s' is not above 0s and at most 1h"),
            (self.listener("h2_max_pings = 5\n", tls=False),
             "[listener:web] h2_max_pings: only applies with http2 on"),
            (self.listener("http2 = no\nh2_max_resets = 5\n"),
             "[listener:web] h2_max_resets: only applies with http2 on"),
        ]
        for text, message in cases:
            self.assertIn(message, config_problems(self, text), text)
