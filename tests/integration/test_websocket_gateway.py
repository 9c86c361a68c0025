"""
WebSocket through real workers: a real master and worker, a real WebSocket
server process (the C{websockets} library's) and the C{websockets} client,
on loopback.
"""

import base64
import hashlib
import os
import platform
import traceback

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gatelayer.auth.apikeys import hash_key
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch, rss_growth_limit_kb, slow_read_peak_rss
from gatelayer.testing.server import with_server
from gatelayer.testing.waiting import wait_until
from gatelayer.testing.websocket import WebSocketServerProcess, in_thread, ws_url

KEY = b"glk_websocket-test-key"


def gate_config(port, keys_path):
    return f"""
[gateway]
workers = 1
admin = 127.0.0.1:0
drain_timeout = 2s
[listener:web]
bind = 127.0.0.1:0
[upstream:ws]
servers = 127.0.0.1:{port}
connect_timeout = 2s
read_timeout = 5s
[route:ws]
path = /
upstream = ws
[route:closed]
path = /closed/
upstream = ws
upgrades = none
[route:secure]
path = /secure/
upstream = ws
filters = key
[filter:key]
type = api_key
keys = {keys_path}
"""


class _Connection(ClientConnection):
    """
    The C{websockets} client connection, except that closing tolerates
    PyPy 7.3.11's race in C{Thread.join} (pypy/pypy#5079, fixed in later
    releases): joining the connection's reader thread as it ends can raise
    from inside C{threading} although the thread has ended. Anything else
    raised by closing is raised.
    """

    def close(self, *args, **kwargs):
        try:
            super().close(*args, **kwargs)
        except (RuntimeError, AssertionError) as e:
            if platform.python_implementation() != "PyPy" or not _raised_in_threading(e):
                raise


def _raised_in_threading(exception):
    """
    Whether C{exception} was raised by a frame of the C{threading} module.
    """
    frames = traceback.extract_tb(exception.__traceback__)
    return bool(frames) and os.path.basename(frames[-1].filename) == "threading.py"


def _client(url, **options):
    return connect(url, max_size=None, compression=None, open_timeout=10, close_timeout=5,
                   create_connection=_Connection, **options)


class WebSocketGatewayTests(TestCase):
    """
    WebSocket connections proxied by a real worker to a real WebSocket
    server.
    """

    timeout = 120
    http_server = "gatelayer"

    @inlineCallbacks
    def setUp(self):
        self.server = WebSocketServerProcess(reactor, "ws")
        self.addCleanup(self.server.stop)
        port = yield self.server.start()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        keys = os.path.join(directory, "keys.ini")
        with open(keys, "w") as f:
            f.write(f"[consumers]\nalice = {hash_key(KEY)}\n")
        self.gate = yield start_gateway(
            self, reactor, with_server(gate_config(port, keys), self.http_server), directory)

    def url(self, path="/chat"):
        return ws_url(self.gate.address("web"), path)

    @inlineCallbacks
    def status(self):
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()

    @inlineCallbacks
    def test_echo_text_and_binary(self):
        """
        Text and binary messages go through the gateway and come back
        unchanged; the server saw the handshake on the path asked for.
        """
        def talk():
            with _client(self.url("/chat?room=1")) as ws:
                ws.send("hello, gateway")
                text = ws.recv(timeout=10)
                ws.send(bytes(range(256)))
                binary = ws.recv(timeout=10)
                return text, binary

        text, binary = yield in_thread(reactor, talk)
        self.assertEqual(text, "hello, gateway")
        self.assertEqual(binary, bytes(range(256)))
        self.assertEqual(self.server.handshakes, ["/chat?room=1"])

    @inlineCallbacks
    def test_handshake_headers_reach_the_server(self):
        """
        The server gets the handshake's Upgrade, Connection and
        Sec-WebSocket-* headers and the gateway's X-Forwarded-For.
        """
        import json

        def talk():
            with _client(self.url()) as ws:
                ws.send("headers")
                return json.loads(ws.recv(timeout=10))

        seen = yield in_thread(reactor, talk)
        self.assertEqual(seen["upgrade"].lower(), "websocket")
        self.assertEqual(seen["connection"].lower(), "upgrade")
        self.assertIn("sec-websocket-key", seen)
        self.assertEqual(seen["sec-websocket-version"], "13")
        self.assertEqual(seen["x-forwarded-for"], "127.0.0.1")

    @inlineCallbacks
    def test_ten_megabyte_message_both_ways(self):
        """
        A 10 MB binary message goes to the server and its echo comes back
        whole; a 10 MB message the server makes comes down whole.
        """
        payload = os.urandom(10 * 1024 * 1024)

        def talk():
            with _client(self.url()) as ws:
                ws.send(payload)
                echoed = ws.recv(timeout=60)
                ws.send("send %d" % (10 * 1024 * 1024,))
                made = ws.recv(timeout=60)
                return echoed, made

        echoed, made = yield in_thread(reactor, talk)
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(payload).digest())
        self.assertEqual(made, b"y" * (10 * 1024 * 1024))

    @inlineCallbacks
    def test_slow_reader_bounded_memory(self):
        """
        A client reading 64 MB of WebSocket traffic slowly: the gateway
        stops reading from the server rather than buffering, so the
        worker's memory grows by a few MB at most.
        """
        status = yield self.status()
        pid = status["workers"][0]["pid"]
        key = base64.b64encode(os.urandom(16))
        handshake = (b"GET /stream?mb=64 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                     b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        reader, before, peak = yield slow_read_peak_rss(
            reactor, self.gate.address("web"), handshake, pid, chunk=4 * 1024 * 1024)
        self.assertTrue(reader.head.startswith(b"HTTP/1.1 101 "), reader.head)
        self.assertGreater(reader.received, 64 * 1024 * 1024)
        self.assertLess(peak - before, rss_growth_limit_kb(16 * 1024), f"worker RSS grew from {before} KB to {peak} KB")

    @inlineCallbacks
    def test_handshake_without_credentials_refused(self):
        """
        On a route with an api_key filter the handshake without a key gets
        401 and never reaches the server; with the key it upgrades.
        """
        def refused():
            try:
                with _client(self.url("/secure/chat")):
                    return None
            except InvalidStatus as e:
                return e.response.status_code

        status = yield in_thread(reactor, refused)
        self.assertEqual(status, 401)
        self.assertEqual(self.server.handshakes, [])

        def allowed():
            with _client(self.url("/secure/chat"), additional_headers={"X-Api-Key": KEY.decode()}) as ws:
                ws.send("with a key")
                return ws.recv(timeout=10)

        answer = yield in_thread(reactor, allowed)
        self.assertEqual(answer, "with a key")
        self.assertEqual(self.server.handshakes, ["/secure/chat"])

    @inlineCallbacks
    def test_route_without_upgrades(self):
        """
        On a route with upgrades = none the handshake reaches the server as
        a plain request without Upgrade: the server refuses it itself and
        no WebSocket connection is made.
        """
        def refused():
            try:
                with _client(self.url("/closed/chat")):
                    return None
            except InvalidStatus as e:
                return e.response.status_code

        status = yield in_thread(reactor, refused)
        self.assertIn(status, (400, 426))
        self.assertEqual(self.server.handshakes, [])

    @inlineCallbacks
    def test_server_closes(self):
        """
        The server closing (code 1000) reaches the client as a clean close
        with the server's code and reason.
        """
        def talk():
            with _client(self.url()) as ws:
                ws.send("close")
                try:
                    ws.recv(timeout=10)
                except ConnectionClosed as e:
                    return e.rcvd.code, e.rcvd.reason
                return None

        closed = yield in_thread(reactor, talk)
        self.assertEqual(closed, (1000, "asked to close"))

    @inlineCallbacks
    def test_client_closes(self):
        """
        The client's close handshake goes through (the server's answer comes
        back) and the worker closes both connections: its open connection
        count goes back to zero.
        """
        def talk():
            ws = _client(self.url())
            ws.send("ping")
            ws.recv(timeout=10)
            ws.close(1001, "going away")
            return ws.close_code, ws.close_reason

        code, reason = yield in_thread(reactor, talk)
        self.assertEqual((code, reason), (1001, "going away"))

        @inlineCallbacks
        def no_connection():
            status = yield self.status()
            return status["workers"][0]["connections"] == 0
        yield wait_until(reactor, no_connection, timeout=10, what="the worker's connections closing")

    @inlineCallbacks
    def test_drain_closes_upgraded_connections(self):
        """
        A graceful stop closes an upgraded connection after drain_timeout
        (2 s) without a byte of the gateway's own in the stream, and the
        master exits.
        """
        ws = yield in_thread(reactor, _client, self.url())
        self.addCleanup(ws.close)
        yield in_thread(reactor, ws.send, "before the stop")
        echoed = yield in_thread(reactor, ws.recv, 10)
        self.assertEqual(echoed, "before the stop")
        started = reactor.seconds()
        self.gate.signal("TERM")

        def wait_closed():
            try:
                return ("message", ws.recv(timeout=15))
            except ConnectionClosed as e:
                return ("closed", e.rcvd)
        outcome, detail = yield in_thread(reactor, wait_closed)
        self.assertEqual(outcome, "closed")
        # Closed by the gateway without a close frame of its own.
        self.assertIsNone(detail)
        elapsed = reactor.seconds() - started
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 10)
        code = yield self.gate.wait_exit(15)
        self.assertEqual(code, 0)


class TwistedChannelWebSocketGatewayTests(WebSocketGatewayTests):
    """
    The same through twisted.web's server channel (C{http_server = twisted}).
    """

    http_server = "twisted"
