"""
The HTTP/2 server channel of TLS listeners (ALPN C{h2}): one
L{H2Channel} per connection drives an C{h2} library connection (the
framing, HPACK, stream states, flow-control arithmetic and header
validation) and hands every stream to the listener's gateway as an
L{gatelayer.http2.stream.H2Request}.

What it adds to the framing is what an edge needs: the listener's stream
and header limits, a refused stream (REFUSED_STREAM) beyond
C{max_concurrent_streams}, GOAWAY ENHANCE_YOUR_CALM for floods of resets
(CVE-2023-44487), PINGs and SETTINGS, the idle timeout, and a graceful
GOAWAY on drain that lets the streams in flight finish.
"""

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated, DataReceived, PingReceived, RemoteSettingsChanged, RequestReceived,
    StreamEnded, StreamReset, TrailersReceived, WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.chain import error_body
from gatelayer.http1 import BadRequest
from gatelayer.http2.floods import FloodCounter
from gatelayer.http2.request_head import RequestHeadError, request_head
from gatelayer.http2.sending import ResponseSending
from gatelayer.http2.stream import H2Request
from gatelayer.http2.upload import UploadReceiving, streamable

__all__ = ["H2Channel"]

_JSON = b"application/json"
# The initial stream window (RFC 9113 6.9.2) and the largest window.
_STREAM_WINDOW = 65535
_MAX_WINDOW = 2 ** 31 - 1


class _ServerConnection(H2Connection):
    """
    The C{h2} server connection with its concurrent-stream check left to
    the channel, which refuses a stream over the limit (REFUSED_STREAM)
    where C{h2} would close the whole connection.
    """

    @property
    def open_inbound_streams(self):
        """
        Zero for C{h2}'s own check; reading the real count still drops the
        closed streams C{h2} keeps.
        """
        H2Connection.open_inbound_streams.fget(self)
        return 0


@implementer(IPushProducer)
class H2Channel(ResponseSending, UploadReceiving, Protocol):
    """
    One HTTP/2 client connection.

    It is the transport's push producer: when the client reads slowly, the
    producers of the responses in progress are paused.

    @ivar factory: the listener's L{gatelayer.http.factory.GatewayHTTPFactory}.
    @ivar settings: the listener's L{gatelayer.config.listener_h2.H2Settings}.
    @ivar clock: the reactor (C{callLater}, C{seconds}).
    @ivar idle_timeout: seconds a connection without a stream stays open.
    @ivar body_timeout: seconds a request body may pause (C{[gateway]
        body_timeout}) before its stream is answered 408.
    @ivar peer: the client's address.
    @ivar write_paused: whether the transport asked to stop writing.
    @ivar extra_headers: the listener's own response headers, lower case.
    """

    log = Logger()
    peer = None
    write_paused = False
    extra_headers = ()
    extra_header_names = frozenset()

    _dead = False
    _goaway_id = None
    _idle = None

    def __init__(self, factory, settings, clock, idle_timeout):
        self.factory = factory
        self.settings = settings
        self.clock = clock
        self.idle_timeout = idle_timeout
        self._streams = {}
        window = settings.flood_window
        self._resets = FloodCounter(settings.max_resets, window)
        self._pings = FloodCounter(settings.max_pings, window)
        self._settings_frames = FloodCounter(settings.max_settings, window)
        self._persistent = True
        self.body_timeout = factory.gateway.config.gateway.body_timeout

    # -- the connection ----------------------------------------------------

    def connectionMade(self):
        """
        Send the server preface with the listener's settings; register as
        the transport's producer and with the factory.
        """
        factory = self.factory
        self.extra_headers = tuple((name.lower(), value) for name, value in factory.extra_headers)
        self.extra_header_names = frozenset(name for name, _ in self.extra_headers)
        self.peer = self.transport.getPeer()
        settings = self.settings
        conn = self._h2 = _ServerConnection(H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True,
            normalize_inbound_headers=True, validate_outbound_headers=True))
        conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
            SettingCodes.ENABLE_PUSH: 0,
        })
        conn.decoder.max_header_list_size = settings.max_header_list_size
        conn.initiate_connection()
        # A streamed body is acknowledged only as its upstream takes it:
        # the connection's window holds a stream window per stream, so one
        # slow upstream does not stall the connection's other streams.
        extra = min((settings.max_concurrent_streams - 1) * _STREAM_WINDOW, _MAX_WINDOW - _STREAM_WINDOW)
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self.transport.registerProducer(self, True)
        factory.channel_opened(self)
        self._flush()
        self._arm_idle()

    @property
    def busy(self):
        """
        Whether a stream is in progress.
        """
        return bool(self._streams)

    @property
    def persistent(self):
        """
        Whether the connection takes new streams; set false by a drain,
        which sends a graceful GOAWAY.
        """
        return self._persistent

    @persistent.setter
    def persistent(self, value):
        self._persistent = value
        if not value:
            self._graceful_goaway()

    def loseConnection(self):
        """
        Close gracefully: GOAWAY naming the last stream taken, then close
        once what was written is sent.
        """
        self._graceful_goaway()
        self._close()

    def _close(self):
        if self._dead:
            return
        self._dead = True
        self._cancel_idle()
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _graceful_goaway(self):
        if self._goaway_id is not None or self._dead:
            return
        self._flush()
        self._goaway_id = last = self._h2.highest_inbound_stream_id
        # Written beside the h2 state machine, which would refuse to send
        # the responses in flight once it sent a GOAWAY itself.
        self.transport.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())
        if not self._streams:
            self._close()

    def _goaway(self, code, reason):
        """
        End the connection for a protocol error or a flood: GOAWAY with
        C{code}, every stream lost.
        """
        if self._dead:
            return
        self.log.info("HTTP/2 connection from {peer} closed: {reason}",
                      peer=getattr(self.peer, "host", None), reason=reason)
        try:
            self._h2.close_connection(error_code=code)
        except ProtocolError:
            pass
        self._flush()
        self._close()

    def _flush(self):
        data = self._h2.data_to_send()
        if data and not self._dead:
            self.transport.write(data)

    # -- input -------------------------------------------------------------

    def dataReceived(self, data):
        """
        Feed the bytes to the framing and act on its events.
        """
        if self._dead:
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as error:
            # h2 has queued its GOAWAY (the error's code).
            self.log.info("HTTP/2 protocol error from {peer}: {error}",
                          peer=getattr(self.peer, "host", None), error=str(error))
            self._flush()
            self._close()
            return
        for event in events:
            if self._dead:
                return
            handler = self._HANDLERS.get(type(event))
            if handler is None:
                continue
            try:
                handler(self, event)
            except Exception:
                # A fault of the gateway's own: the connection ends, the
                # worker and the other connections go on.
                self.log.failure("HTTP/2 connection from {peer} failed on {event}",
                                 peer=getattr(self.peer, "host", None), event=type(event).__name__)
                self._goaway(ErrorCodes.INTERNAL_ERROR, "internal error")
                return
        self._flush()
        if not self._streams:
            self._arm_idle()

    def _request_received(self, event):
        sid = event.stream_id
        if self._goaway_id is not None and sid > self._goaway_id:
            self._refuse(sid, ErrorCodes.REFUSED_STREAM)
            return
        if len(self._streams) >= self.settings.max_concurrent_streams:
            self._refuse(sid, ErrorCodes.REFUSED_STREAM)
            self._count_reset()
            return
        self._cancel_idle()
        try:
            method, uri, headers = request_head(event.headers)
        except RequestHeadError as error:
            self._answer_early(sid, None, error.status, error.message)
            return
        request = self._streams[sid] = H2Request(self, sid, method, uri, headers)
        gateway = self.factory.gateway
        try:
            limit = gateway.early_route(request, method, uri).body_limit
        except BadRequest as refusal:
            self._answer_early(sid, request, refusal.status, refusal.message)
            return
        length = headers.getRawHeaders(b"content-length")
        if length and length[0].isdigit() and int(length[0]) > limit:
            self._answer_early(sid, request, 413, "request body larger than %d bytes" % (limit,))
            return
        # The end of the stream, if it came with the head, is handled as
        # its StreamEnded event; a body must keep coming meanwhile.
        if event.stream_ended is None:
            if streamable(gateway, request):
                self._start_upload(request)
            else:
                request.body_timer = self.clock.callLater(self.body_timeout, self._body_timed_out, request)

    def _data_received(self, event):
        sid = event.stream_id
        request = self._streams.get(sid)
        if request is not None and request.upload is not None:
            self._upload_data(request, event)
            return
        try:
            self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
        except (StreamClosedError, ProtocolError):
            pass
        if request is None or request.dispatched or request.startedWriting:
            return
        if request.body_timer is not None:
            request.body_timer.reset(self.body_timeout)
        if not request.store(event.data):
            limit = request.routing.body_limit
            self._answer_early(sid, request, 413, "request body larger than %d bytes" % (limit,))

    def _trailers_received(self, event):
        request = self._streams.get(event.stream_id)
        if request is not None:
            request.trailers = tuple(
                (name, value) for name, value in event.headers if not name.startswith(b":"))

    def _stream_ended(self, event):
        request = self._streams.get(event.stream_id)
        if request is not None and request.upload is not None:
            request.cancel_body_timer()
            request.upload.end(request.trailers)
        elif request is not None and not request.dispatched and not request.startedWriting:
            self._dispatch(request)

    def _stream_reset(self, event):
        request = self._streams.pop(event.stream_id, None)
        if request is not None:
            request.lost()
            self._stream_gone()
        if event.remote_reset:
            self._count_reset()

    def _window_updated(self, event):
        if event.stream_id:
            request = self._streams.get(event.stream_id)
            if request is not None:
                self.send_pending(request)
        else:
            self._send_all_pending()

    def _settings_changed(self, event):
        if self._settings_frames.add(self.clock.seconds()):
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "SETTINGS flood")
            return
        if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._send_all_pending()

    def _ping_received(self, event):
        if self._pings.add(self.clock.seconds()):
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "PING flood")

    def _terminated(self, event):
        # The client said GOAWAY: nothing more can be sent on this
        # connection (h2 closed it); the streams in flight are lost.
        self._close()

    _HANDLERS = {
        RequestReceived: _request_received,
        DataReceived: _data_received,
        TrailersReceived: _trailers_received,
        StreamEnded: _stream_ended,
        StreamReset: _stream_reset,
        WindowUpdated: _window_updated,
        RemoteSettingsChanged: _settings_changed,
        PingReceived: _ping_received,
        ConnectionTerminated: _terminated,
    }

    def _count_reset(self):
        if self._resets.add(self.clock.seconds()):
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets (rapid reset)")

    def _refuse(self, sid, code):
        try:
            self._h2.reset_stream(sid, code)
        except (StreamClosedError, ProtocolError):
            pass

    def _body_timed_out(self, request):
        request.body_timer = None
        sid = request.stream_id
        if self._streams.get(sid) is request and request.upload is not None:
            self._upload_failed(request, 408, "request body timed out")
        elif self._streams.get(sid) is request and not request.dispatched and not request.startedWriting:
            self._answer_early(sid, request, 408, "request body timed out")
            self._flush()

    def _dispatch(self, request):
        request.dispatched = True
        request.cancel_body_timer()
        request.content.seek(0)
        try:
            self.factory.gateway.handle(request)
        except Exception:
            self.log.failure("answering HTTP/2 stream {stream} failed", stream=request.stream_id)
            if not request.startedWriting and not request.disconnected:
                self._answer(request, 500, "internal error")
            else:
                request.reset()

    def _answer_early(self, sid, request, status, message):
        """
        Answer a stream the gateway will not handle (a bad head, a body too
        large) with the gateway's JSON error; its body, if any, is then
        refused with RST_STREAM NO_ERROR (RFC 9113 8.1).
        """
        if request is None:
            request = self._streams[sid] = H2Request(self, sid, b"GET", b"/", Headers())
        self._answer(request, status, message)
        if not request.ended:
            return
        stream = self._h2.streams.get(sid)
        if stream is not None and not stream.closed:
            self._refuse(sid, ErrorCodes.NO_ERROR)

    def _answer(self, request, status, message):
        request_id = self.factory.gateway.refusal_id(request)
        body = error_body(status, message, request_id[1])
        request.setResponseCode(status)
        request.responseHeaders.setRawHeaders(b"content-type", [_JSON])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.responseHeaders.setRawHeaders(request_id[0], [request_id[1]])
        request.write(body)
        request.finish()

    # -- the transport's producer -------------------------------------------

    def pauseProducing(self):
        """
        The client reads slowly: pause every response's producer.
        """
        self.write_paused = True
        for request in list(self._streams.values()):
            request.update_producer()

    def resumeProducing(self):
        """
        The client caught up: resume the producers.
        """
        self.write_paused = False
        for request in list(self._streams.values()):
            request.update_producer()

    def stopProducing(self):
        """
        The transport is going away; L{connectionLost} cleans up.
        """

    # -- the idle timer ------------------------------------------------------

    def _arm_idle(self):
        if self._dead or self._streams:
            return
        self._cancel_idle()
        self._idle = self.clock.callLater(self.idle_timeout, self._idle_timed_out)

    def _cancel_idle(self):
        idle, self._idle = self._idle, None
        if idle is not None and idle.active():
            idle.cancel()

    def _idle_timed_out(self):
        self._idle = None
        if not self._streams:
            self.loseConnection()

    def connectionLost(self, reason):
        """
        Every stream in progress is lost; unregister from the factory.
        """
        self._dead = True
        self._cancel_idle()
        streams, self._streams = self._streams, {}
        for request in streams.values():
            request.lost()
        self.factory.channel_closed(self)
