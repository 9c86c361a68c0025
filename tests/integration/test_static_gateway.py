"""
Integration tests of the static-files terminal: a real master and worker
serving a directory on loopback, fetched over real sockets with both server
channels.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, rss_growth_limit_kb, slow_read_peak_rss

DATA = bytes(range(256)) * 4096  # 1 MiB
SECRET = b"outside the root"
BIG = 64 * 1024 * 1024


def static_config(root, http_server):
    """
    One worker serving C{root} on C{/files/}.
    """
    return f"""
[gateway]
workers = 1
http_server = {http_server}
admin = 127.0.0.1:0
drain_timeout = 5s
[listener:web]
bind = 127.0.0.1:0
[route:files]
path = /files/
static = {root}
"""


class StaticGatewayTests(TestCase):
    """
    Ranges, refusals and streaming of static files through a real worker,
    with the lean channel.
    """

    timeout = 60
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        base = os.path.abspath(self.mktemp())
        self.root = os.path.join(base, "root")
        outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(outside)
        with open(os.path.join(self.root, "data.bin"), "wb") as f:
            f.write(DATA)
        with open(os.path.join(self.root, ".env"), "wb") as f:
            f.write(b"SECRET=1")
        with open(os.path.join(outside, "secret.txt"), "wb") as f:
            f.write(SECRET)
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.truncate(BIG)
        os.symlink(outside, os.path.join(self.root, "out"))
        os.symlink(os.path.join(outside, "secret.txt"), os.path.join(self.root, "leak.txt"))
        self.gate = yield start_gateway(
            self, reactor, static_config(self.root, self.http_server), os.path.join(base, "gate"))

    def get(self, path, headers=None):
        """
        Fetch C{path} on the listener; fires with a response.
        """
        return fetch(reactor, self.gate.url("web", path), headers=headers)

    @inlineCallbacks
    def test_range(self):
        """
        A single range comes back 206 with exactly its bytes (framed by its
        Content-Length, which the client consumes), Content-Range and
        nosniff; a suffix range too.
        """
        response = yield self.get("/files/data.bin", {b"Range": [b"bytes=1000-300999"]})
        self.assertEqual(response.status, 206)
        self.assertEqual(response.header(b"content-range"), b"bytes 1000-300999/1048576")
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        self.assertEqual(response.body, DATA[1000:301000])
        response = yield self.get("/files/data.bin", {b"Range": [b"bytes=-10"]})
        self.assertEqual((response.status, response.body), (206, DATA[-10:]))

    @inlineCallbacks
    def test_unsatisfiable_and_multiple(self):
        """
        A range past the end is 416 with C{bytes */size}; two ranges get
        the whole file.
        """
        response = yield self.get("/files/data.bin", {b"Range": [b"bytes=2000000-"]})
        self.assertEqual(response.status, 416)
        self.assertEqual(response.header(b"content-range"), b"bytes */1048576")
        response = yield self.get("/files/data.bin", {b"Range": [b"bytes=0-1,5-6"]})
        self.assertEqual((response.status, response.body), (200, DATA))

    @inlineCallbacks
    def test_refusals(self):
        """
        A symlink out of the root (a directory or a file), a dot-file and
        an encoded dot-dot are refused; the worker goes on serving.
        """
        for path in ("/files/out/secret.txt", "/files/leak.txt", "/files/.env",
                     "/files/%2e%2e/outside/secret.txt", "/files/data.bin/"):
            response = yield self.get(path)
            self.assertIn(response.status, (400, 404), path)
            self.assertNotIn(SECRET, response.body)
            self.assertNotIn(b"SECRET=1", response.body)
        response = yield self.get("/files/data.bin")
        self.assertEqual((response.status, response.body), (200, DATA))

    @inlineCallbacks
    def test_large_range_slow_client(self):
        """
        A 63 MiB range read by a slow client streams with back-pressure:
        the worker's memory grows by far less than the range.
        """
        status = yield fetch(reactor, self.gate.admin_url("/status"))
        pid = status.json()["workers"][0]["pid"]
        start = 1024 * 1024
        reader, before, peak = yield slow_read_peak_rss(
            reactor, self.gate.address("web"),
            b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-\r\nConnection: close\r\n\r\n" % (start,),
            pid, chunk=4 * 1024 * 1024)
        received = reader.received
        self.assertTrue(reader.head.startswith(b"HTTP/1.1 206"), reader.head)
        self.assertGreater(received, BIG - start)
        self.assertLess(peak - before, rss_growth_limit_kb(16 * 1024), f"worker RSS grew from {before} KB to {peak} KB")


class TwistedChannelStaticGatewayTests(StaticGatewayTests):
    """
    The same, with twisted.web's channel (C{http_server = twisted}).
    """

    http_server = "twisted"
