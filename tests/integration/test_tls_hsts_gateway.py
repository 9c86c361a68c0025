"""
Strict-Transport-Security on every response of a TLS listener with C{hsts}
set, through a real gateway: the gateway's own errors (400, 404, 405, 413,
502, 503, 504), filter refusals (401, 429), static files (304 and
404 included), redirects, aggregated and proxied answers. Run once with each HTTP server
channel (gatelayer's lean one and twisted.web's).
"""

import hashlib
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.tls_sessions import tls_exchange
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import free_port

NAME = "www.example.com"
HSTS = b"max-age=63072000; includeSubDomains"
KEY = b"k-8d1f0c9a7e5b3d2f4a6c8e0b1d3f5a7c"

CONFIG = """
[gateway]
workers = 1
http_server = {http_server}
max_body_size = 1KB
[listener:secure]
bind = 127.0.0.1:0
tls = main
[tls:main]
certificates = certs/
hsts = max-age=63072000; includeSubDomains
[upstream:app]
servers = {app}
read_timeout = 500ms
[upstream:dead]
servers = 127.0.0.1:{dead}
retries = 0
[upstream:off]
servers = 127.0.0.1:{dead} down
[filter:keys]
type = api_key
keys = {keys}
[filter:limit]
type = rate_limit
key = global
rate = 1/hour
[route:files]
path = /files/
static = www
[route:agg]
path = /agg
aggregate = a: app GET /echo
[route:keys]
path = /keys
filters = keys
respond = 200 ok
[route:limit]
path = /limit
filters = limit
respond = 200 ok
[route:ro]
path = /ro
methods = GET
respond = 200 ok
[route:app]
path = /app/
strip_prefix = /app
upstream = app
[route:dead]
path = /dead
upstream = dead
[route:off]
path = /off
upstream = off
"""


def request(path, method=b"GET", extra=b""):
    """
    A request for C{path} on the test's host that closes the connection.
    """
    return (method + b" " + path + b" HTTP/1.1\r\nHost: " + NAME.encode() + b"\r\nConnection: close\r\n"
            + extra + b"\r\n")


CASES = [
    ("direct response", request(b"/ro"), 200),
    ("no route", request(b"/nothing"), 404),
    ("method not allowed", request(b"/ro", b"DELETE"), 405),
    ("body too large", request(b"/ro", b"POST", b"Content-Length: 5000\r\n"), 413),
    ("bad request line", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("smuggling attempt", request(b"/ro", b"POST", b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"), 400),
    ("no API key", request(b"/keys"), 401),
    ("upstream refuses", request(b"/dead"), 502),
    ("no usable server", request(b"/off"), 503),
    ("upstream too slow", request(b"/app/slow?delay=3"), 504),
    ("proxied", request(b"/app/echo"), 200),
    ("aggregate", request(b"/agg"), 200),
    ("static file", request(b"/files/a.txt"), 200),
    ("static file missing", request(b"/files/none.txt"), 404),
    ("static conditional", request(b"/files/a.txt", extra=b"If-None-Match: *\r\n"), 304),
    ("upstream redirect", request(b"/app/code/302"), 302),
]


class HSTSTests(TestCase):
    """
    A TLS listener with C{hsts}, answering in every way it can.
    """

    timeout = 60
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        CertificateAuthority().issue([NAME]).write(os.path.join(directory, "certs", "www.pem"))
        os.makedirs(os.path.join(directory, "www"))
        with open(os.path.join(directory, "www", "a.txt"), "w") as f:
            f.write("a file\n")
        keys = os.path.join(directory, "keys.ini")
        with open(keys, "w") as f:
            f.write("[consumers]\nalice = %s\n" % (hashlib.sha256(KEY).hexdigest(),))
        [self.app] = yield start_upstreams(self, reactor, "app")
        self.gate = yield start_gateway(self, reactor, CONFIG.format(
            http_server=self.http_server, app=self.app.address, dead=free_port(), keys=keys), directory)

    def exchange(self, data):
        return tls_exchange(self.gate.address("secure"), data, NAME)

    def test_every_answer_carries_hsts(self):
        """
        Each kind of answer has exactly one Strict-Transport-Security header
        with the configured value.
        """
        for name, data, status in CASES:
            got, headers = self.exchange(data)
            self.assertEqual(got, status, name)
            self.assertEqual(headers.get(b"strict-transport-security"), [HSTS], name)

    def test_rate_limited(self):
        """
        The first request within the rate passes, the next is 429; both
        carry the header.
        """
        for status in (200, 429):
            got, headers = self.exchange(request(b"/limit"))
            self.assertEqual(got, status)
            self.assertEqual(headers.get(b"strict-transport-security"), [HSTS], status)


class TwistedChannelHSTSTests(HSTSTests):
    """
    The same with C{http_server = twisted}.
    """

    http_server = "twisted"
