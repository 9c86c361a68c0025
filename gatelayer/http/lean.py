"""
A lean, strict HTTP/1.1 server channel for the workers
(C{[gateway] http_server = gatelayer}).

twisted.web's L{HTTPChannel} parses a request line by line through
L{LineReceiver}, with a method call per header and a Deferred-friendly
request object built for any kind of resource; that costs tens of
microseconds per request. This channel finds the end of a request head
with one search, checks the whole head with two compiled regular
expressions, and answers with one write per response head. It keeps the
contract of L{gatelayer.http.channel.GatewayChannel}: the factory's channel
registry and drain, one timer per connection (idle keep-alive timeout,
absolute header deadline, body idle timeout), 413/414/431/408 refusals, and
a Date (and the listener's own headers, such as Strict-Transport-Security)
on every response, refusals included.
Pipelined requests are answered one at a time, in order.
"""

from io import BytesIO
from tempfile import TemporaryFile

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.http.bulk import tune_client_writes
from gatelayer.http.errors import raw_error_response
from gatelayer.http.lean_request import LeanRequest
from gatelayer.http.timer import BODY, BUSY, HEADERS, IDLE, ConnectionTimer
from gatelayer.http1 import BadRequest, ChunkedDecoder, HeadScanner, parse_request_head

__all__ = ["LeanChannel", "LeanRequest", "MEMORY_BODY_LIMIT", "PIPELINE_LIMIT"]

# Request bodies above this size are kept in a temporary file, as
# twisted.web does.
MEMORY_BODY_LIMIT = 100000
# Bytes of pipelined requests buffered while a response is in progress
# before the channel stops reading from the socket.
PIPELINE_LIMIT = 65536


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _canonical_pairs(pairs):
    """
    C{(name, value)} header pairs with their names in twisted's canonical
    case (C{b"Strict-Transport-Security"}), as the response head's header
    mapping keys them.
    """
    headers = Headers()
    for name, value in pairs:
        headers.setRawHeaders(name, [value])
    return tuple((name, values[-1]) for name, values in headers.getAllRawHeaders())


@implementer(IPushProducer)
class LeanChannel(ConnectionTimer, Protocol):
    """
    One client connection: parses requests strictly (see
    L{gatelayer.http1}), hands each to the factory's gateway as a
    L{LeanRequest} and relays back-pressure between the transport and the
    response's producer.

    It is the transport's push producer: when the client reads slowly the
    transport pauses it, and it pauses the producer of the response in
    progress (the proxy's upstream handle, a file streamer) and stops
    taking new requests.

    @ivar factory: the L{gatelayer.http.factory.GatewayHTTPFactory}.
    @ivar callLater: the reactor's C{callLater} (for the connection's timer).
    @ivar seconds: the reactor's C{seconds} (the same timer's clock).
    @ivar idle_timeout: seconds a kept-alive connection may wait for its next
        request.
    @ivar header_timeout: seconds from a request's first byte to the end of
        its headers (absolute: trickling bytes does not extend it).
    @ivar body_timeout: seconds a request body may go without a byte
        arriving before the request is refused with 408.
    @ivar date: the factory's L{gatelayer.http.date.HTTPDate}.
    @ivar extra_headers: the listener's own response headers as C{(name,
        value)} pairs, names in canonical case.
    @ivar persistent: whether the connection may be kept alive (the factory
        clears it when draining).
    @ivar peer: the client's address.
    @ivar write_paused: whether the transport asked to stop writing.
    """

    _log = Logger()
    factory = None
    callLater = None
    seconds = None
    header_timeout = 10.0
    idle_timeout = 60.0
    body_timeout = 30.0
    pipeline_limit = PIPELINE_LIMIT
    persistent = True
    peer = None
    write_paused = False
    date = None
    extra_headers = ()

    _phase = IDLE
    _dead = False
    _registered = False
    _running = False
    _read_paused = False
    _request = None
    _buf = b""
    _scanner = None
    _searched = 0
    _remaining = 0
    _decoder = None

    def connectionMade(self):
        """
        Register as the transport's producer and with the factory; start
        the idle timer.
        """
        factory = self.factory
        self.date = factory.date
        self.extra_headers = _canonical_pairs(factory.extra_headers) if factory.extra_headers else ()
        # What every request reads, as instance values (a class attribute
        # read through the instance costs more, each time).
        self._dead = self.write_paused = self._read_paused = False
        self.persistent = self.persistent
        self.pipeline_limit = self.pipeline_limit
        self.peer = self.transport.getPeer()
        tune_client_writes(self.transport)
        self.transport.registerProducer(self, True)
        self._registered = True
        self._arm(self.idle_timeout)
        self.factory.channel_opened(self)

    @property
    def busy(self):
        """
        Whether a request is being received or answered on this connection.
        """
        return self._phase != IDLE or self._request is not None

    def loseConnection(self):
        """
        Close the connection once what was written is sent; read no more.
        """
        self._dead = True
        self._buf = b""
        if self._registered:
            # A transport with a registered producer does not close until it
            # is unregistered (if the client was slow it would resume us
            # instead of closing).
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- input -------------------------------------------------------------

    def dataReceived(self, data):
        """
        Buffer C{data} and parse as far as it goes; while a response is in
        progress, pipelined bytes are only buffered (up to a bound).
        """
        if self._dead:
            return
        buf = self._buf
        self._buf = buf + data if buf else data
        if self._phase == BUSY:
            if len(self._buf) > self.pipeline_limit and not self._read_paused:
                self._update_reading()
            return
        if not self._running:
            self._run()

    def _run(self):
        self._running = True
        try:
            while not self._dead:
                phase = self._phase
                if phase == BODY:
                    if not self._buf or not self._read_body():
                        break
                    continue
                if phase == BUSY:
                    break
                buf = self._buf
                if phase == IDLE:
                    if self.write_paused:
                        break
                    if buf[:1] == b"\r":
                        while buf[:2] == b"\r\n":
                            # RFC 9112 2.2: empty lines before a request
                            # line are ignored (some clients send one after
                            # a body).
                            buf = self._buf = buf[2:]
                        if buf == b"\r":
                            break
                    if not buf:
                        break
                    self._phase = HEADERS
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        # The whole head in one read (the usual case): no
                        # scanner, no deadline.
                        self._begin(buf, end)
                        if self._phase == BUSY:
                            break
                        continue
                    self._searched = 0
                    self._scanner = None
                end = buf.find(b"\r\n\r\n", self._searched)
                if end < 0:
                    scanner = self._scanner
                    if scanner is None:
                        scanner = self._scanner = HeadScanner()
                        self._arm(self.header_timeout)
                    scanner.check(buf)
                    self._searched = len(buf) - 3 if len(buf) > 3 else 0
                    break
                self._scanner = None
                self._begin(buf, end)
                if self._phase == BUSY:
                    break
        except BadRequest as refusal:
            self._reject(refusal.status, refusal.message)
        finally:
            self._running = False
        if not self._dead and (self.write_paused or self._read_paused
                               or len(self._buf) > self.pipeline_limit):
            self._update_reading()

    def _begin(self, buf, end):
        """
        A complete request head is in C{buf[:end]}: parse it, route it, and
        read its body or answer it.
        """
        head = parse_request_head(buf, end)
        rest = buf[end + 4:]
        request = self._request = LeanRequest(self, head)
        gateway = self.factory.gateway
        limit = gateway.early_route(request, head.method, head.target).body_limit
        length = head.length
        if length:
            if length > limit:
                self._buf = b""
                raise BadRequest(413, "request body larger than %d bytes" % (limit,))
            request.content = BytesIO() if length <= MEMORY_BODY_LIMIT else TemporaryFile()
            self._remaining = length
            self._decoder = None
        elif head.chunked:
            request.content = BytesIO()
            self._decoder = ChunkedDecoder()
        else:
            # No body: a new, empty file, already at its start.
            request.content = BytesIO()
            self._buf = rest
            self._phase = BUSY
            gateway.handle(request)
            return
        self._phase = BODY
        self._buf = rest
        if not rest:
            if head.expect_continue:
                self.transport.write(_CONTINUE)
            self._arm(self.body_timeout)

    def _read_body(self):
        """
        Take body bytes from the buffer; returns whether the body is complete
        (the request was then dispatched).
        """
        request = self._request
        buf = self._buf
        decoder = self._decoder
        if decoder is None:
            remaining = self._remaining
            if len(buf) <= remaining:
                piece, rest = buf, b""
            else:
                piece, rest = buf[:remaining], buf[remaining:]
            self._remaining = remaining - len(piece)
            self._buf = rest
            self._store(request, piece)
            done = not self._remaining
        else:
            pieces, rest = decoder.feed(buf)
            done = rest is not None
            self._buf = rest if done else b""
            for piece in pieces:
                self._store(request, piece)
        if not done:
            self._arm(self.body_timeout)
            return False
        if decoder is not None and decoder.trailers:
            request.trailers = decoder.trailers
        self._decoder = None
        self._dispatch(request)
        return True

    def _store(self, request, piece):
        received = request._received = request._received + len(piece)
        limit = request.routing.body_limit
        if received > limit:
            raise BadRequest(413, "request body larger than %d bytes" % (limit,))
        content = request.content
        if received > MEMORY_BODY_LIMIT and isinstance(content, BytesIO):
            spill = TemporaryFile()
            spill.write(content.getvalue())
            request.content = content = spill
        content.write(piece)

    def _dispatch(self, request):
        self._phase = BUSY
        request.content.seek(0)
        self.factory.gateway.handle(request)

    # -- output ------------------------------------------------------------

    def request_done(self, request):
        """
        C{request}'s response is complete: close if it said so, else wait
        for (or go on with the buffered) next request.
        """
        if request is not self._request:
            return
        self._request = None
        self._phase = IDLE
        if not request.keep_alive or not self.persistent:
            self._cancel_timer()
            self.loseConnection()
        else:
            self._arm_idle()
        factory = self.factory
        if factory.draining:
            factory.request_done(self)
        if not self._dead and not self._running:
            if self._buf:
                self._run()
            elif self._read_paused:
                self._update_reading()

    def switch_protocols(self, relay):
        """
        The request in progress switched protocols (its 101 is written):
        the connection's bytes go to C{relay} from now on, those already
        buffered after the request first; the relay's idle timer replaces
        this one. The request ends when the connection closes.
        """
        self._cancel_timer()
        leftover, self._buf = self._buf, b""
        if self._read_paused:
            self._read_paused = False
            self.transport.resumeProducing()
        self.dataReceived = relay.from_client
        relay.attach_client(self.transport, self.loseConnection, self.callLater)
        if leftover:
            relay.from_client(leftover)

    def pauseProducing(self):
        """
        The client reads slowly: pause the response's producer and take no
        new request until resumed.
        """
        self.write_paused = True
        request = self._request
        if request is not None and request.producer is not None:
            request.producer.pauseProducing()

    def resumeProducing(self):
        """
        The client caught up: resume the response's producer and go on.
        """
        self.write_paused = False
        request = self._request
        if request is not None and request.producer is not None:
            request.producer.resumeProducing()
        if self._dead:
            return
        if self._buf and not self._running and self._phase == IDLE:
            self._run()
        elif self._read_paused:
            self._update_reading()

    def stopProducing(self):
        """
        The transport is going away; L{connectionLost} does the cleaning up.
        """

    def _update_reading(self):
        # Stop reading while too much is buffered or the client does not
        # read its responses (a pipelining client cannot make the gateway
        # queue answers without bound).
        want = (self.write_paused and self._phase == IDLE) or len(self._buf) > self.pipeline_limit
        if want != self._read_paused:
            self._read_paused = want
            if want:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- refusals and timers -----------------------------------------------

    def reject_body(self, status, message):
        """
        Refuse the request being received (413) without reading its body:
        answer and close.
        """
        self._reject(status, message)

    def _reject(self, status, message):
        """
        Answer C{status} with a JSON body and close: used before a request
        is dispatched (bad framing, limits, slow headers, body too large).
        """
        if self._dead:
            return
        self._cancel_timer()
        factory = self.factory
        request = self._request
        self.transport.write(raw_error_response(
            status, message, factory.date(), factory.extra_headers,
            factory.gateway.refusal_id(request)))
        if request is not None and not request.finished:
            request.code = status
            request._done()
        self.loseConnection()

    def _idle_timed_out(self):
        if self._request is None:
            self.loseConnection()

    def connectionLost(self, reason):
        """
        Cancel the timer, stop the response in progress, unregister from the
        factory.
        """
        self._dead = True
        self._cancel_timer()
        request, self._request = self._request, None
        if request is not None:
            request.lost()
        self.factory.channel_closed(self)
