"""
The HTTP/2 channel's protections in memory: floods (rapid reset, PING,
SETTINGS, CONTINUATION), the idle timeout, the graceful GOAWAY of a drain,
and hostile request heads, each sent whole and one byte at a time.
"""

import h2
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.listener_h2 import H2Settings
from gatelayer.http.lean import LeanChannel
from gatelayer.http2 import FloodCounter, H2Channel, ProtocolChoice
from gatelayer.testing.h2 import open_h2, raw_headers_frames
from gatelayer.testing.server import InMemoryGateway, accept_upstream
from tests.test_http2 import CONFIG

_BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"),
         (b":path", b"/hello")]


def _with(*extra):
    return _BASE + list(extra)


def _without(name, *extra):
    return [pair for pair in _BASE if pair[0] != name] + list(extra)


def _replace(name, value):
    return [(key, value if key == name else old) for key, old in _BASE]


#: How a CONNECT is refused: h2 4.4 lets it through its checks and the
#: gateway answers 405; earlier releases (the last for Python 3.9, which PyPy
#: 7.3 runs, is 4.3) refuse it as malformed.
_CONNECT_REFUSAL = 405 if tuple(int(p) for p in h2.__version__.split(".")[:2]) >= (4, 4) else "goaway"

#: Request heads a hostile client may send, and what each gets: a GOAWAY
#: with PROTOCOL_ERROR (what C{h2} refuses as malformed) or a status on
#: the stream (what the gateway refuses itself).
HOSTILE_HEADS = [
    ("uppercase name", _with((b"X-Upper", b"1")), "goaway"),
    ("connection header", _with((b"connection", b"close")), "goaway"),
    ("keep-alive header", _with((b"keep-alive", b"5")), "goaway"),
    ("transfer-encoding", _with((b"transfer-encoding", b"chunked")), "goaway"),
    ("upgrade to websocket", _with((b"upgrade", b"websocket")), "goaway"),
    ("te other than trailers", _with((b"te", b"gzip")), "goaway"),
    ("missing :path", _without(b":path"), "goaway"),
    ("missing :method", _without(b":method"), "goaway"),
    ("duplicate :path", _with((b":path", b"/other")), "goaway"),
    ("unknown pseudo-header", _with((b":foo", b"bar")), "goaway"),
    ("pseudo-header after a field", _without(b":path", (b"accept", b"*/*"), (b":path", b"/")), "goaway"),
    ("response pseudo-header", _with((b":status", b"200")), "goaway"),
    ("CR in a value", _with((b"x-a", b"a\rb")), "goaway"),
    ("LF in a value", _with((b"x-a", b"a\nb")), "goaway"),
    ("NUL in a value", _with((b"x-a", b"a\x00b")), "goaway"),
    ("empty :path", _replace(b":path", b""), "goaway"),
    (":authority and Host differ", _with((b"host", b"other.example")), "goaway"),
    (":path not absolute", _replace(b":path", b"hello"), 400),
    (":path absolute-form", _replace(b":path", b"https://example.com/hello"), 400),
    (":path escaping the root", _replace(b":path", b"/%2e%2e/%2e%2e/etc/passwd"), 400),
    ("bad :authority", _replace(b":authority", b"exa mple.com"), 400),
    ("unknown :scheme", _replace(b":scheme", b"ftp"), 400),
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"example.com:443")], _CONNECT_REFUSAL),
    ("no authority nor host", _without(b":authority"), "goaway"),
]


class HostileHeadTests(SynchronousTestCase):
    """
    Every hostile head is answered: a malformed one ends the connection
    with GOAWAY PROTOCOL_ERROR, one the gateway refuses gets its status on
    the stream and the connection goes on. Sent whole and byte by byte.
    """

    def check(self, bytewise):
        problems = []
        for label, fields, expected in HOSTILE_HEADS:
            gate = InMemoryGateway(CONFIG, with_upstreams=True)
            client = open_h2(gate)
            client.open_stream(fields, bytewise)
            if expected == "goaway":
                code = client.goaway.error_code if client.goaway is not None else None
                if code != ErrorCodes.PROTOCOL_ERROR or not client.transport.disconnecting:
                    problems.append((label, "goaway", code))
            else:
                status = client.answer(1).status
                follow = client.request(b"/hello")
                if status != expected or client.answer(follow).status != 200:
                    problems.append((label, status, client.answer(follow).status))
            if gate.gateway.active != 0:
                problems.append((label, "active", gate.gateway.active))
        self.assertEqual(problems, [])

    def test_whole(self):
        """
        Each hostile head sent in one piece gets its answer.
        """
        self.check(False)

    def test_bytewise(self):
        """
        Each hostile head sent one byte at a time gets the same answer.
        """
        self.check(True)


class FloodTests(SynchronousTestCase):
    """
    Floods end the connection with GOAWAY ENHANCE_YOUR_CALM; the same
    frames at a lower rate do not.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor
        self.settings = H2Settings(max_resets=5, max_pings=3, max_settings=3, flood_window=10.0)

    def test_rapid_reset(self):
        """
        Opening and resetting streams more than C{max_resets} times in the
        window is the rapid-reset attack: GOAWAY ENHANCE_YOUR_CALM, and the
        upstream calls of the reset streams are dropped.
        """
        client = open_h2(self.gate, self.settings)
        for _ in range(6):
            sid = client.request(b"/api/a", end=False)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.send()
            client.receive()
        self.assertEqual(client.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_resets_spread_out(self):
        """
        The same resets spread over several windows are a client changing
        its mind, not a flood.
        """
        client = open_h2(self.gate, self.settings)
        for _ in range(12):
            sid = client.request(b"/hello", end=False)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.send()
            client.receive()
            self.reactor.advance(3)
        self.assertIsNone(client.goaway)
        self.assertEqual(client.answer(client.request(b"/hello")).status, 200)

    def test_ping_flood(self):
        """
        More PINGs than C{max_pings} in the window: GOAWAY
        ENHANCE_YOUR_CALM.
        """
        client = open_h2(self.gate, self.settings)
        for i in range(4):
            client.conn.ping(b"%08d" % (i,))
            client.send()
            client.receive()
        # h2 answers each PING as it parses it, the last one included.
        acks = [f for f in client.frames if isinstance(f, PingFrame) and "ACK" in f.flags]
        self.assertEqual(len(acks), 4)
        self.assertEqual(client.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_settings_flood(self):
        """
        More SETTINGS frames than C{max_settings} in the window: GOAWAY
        ENHANCE_YOUR_CALM.
        """
        client = open_h2(self.gate, self.settings)
        for i in range(4):
            client.send(data=SettingsFrame(0, settings={4: 65535 + i}).serialize())
            client.receive()
        self.assertEqual(client.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_continuation_flood(self):
        """
        A header block in endless CONTINUATION frames is cut: GOAWAY
        PROTOCOL_ERROR once it passes the backlog C{h2} keeps, and no
        request was started.
        """
        client = open_h2(self.gate, self.settings)
        client.send(data=raw_headers_frames(client, 1, _BASE, continuations=200))
        client.receive()
        self.assertEqual(client.goaway.error_code, ErrorCodes.PROTOCOL_ERROR)
        self.assertEqual(self.gate.gateway.requests, 0)

    def test_counter(self):
        """
        The counter allows C{limit} events per window and starts again
        after it.
        """
        counter = FloodCounter(2, 10.0)
        self.assertEqual([counter.add(t) for t in (0, 1, 2, 9.9, 10, 11)],
                         [False, False, True, True, False, False])


class LifecycleTests(SynchronousTestCase):
    """
    The idle timeout, the drain's graceful GOAWAY, and the protocol chosen
    after the TLS handshake.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True)
        self.reactor = self.gate.reactor

    def goaways(self, client):
        return [f for f in client.frames if isinstance(f, GoAwayFrame)]

    def test_idle_timeout(self):
        """
        A connection without a stream for C{idle_timeout} seconds is told
        GOAWAY NO_ERROR and closed; one with a stream in progress is not.
        """
        client = open_h2(self.gate, idle_timeout=30.0)
        client.request(b"/api/slow")
        self.reactor.advance(31)
        self.assertFalse(client.transport.disconnecting)
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        client.receive()
        self.reactor.advance(29)
        self.assertFalse(client.transport.disconnecting)
        self.reactor.advance(2)
        client.receive()
        self.assertEqual([(f.error_code, f.last_stream_id) for f in self.goaways(client)], [(0, 1)])
        self.assertTrue(client.transport.disconnecting)

    def test_body_timeout(self):
        """
        A stream whose body (kept whole: C{request_buffering}) stops coming
        for C{[gateway] body_timeout} seconds is answered 408 (its slot
        freed); one whose body keeps coming is not, and no timer is left
        once it is in.
        """
        buffered = CONFIG.replace("upstream = app\n", "upstream = app\nrequest_buffering = yes\n")
        self.gate = InMemoryGateway(buffered, with_upstreams=True)
        self.reactor = self.gate.reactor
        client = open_h2(self.gate)
        stalled = client.request(b"/api/up", method=b"POST", body=b"a", end=False)
        moving = client.request(b"/api/up", method=b"POST", body=b"b", end=False)
        for _ in range(3):
            self.reactor.advance(20)
            client.conn.send_data(moving, b"b")
            client.send()
            client.receive()
        self.assertEqual(client.answer(stalled).status, 408)
        self.assertIsNone(client.answer(moving).status)
        self.assertEqual(sorted(client.channel._streams), [moving])
        client.conn.end_stream(moving)
        client.send()
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.func == client.channel._body_timed_out],
                         [])

    def test_drain(self):
        """
        A drain sends GOAWAY naming the last stream taken; that stream
        finishes, a newer one is refused, and the connection closes when
        the last response is out.
        """
        client = open_h2(self.gate)
        sid = client.request(b"/api/slow")
        self.gate.factory.drain()
        client.receive()
        self.assertEqual([f.last_stream_id for f in self.goaways(client)], [sid])
        self.assertFalse(client.transport.disconnecting)
        late = sid + 2
        client.send(data=raw_headers_frames(client, late, _BASE))
        client.receive()
        self.assertEqual(client.resets().get(late), ErrorCodes.REFUSED_STREAM)
        _, protocol = accept_upstream(self.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        client.receive()
        data = client.stream_frames(sid, DataFrame)
        self.assertEqual(b"".join(f.data for f in data), b"done")
        self.assertIn("END_STREAM", data[-1].flags)
        self.assertEqual(len(client.stream_frames(sid, HeadersFrame)), 1)
        self.assertTrue(client.transport.disconnecting)

    def test_drain_client_reset(self):
        """
        While draining, a client resetting the last stream in flight lets
        the connection close.
        """
        client = open_h2(self.gate)
        sid = client.request(b"/api/slow")
        self.gate.factory.drain()
        client.receive()
        client.send(data=RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize())
        self.assertTrue(client.transport.disconnecting)

    def test_internal_fault(self):
        """
        A fault of the gateway's own while handling a frame ends that
        connection with GOAWAY INTERNAL_ERROR and is logged; nothing
        escapes to the transport.
        """
        def broken(request, method, uri):
            raise ZeroDivisionError("a bug")
        self.gate.gateway.early_route = broken
        client = open_h2(self.gate)
        client.request(b"/hello")
        self.assertEqual(client.goaway.error_code, ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_drain_idle(self):
        """
        An idle connection is told GOAWAY and closed at once by a drain.
        """
        client = open_h2(self.gate)
        self.gate.factory.drain()
        client.receive()
        self.assertEqual(len(self.goaways(client)), 1)
        self.assertTrue(client.transport.disconnecting)

    def choice(self, negotiated):
        choice = ProtocolChoice(self.gate.factory, self.gate.factory._http1_channel, self.reactor, 10.0)
        transport = StringTransport()
        transport.negotiatedProtocol = negotiated
        choice.makeConnection(transport)
        return choice, transport

    def test_choice_h2(self):
        """
        ALPN C{h2} builds the HTTP/2 channel, which sends its SETTINGS.
        """
        choice, transport = self.choice(b"h2")
        choice.handshakeCompleted()
        self.assertIsInstance(choice.chosen, H2Channel)
        self.assertEqual(transport.value()[3:4], b"\x04")

    def test_choice_http1(self):
        """
        ALPN C{http/1.1} or none builds the HTTP/1.1 channel, which gets
        the bytes after the handshake.
        """
        for negotiated in (b"http/1.1", None):
            choice, transport = self.choice(negotiated)
            choice.handshakeCompleted()
            self.assertIsInstance(choice.chosen, LeanChannel)
            choice.dataReceived(b"GET /hello HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_handshake_deadline(self):
        """
        A connection whose handshake does not complete in time is cut; a
        completed handshake cancels the deadline.
        """
        choice, transport = self.choice(None)
        self.reactor.advance(10)
        self.assertTrue(transport.disconnected)
        choice, transport = self.choice(b"h2")
        choice.handshakeCompleted()
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.getTime() == 10.0], [])
