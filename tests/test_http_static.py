"""
Tests for the static-files terminal (L{gatelayer.http.static}) through a
worker's HTTP side in memory, with both server channels: hostile paths,
symlinks, dot-files, byte ranges, validators and streaming.
"""

import json
import os
from io import BytesIO

from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodySink, ITerminal
from gatelayer.http.static import SMALL_FILE, FileStreamer, StaticTerminal, http_time
from gatelayer.testing.server import InMemoryGateway, error_document, feed, parse_response
from gatelayer.testing.transports import FillingTransport

CONFIG = """
[gateway]
http_server = {server}
[listener:web]
bind = 127.0.0.1:8080
[route:files]
path = /files/
static = {root}
[route:open]
path = /open/
static = {root}
dotfiles = allow
[route:wellknown]
path = /.well-known/
static = {root}/sub
"""

DATA = b"0123456789" * 10
SECRET = b"secret outside the root"

# Request targets the terminal refuses by itself (404): nothing outside the
# root, no dot-file, no name spelled with a dot segment, a separator, a
# control or bytes that are not UTF-8, no file with a trailing slash. Through
# the gateway the canonical request may refuse them first (400) or
# normalize a harmless one (C{./a.txt}) into a file that exists: the second
# field is the only body a 200 may carry then.
HOSTILE_PATHS = [
    (b"/files/../secret.txt", None),
    (b"/files/sub/../../secret.txt", None),
    (b"/files/./a.txt", DATA),
    (b"/files/%2e%2e/secret.txt", None),
    (b"/files/%2E%2E/secret.txt", None),
    (b"/files/.%2e/secret.txt", None),
    (b"/files/%2e./secret.txt", None),
    (b"/files/%2e/a.txt", DATA),
    (b"/files/sub/..%2f..%2fsecret.txt", None),
    (b"/files/sub/%2e%2e%2f%2e%2e%2fsecret.txt", None),
    (b"/files/%2fetc%2fpasswd", None),
    (b"/files/%252e%252e/secret.txt", None),
    (b"/files/%252e%252e%252fsecret.txt", None),
    (b"/files/..\\secret.txt", None),
    (b"/files/sub\\..\\..\\secret.txt", None),
    (b"/files/%5c..%5csecret.txt", None),
    (b"/files/..%5csecret.txt", None),
    (b"/files/a.txt%00.html", None),
    (b"/files/a.txt%00", None),
    (b"/files/%00/../secret.txt", None),
    (b"/files/a%0a.txt", None),
    (b"/files/a%09.txt", None),
    (b"/files/a%7f.txt", None),
    (b"/files/%c0%ae%c0%ae/secret.txt", None),
    (b"/files/%c0%af", None),
    (b"/files/%e0%80%ae%e0%80%ae/secret.txt", None),
    (b"/files/%c1%9c..%c1%9csecret.txt", None),
    (b"/files/\xc0\xae\xc0\xae/secret.txt", None),
    (b"/files/%ff/a.txt", None),
    (b"/files/%ef%bc%8e%ef%bc%8e/secret.txt", None),
    (b"/files/out/secret.txt", None),
    (b"/files/out-file", None),
    (b"/files/loop", None),
    (b"/files/idx-out/", None),
    (b"/files/dot-link", None),
    (b"/files/.env", None),
    (b"/files/%2eenv", None),
    (b"/files/.git/config", None),
    (b"/files/.git/", None),
    (b"/files/sub/.hidden/x", None),
    (b"/files/sub/.hidden/", None),
    (b"/files/a.txt/", None),
    (b"/files/a.txt//", None),
    (b"/files/a.txt/.", None),
    (b"/files/a.txt/x", None),
    (b"/files/fifo", None),
    (b"/files/nope.txt", None),
    (b"/open/../secret.txt", None),
    (b"/open/%2e%2e/secret.txt", None),
    (b"/open/out/secret.txt", None),
    (b"/open/a.txt/", None),
    (b"/.well-known/../a.txt", None),
]

# (Range header, expected status, Content-Range or None, body slice of DATA).
RANGE_REQUESTS = [
    (b"bytes=0-9", 206, b"bytes 0-9/100", slice(0, 10)),
    (b"bytes=10-19", 206, b"bytes 10-19/100", slice(10, 20)),
    (b"bytes=99-99", 206, b"bytes 99-99/100", slice(99, 100)),
    (b"bytes=90-", 206, b"bytes 90-99/100", slice(90, 100)),
    (b"bytes=-10", 206, b"bytes 90-99/100", slice(90, 100)),
    (b"bytes=-1000", 206, b"bytes 0-99/100", slice(0, 100)),
    (b"bytes=95-1000", 206, b"bytes 95-99/100", slice(95, 100)),
    (b"BYTES=0-1", 206, b"bytes 0-1/100", slice(0, 2)),
    (b"bytes=0-1, ", 206, b"bytes 0-1/100", slice(0, 2)),
    (b"bytes=100-", 416, b"bytes */100", None),
    (b"bytes=100-200", 416, b"bytes */100", None),
    (b"bytes=-0", 416, b"bytes */100", None),
    (b"bytes=99999999999999999999999-", 416, b"bytes */100", None),
    (b"bytes=0-1,5-6", 200, None, slice(0, 100)),
    (b"bytes=0-1,0-1", 200, None, slice(0, 100)),
    (b"bytes=10-5", 200, None, slice(0, 100)),
    (b"bytes=abc", 200, None, slice(0, 100)),
    (b"bytes=", 200, None, slice(0, 100)),
    (b"bytes=+1-2", 200, None, slice(0, 100)),
    (b"bytes=1_0-20", 200, None, slice(0, 100)),
    (b"bytes=\xb2-3", 200, None, slice(0, 100)),
    (b"items=0-1", 200, None, slice(0, 100)),
    (b"0-1", 200, None, slice(0, 100)),
]


def make_tree(base):
    """
    A static root under C{base} with files, dot-files, symlinks in and
    out, a FIFO and a file outside the root; returns the root's path.
    """
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "sub", ".hidden"))
    os.makedirs(os.path.join(root, ".git"))
    os.makedirs(os.path.join(root, "idx-out"))
    outside = os.path.join(base, "outside")
    os.makedirs(outside)
    files = {
        "a.txt": DATA,
        "empty.txt": b"",
        "sub/index.html": b"<p>index</p>",
        "sub/.hidden/x": b"hidden",
        ".env": b"SECRET=1",
        ".git/config": b"[core]",
        "%2e": b"literally percent-2e",
        "secret.txt": b"not the secret",
    }
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    with open(os.path.join(base, "secret.txt"), "wb") as f:
        f.write(SECRET)
    with open(os.path.join(outside, "secret.txt"), "wb") as f:
        f.write(SECRET)
    os.symlink(outside, os.path.join(root, "out"))
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(root, "out-file"))
    os.symlink("a.txt", os.path.join(root, "link-in.txt"))
    os.symlink("../a.txt", os.path.join(root, "sub", "link-up.txt"))
    os.symlink(".env", os.path.join(root, "dot-link"))
    os.symlink("loop", os.path.join(root, "loop"))
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(root, "idx-out", "index.html"))
    os.mkfifo(os.path.join(root, "fifo"))
    return root


class StaticTests(SynchronousTestCase):
    """
    The static terminal with twisted.web's channel.
    """

    http_server = "twisted"

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.root = make_tree(self.base)
        self.gate = self.gateway(self.root)

    def gateway(self, root):
        """
        An in-memory gateway serving C{root} on C{/files/} (dot-files
        refused), C{/open/} (dot-files allowed) and C{/.well-known/} (its
        C{sub} directory).
        """
        return InMemoryGateway(CONFIG.format(server=self.http_server, root=root))

    def get(self, path, method=b"GET", headers=(), byte_by_byte=False):
        """
        One request; returns C{(status, headers, body)}.
        """
        data = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
        for name, value in headers:
            data += name + b": " + value + b"\r\n"
        data += b"\r\n"
        channel, transport = self.gate.connect()
        feed(channel, data, byte_by_byte)
        return parse_response(transport.value())

    # -- what is served ----------------------------------------------------

    def test_file(self):
        """
        A file is served with its type, length, validators, Accept-Ranges
        and nosniff.
        """
        status, headers, body = self.get(b"/files/a.txt")
        self.assertEqual((status, body), (200, DATA))
        self.assertEqual(headers[b"content-type"], [b"text/plain"])
        self.assertEqual(headers[b"content-length"], [b"100"])
        self.assertEqual(headers[b"accept-ranges"], [b"bytes"])
        self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])
        info = os.stat(os.path.join(self.root, "a.txt"))
        self.assertEqual(headers[b"etag"], [b'"%x-%x"' % (int(info.st_mtime), 100)])
        self.assertIn(b"last-modified", headers)

    def test_index(self):
        """
        A directory serves its index.html, with or without the trailing
        slash.
        """
        for path in (b"/files/sub/", b"/files/sub"):
            with self.subTest(path=path):
                status, headers, body = self.get(path)
                self.assertEqual((status, body), (200, b"<p>index</p>"))
                self.assertEqual(headers[b"content-type"], [b"text/html"])

    def test_symlink_inside(self):
        """
        A symlink to a file inside the root is served, its type taken from
        the name the request used.
        """
        self.assertEqual(self.get(b"/files/link-in.txt")[::2], (200, DATA))
        self.assertEqual(self.get(b"/files/sub/link-up.txt")[::2], (200, DATA))

    def test_root_is_symlink(self):
        """
        A root that is itself a symlink (a release directory switched by a
        link) serves its files.
        """
        link = os.path.join(self.base, "current")
        os.symlink(self.root, link)
        self.gate = self.gateway(link)
        self.assertEqual(self.get(b"/files/a.txt")[::2], (200, DATA))
        self.assertEqual(self.get(b"/files/out/secret.txt")[0], 404)

    def test_encoded_once(self):
        """
        A path is percent-decoded exactly once: C{%252e} names the file
        literally called C{%2e}, never C{.}.
        """
        self.assertEqual(self.get(b"/files/%252e")[::2], (200, b"literally percent-2e"))

    def test_dotfiles_allowed(self):
        """
        With C{dotfiles = allow} dot-files and dot-directories are served
        (a symlink to one too); C{..} is still refused.
        """
        for path, body in [(b"/open/.env", b"SECRET=1"), (b"/open/.git/config", b"[core]"),
                           (b"/open/sub/.hidden/x", b"hidden"), (b"/open/dot-link", b"SECRET=1")]:
            with self.subTest(path=path):
                self.assertEqual(self.get(path)[::2], (200, body))

    def test_dot_prefix_route(self):
        """
        A route whose own prefix has a dot-directory (C{/.well-known/})
        serves below it without C{dotfiles = allow}: only the part after the
        prefix is checked.
        """
        self.assertEqual(self.get(b"/.well-known/index.html")[::2], (200, b"<p>index</p>"))

    def test_hostile_paths(self):
        """
        Every hostile path, sent whole or byte by byte, is refused with a
        JSON 400 or 404 (the static terminal's own 404 with nosniff), and
        never answered with a file from outside the root or a dot-file.
        """
        for path, harmless in HOSTILE_PATHS:
            for byte_by_byte in (False, True):
                with self.subTest(path=path, byte_by_byte=byte_by_byte):
                    status, headers, body = self.get(path, byte_by_byte=byte_by_byte)
                    if status == 200 and harmless is not None:
                        self.assertEqual(body, harmless)
                        continue
                    self.assertIn(status, (400, 404))
                    self.assertEqual(headers[b"content-type"], [b"application/json"])
                    error = json.loads(body)
                    self.assertEqual(error["status"], status)
                    if error["error"] == "file not found":
                        self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])

    def test_terminal_alone(self):
        """
        The terminal refuses every hostile path by itself, before any
        normalization (defence in depth): C{resolve} and C{open_file} find
        nothing.
        """
        terminals = [StaticTerminal(spec, self.gate.reactor) for spec in self.gate.config.routes]
        verifyObject(ITerminal, terminals[0])
        for path, _ in HOSTILE_PATHS:
            terminal, = [t for t in terminals if path.startswith(t.prefix)]
            with self.subTest(path=path):
                self.assertIsNone(terminal.resolve(path))
                self.assertIsNone(terminal.open_file(path))
        self.assertEqual(terminals[0].resolve(b"/files/a.txt"),
                         os.path.join(os.path.realpath(self.root), "a.txt"))

    def test_odd_file_times(self):
        """
        A file stamped before 1970 or after 9999 is served, its
        Last-Modified clamped into what an HTTP date can say.
        """
        self.assertEqual([http_time(t) for t in (-5.5, 0, 1.9, 1e15, 1e20)],
                         [0, 0, 1, 253402300799, 253402300799])
        path = os.path.join(self.root, "a.txt")
        os.utime(path, (-1000, -1000))
        status, headers, body = self.get(b"/files/a.txt")
        self.assertEqual((status, headers[b"last-modified"]), (200, [b"Thu, 01 Jan 1970 00:00:00 GMT"]))

    def test_missing(self):
        """
        A missing file is 404.
        """
        self.assertEqual(self.get(b"/files/nope.txt")[0], 404)

    def test_methods(self):
        """
        Only GET and HEAD: others are 405 with Allow and nosniff.
        """
        for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
            with self.subTest(method=method):
                status, headers, _ = self.get(b"/files/a.txt", method)
                self.assertEqual(status, 405)
                self.assertEqual(headers[b"allow"], [b"GET, HEAD"])
                self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])

    # -- validators --------------------------------------------------------

    def test_head(self):
        """
        HEAD sends the headers of GET and no body.
        """
        status, headers, body = self.get(b"/files/a.txt", b"HEAD")
        self.assertEqual((status, body, headers[b"content-length"]), (200, b"", [b"100"]))
        self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])

    def test_not_modified(self):
        """
        If-Modified-Since at the file's time, or If-None-Match with its
        tag, gives 304 with the validators and nosniff; If-None-Match
        decides when both are sent.
        """
        _, headers, _ = self.get(b"/files/a.txt")
        stamp, etag = headers[b"last-modified"][0], headers[b"etag"][0]
        table = [
            ([(b"If-Modified-Since", stamp)], 304),
            ([(b"If-Modified-Since", b"Thu, 01 Jan 1970 00:00:00 GMT")], 200),
            ([(b"If-Modified-Since", b"garbage")], 200),
            ([(b"If-None-Match", etag)], 304),
            ([(b"If-None-Match", b"W/" + etag)], 304),
            ([(b"If-None-Match", b"*")], 304),
            ([(b"If-None-Match", b'"other"')], 200),
            ([(b"If-None-Match", b'"other"'), (b"If-Modified-Since", stamp)], 200),
            ([(b"If-Modified-Since", stamp), (b"Range", b"bytes=0-1")], 304),
        ]
        for sent, expected in table:
            with self.subTest(sent=sent):
                status, headers, body = self.get(b"/files/a.txt", headers=sent)
                self.assertEqual(status, expected)
                self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])
                if expected == 304:
                    self.assertEqual((body, headers[b"etag"]), (b"", [etag]))

    # -- ranges ------------------------------------------------------------

    def test_ranges(self):
        """
        Every Range header of the table gets its status, Content-Range,
        Content-Length and body; nosniff and Accept-Ranges always.
        """
        for value, expected, content_range, part in RANGE_REQUESTS:
            with self.subTest(range=value):
                status, headers, body = self.get(b"/files/a.txt", headers=[(b"Range", value)])
                self.assertEqual(status, expected)
                self.assertEqual(headers.get(b"content-range"), [content_range] if content_range else None)
                self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])
                self.assertEqual(headers[b"accept-ranges"], [b"bytes"])
                if expected == 416:
                    self.assertEqual(error_document(body, headers),
                                     {"error": "range not satisfiable: the file is 100 bytes", "status": 416})
                else:
                    self.assertEqual(body, DATA[part])
                    self.assertEqual(headers[b"content-length"], [b"%d" % (len(DATA[part]),)])
                    self.assertEqual(headers[b"content-type"], [b"text/plain"])

    def test_two_range_headers(self):
        """
        Two Range fields are two ranges: the whole file.
        """
        status, headers, body = self.get(b"/files/a.txt", headers=[(b"Range", b"bytes=0-1"),
                                                                   (b"Range", b"bytes=5-6")])
        self.assertEqual((status, body), (200, DATA))

    def test_head_range(self):
        """
        HEAD with a Range answers like GET without the body.
        """
        status, headers, body = self.get(b"/files/a.txt", b"HEAD", [(b"Range", b"bytes=10-19")])
        self.assertEqual((status, body), (206, b""))
        self.assertEqual(headers[b"content-range"], [b"bytes 10-19/100"])
        self.assertEqual(headers[b"content-length"], [b"10"])

    def test_if_range(self):
        """
        If-Range with the current date or tag gives the range; another date,
        a weak or other tag, or garbage gives the whole file.
        """
        _, headers, _ = self.get(b"/files/a.txt")
        stamp, etag = headers[b"last-modified"][0], headers[b"etag"][0]
        table = [
            (stamp, 206), (etag, 206),
            (b"Thu, 01 Jan 1970 00:00:00 GMT", 200), (b"W/" + etag, 200), (b'"other"', 200),
            (b"garbage", 200),
        ]
        for condition, expected in table:
            with self.subTest(condition=condition):
                status, headers, body = self.get(
                    b"/files/a.txt", headers=[(b"Range", b"bytes=0-9"), (b"If-Range", condition)])
                self.assertEqual(status, expected)
                self.assertEqual(body, DATA[:10] if expected == 206 else DATA)

    def test_empty_file(self):
        """
        An empty file is sent whole (200, no body) whatever the Range:
        no range can name a byte of it.
        """
        for value in (b"bytes=0-0", b"bytes=-5", b"bytes=0-"):
            with self.subTest(range=value):
                status, headers, body = self.get(b"/files/empty.txt", headers=[(b"Range", value)])
                self.assertEqual((status, body, headers[b"content-length"]), (200, b"", [b"0"]))

    def test_keep_alive_after_range(self):
        """
        A range answer is framed exactly: the next request on the
        connection is answered after it.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(b"GET /files/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n"
                             b"GET /files/sub/ HTTP/1.1\r\nHost: x\r\n\r\n")
        first, _, rest = transport.value().partition(b"56789")
        self.assertTrue(first.startswith(b"HTTP/1.1 206 "))
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), rest[:40])
        self.assertTrue(rest.endswith(b"<p>index</p>"))

    # -- streaming ---------------------------------------------------------

    def big_file(self, size=300000):
        """
        A file over L{SMALL_FILE} in the root; returns its content.
        """
        data = bytes(range(256)) * (size // 256 + 1)
        data = data[:size]
        with open(os.path.join(self.root, "big.bin"), "wb") as f:
            f.write(data)
        return data

    def test_large_file_streams(self):
        """
        A file over 64 KB is streamed whole.
        """
        data = self.big_file()
        status, headers, body = self.get(b"/files/big.bin")
        self.assertEqual((status, headers[b"content-length"]), (200, [b"300000"]))
        self.assertEqual(body, data)

    def test_large_range_streams(self):
        """
        A range over 64 KB is streamed, exactly its bytes.
        """
        data = self.big_file()
        status, headers, body = self.get(b"/files/big.bin", headers=[(b"Range", b"bytes=1000-250999")])
        self.assertEqual(status, 206)
        self.assertEqual(headers[b"content-range"], [b"bytes 1000-250999/300000"])
        self.assertEqual(headers[b"content-length"], [b"250000"])
        self.assertEqual(body, data[1000:251000])

    def test_range_back_pressure(self):
        """
        A large range honours the connection's pause: nothing more is read
        while the client's buffer is full, the rest follows each time it
        drains, and exactly the range arrives.
        """
        data = self.big_file()
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=FileStreamer.CHUNK)
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100-200099\r\n\r\n")
        rounds = 0
        while transport.paused:
            sent = len(transport.value())
            self.assertLessEqual(sent - transport.drained, FileStreamer.CHUNK + 1024)
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 100)
        self.assertGreaterEqual(rounds, 3)
        status, headers, body = parse_response(transport.value())
        self.assertEqual((status, body), (206, data[100:200100]))

    def test_slow_sink_is_a_body_sink(self):
        """
        The streamer tests' fake sink provides L{IBodySink}.
        """
        verifyObject(IBodySink, _SlowSink())

    def test_streamer_pauses(self):
        """
        The file streamer stops reading while paused and goes on when
        resumed.
        """
        request = _SlowSink(lambda: streamer.pauseProducing())
        streamer = FileStreamer(BytesIO(b"C" * (FileStreamer.CHUNK * 2 + 1)), request)
        streamer.resumeProducing()
        self.assertEqual(len(request.chunks), 1)
        streamer.resumeProducing()
        streamer.resumeProducing()
        self.assertFalse(request.finished)
        streamer.resumeProducing()
        self.assertTrue(request.finished)
        self.assertEqual(len(b"".join(request.chunks)), FileStreamer.CHUNK * 2 + 1)

    def test_streamer_stops_at_length(self):
        """
        A file that grew after its length was announced is cut at that
        length.
        """
        request = _SlowSink()
        streamer = FileStreamer(BytesIO(b"D" * (SMALL_FILE * 3)), request, SMALL_FILE + 7)
        streamer.resumeProducing()
        self.assertTrue(request.finished)
        self.assertEqual(len(b"".join(request.chunks)), SMALL_FILE + 7)

    def test_streamer_file_shrank(self):
        """
        A file that shrank while it was sent closes the connection (the
        client sees a short body) instead of finishing the response, and
        says so in the log.
        """
        events = []
        self.patch(FileStreamer, "log", Logger(observer=events.append))
        request = _SlowSink()
        streamer = FileStreamer(BytesIO(b"E" * 100), request, SMALL_FILE * 2, "big.bin")
        streamer.resumeProducing()
        self.assertFalse(request.finished)
        self.assertTrue(request.transport.disconnecting)
        self.assertEqual(len(events), 1)
        self.assertEqual((events[0]["name"], events[0]["got"]), ("big.bin", 100))

    def test_read_error_small(self):
        """
        A small file that cannot be read (a disk error) is a JSON 500 with
        nosniff, logged; nothing was sent before.
        """
        events = []
        self.patch(StaticTerminal, "log", Logger(observer=events.append))
        original = StaticTerminal.open_file

        def failing(terminal, path):
            handle, info, name = original(terminal, path)
            handle.close()
            return _FailingFile(), info, name
        self.patch(StaticTerminal, "open_file", failing)
        status, headers, body = self.get(b"/files/a.txt")
        self.assertEqual(status, 500)
        self.assertEqual(error_document(body, headers), {"error": "the file could not be read", "status": 500})
        self.assertEqual(headers[b"x-content-type-options"], [b"nosniff"])
        self.assertEqual(len(events), 1)

    def test_read_error_streaming(self):
        """
        A disk error while a large file streams closes the connection (the
        client sees a short body), logged.
        """
        events = []
        self.patch(FileStreamer, "log", Logger(observer=events.append))
        request = _SlowSink()
        streamer = FileStreamer(_FailingFile(), request, SMALL_FILE * 2, "big.bin")
        streamer.resumeProducing()
        self.assertFalse(request.finished)
        self.assertTrue(request.transport.disconnecting)
        self.assertTrue(streamer.handle.closed)
        self.assertEqual(len(events), 2)

    def test_client_gone(self):
        """
        A client that goes away mid-stream stops the streamer and closes
        the file.
        """
        self.big_file()
        channel, transport = self.gate.connect()
        streamers = []
        self.patch(FileStreamer, "resumeProducing", lambda s: streamers.append(s))
        channel.dataReceived(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        streamer, = streamers
        channel.connectionLost(None)
        self.assertTrue(streamer.done)
        self.assertTrue(streamer.handle.closed)


class _FailingFile:
    """
    A file whose reads fail as on a disk error.
    """

    closed = False

    def seek(self, offset):
        pass

    def read(self, size):
        raise OSError(5, "Input/output error")

    def close(self):
        self.closed = True


@implementer(IBodySink)
class _SlowSink:
    """
    A response body sink (what a L{FileStreamer} writes to) recording what
    it is given; C{on_write} runs after each write (to pause the streamer).
    """

    closed = False
    finished = False

    def __init__(self, on_write=None):
        self.chunks = []
        self.on_write = on_write
        self.transport = StringTransport()

    def write(self, data):
        """
        Record C{data}, then run C{on_write}.
        """
        self.chunks.append(data)
        if self.on_write is not None:
            self.on_write()

    def register_producer(self, producer):
        """
        Producers are driven by the test itself.
        """

    def unregister_producer(self):
        """
        Nothing registered.
        """

    def finish(self):
        """
        Note the end of the response.
        """
        self.finished = self.closed = True

    def abort(self, flush=False):
        """
        Close (C{flush}) or abort the fake connection.
        """
        self.closed = True
        if flush:
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()


class LeanStaticTests(StaticTests):
    """
    The static terminal with the lean server channel.
    """

    http_server = "gatelayer"
