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

    After a request the idle deadline usually moves later than the timer
    is due: the timer is then left alone and, when it fires, goes on for
    what remains of the deadline (one clock reading per request instead of
    a reset).

    The channel provides C{callLater}, C{seconds} (the reactor's clock),
    C{idle_timeout}, C{_phase} (one of L{IDLE}, L{HEADERS}, L{BODY},
    L{BUSY}), C{_reject(status, message)} and C{_idle_timed_out()}.
    """

    _timer = None
    # When the running timer is due, and the idle deadline it stands for
    # when that is later (None: the timer's own time is the deadline).
    _due = 0.0
    _idle_until = None

    def _arm(self, seconds):
        self._idle_until = None
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self._timer = timer = self.callLater(seconds, self._timed_out)
        self._due = timer.getTime()

    def _arm_idle(self):
        """
        The connection turns idle now: close it if no request begins within
        C{idle_timeout} seconds.
        """
        until = self.seconds() + self.idle_timeout
        if self._timer is not None and self._due <= until:
            self._idle_until = until
        else:
            self._arm(self.idle_timeout)

    def _timed_out(self):
        self._timer = None
        phase = self._phase
        if phase == HEADERS:
            self._reject(408, "request headers not received in time")
        elif phase == BODY:
            self._reject(408, "request body not received in time")
        elif phase == IDLE:
            until, self._idle_until = self._idle_until, None
            if until is not None:
                rest = until - self.seconds()
                if rest > 0:
                    self._timer = self.callLater(rest, self._timed_out)
                    self._due = until
                    return
            self._idle_timed_out()

    def _cancel_timer(self):
        self._idle_until = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
