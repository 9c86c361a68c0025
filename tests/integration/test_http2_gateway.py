"""
HTTP/2 through a real gateway: a twistd master with two workers on
loopback, a TLS listener with certificates made by the test, a real
upstream server, and real HTTP/2 clients: curl (C{--http2}), h2load
(nghttp2) and httpx (C{http2=True}), plus a rapid-reset client written with
the h2 library over a raw TLS socket. HTTP/1.1 keeps working on the same
listener.
"""

import json
import os
import shutil

import httpx
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.h2 import rapid_reset_client
from gatelayer.testing.upstreams import UpstreamServer
from gatelayer.testing.waiting import wait_until

SERVER_NAME = "www.example.com"

CONFIG = """
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 2s
access_log = {log}

[listener:secure]
bind = 127.0.0.1:0
tls = main
h2_max_resets = 50

[tls:main]
certificates = {pem}
default = {pem}

[upstream:app]
servers = {upstream}

[route:api]
path = /
upstream = app

[filter:limit]
type = rate_limit
rate = 1/minute

[route:limited]
path = /limited/
respond = 200 ok
filters = limit
"""


def _httpx(url, method="GET", content=None, http2=True, stream=False):
    """
    One request with httpx (blocking: run in a thread); returns
    C{(http_version, status, body length, headers)}.
    """
    with httpx.Client(http2=http2, verify=False, timeout=10.0) as client:
        if stream:
            size = 0
            with client.stream(method, url) as response:
                for piece in response.iter_bytes():
                    size += len(piece)
                return response.http_version, response.status_code, size, response.headers
        response = client.request(method, url, content=content)
        return response.http_version, response.status_code, response.content, response.headers


class HTTP2GatewayTests(TestCase):
    """
    Real HTTP/2 clients against a two-worker gateway.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        pem = os.path.join(self.directory, "site.pem")
        CertificateAuthority().issue([SERVER_NAME]).write(pem)
        self.upstream = UpstreamServer(reactor, "app")
        self.upstream.start()
        self.addCleanup(self.upstream.stop)
        self.log_path = os.path.join(self.directory, "access.log")
        self.gate = yield start_gateway(self, reactor, CONFIG.format(
            pem=pem, upstream=self.upstream.address, log=self.log_path), self.directory)
        self.port = self.gate.address("secure")[1]

    def url(self, path, host="127.0.0.1"):
        """
        The listener's URL for C{path}, with C{host} as its authority.
        """
        return "https://%s:%d%s" % (host, self.port, path)

    @inlineCallbacks
    def curl(self, path, *args, host="127.0.0.1"):
        """
        Run curl on C{path} (with C{host} in the URL, resolved to
        loopback); returns C{(http_version, status, body)}.
        """
        resolve = ("--resolve", "%s:%d:127.0.0.1" % (host, self.port))
        out, err, code = yield getProcessOutputAndValue(shutil.which("curl"), (
            "-sk", "--max-time", "10", "-w", "\n%{http_version} %{http_code}") + resolve + args
            + (self.url(path, host),), env=os.environ, reactor=reactor)
        self.assertEqual(code, 0, err)
        body, _, tail = out.rpartition(b"\n")
        version, status = tail.split()
        return version, int(status), body

    @inlineCallbacks
    def test_curl(self):
        """
        curl with C{--http2} speaks HTTP/2 (C{%{http_version}} is 2): a GET
        and a POST with a body reach the upstream.
        """
        version, status, body = yield self.curl("/api/hello", "--http2")
        self.assertEqual((version, status), (b"2", 200))
        self.assertEqual(json.loads(body)["headers"]["host"], ["127.0.0.1:%d" % (self.port,)])
        version, status, body = yield self.curl("/api/post", "--http2", "--data-binary", "x" * 5000)
        document = json.loads(body)
        self.assertEqual((version, status, document["method"], document["body_length"]),
                         (b"2", 200, "POST", 5000))

    @inlineCallbacks
    def test_http1_same_listener(self):
        """
        HTTP/1.1 still works on the listener: a client asking for
        C{http/1.1} by ALPN, and one sending no ALPN at all.
        """
        version, status, _ = yield self.curl("/api/one", "--http1.1")
        self.assertEqual((version, status), (b"1.1", 200))
        version, status, _ = yield self.curl("/api/none", "--http1.1", "--no-alpn")
        self.assertEqual((version, status), (b"1.1", 200))

    @inlineCallbacks
    def test_httpx(self):
        """
        httpx with C{http2=True}: GET, a POST body, a large streamed
        response in full, and a rate limit's refusal over HTTP/2.
        """
        version, status, body, _ = yield deferToThread(_httpx, self.url("/api/x"))
        self.assertEqual((version, status), ("HTTP/2", 200))
        version, status, body, _ = yield deferToThread(
            _httpx, self.url("/api/post"), "POST", b"y" * 70000)
        self.assertEqual((version, status, json.loads(body)["body_length"]), ("HTTP/2", 200, 70000))
        version, status, size, _ = yield deferToThread(_httpx, self.url("/big?mb=8"), stream=True)
        self.assertEqual((version, status, size), ("HTTP/2", 200, 8 * 1024 * 1024))
        first = yield deferToThread(_httpx, self.url("/limited/a"))
        second = yield deferToThread(_httpx, self.url("/limited/b"))
        self.assertEqual((first[1], second[1]), (200, 429))
        self.assertIn("ratelimit", second[3])

    @inlineCallbacks
    def test_access_log(self):
        """
        An HTTP/2 request's access log line says protocol C{HTTP/2}, with
        the TLS version and server name.
        """
        yield self.curl("/api/logged", "--http2", host=SERVER_NAME)

        def logged():
            if not os.path.exists(self.log_path):
                return None
            with open(self.log_path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            return [line for line in lines if line["path"] == "/api/logged"]
        yield wait_until(reactor, logged, timeout=10.0, what="the access log line")
        line = logged()[0]
        self.assertEqual((line["protocol"], line["status"], line["sni"], line["host"]),
                         ("HTTP/2", 200, SERVER_NAME, SERVER_NAME))
        self.assertTrue(line["tls_version"].startswith("TLSv1."), line)

    @inlineCallbacks
    def test_h2load(self):
        """
        h2load's 400 requests over 4 connections of 10 streams each all
        succeed.
        """
        out, err, code = yield getProcessOutputAndValue(shutil.which("h2load"), (
            "-n", "400", "-c", "4", "-m", "10", self.url("/api/load")), env=os.environ, reactor=reactor)
        self.assertEqual(code, 0, err)
        self.assertIn(b"400 total, 400 started, 400 done, 400 succeeded", out, out)

    @inlineCallbacks
    def test_rapid_reset(self):
        """
        A client opening and resetting streams back to back gets GOAWAY
        ENHANCE_YOUR_CALM, while a normal HTTP/2 client in parallel is
        served throughout, and after.
        """
        served = []
        stop = []

        def normal_client():
            with httpx.Client(http2=True, verify=False, timeout=10.0) as client:
                while not stop:
                    response = client.get(self.url("/api/normal"))
                    served.append((response.http_version, response.status_code))
                    if len(served) > 2000:
                        break
        normal = deferToThread(normal_client)
        yield wait_until(reactor, lambda: len(served) >= 3, timeout=10.0, what="the normal client")
        code, sent = yield deferToThread(rapid_reset_client, "127.0.0.1", self.port, 5000)
        stop.append(True)
        yield normal
        self.assertEqual(code, 11)  # ENHANCE_YOUR_CALM
        self.assertGreater(sent, 50)
        self.assertEqual(set(served), {("HTTP/2", 200)})
        version, status, _ = yield self.curl("/api/after", "--http2")
        self.assertEqual((version, status), (b"2", 200))
