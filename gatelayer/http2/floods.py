"""
Counting what a client may send often but not without bound (stream
resets, PINGs, SETTINGS) over a window of time: the HTTP/2 floods a
gateway must stop (CVE-2023-44487 rapid reset, CVE-2019-9512 ping flood,
CVE-2019-9515 settings flood). Pure: the time is passed in.
"""

__all__ = ["FloodCounter"]


class FloodCounter:
    """
    How many events of one kind arrived in the current window; L{add}
    says when there were more than C{limit}.

    The window is fixed (it starts at the first event after the last one
    ended), which bounds the rate at twice the limit at worst over any
    window-long span: enough to tell a flood from a busy client.

    @ivar limit: events allowed per window.
    @ivar window: the window, in seconds.
    """

    __slots__ = ("limit", "window", "_started", "_count")

    def __init__(self, limit, window):
        self.limit = limit
        self.window = window
        self._started = None
        self._count = 0

    def add(self, now):
        """
        Count one event at time C{now}; returns whether the window now
        holds more than C{limit}.
        """
        if self._started is None or now - self._started >= self.window:
            self._started = now
            self._count = 0
        self._count += 1
        return self._count > self.limit
