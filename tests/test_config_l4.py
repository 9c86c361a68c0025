"""
Tests for the layer 4 configuration (L{gatelayer.config.listener_l4} and
its part of the loader): listener modes, pass-through routes, PROXY keys,
TCP health checks, and the contradictions C{--check} refuses, each naming
section and key.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.config.listener_l4 import parse_sni_routes
from gatelayer.testing.config import config_problems

UPSTREAMS = """
[upstream:db]
servers = 127.0.0.1:5432, 127.0.0.1:5433
health_check = tcp

[upstream:api]
servers = 127.0.0.1:9443
"""


def parse(text):
    return parse_config_text(text, "gate.ini", cpu_count=1)


class ListenerModeTests(SynchronousTestCase):
    """
    C{mode}, C{upstream} and C{routes} of a listener.
    """

    def test_tcp_listener(self):
        """
        A tcp listener needs no route section and gets its defaults.
        """
        config = parse("[listener:pg]\nbind = 127.0.0.1:0\nmode = tcp\nupstream = db\n" + UPSTREAMS)
        listener = config.listeners[0]
        self.assertEqual((listener.mode, listener.upstream, listener.accept_proxy, listener.header_timeout,
                          listener.l4_idle_timeout), ("tcp", "db", False, 10.0, 300.0))
        self.assertEqual(config.upstreams["db"].health.kind, "tcp")
        self.assertIsNone(config.upstreams["db"].health.path)

    def test_passthrough_listener(self):
        """
        A pass-through listener's routes are read in order, lower-case.
        """
        config = parse("[listener:tls]\nbind = 127.0.0.1:0\nmode = tls_passthrough\n"
                       "routes = API.example.com -> api, *.example.com -> db, * -> api\n"
                       "header_timeout = 2s\nidle_timeout = 1m\n" + UPSTREAMS)
        listener = config.listeners[0]
        self.assertEqual(listener.sni_routes,
                         (("api.example.com", "api"), ("*.example.com", "db"), ("*", "api")))
        self.assertEqual((listener.header_timeout, listener.l4_idle_timeout), (2.0, 60.0))

    def test_http_listener_default(self):
        """
        Without C{mode} a listener is an HTTP one, with no layer 4 settings.
        """
        config = parse("[listener:web]\nbind = 127.0.0.1:0\n[route:r]\nrespond = 200\n")
        self.assertEqual((config.listeners[0].mode, config.listeners[0].sni_routes), ("http", ()))

    def test_contradictions(self):
        """
        Each contradiction is refused, naming section and key.
        """
        base = "[tls:t]\ncertificates = .\n[route:r]\nrespond = 200\n" + UPSTREAMS
        cases = [
            ("mode = udp\n", "[listener:l] mode: 'udp' is not one of http, tcp, tls_passthrough"),
            ("mode = tcp\n", "[listener:l] upstream: is required with mode = tcp"),
            ("mode = tcp\nupstream = nope\n", "[listener:l] upstream: no section [upstream:nope]"),
            ("mode = tcp\nupstream = db\ntls = t\n", "[listener:l] tls: does not apply with mode = tcp"),
            ("mode = tcp\nupstream = db\nredirect_https = 443\n",
             "[listener:l] redirect_https: does not apply with mode = tcp"),
            ("mode = tcp\nupstream = db\nroutes = * -> db\n",
             "[listener:l] routes: only applies with mode = tls_passthrough"),
            ("mode = tcp\nupstream = db\nheader_timeout = 1s\n",
             "[listener:l] header_timeout: only applies with accept_proxy = yes"),
            ("mode = tls_passthrough\n", "[listener:l] routes: is required with mode = tls_passthrough"),
            ("mode = tls_passthrough\nroutes = * -> db\nupstream = db\n",
             "[listener:l] upstream: does not apply with mode = tls_passthrough"),
            ("mode = tls_passthrough\nroutes = a.example.com -> nope\n",
             "[listener:l] routes: a.example.com -> nope: no section [upstream:nope]"),
            ("mode = tls_passthrough\nroutes = a.example.com -> db, A.example.com -> api\n",
             "[listener:l] routes: 'a.example.com -> db, A.example.com -> api' names 'a.example.com' twice"),
            ("mode = tls_passthrough\nroutes = a.example.com db\n", "which is not 'NAME -> UPSTREAM'"),
            ("mode = tls_passthrough\nroutes = a_b.example.com -> db\n",
             "which is not a host name, *.domain or *"),
            ("mode = tls_passthrough\nroutes = *.*.example.com -> db\n",
             "which is not a host name, *.domain or *"),
            ("upstream = db\n", "[listener:l] upstream: only applies with mode = tcp or tls_passthrough"),
            ("accept_proxy = yes\n", "[listener:l] accept_proxy: only applies with mode = tcp"),
            ("mode = tcp\nupstream = db\naccept_proxy = yes\n",
             "[listener:l] accept_proxy: needs [gateway] trusted_proxies"),
            ("mode = tcp\nupstream = db\nidle_timeout = 0\n", "[listener:l] idle_timeout: '0' must be above zero"),
        ]
        for listener, message in cases:
            problems = config_problems(self, "[listener:l]\nbind = 127.0.0.1:0\n" + listener + base)
            self.assertIn(message, problems, listener)

    def test_upstream_contradictions(self):
        """
        Upstream settings that cannot hold with how the upstream is used
        are refused.
        """
        listener = "[listener:l]\nbind = 127.0.0.1:0\nmode = tcp\nupstream = u\n"
        cases = [
            ("[upstream:u]\nservers = 127.0.0.1:1\nhealth_check = /healthz\n",
             "[upstream:u] health_check: '/healthz' is an HTTP check, but only tcp or tls_passthrough "
             "listeners use this upstream (use health_check = tcp)"),
            ("[upstream:u]\nservers = 127.0.0.1:1\ntls = yes\n",
             "[upstream:u] tls: a tcp or tls_passthrough listener relays bytes"),
            ("[upstream:u]\nservers = 127.0.0.1:1\nsend_proxy = v3\n",
             "[upstream:u] send_proxy: 'v3' is not one of v1, v2, no"),
            ("[upstream:u]\nservers = 127.0.0.1:1\nhealth_check = tcp\nhealth_status = 200\n",
             "[upstream:u] health_status: does not apply with health_check = tcp"),
            ("[upstream:u]\nservers = 127.0.0.1:1\nhealth_check = udp\n",
             "[upstream:u] health_check: 'udp' must be tcp or a path starting with /"),
        ]
        for upstream, message in cases:
            self.assertIn(message, config_problems(self, listener + upstream), upstream)

    def test_send_proxy_not_for_http_routes(self):
        """
        C{send_proxy} on an upstream HTTP routes use is refused (the proxy
        would send a PROXY header nobody reads as HTTP).
        """
        problems = config_problems(self, "[listener:web]\nbind = 127.0.0.1:0\n[route:r]\nupstream = u\n"
                                         "[upstream:u]\nservers = 127.0.0.1:1\nsend_proxy = v1\n")
        self.assertIn("[upstream:u] send_proxy: only applies to upstreams of tcp and tls_passthrough", problems)

    def test_shared_upstream_keeps_http_check(self):
        """
        An upstream used by HTTP routes and a tcp listener may keep its HTTP
        check.
        """
        config = parse("[listener:web]\nbind = 127.0.0.1:0\n[listener:raw]\nbind = 127.0.0.1:0\nmode = tcp\n"
                       "upstream = u\n[route:r]\nupstream = u\n"
                       "[upstream:u]\nservers = 127.0.0.1:1\nhealth_check = /healthz\n")
        self.assertEqual(config.upstreams["u"].health.kind, "http")

    def test_send_proxy_values(self):
        """
        C{send_proxy} is v1, v2, or no (off).
        """
        for value, expected in (("v1", "v1"), ("V2", "v2"), ("no", None)):
            config = parse("[listener:l]\nbind = 127.0.0.1:0\nmode = tcp\nupstream = u\n"
                           f"[upstream:u]\nservers = 127.0.0.1:1\nsend_proxy = {value}\n")
            self.assertEqual(config.upstreams["u"].send_proxy, expected)


class SniRoutesTests(SynchronousTestCase):
    """
    L{parse_sni_routes} reads C{NAME -> UPSTREAM} lists.
    """

    def test_refused(self):
        """
        Empty lists, missing arrows or upstreams, and bad names are refused.
        """
        for text in ("", "->", "a.com ->", "-> u", "a.com -> u v", "a..com -> u", "-a.com -> u",
                     "a.*.com -> u", "*a.com -> u", "\u00e9.com -> u"):
            self.assertRaises(ValueError, parse_sni_routes, text)
