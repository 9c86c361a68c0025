"""
Integration tests of the resource terminal: a Klein app, a resource tree
and a twisted.web C{static.File} mounted on routes of a real master with
two workers, fetched over real sockets on loopback.
"""

import hashlib
import json
import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gatelayer.testing.certs import CertificateAuthority, tls_client_creator
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.waiting import wait_until

KEY = b"resource-test-key-0123456789"
DEADLINE = 20.0
FILE_DATA = bytes(range(256)) * 8192  # 2 MiB

GATE = """
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 5s
[listener:web]
bind = 127.0.0.1:0
[tls:main]
certificates = certs/
[listener:secure]
bind = 127.0.0.1:0
tls = main
[filter:keys]
type = api_key
keys = {keys}
[route:api]
path = /api
resource = gatelayer.testing.klein_app:app.resource
filters = keys
max_body_size = 1KB
[route:tree]
path = /tree/
resource = gatelayer.testing.resources:tree
[route:files]
path = /files/
resource = {files_module}:files
"""


@implementer(IPolicyForHTTPS)
class _AnyCertificate:
    """
    A client TLS policy sending SNI C{www.example.com} and accepting the
    gateway's test certificate.
    """

    def creatorForNetloc(self, hostname, port):
        """
        The permissive test creator.
        """
        return tls_client_creator(server_name="www.example.com")


class ResourceGatewayTests(TestCase):
    """
    Resources rendered by real workers, behind the route's filters.
    """

    timeout = 90

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        keys = os.path.join(directory, "keys.ini")
        with open(keys, "w") as f:
            f.write("[consumers]\nalice = %s\n" % (hashlib.sha256(KEY).hexdigest(),))
        # A module of the operator's own, importable through PYTHONPATH
        # (the master and its workers inherit it): a static.File at module
        # level, mounted as it is.
        root = os.path.join(directory, "www")
        os.makedirs(root)
        with open(os.path.join(root, "hello.txt"), "wb") as f:
            f.write(b"hello from a file\n")
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(FILE_DATA)
        modules = os.path.join(directory, "modules")
        os.makedirs(modules)
        self.files_module = "gate_site_files_%d" % (os.getpid(),)
        with open(os.path.join(modules, self.files_module + ".py"), "w") as f:
            f.write("from twisted.web.static import File\nfiles = File(%r)\n" % (root,))
        path = os.pathsep.join(p for p in (modules, os.environ.get("PYTHONPATH")) if p)
        self.patch(os, "environ", dict(os.environ, PYTHONPATH=path))
        self.config = GATE.format(keys=keys, files_module=self.files_module)
        gate_directory = os.path.join(directory, "gate")
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(gate_directory, "certs", "www.pem"))
        self.gate = yield start_gateway(self, reactor, self.config, gate_directory)

    def get(self, path, headers=None, method=b"GET", body=None):
        """
        Fetch C{path} on the listener; fires with a response.
        """
        return fetch(reactor, self.gate.url("web", path), method=method, headers=headers, body=body)

    def keyed(self):
        """
        The headers carrying a valid API key.
        """
        return {b"X-Api-Key": [KEY]}

    @inlineCallbacks
    def test_klein_json(self):
        """
        The Klein app's routes with variables answer JSON through the
        workers, under the route's prefix, for every request of a burst
        (both workers take some).
        """
        for item_id, name in ((1, "anvil"), (2, "rope")) * 4:
            response = yield self.get(f"/api/items/{item_id}", self.keyed())
            self.assertEqual(response.status, 200, response.body)
            self.assertEqual(response.header(b"content-type"), b"application/json")
            document = response.json()
            self.assertEqual((document["id"], document["name"]), (item_id, name))
            self.assertEqual(document["prepath"], ["api", "items", str(item_id)])
        response = yield self.get("/api/items/99", self.keyed())
        self.assertEqual((response.status, response.json()["error"]), (404, "no such item"))
        response = yield self.get("/api/users/zoe/greeting?p=%3F", self.keyed())
        self.assertEqual((response.status, response.body), (200, b"hello zoe?"))

    @inlineCallbacks
    def test_filter_in_front(self):
        """
        The route's API key filter refuses before the app runs: no key or
        a wrong one is a 401, and the key never reaches the app's answer.
        """
        for headers in (None, {b"X-Api-Key": [b"wrong"]}):
            response = yield self.get("/api/items/1", headers)
            self.assertEqual(response.status, 401, response.body)
            self.assertNotIn(b"anvil", response.body)

    @inlineCallbacks
    def test_klein_body(self):
        """
        A POSTed JSON body reaches the handler; one over the route's
        max_body_size is refused with 413 before it.
        """
        response = yield self.get("/api/items", self.keyed(), b"POST", b'{"name": "bucket"}')
        self.assertEqual((response.status, response.json()), (201, {"created": {"name": "bucket"}}))
        response = yield self.get("/api/items", self.keyed(), b"POST", b"x" * 4096)
        self.assertEqual(response.status, 413)

    @inlineCallbacks
    def test_klein_stream(self):
        """
        A streaming Klein endpoint (a push producer) delivers its whole
        body, 4 MiB, chunked.
        """
        response = yield self.get("/api/stream/1024", self.keyed())
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.body), 1024 * 4096)
        self.assertEqual(response.body[:4096], b"a" * 4096)
        self.assertEqual(response.body[-4096:], bytes([97 + 1023 % 26]) * 4096)

    @inlineCallbacks
    def test_failure_logged_not_shown(self):
        """
        A handler that raises is the gateway's 500 JSON error with the
        request id, no detail; the traceback is in the gateway's log.
        """
        response = yield self.get("/api/fail", self.keyed())
        self.assertEqual(response.status, 500)
        document = response.json()
        self.assertEqual(document["error"], "internal error in the route's resource")
        self.assertEqual(document["request_id"].encode("ascii"), response.header(b"x-request-id"))
        self.assertNotIn(b"secret", response.body)
        yield wait_until(reactor, lambda: "klein handler broke" in self.gate.log(), DEADLINE,
                         what="the failure in the gateway's log")
        self.assertIn("the resource of route api failed", self.gate.log())

    @inlineCallbacks
    def test_resource_tree(self):
        """
        A resource tree of plain twisted.web resources: its index, a
        resource reporting the request (prepath, query, cookie, client),
        and a push-producer stream.
        """
        response = yield self.get("/tree/")
        self.assertEqual((response.status, response.body), (200, b"root of the tree"))
        response = yield self.get("/tree/echo/a?x=1", {b"Cookie": [b"flavour=mint"]})
        seen = response.json()
        self.assertEqual((seen["prepath"], seen["postpath"], seen["args"]), (["tree", "echo"], ["a"], {"x": ["1"]}))
        self.assertEqual((seen["cookie"], seen["client"][0]), ("mint", "127.0.0.1"))
        self.assertEqual(response.header(b"set-cookie"), b"seen=yes; Path=/")
        response = yield self.get("/tree/stream?chunks=64&size=16384")
        self.assertEqual(response.body, b"".join(bytes([97 + i % 26]) * 16384 for i in range(64)))

    @inlineCallbacks
    def test_secure(self):
        """
        Over the TLS listener the resource sees a secure request: its URL
        helpers say https, and the listener's port is the host's.
        """
        response = yield fetch(reactor, self.gate.url("secure", "/tree/echo", scheme="https"),
                               context_factory=_AnyCertificate())
        seen = response.json()
        host, port = self.gate.address("secure")
        self.assertEqual((seen["secure"], seen["host_port"]), (True, port))
        self.assertEqual(seen["prepath_url"], f"https://{host}:{port}/tree/echo")
        response = yield self.get("/tree/echo")
        self.assertFalse(response.json()["secure"])

    @inlineCallbacks
    def test_static_file(self):
        """
        twisted.web's C{static.File} from the operator's own module serves
        a small file with its type and a 2 MiB one whole (its pull
        producer driven by the connection).
        """
        response = yield self.get("/files/hello.txt")
        self.assertEqual((response.status, response.body), (200, b"hello from a file\n"))
        self.assertEqual(response.header(b"content-type"), b"text/plain")
        response = yield self.get("/files/big.bin")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"accept-ranges"), b"bytes")
        self.assertEqual(response.body, FILE_DATA)
        response = yield self.get("/files/missing.txt")
        self.assertEqual(response.status, 404)

    @inlineCallbacks
    def test_bad_resource_refused(self):
        """
        C{--check} refuses a route whose resource does not load, naming the
        route, the key and the value; a reload to it keeps serving the
        running configuration.
        """
        with open(self.gate.config_path, "w") as f:
            f.write(self.config.replace("gatelayer.testing.resources:tree",
                                        "gatelayer.testing.resources:not_a_resource"))
        code, output = yield self.gate.check()
        self.assertNotEqual(code, 0)
        self.assertIn("[route:tree] resource: 'gatelayer.testing.resources:not_a_resource': "
                      "not_a_resource() returned a dict", output)
        before = (yield self.status())["reload"]["last"]
        self.gate.signal("HUP")

        @inlineCallbacks
        def decided():
            last = (yield self.status())["reload"]["last"]
            return last if last is not None and last != before else None
        last = yield wait_until(reactor, decided, DEADLINE, what="the reload outcome in /status")
        self.assertFalse(last["ok"])
        self.assertTrue(any("not_a_resource" in p for p in last["problems"]), last)
        response = yield self.get("/tree/")
        self.assertEqual((response.status, response.body), (200, b"root of the tree"))

    @inlineCallbacks
    def status(self):
        """
        The admin /status document.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()
