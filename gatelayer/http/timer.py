"""
The one timer of a client connection, shared by both server channels.
"""

# Where a connection is in its current request.
IDLE, HEADERS, BODY, BUSY = range(4)


class ConnectionTimer:
    """
    A mixin giving a channel one timer, moved with C{reset} rather than
    recreated for each request: the idle keep-alive timeout, the absolute
    deadline of a request's headers and the body's idle timeout.

    The channel provides C{callLater}, C{_phase} (one of L{IDLE},
    L{HEADERS}, L{BODY}, L{BUSY}), C{_reject(status, message)} and
    C{_idle_timed_out()}.
    """

    _timer = None

    def _arm(self, seconds):
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self._timer = self.callLater(seconds, self._timed_out)

    def _timed_out(self):
        self._timer = None
        phase = self._phase
        if phase == HEADERS:
            self._reject(408, "request headers not received in time")
        elif phase == BODY:
            self._reject(408, "request body not received in time")
        elif phase == IDLE:
            self._idle_timed_out()

    def _cancel_timer(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
