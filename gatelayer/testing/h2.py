"""
HTTP/2 in memory, for tests: an L{gatelayer.http2.H2Channel} of an
L{gatelayer.testing.server.InMemoryGateway}'s listener factory on a
L{StringTransport}, and an C{h2} library client connection (L{H2Client})
that talks to it frame by frame.
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset,
    TrailersReceived,
)
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame, RstStreamFrame
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from gatelayer.config.listener_h2 import H2Settings
from gatelayer.http2 import H2Channel

__all__ = ["H2Client", "StreamAnswer", "open_h2", "parse_frames", "rapid_reset_client", "raw_headers_frames"]


def parse_frames(data):
    """
    The frames (hyperframe objects) of C{data}, which holds whole frames
    (the client preface excluded).
    """
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        frames.append(frame)
        data = data[9 + length:]
    return frames


class StreamAnswer:
    """
    What the client received on one stream.

    @ivar status: the C{:status} (int) or L{None}.
    @ivar headers: the response's regular fields, C{(name, value)} pairs.
    @ivar body: the body bytes so far.
    @ivar trailers: the trailer fields, C{(name, value)} pairs.
    @ivar ended: whether END_STREAM arrived.
    @ivar reset: the RST_STREAM error code, or L{None}.
    """

    def __init__(self):
        self.status = None
        self.headers = []
        self.body = b""
        self.trailers = []
        self.ended = False
        self.reset = None

    def header(self, name):
        """
        The values of response field C{name} (lower-case bytes), a list.
        """
        return [value for key, value in self.headers if key == name]


class H2Client:
    """
    An C{h2} client connection wired to a server channel's
    L{StringTransport}: L{send} hands the client's bytes to the channel
    (whole or one byte at a time), L{receive} reads the channel's answer.

    @ivar conn: the client's L{H2Connection}.
    @ivar answers: stream id -> L{StreamAnswer}.
    @ivar goaway: the L{ConnectionTerminated} event received, or L{None}.
    @ivar frames: every frame received, in order (hyperframe objects).
    """

    def __init__(self, channel, transport, window=None):
        self.channel = channel
        self.transport = transport
        # Unchecked on the way out: tests send malformed heads through it.
        self.conn = H2Connection(H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({4: window})
        self.answers = {}
        self.goaway = None
        self.frames = []
        self.send()
        self.receive()

    def send(self, bytewise=False, data=None):
        """
        Give the client's pending bytes (or C{data}) to the channel.
        """
        if data is None:
            data = self.conn.data_to_send()
        if not bytewise:
            if data:
                self.channel.dataReceived(data)
            return
        for i in range(len(data)):
            self.channel.dataReceived(data[i:i + 1])

    def receive(self, acknowledge=True):
        """
        Read what the channel wrote; returns the events. Body bytes are
        acknowledged (the client's windows reopen) unless C{acknowledge}
        is false.
        """
        data = self.transport.value()
        self.transport.clear()
        if not data:
            return []
        self.frames.extend(parse_frames(data))
        if self.goaway is not None:
            # The client library takes nothing after a GOAWAY; the frames
            # still tell what the server sent.
            return []
        events = self.conn.receive_data(data)
        for event in events:
            answer = self.answers.setdefault(getattr(event, "stream_id", 0), StreamAnswer())
            if isinstance(event, ResponseReceived):
                for name, value in event.headers:
                    if name == b":status":
                        answer.status = int(value)
                    else:
                        answer.headers.append((name, value))
            elif isinstance(event, DataReceived):
                answer.body += event.data
                if acknowledge and event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, TrailersReceived):
                answer.trailers.extend(event.headers)
            elif isinstance(event, StreamEnded):
                answer.ended = True
            elif isinstance(event, StreamReset):
                answer.reset = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event
        self.send()
        return events

    def request(self, path=b"/", method=b"GET", headers=(), body=None, end=True,
                authority=b"example.com", bytewise=False):
        """
        Open a stream with a request and send it; returns the stream id.
        """
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", method), (b":scheme", b"https"), (b":authority", authority),
                  (b":path", path)]
        fields.extend(headers)
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.send(bytewise)
        self.receive()
        return sid

    def open_stream(self, fields, bytewise=False, end_stream=True):
        """
        Open a stream with the header list C{fields} as given (pseudo
        fields included, unchecked) and send it; returns the stream id.
        """
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, fields, end_stream=end_stream)
        self.send(bytewise)
        self.receive()
        return sid

    def stream_frames(self, sid, kind):
        """
        The frames of class C{kind} received on stream C{sid}.
        """
        return [frame for frame in self.frames if frame.stream_id == sid and isinstance(frame, kind)]

    def resets(self):
        """
        C{{stream id: error code}} of every RST_STREAM received, streams
        the client library did not open included.
        """
        return {frame.stream_id: frame.error_code for frame in self.frames
                if isinstance(frame, RstStreamFrame)}

    def answer(self, sid):
        """
        The L{StreamAnswer} of stream C{sid}.
        """
        return self.answers.setdefault(sid, StreamAnswer())


def raw_headers_frames(client, sid, fields, continuations=0, end_stream=True):
    """
    The bytes of a HEADERS frame (and C{continuations} empty CONTINUATION
    frames before the last one) carrying C{fields}, HPACK-encoded with the
    client's encoder but not validated: how a hostile client sends what
    C{h2} would refuse to send.
    """
    block = client.conn.encoder.encode(fields)
    frames = []
    headers = HeadersFrame(sid, data=block)
    if end_stream:
        headers.flags.add("END_STREAM")
    if continuations:
        frames.append(headers.serialize())
        for _ in range(continuations):
            frames.append(ContinuationFrame(sid, data=b"").serialize())
        last = ContinuationFrame(sid, data=b"")
        last.flags.add("END_HEADERS")
        frames.append(last.serialize())
    else:
        headers.flags.add("END_HEADERS")
        frames.append(headers.serialize())
    return b"".join(frames)


def open_h2(gate, settings=None, idle_timeout=60.0, window=None, transport=None):
    """
    An L{H2Channel} for the listener of C{gate} (an
    L{gatelayer.testing.server.InMemoryGateway}) with C{settings} (an
    L{H2Settings}), connected to a new L{H2Client}; returns the client.
    """
    if transport is None:
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8443))
    channel = H2Channel(gate.factory, settings or H2Settings(), gate.reactor, idle_timeout)
    channel.makeConnection(transport)
    return H2Client(channel, transport, window)


def rapid_reset_client(host, port, streams, server_name="www.example.com", timeout=10.0):
    """
    Open an HTTP/2 connection over a real TLS socket (blocking: run it in
    a thread) and open and reset C{streams} streams back to back, as the
    rapid-reset attack does; then read until the server ends the
    connection. Returns C{(GOAWAY error code or None, streams sent)}.
    """
    import socket
    import ssl

    from h2.errors import ErrorCodes
    from h2.exceptions import ProtocolError

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection((host, port), timeout=timeout)
    with context.wrap_socket(raw, server_hostname=server_name) as tls:
        if tls.selected_alpn_protocol() != "h2":
            raise AssertionError("ALPN chose %r" % (tls.selected_alpn_protocol(),))
        conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", server_name.encode()),
                  (b":path", b"/api/reset")]
        sent = 0
        for _ in range(streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, fields, end_stream=True)
            conn.reset_stream(sid, ErrorCodes.CANCEL)
            try:
                tls.sendall(conn.data_to_send())
            except OSError:
                break
            sent += 1
        while True:
            try:
                data = tls.recv(65536)
            except OSError:
                return None, sent
            if not data:
                return None, sent
            try:
                events = conn.receive_data(data)
            except ProtocolError:
                continue
            for event in events:
                if isinstance(event, ConnectionTerminated):
                    return event.error_code, sent
