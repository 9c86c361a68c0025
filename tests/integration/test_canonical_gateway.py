"""
The canonical request through real worker processes, in front of an upstream
that normalizes paths itself (as most application servers do): no spelling of
a protected path reaches it without the filter passing, it receives the
normalized path, identity and underscore headers never arrive from the
client, and query credentials are gone upstream and in the access log.
"""

import json
import os
import posixpath
from urllib.parse import unquote_to_bytes

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web import resource

from gatelayer.auth.apikeys import hash_key
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.server import parse_response
from gatelayer.testing.http import send_raw
from gatelayer.testing.upstreams import serve_quietly
from tests.test_http_canonical import ATTACKS, GATE, KEY


class NormalizingApp(resource.Resource):
    """
    An application that, like many, decodes the whole path, turns
    backslashes into slashes, drops path parameters and resolves dot
    segments before it looks at it; it serves a secret under C{/admin}.

    @ivar admin_hits: requests it answered with the secret.
    @ivar seen: the raw targets and headers it received.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.admin_hits = 0
        self.seen = []

    def render(self, request):
        raw = request.uri.partition(b"?")[0]
        path = unquote_to_bytes(raw).replace(b"\\", b"/")
        path = b"/".join(segment.partition(b";")[0] for segment in path.split(b"/"))
        path = posixpath.normpath(path.decode("latin-1")).lstrip("/")
        path = "/" + path
        headers = {k.decode("latin-1").lower(): [x.decode("latin-1") for x in v]
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.uri, headers))
        request.setHeader(b"content-type", b"application/json")
        secret = path == "/admin" or path.startswith("/admin/")
        if secret:
            self.admin_hits += 1
        return json.dumps({"uri": request.uri.decode("latin-1"), "headers": headers,
                           "secret": secret}).encode("utf-8")


def closing(request):
    """
    C{request} asking the gateway to close after answering.
    """
    head, _, body = request.partition(b"\r\n\r\n")
    return head + b"\r\nConnection: close\r\n\r\n" + body


class CanonicalGatewayIntegrationTests(TestCase):
    """
    One real worker (lean channel) in front of L{NormalizingApp}.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.app = NormalizingApp()
        port = serve_quietly(reactor, self.app)
        self.addCleanup(port.stopListening)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "apikeys.ini"), "w") as f:
            f.write(f"[consumers]\nalice = {hash_key(KEY)}\n")
        with open(os.path.join(directory, "secret.txt"), "w") as f:
            f.write("a-secret-of-at-least-thirty-two-bytes!!")
        self.log_path = os.path.join(directory, "access.log")
        config = GATE.replace("[gateway]\n", (
            f"[gateway]\nworkers = 1\nhttp_server = {self.http_server}\naccess_log = {self.log_path}\n"), 1)
        config = config.replace("servers = 10.0.0.1:80", f"servers = 127.0.0.1:{port.getHost().port}")
        config = config.replace("bind = 127.0.0.1:8080", "bind = 127.0.0.1:0")
        self.gate = yield start_gateway(self, reactor, config, directory)

    def send(self, data, byte_by_byte=False):
        host, port = self.gate.address("web")
        return send_raw(reactor, (host, port), data, byte_by_byte)

    @inlineCallbacks
    def test_no_way_around(self):
        """
        Every attack of the table, whole and byte by byte, is refused (400)
        or meets the key filter (401); the application never serves its
        secret.
        """
        for attack in ATTACKS:
            for byte_by_byte in (False, True):
                data = yield self.send(closing(attack), byte_by_byte)
                status = parse_response(data)[0]
                self.assertIn(status, (400, 401), (attack, byte_by_byte, data))
        self.assertEqual(self.app.admin_hits, 0)

    @inlineCallbacks
    def test_key_passes_normalized(self):
        """
        With the key the application serves the secret, and it received
        the normalized path without the key.
        """
        data = yield self.send(closing(
            b"GET /x/%2e%2e/admin//users/./%61?api_key=" + KEY + b"&q=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
        status, _, body = parse_response(data)
        answer = json.loads(body)
        self.assertEqual((status, answer["secret"], answer["uri"]), (200, True, "/admin/users/a?q=1"))

    @inlineCallbacks
    def test_headers_vouched_for(self):
        """
        Identity headers in every spelling and underscore names never reach
        the application, even on a route without an auth filter.
        """
        data = yield self.send(closing(
            b"GET /open HTTP/1.1\r\nHost: x\r\nX-Consumer: admin\r\nX_Consumer: admin\r\n"
            b"X-User-Role: root\r\nx_user_role: root\r\nAuth_User: root\r\nX-Kept: 1\r\n\r\n"))
        headers = json.loads(parse_response(data)[2])["headers"]
        for name in ("x-consumer", "x_consumer", "x-user-role", "x_user_role", "auth_user"):
            self.assertNotIn(name, headers)
        self.assertEqual(headers["x-kept"], ["1"])

    @inlineCallbacks
    def test_query_credentials_hidden_and_redacted(self):
        """
        The API key in the query is gone upstream and redacted in the
        access log, which shows the normalized path.
        """
        data = yield self.send(closing(
            b"GET /./admin?api_key=" + KEY + b"&access_token=tok HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertEqual(json.loads(parse_response(data)[2])["uri"], "/admin?access_token=tok")
        deadline = reactor.seconds() + 10
        line = b""
        while b"/admin" not in line:
            self.assertLess(reactor.seconds(), deadline, "no access log line")
            yield task.deferLater(reactor, 0.1, lambda: None)
            if os.path.exists(self.log_path):
                with open(self.log_path, "rb") as f:
                    line = f.read()
        self.assertEqual(json.loads(line)["path"], "/admin?api_key=REDACTED&access_token=REDACTED")
        self.assertNotIn(KEY, line)


class TwistedCanonicalGatewayIntegrationTests(CanonicalGatewayIntegrationTests):
    """
    The same with twisted.web's server channel.
    """

    http_server = "twisted"
