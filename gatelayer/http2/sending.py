"""
The sending half of an L{gatelayer.http2.connection.H2Channel}: response
heads, bodies paced by the client's flow-control windows, trailers, the end
of a stream and its reset. The streams (L{gatelayer.http2.stream.H2Request})
call it; the channel provides C{_h2}, C{_streams}, C{_dead}, C{_flush},
C{_refuse} and the idle and drain bookkeeping.
"""

from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError

__all__ = ["ResponseSending"]


class ResponseSending:
    """
    Sends what the streams of an HTTP/2 connection answer.
    """

    def send_head(self, request, head, end_stream):
        """
        Send the response head of C{request}'s stream.
        """
        if self._dead:
            return
        try:
            self._h2.send_headers(request.stream_id, head, end_stream=end_stream)
        except (ProtocolError, StreamClosedError, ValueError, TypeError) as error:
            self.log.warn("HTTP/2 response head refused on stream {stream}: {error}",
                          stream=request.stream_id, error=str(error))
            self.reset_stream(request, ErrorCodes.INTERNAL_ERROR)
            return
        if end_stream:
            self._ended(request)
        self._flush()

    def send_pending(self, request):
        """
        Send what the windows admit of C{request}'s waiting body; end the
        stream (with its trailers) when it finished and nothing waits.
        """
        sid = request.stream_id
        if self._dead or self._streams.get(sid) is not request:
            return
        conn = self._h2
        try:
            while request.pending_size:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                data = request.take(room)
                last = request.ending and not request.pending_size and not request.end_trailers()
                conn.send_data(sid, data, end_stream=last)
                if last:
                    self._ended(request)
                    self._flush()
                    return
            if request.ending and not request.pending_size:
                trailers = request.end_trailers()
                if trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.send_data(sid, b"", end_stream=True)
                self._ended(request)
        except (ProtocolError, StreamClosedError, FlowControlError, ValueError) as error:
            self.log.warn("HTTP/2 stream {stream} cut: {error}", stream=sid, error=str(error))
            self.reset_stream(request, ErrorCodes.INTERNAL_ERROR)
            return
        request.update_producer()
        self._flush()

    def _send_all_pending(self):
        for request in list(self._streams.values()):
            if request.pending_size or request.ending:
                self.send_pending(request)

    def reset_stream(self, request, code=ErrorCodes.INTERNAL_ERROR):
        """
        Reset C{request}'s stream (a response that cannot complete): the
        other streams go on.
        """
        sid = request.stream_id
        if self._streams.get(sid) is request:
            del self._streams[sid]
            if not self._dead:
                self._refuse(sid, code)
                self._flush()
            request.lost()
            self._stream_gone()

    def _ended(self, request):
        self._streams.pop(request.stream_id, None)
        upload = request.upload
        if upload is not None and not upload.complete:
            # The response is complete before the streamed body: the rest
            # of it is not wanted (RFC 9113 8.1).
            upload.fail_quietly()
            self._refuse(request.stream_id, ErrorCodes.NO_ERROR)
        request.completed()
        self._stream_gone()

    def _stream_gone(self):
        if not self._streams:
            if self._goaway_id is not None:
                self._flush()
                self._close()
            else:
                self._arm_idle()
        self.factory.request_done(self)
