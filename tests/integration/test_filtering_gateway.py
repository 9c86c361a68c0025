"""
The ip_filter and waf filters in real worker processes, in front of a real
upstream server that counts the requests reaching it: a denied address
(forwarded by the trusted proxy) gets 403 and never reaches the upstream;
a deny file re-read on SIGHUP reaches every worker, and a bad one is
refused with the old list kept; the OWASP Core Rule Set refuses a classic
SQL injection with 403, the rule ids in the worker's log and not in the
response, and lets a normal request through.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import UpstreamServer
from gatelayer.testing.waiting import wait_until

GATE = """
[gateway]
workers = 2
trusted_proxies = 127.0.0.1
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = {upstream}
[filter:blocklist]
type = ip_filter
deny = 203.0.113.0/24
deny_file = deny.txt
[filter:waf]
type = waf
[route:app]
path = /
upstream = app
filters = blocklist, waf
"""

SQL_INJECTION = "/items?id=1%27%20OR%20%271%27%3D%271"


class FilteringGatewayTests(TestCase):
    """
    Two real workers with an IP filter and the WAF in front of a counting
    upstream.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.upstream = UpstreamServer(reactor, "app")
        self.upstream.start()
        self.addCleanup(self.upstream.stop)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.write_deny("# known bad\n198.51.100.0/25\n")
        self.gate = yield start_gateway(
            self, reactor, GATE.format(upstream=self.upstream.address), self.directory)

    def write_deny(self, text):
        """
        Replace deny.txt the way an operator should: write beside it, then
        rename into place.
        """
        path = os.path.join(self.directory, "deny.txt")
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)
        return path

    def get(self, path="/", client=None, headers=None):
        """
        GET C{path}, forwarded for C{client} when given (the test is the
        trusted proxy at 127.0.0.1).
        """
        headers = dict(headers or {})
        headers[b"host"] = [b"example.com"]
        headers[b"user-agent"] = [b"Mozilla/5.0 (X11; Linux x86_64)"]
        headers[b"accept"] = [b"*/*"]
        if client is not None:
            headers[b"x-forwarded-for"] = [client.encode("ascii")]
        return fetch(reactor, self.gate.url("web", path), headers=headers)

    @inlineCallbacks
    def statuses(self, client, count=6):
        """
        The statuses of C{count} requests from C{client}, each on its own
        connection (so both workers answer some).
        """
        responses = yield gatherResults([self.get("/", client) for _ in range(count)])
        return {response.status for response in responses}

    @inlineCallbacks
    def test_denied_address_never_reaches_upstream(self):
        """
        An address in a denied network (inline or from the file) gets 403
        problem+json and the upstream counts nothing; another address
        passes.
        """
        for client in ("203.0.113.9", "198.51.100.7"):
            response = yield self.get("/", client)
            self.assertEqual(response.status, 403)
            self.assertEqual(response.header(b"content-type"), b"application/problem+json")
            self.assertEqual(response.json()["status"], 403)
            self.assertNotIn(b"203.0.113", response.body)
        self.assertEqual(self.upstream.requests, 0)
        response = yield self.get("/", "198.51.100.200")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.requests, 1)

    @inlineCallbacks
    def test_sighup_rereads_deny_file(self):
        """
        After SIGHUP every worker refuses a newly listed address; a bad
        file on the next SIGHUP rejects the reload, logged naming file and
        line, and the workers keep the lists they had.
        """
        self.assertEqual((yield self.statuses("192.0.2.50")), {200})
        path = self.write_deny("198.51.100.0/25\n192.0.2.0/24\n")
        self.gate.signal("HUP")
        yield wait_until(reactor, lambda: "ip_filter [blocklist] reloaded: 0 allow, 2 deny" in self.gate.log(),
                         timeout=20, what="the deny file reload")
        yield wait_until(reactor, lambda: self.statuses("192.0.2.50").addCallback(lambda s: s == {403}),
                         timeout=20, what="every worker refusing 192.0.2.50")
        self.write_deny("198.51.100.0/25\n192.0.2.0/24\n10.0.0.0/33\n")
        self.gate.signal("HUP")
        line = yield wait_until(
            reactor, lambda: next((line for line in self.gate.log().splitlines()
                                   if f"{path} line 3: '10.0.0.0/33'" in line), None),
            timeout=20, what="the bad deny file logged")
        self.assertIn("reload problem", line)
        self.assertIn("configuration not reloaded", self.gate.log())
        self.assertEqual((yield self.statuses("192.0.2.50")), {403})
        self.assertEqual((yield self.statuses("192.0.3.1")), {200})
        self.assertNotIn("Traceback", self.gate.log())

    @inlineCallbacks
    def test_waf_refuses_sql_injection(self):
        """
        A classic SQL injection gets 403 problem+json naming no rule, and
        never reaches the upstream; the worker's log line has the rule
        ids, the client, the route and the request id. A normal request
        passes.
        """
        response = yield self.get(SQL_INJECTION, "192.0.2.77", headers={b"x-request-id": [b"req-sqli-1"]})
        self.assertEqual(response.status, 403)
        self.assertEqual(response.header(b"content-type"), b"application/problem+json")
        self.assertNotIn(b"942100", response.body)
        self.assertNotIn(b"949110", response.body)
        self.assertEqual(self.upstream.requests, 0)
        line = yield wait_until(
            reactor, lambda: next((line for line in self.gate.log().splitlines() if "req-sqli-1" in line), None),
            what="the WAF's log line")
        for part in ("waf [waf]", "route app", "client 192.0.2.77", "942100", "949110", "refused"):
            self.assertIn(part, line)
        response = yield self.get("/items?id=42&sort=name", "192.0.2.77")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.requests, 1)

    @inlineCallbacks
    def test_waf_inspects_form_bodies(self):
        """
        The same injection in a form body is refused; a normal form passes.
        """
        headers = {b"host": [b"example.com"], b"user-agent": [b"Mozilla/5.0 (X11; Linux x86_64)"],
                   b"content-type": [b"application/x-www-form-urlencoded"]}
        url = self.gate.url("web", "/login")
        response = yield fetch(reactor, url, method=b"POST", headers=headers, body=b"user=admin' OR '1'='1&pw=x")
        self.assertEqual(response.status, 403)
        self.assertEqual(self.upstream.requests, 0)
        response = yield fetch(reactor, url, method=b"POST", headers=headers, body=b"user=alice&pw=J%C3%BCrgen")
        self.assertEqual(response.status, 200)
        self.assertEqual(self.upstream.requests, 1)
