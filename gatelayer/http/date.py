"""
The C{Date} header of the gateway's responses (RFC 9110 section 6.6.1),
formatted at most once per second.
"""

import re
import time

__all__ = ["HTTPDate", "imf_fixdate", "is_imf_fixdate"]

_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
           b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_IMF_FIXDATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] "
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT")


def imf_fixdate(seconds):
    """
    C{seconds} since the epoch as an IMF-fixdate (C{b"Sun, 06 Nov 1994
    08:49:37 GMT"}). Built from tables rather than C{strftime}, whose day
    and month names follow the process locale.
    """
    year, month, day, hour, minute, second, weekday, _, _ = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[weekday], day, _MONTHS[month - 1], year, hour, minute, second)


# The last value is_imf_fixdate found well formed: an upstream sends the
# same Date for a whole second, so most checks are one comparison.
_last_valid = None


def is_imf_fixdate(value):
    """
    Whether C{value} (bytes) is a well-formed IMF-fixdate, the only form a
    sender may generate.
    """
    global _last_valid
    if value == _last_valid:
        return True
    if _IMF_FIXDATE.fullmatch(value) is None:
        return False
    _last_valid = value
    return True


class HTTPDate:
    """
    The current time as an IMF-fixdate, from an injected clock: formatted
    once per second of that clock, however many responses ask for it.

    @ivar clock: an L{twisted.internet.interfaces.IReactorTime} (its
        C{seconds()} is the time).
    """

    __slots__ = ("clock", "_seconds", "_second", "_value", "_line")

    def __init__(self, clock):
        self.clock = clock
        self._seconds = clock.seconds
        self._second = None
        self._value = b""
        self._line = b""

    def _refresh(self, second):
        self._value = imf_fixdate(second)
        self._line = b"Date: " + self._value + b"\r\n"
        self._second = second

    def __call__(self):
        """
        The date now, as bytes.
        """
        second = int(self._seconds())
        if second != self._second:
            self._refresh(second)
        return self._value

    def line(self):
        """
        The whole header line, C{b"Date: ...\\r\\n"}, for a response head
        that has no Date yet.
        """
        second = int(self._seconds())
        if second != self._second:
            self._refresh(second)
        return self._line
