"""
Request bodies of HTTP/2 streams streamed to the upstream as they arrive:
L{StreamedBody}, the body a proxied request hands the upstream client in
place of bytes or a file, and L{streamable}, which decides when a stream's
body may go that way instead of being kept whole first.

Back-pressure: received DATA is acknowledged to the client (its stream
window reopened) only once the upstream connection's transport took the
bytes. While the transport has paused its producer (this body), nothing
is written and nothing acknowledged, so the client stops at its window and
the gateway holds at most about one window per stream.
"""

from collections import deque

from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, StreamClosedError
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gatelayer.http1 import allowed_trailers, last_chunk, token_set
from gatelayer.upstream.interfaces import IStreamedBody

__all__ = ["BODY_BLIND_FILTERS", "StreamedBody", "UploadReceiving", "declared_length", "streamable"]

#: Built-in filter types that never read the request body: a route whose
#: filters are all of these types may stream it. Every other type (and
#: every filter of an installed package) may read it, so its routes keep
#: the body whole first.
BODY_BLIND_FILTERS = frozenset(["rate_limit", "jwt", "api_key", "cors", "ip_filter"])


def streamable(gateway, request):
    """
    Whether the body of C{request} (an L{gatelayer.http2.stream.H2Request}
    just routed) may be streamed upstream: its route proxies to one
    upstream (no split, mirror, aggregate, static or direct terminal), no
    filter of the route may read the body, the route does not ask for
    C{request_buffering}, and the listener does not redirect to https.
    """
    routing = request.routing
    route = routing.match.route if routing is not None else None
    if route is None or not getattr(route.terminal, "streams_request_body", False):
        return False
    if route.spec.request_buffering:
        return False
    if request.channel.factory.listener.redirect_https is not None:
        return False
    specs = gateway.config.filters
    # A type name is one registration (an installed package cannot take a
    # built-in name), so the name tells a built-in type.
    return all(specs[name].type in BODY_BLIND_FILTERS for name in route.spec.filters)


@implementer(IPushProducer, IStreamedBody)
class StreamedBody:
    """
    The request body of one HTTP/2 stream on its way upstream.

    The channel gives it the DATA it receives (L{receive}) and the end of
    the stream (L{end}); the upstream connection, once it wrote the
    request head, hands itself over (L{stream_to}) and registers this body
    as its transport's producer.

    @ivar length: the client's C{content-length} (int), or L{None}: the
        body then goes chunked.
    @ivar chunked: whether the body goes upstream chunked (no length, or
        trailer fields announced).
    @ivar started: whether the request head was written upstream (from
        then on the request cannot be answered by the gateway or resent).
    @ivar failed: whether the upload was given up (the stream refused or
        reset); a terminal that finds it so does nothing.
    @ivar on_abort: called (no arguments) when the upload is given up, by
        the proxy to abandon its upstream exchange; or L{None}.
    @ivar trailer_names: the lower-case names of the trailer fields the
        client declared (in C{trailer}) that may go upstream; a frozenset,
        empty for none.
    """

    started = False
    failed = False
    on_abort = None
    _ended = False
    _paused = False
    _connection = None

    def __init__(self, acknowledge, length, declared_trailers):
        """
        @param acknowledge: called with a flow-controlled size once those
            bytes are written upstream (reopens the client's window).
        @param length: the declared body length, or L{None}.
        @param declared_trailers: the lower-case names of the trailer
            fields that may go upstream (a frozenset; empty for none).
        """
        self._acknowledge = acknowledge
        self.length = length
        self.trailer_names = declared_trailers
        self.chunked = length is None or bool(declared_trailers)
        self._queue = deque()
        self._trailers = ()

    def receive(self, data, flow):
        """
        DATA arrived (C{flow} is its flow-controlled size): write it
        upstream if the connection takes it now, else keep it (unacknowledged)
        until it does.
        """
        if self.failed:
            self._acknowledge(flow)
            return
        self._queue.append((data, flow))
        self._pump()

    def end(self, trailers=()):
        """
        The client ended the stream, with trailer fields C{trailers}
        (C{(name, value)} pairs) or none.
        """
        self._ended = True
        if self.trailer_names and trailers:
            self._trailers = allowed_trailers(trailers, self.trailer_names)
        self._pump()

    def fail(self):
        """
        Give the upload up: write nothing more, tell the proxy (C{on_abort}).
        """
        if self.failed:
            return
        self.failed = True
        self._connection = None
        queue, self._queue = self._queue, deque()
        for _, flow in queue:
            self._acknowledge(flow)
        callback, self.on_abort = self.on_abort, None
        if callback is not None:
            callback()

    # -- the upstream connection's side -------------------------------------

    def stream_to(self, connection):
        """
        The request head went out on C{connection} (an
        L{gatelayer.upstream.client.HTTP11UpstreamConnection}): write the
        body on its transport from now on.
        """
        self.started = True
        if self.failed:
            return
        self._connection = connection
        self._pump()

    def pauseProducing(self):
        """
        The upstream transport's buffer is full: write (and acknowledge)
        nothing more until resumed.
        """
        self._paused = True

    def resumeProducing(self):
        """
        The upstream transport drained: write what waits.
        """
        self._paused = False
        self._pump()

    def stopProducing(self):
        """
        The upstream connection is going away (or its response came
        before the body ended): what still arrives is acknowledged and
        dropped.
        """
        self.fail_quietly()

    def fail_quietly(self):
        """
        Stop writing without telling the proxy (the connection reports its
        own outcome).
        """
        self.on_abort = None
        self.fail()

    def _pump(self):
        connection = self._connection
        while connection is not None and self._queue and not self._paused:
            data, flow = self._queue.popleft()
            if data:
                if self.chunked:
                    connection.transport.writeSequence((b"%x\r\n" % (len(data),), data, b"\r\n"))
                else:
                    connection.transport.write(data)
                connection.body_progress()
            self._acknowledge(flow)
            # The write may have paused this producer or ended the
            # connection (a synchronous failure).
            connection = self._connection
        if connection is not None and self._ended and not self._queue:
            self._connection = None
            if self.chunked:
                connection.transport.write(last_chunk(self._trailers))
            connection.body_sent()

    @property
    def complete(self):
        """
        Whether the client ended the stream (the whole body arrived).
        """
        return self._ended


def declared_length(headers):
    """
    The C{content-length} of a request head (C{h2} checked it is one
    number and will hold the DATA to it), or L{None}.
    """
    values = headers.getRawHeaders(b"content-length")
    if values and values[0].isdigit():
        return int(values[0])
    return None


class UploadReceiving:
    """
    The receiving half of an L{gatelayer.http2.connection.H2Channel} for
    streamed request bodies. The channel provides C{_h2}, C{_streams},
    C{_flush}, C{_answer_early}, C{reset_stream}, C{_dispatch},
    C{_body_timed_out}, C{clock} and C{body_timeout}.
    """

    def _start_upload(self, request):
        """
        The head of C{request} came without END_STREAM and its route may
        stream: hand it to the gateway now, its body following as it
        arrives.
        """
        sid = request.stream_id
        declared = token_set(request.requestHeaders.getRawHeaders(b"trailer"))
        # Names that may never be trailers (framing, routing) are not
        # announced upstream, and their fields are dropped.
        names = frozenset(name for name in declared if allowed_trailers(((name, b""),)))
        request.upload = StreamedBody(
            lambda flow: self._acknowledge(sid, flow), declared_length(request.requestHeaders), names)
        self._dispatch(request)
        if self._streams.get(sid) is request and not request.upload.complete:
            # The body must keep coming while it is streamed too.
            request.body_timer = self.clock.callLater(self.body_timeout, self._body_timed_out, request)

    def _acknowledge(self, sid, flow):
        """
        C{flow} bytes of stream C{sid} were written upstream (or dropped):
        reopen the client's windows by as much.
        """
        if not flow or self._dead:
            return
        try:
            self._h2.acknowledge_received_data(flow, sid)
        except (StreamClosedError, ProtocolError):
            return
        self._flush()

    def _upload_data(self, request, event):
        """
        DATA of a streamed body: counted against the route's limit, then
        handed to the upload (which acknowledges it once written).
        """
        upload = request.upload
        if request.body_timer is not None:
            request.body_timer.reset(self.body_timeout)
        received = request.count_body(len(event.data))
        limit = request.routing.body_limit
        if not upload.failed and received > limit:
            self._acknowledge(event.stream_id, event.flow_controlled_length)
            self._upload_failed(request, 413, "request body larger than %d bytes" % (limit,))
            return
        if not upload.failed and request.startedWriting and not upload.started:
            # Answered (by a filter) before the body went anywhere.
            upload.fail()
        upload.receive(event.data, event.flow_controlled_length)

    def _upload_failed(self, request, status, message):
        """
        Give a streamed body up: answered with C{status} when nothing went
        upstream and no response began, else the stream is reset (the
        upstream request is abandoned either way).
        """
        upload = request.upload
        started = upload.started
        upload.fail()
        if not started and not request.startedWriting:
            self._answer_early(request.stream_id, request, status, message)
        else:
            self.reset_stream(request, ErrorCodes.CANCEL)
        self._flush()
