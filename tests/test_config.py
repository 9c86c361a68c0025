"""
Tests for gatelayer.config: parsing gate.ini into specs and the errors a bad
file gets.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, load_config, parse_config_text
from gatelayer.config import values

BASE = """
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /hello
respond = 200 hello
"""


def parse(text, cpu_count=4):
    return parse_config_text(text, "/etc/gate/gate.ini", cpu_count=cpu_count)


class ValueParserTests(SynchronousTestCase):
    """
    The value syntaxes: durations, sizes, host:port, booleans.
    """

    def test_durations(self):
        """
        Durations take ms, s, m, h, d or a bare number of seconds.
        """
        for text, seconds in [("500ms", 0.5), ("2s", 2), ("1m", 60), ("1h", 3600), ("1d", 86400), ("3", 3)]:
            self.assertEqual(values.parse_duration(text), seconds, text)
        for bad in ["", "s", "2x", "-1s", "1 2s"]:
            self.assertRaises(ValueError, values.parse_duration, bad)

    def test_sizes(self):
        """
        Sizes take KB, MB, GB (binary) or bytes.
        """
        for text, size in [("512KB", 512 * 1024), ("10MB", 10 * 1024 ** 2), ("1GB", 1024 ** 3), ("100", 100)]:
            self.assertEqual(values.parse_size(text), size, text)
        self.assertRaises(ValueError, values.parse_size, "10 parsecs")

    def test_hostport(self):
        """
        host:port and [v6]:port parse; anything else is refused.
        """
        self.assertEqual(values.parse_hostport("127.0.0.1:8080"), ("127.0.0.1", 8080))
        self.assertEqual(values.parse_hostport("[::1]:8080"), ("::1", 8080))
        self.assertEqual(values.parse_hostport("api.internal:80"), ("api.internal", 80))
        for bad in ["127.0.0.1", "127.0.0.1:x", ":80", "::1:80", "[::1]80", "h:70000", "h:0"]:
            self.assertRaises(ValueError, values.parse_hostport, bad)
        self.assertEqual(values.parse_hostport("127.0.0.1:0", allow_port_zero=True), ("127.0.0.1", 0))


class ConfigTests(SynchronousTestCase):
    """
    Whole files: the specs built and the defaults.
    """

    def test_minimal(self):
        """
        A listener and a route are enough; [gateway] defaults apply, workers
        default to the CPU count.
        """
        config = parse(BASE)
        self.assertEqual(config.gateway.workers, 4)
        self.assertEqual(config.gateway.drain_timeout, 10.0)
        self.assertEqual(config.gateway.max_body_size, 10 * 1024 * 1024)
        self.assertEqual(config.listeners[0].binds, (("127.0.0.1", 8080),))
        route = config.routes[0]
        self.assertEqual((route.terminal, route.respond_status, route.respond_body), ("respond", 200, b"hello"))

    def test_full_issue_example(self):
        """
        The documented example parses into the expected specs.
        """
        config = parse("""
[gateway]
workers = 2
drain_timeout = 10s
admin = 127.0.0.1:9901
max_body_size = 10MB
header_timeout = 10s
idle_timeout = 60s
trusted_proxies = 10.0.0.0/8, ::1
[listener:web]
bind = 127.0.0.1:8080, [::1]:8080
[upstream:app]
servers = 127.0.0.1:9001 weight=3, 127.0.0.1:9002 backup, 127.0.0.1:9003 down
connect_timeout = 1s
read_timeout = 30s
health_check = /healthz
health_interval = 2s
[route:hello]
path = /hello
respond = 200 hello
[route:app]
path = /
host = *.example.com
methods = GET, post
upstream = app
strip_prefix = /
preserve_host = no
""")
        self.assertEqual(config.gateway.admin, ("127.0.0.1", 9901))
        self.assertEqual(len(config.gateway.trusted_proxies), 2)
        self.assertEqual(config.listeners[0].binds, (("127.0.0.1", 8080), ("::1", 8080)))
        upstream = config.upstreams["app"]
        self.assertEqual([(s.port, s.weight, s.backup, s.down) for s in upstream.servers],
                         [(9001, 3, False, False), (9002, 1, True, False), (9003, 1, False, True)])
        self.assertEqual(upstream.health.path, "/healthz")
        app = config.routes[1]
        self.assertEqual(app.methods, frozenset({"GET", "POST"}))
        self.assertEqual(app.host, "*.example.com")
        self.assertFalse(app.preserve_host)

    def test_relative_paths(self):
        """
        Relative paths are taken relative to the config file's directory.
        """
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "www"))
        path = os.path.join(directory, "gate.ini")
        with open(path, "w") as f:
            f.write(BASE + "[route:files]\npath = /static/\nstatic = www\n")
        config = load_config(path)
        self.assertEqual(config.routes[1].static, os.path.join(os.path.abspath(directory), "www"))


class ConfigErrorTests(SynchronousTestCase):
    """
    Every problem is reported, naming file, section, key and value.
    """

    cases = [
        ("[gateway]\nworkers = many\n", "[gateway] workers: 'many' is not a whole number"),
        ("[gateway]\ndrain_timeout = soon\n", "[gateway] drain_timeout: 'soon' is not a duration"),
        ("[gateway]\nmax_body_size = big\n", "[gateway] max_body_size: 'big' is not a size"),
        ("[gateway]\ncolour = blue\n", "[gateway] colour: is not a known key"),
        ("[gateway]\ntrusted_proxies = 10.0.0.0/33\n", "'10.0.0.0/33' is not an address or network"),
        ("[listener:x]\nbind = localhost\n", "[listener:x] bind: 'localhost' is not host:port"),
        ("[listener:x]\nbind = 127.0.0.1:1\ntls = main\n", "[listener:x] tls: no section [tls:main]"),
        ("[upstream:u]\nservers = 127.0.0.1:x\n", "[upstream:u] servers: '127.0.0.1:x' has '127.0.0.1:x'"),
        ("[upstream:u]\nservers = 127.0.0.1:1 weight=0\n", "must be at least 1"),
        ("[upstream:u]\nservers = 127.0.0.1:1 heavy\n", "unknown option 'heavy'"),
        ("[upstream:u]\n", "[upstream:u] servers: is required"),
        ("[upstream:u]\nservers = 127.0.0.1:1\nbalance = fastest\n", "[upstream:u] balance: 'fastest' is not one of"),
        ("[route:r]\npath = /r\n", "[route:r]: needs one of respond, static, upstream, aggregate or resource"),
        ("[route:r]\npath = /r\nrespond = 200\nupstream = u\n", "[route:r]: has respond and upstream"),
        ("[route:r]\npath = /r\nupstream = missing\n", "[route:r] upstream: no section [upstream:missing]"),
        ("[route:r]\npath = r\nrespond = 200\n", "[route:r] path: 'r' must start with /"),
        ("[route:r]\npath = /r\nrespond = 999 x\n", "[route:r] respond: '999 x' must be at most 599"),
        ("[route:r]\npath = /r\nmethods = FETCH\nrespond = 200\n", "'FETCH', not an HTTP method"),
        ("[route:r]\npath = /r\nstatic = /nonexistent/dir\n", "[route:r] static: '/nonexistent/dir' is not a directory"),
        ("[route:r]\npath = /r\nrespond = 200\nfilters = nope\n", "[route:r] filters: no section [filter:nope]"),
        ("[filter:f]\ntype = magic\n", "[filter:f] type: 'magic' is not a filter type"),
        ("[proxy:p]\n", "[proxy:p]: is not a known section"),
        ("[gateway]\nescaped_slashes = maybe\n", "[gateway] escaped_slashes: 'maybe' is not one of keep, reject, decode"),
        ("[gateway]\nunderscore_headers = yes\n", "[gateway] underscore_headers: 'yes' is not one of drop, allow, reject"),
        ("[gateway]\nmerge_slashes = often\n", "[gateway] merge_slashes: 'often' is not yes or no"),
        ("[gateway]\naccess_log_format = apache\n",
         "[gateway] access_log_format: 'apache' is not one of json, combined"),
        ("[gateway]\nrequest_id_header = X Request\n",
         "[gateway] request_id_header: 'X Request' is not a header name"),
        ("[gateway]\nrequest_id_header = X-Id:\n", "[gateway] request_id_header: 'X-Id:' is not a header name"),
        ("[gateway]\nbody_timeout = later\n", "[gateway] body_timeout: 'later' is not a duration"),
        ("[gateway]\nmax_connections = 0\n", "[gateway] max_connections: '0' must be at least 1"),
        ("[gateway]\nadmin_token_file = /nonexistent/token\n", "[gateway] admin_token_file: '/nonexistent/token' is not a file"),
        ("[route:r]\npath = /r\nrespond = 200\nmethods = get, Trace\ndotfiles = sometimes\n",
         "[route:r] dotfiles: 'sometimes' is not one of allow, deny"),
        ("[route:hello2]\npath = /hello\nrespond = 200 again\n", "matches exactly what [route:hello] matches"),
    ]

    def test_cases(self):
        """
        Each bad input is reported with file, section, key and value.
        """
        for extra, expected in self.cases:
            with self.subTest(extra=extra):
                error = self.assertRaises(ConfigError, parse, BASE + extra)
                text = "\n".join(error.problems)
                self.assertIn(expected, text)
                self.assertIn("/etc/gate/gate.ini", text)

    def test_all_problems_at_once(self):
        """
        Several problems are all listed in one error.
        """
        error = self.assertRaises(ConfigError, parse, "[gateway]\nworkers = x\nidle_timeout = y\n")
        self.assertEqual(len(error.problems), 4)  # two bad keys, no listener, no route

    def test_unknown_gateway_key_once(self):
        """
        An unknown key in [gateway] is reported once, not once per reader.
        """
        error = self.assertRaises(ConfigError, parse, "[gateway]\ncolour = blue\n" + BASE)
        self.assertEqual(sum("colour" in problem for problem in error.problems), 1, error.problems)

    def test_hardening_defaults(self):
        """
        The canonical-request and hardening keys default as documented, and
        the upstream timeouts are 5s to connect and 60s to read.
        """
        config = parse(BASE + "[upstream:u]\nservers = 127.0.0.1:1\n")
        gateway = config.gateway
        self.assertEqual(
            (gateway.merge_slashes, gateway.escaped_slashes, gateway.underscore_headers, gateway.body_timeout,
             gateway.max_connections, gateway.max_connections_per_ip, gateway.admin_token_file),
            (True, "reject", "drop", 30.0, 10000, 0, None))
        upstream = config.upstreams["u"]
        self.assertEqual((upstream.connect_timeout, upstream.read_timeout), (5.0, 60.0))

    def test_logging_defaults(self):
        """
        The access log is JSON by default and request ids use X-Request-Id;
        both can be set, and C{-} is accepted as the access log.
        """
        gateway = parse(BASE).gateway
        self.assertEqual((gateway.access_log, gateway.access_log_format, gateway.request_id_header),
                         (None, "json", "X-Request-Id"))
        gateway = parse("[gateway]\naccess_log = -\naccess_log_format = combined\n"
                        "request_id_header = X-Correlation-Id\n" + BASE).gateway
        self.assertEqual((gateway.access_log, gateway.access_log_format, gateway.request_id_header),
                         ("-", "combined", "X-Correlation-Id"))

    def test_unreadable(self):
        """
        A missing file is a ConfigError naming the path.
        """
        error = self.assertRaises(ConfigError, load_config, "/nonexistent/gate.ini")
        self.assertIn("/nonexistent/gate.ini", str(error))

    def test_syntax(self):
        """
        INI syntax errors are ConfigErrors, not tracebacks.
        """
        error = self.assertRaises(ConfigError, parse, "no section header\n")
        self.assertIn("gate.ini", str(error))

    def test_shipped_config(self):
        """
        The shipped etc/gate.ini is valid.
        """
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        config = load_config(os.path.join(here, "etc", "gate.ini"))
        self.assertEqual(config.gateway.workers, 2)
        self.assertEqual({r.terminal for r in config.routes}, {"respond", "static"})
