"""
How L{gatelayer.upstream.client.HTTP11UpstreamConnection} reads a response:
the head parsed once, the body handed to the request's sink as it arrives,
by Content-Length, by chunks (trailer fields checked and handed to the sink
before the end) or until the connection closes.

Framing is strict, because a proxy that guesses where a response ends can be
made to mix two clients' responses: both Content-Length and
Transfer-Encoding, differing Content-Lengths, a non-numeric length, a bad
chunk size or a transfer coding other than C{chunked} fail the exchange as
C{bad_response}, and a connection that failed is never reused. So does a
head the gateway would otherwise relay to clients who read it differently:
a status outside 100-599, a header name that is not a token, a value with
a control character (NUL, a bare CR or LF...), an obs-fold continuation
line, lines ended by bare LFs. The grammar, the head parser and the chunked
decoder are L{gatelayer.http1}'s, the same the server channels read
requests with (with the response side's limits).
"""

from gatelayer.http1 import RESPONSE, BadResponse, ChunkedDecoder, parse_response_head

__all__ = ["ResponseReader"]

#: The largest response head (status line and headers) accepted, in bytes.
MAX_HEAD_SIZE = RESPONSE.max_head


# The connection's states (its _state), numbered here with the response
# parts: HEAD..UNTIL_CLOSE mean a request is in flight and say which part
# of the response is expected next.
_CONNECTING = 0
_IDLE = 1
_HEAD = 2
_LENGTH = 3
_CHUNKED = 4
_UNTIL_CLOSE = 8
_CLOSED = 9


class ResponseReader:
    """
    The receiving half of L{gatelayer.upstream.client.HTTP11UpstreamConnection}:
    its C{dataReceived}, a state machine over the connection's states.

    A mixin rather than an object of its own, because reading is
    interleaved with the connection's life at every step (a sink may cancel
    the request from any callback; a response ends by freeing or closing
    the connection) and this path runs for every response. It uses the
    connection's C{_request}, C{_state}, C{_buffer}, C{_scanned},
    C{_remaining}, C{_decoder}, C{_got_bytes}, C{_reusable}, C{_no_body}, C{_producer},
    C{_timer} and C{_read_timeout}, and its C{_shutdown}, C{_fail},
    C{_finish}, C{_stop_body} and C{_switching} (what a 101 does).
    """

    # The chunked body's decoder while one is read.
    _decoder = None

    def dataReceived(self, data):
        """
        Parse response bytes; hand the body to the sink as it comes.
        """
        request = self._request
        if request is None:
            if self._state == _IDLE:
                # Nothing was asked: whatever this is, the connection's
                # framing can no longer be trusted.
                self._shutdown(True)
            return
        self._got_bytes = True
        state = self._state
        if state != _HEAD:
            # The body must keep coming: read_timeout counts between reads.
            timer = self._timer
            if timer is not None:
                timer.reset(self._read_timeout)
            if state == _LENGTH and not self._buffer:
                # The common case of a large body: no copies.
                remaining = self._remaining
                if len(data) < remaining:
                    self._remaining = remaining - len(data)
                    request.sink.response_body(data)
                    return
            elif state == _UNTIL_CLOSE:
                request.sink.response_body(data)
                return
            elif state == _CHUNKED:
                # The decoder keeps what it has not used: no buffer here.
                self._read_chunked(request, request.sink, data)
                return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        self._process(request, data)

    def _process(self, request, data):
        sink = request.sink
        while True:
            state = self._state
            if state == _HEAD:
                # Search only what was not searched yet (less the three
                # bytes an end may straddle): a head trickled byte by byte
                # costs linear time.
                end = data.find(b"\r\n\r\n", self._scanned)
                if end < 0:
                    if len(data) > MAX_HEAD_SIZE:
                        self._fail("bad_response", "response head larger than %d bytes"
                                   % (MAX_HEAD_SIZE,))
                    elif (data.find(b"\n\n", self._scanned) >= 0
                          or data.find(b"\n\r\n", self._scanned) >= 0):
                        # A head ended with a bare LF: never trusted, and
                        # failed now rather than after the read timeout.
                        self._fail("bad_response", "response head lines not ended by CRLF")
                    else:
                        self._buffer = data
                        self._scanned = max(0, len(data) - 3)
                    return
                if end > MAX_HEAD_SIZE:
                    self._fail("bad_response", "response head larger than %d bytes"
                               % (MAX_HEAD_SIZE,))
                    return
                head = data[:end]
                data = data[end + 4:]
                self._scanned = 0
                try:
                    (status, reason, headers, http11, length, chunked, close,
                     keep_alive) = parse_response_head(head)
                except BadResponse as e:
                    self._fail("bad_response", str(e))
                    return
                if status < 200:
                    if status == 101:
                        self._switching(request, headers, data)
                        return
                    # 100 Continue, 103 Early Hints...: interim, the final
                    # response follows.
                    continue
                if close or not (http11 or keep_alive):
                    self._reusable = False
                if self._producer is not None:
                    # Answered before the whole body was sent (an early
                    # error): stop sending, and do not reuse the connection.
                    self._stop_body()
                    self._reusable = False
                if self._no_body or status == 204 or status == 304:
                    state = _IDLE
                elif chunked:
                    state = _CHUNKED
                    self._decoder = ChunkedDecoder(RESPONSE)
                elif length is not None:
                    if length:
                        state = _LENGTH
                        self._remaining = length
                    else:
                        state = _IDLE
                else:
                    state = _UNTIL_CLOSE
                    self._reusable = False
                self._state = state
                if self._timer is not None and state != _IDLE and (
                        state != _LENGTH or len(data) < length):
                    # More to read: read_timeout counts from now. (A
                    # response complete in this read frees the connection,
                    # whose idle timer is armed then.)
                    self._timer.reset(self._read_timeout)
                sink.response_head(status, reason, headers)
                if self._request is not request:
                    return
                if state == _IDLE:
                    self._finish(data)
                    return
            elif state == _LENGTH:
                if not data:
                    return
                remaining = self._remaining
                if len(data) < remaining:
                    self._remaining = remaining - len(data)
                    sink.response_body(data)
                    return
                if len(data) == remaining:
                    piece, data = data, b""
                else:
                    piece, data = data[:remaining], data[remaining:]
                self._remaining = 0
                sink.response_body(piece)
                if self._request is request:
                    self._finish(data)
                return
            elif state == _CHUNKED:
                self._read_chunked(request, sink, data)
                return
            elif state == _UNTIL_CLOSE:
                if data:
                    sink.response_body(data)
                return
            else:
                return

    def _read_chunked(self, request, sink, data):
        """
        Hand C{data} to the chunked body's decoder and its pieces to the
        sink; finish the response at the body's end.
        """
        try:
            pieces, rest = self._decoder.feed(data)
        except BadResponse as e:
            # What came before the fault is relayed first, as it would
            # have been had it arrived in an earlier read.
            for piece in e.pieces:
                sink.response_body(piece)
                if self._request is not request:
                    return
            self._fail("bad_response", str(e))
            return
        for piece in pieces:
            sink.response_body(piece)
            if self._request is not request:
                return
        if rest is not None:
            trailers = self._decoder.trailers
            self._decoder = None
            if trailers:
                sink.response_trailers(trailers)
                if self._request is not request:
                    return
            self._finish(rest)
