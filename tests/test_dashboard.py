"""
Tests for the admin dashboard page (gatelayer.process.dashboard): its
security headers, the admin guard in front of it, the token case, and the
page's own rules (self-contained, no markup built from data). The
additions to /status the page reads (listener TLS, worker start times) are
checked here too. In memory: the admin harness of tests/test_admin.py.
(The page in a real browser: tests/integration/test_dashboard_browser.py.)
"""

import base64
import hashlib
import json
import os
import re
from html.parser import HTMLParser

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.process.dashboard import DashboardPage, content_security_policy, load_dashboard
from tests.test_admin import TOKEN, AdminHarness

TLS_SECTIONS = """
[listener:secure]
bind = 127.0.0.1:8443
tls = main
[tls:main]
certificates = certs/
"""


class _Inline(HTMLParser):
    """
    Collects the text of each <script> and <style>, and every attribute
    that loads something.
    """

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.blocks = {"script": [], "style": []}
        self.loads = []
        self._open = None

    def handle_starttag(self, tag, attrs):
        if tag in self.blocks:
            self._open = tag
            self.blocks[tag].append("")
            self.loads.extend(value for name, value in attrs if name == "src")
        for name, value in attrs:
            if name in ("href", "src", "action", "formaction", "data", "srcset"):
                self.loads.append(value)

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.blocks[self._open][-1] += data


def inline(page):
    """
    The parsed page (an L{_Inline}).
    """
    parser = _Inline()
    parser.feed(page.decode("utf-8"))
    return parser


def sha256(text):
    """
    A CSP hash source of C{text}.
    """
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def directives(value):
    """
    C{{directive: [sources]}} of a Content-Security-Policy value.
    """
    found = {}
    for part in value.decode("ascii").split(";"):
        name, *sources = part.split()
        found[name] = sources
    return found


class DashboardPageTests(SynchronousTestCase):
    """
    GET / answers the page with headers that allow nothing but its own
    inline script and style and requests to the admin endpoint itself.
    """

    def setUp(self):
        """
        A started master with its admin site, no token.
        """
        self.gate = AdminHarness()
        self.gate.start()

    def test_page(self):
        """
        200, HTML in UTF-8, the packaged page, never cached, never framed,
        no MIME sniffing, no referrer.
        """
        status, headers, body = self.gate.get(path=b"/")
        self.assertEqual(status, 200)
        self.assertEqual(body, load_dashboard())
        self.assertIn(b"<title>gatelayer</title>", body)
        self.assertEqual(headers[b"content-type"], [b"text/html; charset=utf-8"])
        self.assertEqual(headers[b"cache-control"], [b"no-store"])
        self.assertEqual(headers[b"x-frame-options"], [b"DENY"])
        self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])
        self.assertEqual(headers[b"referrer-policy"], [b"no-referrer"])
        self.assertNotIn(b"server", headers)

    def test_content_security_policy(self):
        """
        default-src 'none'; the one inline script and the one inline style
        allowed by their own SHA-256 (computed here from the page served),
        no 'unsafe-inline' or 'unsafe-eval'; fetches to 'self' only; no
        framing, no base, no forms.
        """
        _, headers, body = self.gate.get(path=b"/")
        policy = directives(headers[b"content-security-policy"][0])
        page = inline(body)
        self.assertEqual(len(page.blocks["script"]), 1)
        self.assertEqual(len(page.blocks["style"]), 1)
        self.assertEqual(policy["default-src"], ["'none'"])
        self.assertEqual(policy["script-src"], [sha256(page.blocks["script"][0])])
        self.assertEqual(policy["style-src"], [sha256(page.blocks["style"][0])])
        self.assertEqual(policy["connect-src"], ["'self'"])
        self.assertEqual(policy["frame-ancestors"], ["'none'"])
        self.assertEqual(policy["base-uri"], ["'none'"])
        self.assertEqual(policy["form-action"], ["'none'"])
        self.assertNotIn(b"unsafe", headers[b"content-security-policy"][0])

    def test_head(self):
        """
        HEAD / has the page's headers and no body.
        """
        status, headers, body = self.gate.ask(
            b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:9901\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"x-frame-options"], [b"DENY"])
        self.assertEqual(body, b"")

    def test_only_the_root(self):
        """
        The page is only at /: other paths are 404, a POST is not answered
        with the page, a query string does not change it.
        """
        self.assertEqual(self.gate.get(path=b"/index.html")[0], 404)
        self.assertEqual(self.gate.get(path=b"/dashboard")[0], 404)
        status, headers, body = self.gate.ask(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1:9901\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 405)
        self.assertNotIn(b"<title>gatelayer</title>", body)
        status, _, body = self.gate.get(path=b"/?token=x")
        self.assertEqual((status, body), (200, load_dashboard()))

    def test_host_checked(self):
        """
        A foreign Host (DNS rebinding) or none gets 421, not the page.
        """
        for host in (b"evil.example", b"evil.example:9901", None):
            status, headers, body = self.gate.get(path=b"/", host=host)
            self.assertEqual(status, 421, host)
            self.assertNotIn(b"<title>", body)
            self.assertEqual(headers[b"content-type"], [b"application/json"])


class DashboardTokenTests(SynchronousTestCase):
    """
    With admin_token_file, the page (which holds no data) opens without
    the token, and everything it reads still needs it.
    """

    def setUp(self):
        """
        A started master whose admin endpoint needs TOKEN.
        """
        self.gate = AdminHarness(token=TOKEN)
        self.gate.start()

    def test_page_without_token(self):
        """
        GET / without Authorization (a browser opening the URL) is the
        page; with a wrong token too (it is not looked at).
        """
        for headers in ([], [b"Authorization: Bearer nope"]):
            status, _, body = self.gate.get(path=b"/", headers=headers)
            self.assertEqual((status, body), (200, load_dashboard()))

    def test_data_needs_token(self):
        """
        /status and every other path still need the token: 401 without,
        200 with it.
        """
        for path in (b"/status", b"/healthz", b"/metrics", b"/x"):
            self.assertEqual(self.gate.get(path=path)[0], 401, path)
        status, _, body = self.gate.get(path=b"/status", headers=[b"Authorization: Bearer " + TOKEN])
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(body)["workers"]), 2)

    def test_host_checked_first(self):
        """
        The Host check still applies to the page.
        """
        self.assertEqual(self.gate.get(path=b"/", host=b"evil.example")[0], 421)

    def test_page_sends_token(self):
        """
        The page's script reads the token from a #token= fragment, keeps
        it in sessionStorage and sends it as a bearer token.
        """
        script = inline(load_dashboard()).blocks["script"][0]
        self.assertIn("token=", script)
        self.assertIn("sessionStorage.setItem", script)
        self.assertIn('Authorization: "Bearer " + state.token', script)
        self.assertIn("history.replaceState", script)


class PageRulesTests(SynchronousTestCase):
    """
    The page stays self-contained, small, and builds no markup from data.
    """

    def test_self_contained(self):
        """
        Nothing is loaded from elsewhere: no src, the only href is the
        empty data: icon, no URL in the style.
        """
        page = inline(load_dashboard())
        self.assertEqual(page.loads, ["data:,"])
        self.assertNotRegex(page.blocks["style"][0], r"url\(|@import")
        self.assertNotRegex(page.blocks["script"][0], r"https?://")

    def test_no_markup_from_data(self):
        """
        The script never parses strings as HTML or code: text goes into
        the page as text nodes.
        """
        script = inline(load_dashboard()).blocks["script"][0]
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setAttribute", "srcdoc", "DOMParser", "createContextualFragment"):
            self.assertNotIn(sink, script)
        self.assertIn("textContent", script)

    def test_size(self):
        """
        The page stays under 600 lines.
        """
        self.assertLess(load_dashboard().count(b"\n"), 600)

    def test_one_inline_block_each(self):
        """
        The policy is refused for a page with a second script or style, or
        none (it would be blocked in the browser).
        """
        page = load_dashboard()
        for broken in (page + b"<script>x()</script>", page.replace(b"<style>", b"<style>a{}</style><style>"),
                       re.sub(rb"<script>.*?</script>", b"", page, flags=re.S)):
            self.assertRaises(ValueError, content_security_policy, broken)

    def test_read_once(self):
        """
        The page and its headers are computed when the resource is built,
        not per request.
        """
        page = DashboardPage(b"<style>s</style><script>j</script>")
        self.assertEqual(dict(page.headers)[b"content-security-policy"].split(b"; ")[1],
                         ("script-src " + sha256("j")).encode("ascii"))


class DashboardStatusTests(SynchronousTestCase):
    """
    What /status adds for the dashboard, next to the keys it had.
    """

    def test_listener_details(self):
        """
        Each listener with its bound addresses and its TLS section (None
        for plain HTTP); the old "listeners" key is unchanged.
        """
        gate = AdminHarness(sections="[listener:secure]\nbind = 127.0.0.1:8443\n")
        gate.start()
        document = json.loads(gate.get(path=b"/status")[2])
        self.assertEqual(document["listeners"], {"web": ["127.0.0.1:8080"], "secure": ["127.0.0.1:8443"]})
        self.assertEqual(document["listener_details"], {
            "web": {"binds": ["127.0.0.1:8080"], "tls": None},
            "secure": {"binds": ["127.0.0.1:8443"], "tls": None},
        })

    def test_listener_tls(self):
        """
        A TLS listener names its [tls:NAME].
        """
        from gatelayer.config import parse_config_text
        from gatelayer.process.endpoints import ListenersService
        from tests.test_admin import CONFIG, _bind
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "certs"))
        config = parse_config_text(CONFIG.format(admin="127.0.0.1:9901") + TLS_SECTIONS,
                                   os.path.join(directory, "gate.ini"))
        listeners = ListenersService(config, _bind, None)
        listeners.bind()
        self.assertEqual(listeners.status()["listener_details"]["secure"],
                         {"binds": ["127.0.0.1:8443"], "tls": "main"})

    def test_worker_started_at(self):
        """
        Each worker row has the time its process started (epoch seconds)
        next to its uptime; None for an empty slot.
        """
        gate = AdminHarness()
        gate.reactor.advance(1000)
        gate.start()
        gate.reactor.advance(5)
        workers = json.loads(gate.get(path=b"/status")[2])["workers"]
        self.assertEqual([(w["started_at"], w["uptime"]) for w in workers], [(1000.0, 5.0), (1000.0, 5.0)])
        gate.master.workers[1].process = None
        workers = json.loads(gate.get(path=b"/status")[2])["workers"]
        self.assertIsNone(workers[1]["started_at"])
