"""
The master's recent errors: a bounded ring of the error-level log events it
has seen, for C{recent_errors} in the admin C{/status} and the dashboard.

Two kinds of events reach it:

 - the master's own events at level C{error} or C{critical} (source
   C{"master"});
 - the lines its workers write, which the master relays into its log one
   event per line at the worker's level
   (L{gatelayer.observe.gatewaylog.worker_event}); those at level C{error}
   or C{critical} are kept with source C{"worker N"}.

Only the message is kept, never a traceback or the event's other fields,
and it is cut to L{MAX_TEXT} characters: the ring is shown to whoever may
read the admin endpoint.
"""

from collections import deque

from twisted.logger import LogLevel, formatEvent

from gatelayer.service import MasterPart

__all__ = ["MAX_ERRORS", "MAX_TEXT", "RecentErrors", "RecentErrorsPart"]

#: How many errors are kept (the oldest go first).
MAX_ERRORS = 50
#: Longer messages are cut to this many characters.
MAX_TEXT = 500

_ERROR_LEVELS = frozenset({LogLevel.error, LogLevel.critical})


def _cut(text):
    text = text.strip()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


class RecentErrors:
    """
    The ring itself, and the log observer that fills it.

    @ivar entries: the kept errors, oldest first: dicts with C{time} (epoch
        seconds), C{source} and C{text}.
    """

    def __init__(self, size=MAX_ERRORS):
        self.entries = deque(maxlen=size)
        self.seen = 0

    def __call__(self, event):
        """
        Observe one log event: keep it if it is an error (see the module
        docstring). Never raises: a log observer that raises is removed.
        """
        try:
            entry = self._entry(event)
        except Exception:
            return
        if entry is not None:
            self.seen += 1
            self.entries.append(entry)

    def _entry(self, event):
        if "worker_level" in event:
            # A worker's line, relayed by the master at the worker's level
            # (gatelayer.observe.gatewaylog.worker_event); the message only:
            # a failure's traceback follows its first line.
            if event.get("log_level") not in _ERROR_LEVELS:
                return None
            message = str(event.get("worker_message", "")).split("\n", 1)[0]
            return {"time": event.get("log_time"), "source": f"worker {event.get('worker')}",
                    "text": _cut(message)}
        if event.get("log_level") not in _ERROR_LEVELS:
            return None
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f" ({failure.type.__name__})"
        return {"time": event.get("log_time"), "source": "master", "text": _cut(text)}

    def as_list(self):
        """
        The kept errors, newest first, JSON-ready.
        """
        return [dict(entry, time=round(entry["time"], 3) if entry["time"] else None)
                for entry in reversed(self.entries)]


class RecentErrorsPart(MasterPart):
    """
    The master's C{errors} part: observes C{publisher} (the global log
    publisher in a running master) while it runs and answers
    C{{"recent_errors": [...], "errors_seen": n}} in C{/status}.
    """

    def __init__(self, publisher, size=MAX_ERRORS):
        """
        @param publisher: an L{twisted.logger.ILogObserver} accepting
            C{addObserver}/C{removeObserver} (a C{LogPublisher}).
        """
        self.name = "errors"
        self.publisher = publisher
        self.ring = RecentErrors(size)

    def startService(self):
        """
        Start observing the log.
        """
        super().startService()
        self.publisher.addObserver(self.ring)

    def stopService(self):
        """
        Stop observing the log.
        """
        super().stopService()
        self.publisher.removeObserver(self.ring)

    def status(self):
        """
        The ring for C{/status}, newest first.
        """
        return {"recent_errors": self.ring.as_list(), "errors_seen": self.ring.seen}
