"""
The compress filter through a real worker, in front of a real upstream
process: text bodies come back in gzip, br and zstd and decode (with the
reference libraries) to what the upstream sent; an event stream arrives
event by event through gzip, each event before the upstream writes the
next; a gzip request body reaches the upstream decoded; a bomb, a corrupt
body and an unknown coding are refused, and the worker keeps serving.
"""

import gzip
import json
import zlib

import brotli
import zstandard
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.http1 import RESPONSE, ChunkedDecoder
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import RawClient, RawClientFactory, fetch
from gatelayer.testing.upstream_process import event, text_body
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until

GATE = """
[gateway]
workers = 1
http_server = {http_server}
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = 127.0.0.1:{port}
[filter:compression]
type = compress
encodings = br, zstd, gzip
decompress_requests = yes
max_decompressed_size = 256KB
[route:app]
path = /
upstream = app
filters = compression
"""

SIZE = 200000


def decoded(coding, data):
    """
    C{data} of C{coding}, decoded by the reference libraries.
    """
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return brotli.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def stream_so_far(data):
    """
    What the client has of a chunked, gzip-coded response so far: the
    head, and the body's chunks decoded as far as they go.
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    pieces, _ = ChunkedDecoder(RESPONSE).feed(rest)
    return head, zlib.decompressobj(31).decompress(b"".join(pieces))


class CompressGatewayTests(TestCase):
    """
    One real worker (lean channel) compressing for a real upstream process.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.upstream, = yield start_upstreams(self, reactor, "app")
        self.port = self.upstream.port
        self.gate = yield start_gateway(
            self, reactor, GATE.format(port=self.port, http_server=self.http_server))

    def get(self, path, accept):
        """
        GET C{path} of the gateway with C{Accept-Encoding: accept}; the
        body is returned as it came (nothing decodes it on the way).
        """
        headers = {b"accept-encoding": [accept]} if accept is not None else {}
        return fetch(reactor, self.gate.url("web", path), headers=headers)

    @inlineCallbacks
    def test_each_coding(self):
        """
        A 200000-byte text body comes back in the coding the client
        prefers, decoding to the upstream's bytes; a client accepting none
        gets it as it is (still with Vary).
        """
        for accept, coding in ((b"gzip", "gzip"), (b"br", "br"), (b"zstd", "zstd"),
                               (b"gzip;q=0.5, br;q=0.8, zstd;q=0.7", "br"), (b"*", "br")):
            response = yield self.get("/text?bytes=%d" % (SIZE,), accept)
            self.assertEqual(response.status, 200)
            self.assertEqual(response.header(b"content-encoding"), coding.encode("ascii"), accept)
            self.assertEqual(response.header(b"vary"), b"Accept-Encoding")
            self.assertEqual(decoded(coding, response.body), text_body(SIZE), accept)
            self.assertLess(len(response.body), SIZE // 10)
        response = yield self.get("/text?bytes=%d" % (SIZE,), None)
        self.assertEqual(response.body, text_body(SIZE))
        self.assertIsNone(response.header(b"content-encoding"))
        self.assertEqual(response.header(b"vary"), b"Accept-Encoding")

    @inlineCallbacks
    def test_small_untouched(self):
        """
        A body under C{min_length} is not compressed.
        """
        response = yield self.get("/text?bytes=100", b"gzip, br")
        self.assertEqual((response.body, response.header(b"content-encoding")), (text_body(100), None))

    @inlineCallbacks
    def test_events_one_by_one(self):
        """
        Through gzip, each event of a stream reaches the client (decodable)
        before the upstream is told to write the next one.
        """
        client = RawClient(reactor, b"GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                                    b"Connection: close\r\n\r\n")
        reactor.connectTCP("127.0.0.1", self.gate.address("web")[1], RawClientFactory(client))
        upstream_next = "http://127.0.0.1:%d/events/next" % (self.port,)
        for index in range(4):
            if index:
                told = yield fetch(reactor, upstream_next.encode("ascii"))
                self.assertEqual(json.loads(told.body), {"streams": 1})

            def arrived(index=index):
                head, body = stream_so_far(b"".join(client.received))
                return event(index) in body and (head, body)
            head, body = yield wait_until(reactor, arrived, what=f"event {index} through gzip")
            self.assertIn(b"Content-Encoding: gzip", head)
            self.assertEqual(body, b"".join(event(i) for i in range(index + 1)))
        yield fetch(reactor, (upstream_next + "?end=1").encode("ascii"))
        data = yield client.done
        self.assertTrue(data.endswith(b"0\r\n\r\n"))
        self.assertEqual(gzip.decompress(b"".join(ChunkedDecoder(RESPONSE).feed(data.partition(b"\r\n\r\n")[2])[0])),
                         b"".join(event(i) for i in range(4)))

    def post(self, body, coding):
        """
        POST C{body} (JSON, coded as C{coding}) to the upstream's JSON echo.
        """
        return fetch(reactor, self.gate.url("web", "/json/echo"), method=b"POST", body=body,
                     headers={b"content-type": [b"application/json"], b"content-encoding": [coding]})

    @inlineCallbacks
    def test_request_decoded(self):
        """
        A gzip (and a br) JSON request body reaches the upstream decoded:
        it answers with the same JSON value.
        """
        document = {"items": [{"id": i, "name": "item %d" % (i,)} for i in range(500)]}
        raw = json.dumps(document).encode("ascii")
        for coding, data in ((b"gzip", gzip.compress(raw)), (b"br", brotli.compress(raw))):
            response = yield self.post(data, coding)
            self.assertEqual(response.status, 200, response.body)
            self.assertEqual(response.json(), document)

    @inlineCallbacks
    def test_refused(self):
        """
        A gzip bomb gets 413, a truncated body 400 and an unknown coding
        415, each problem+json; the worker logs them and keeps serving.
        """
        bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), 9)
        cases = ((bomb, b"gzip", 413, "more than 262144 bytes"),
                 (gzip.compress(b'{"a": 1}')[:-6], b"gzip", 400, "gzip request body is truncated"),
                 (b'{"a": 1}', b"compress", 415, "'compress' is not decoded"))
        for body, coding, status, detail in cases:
            response = yield self.post(body, coding)
            self.assertEqual(response.status, status, response.body)
            self.assertEqual(response.header(b"content-type"), b"application/problem+json")
            self.assertIn(detail, response.json()["detail"])
        yield wait_until(reactor, lambda: "refused a request body with 413" in self.gate.log(),
                         what="the refusal's log line")
        response = yield self.post(gzip.compress(b'{"ok": true}'), b"gzip")
        self.assertEqual((response.status, response.json()), (200, {"ok": True}))


class TwistedChannelCompressGatewayTests(CompressGatewayTests):
    """
    The same through the twisted.web channel.
    """

    http_server = "twisted"
