"""
The access log: one line per request, a JSON object (the default) or the
combined format. The request's end costs one tuple
(L{gatelayer.observe.loglines.capture}); lines are made from those tuples
in batches and written once a second.

The destination is a file (reopened on request: the rotation tool renames
it, the master is sent SIGUSR1 and tells every worker to reopen) or the
worker's standard output (C{-} or C{stdout}), which the master hands every
worker as its own: one stream, no copy through the master.
"""

import os

from gatelayer.observe.loglines import (
    JSON_FIELDS, _Clock, capture, combined_line, combined_text, json_line, json_text, redact_query,
)

# The clock's module, which tests patch to count how often a time is made.
from gatelayer.observe.loglines import time  # noqa: F401

__all__ = ["AccessLog", "FORMATS", "JSON_FIELDS", "STDOUT", "combined_line", "json_line",
           "redact_query"]

FORMATS = ("json", "combined")
"""The values of C{[gateway] access_log_format}."""

STDOUT = ("-", "stdout")
"""The C{access_log} values that mean the worker's standard output."""

# A write of at most PIPE_BUF bytes to a pipe is atomic: the workers share
# one standard output, so each write there holds whole lines within it.
_PIPE_BUF = 4096

#: How many captured requests wait before their lines are made (also made
#: at every flush): enough for the loop to run warm, few enough to hold
#: little memory.
BATCH = 256


class AccessLog:
    """
    Collects one line per request and writes them once a second (a timer
    on the injected reactor; never a write per request).

    @ivar redact: query parameter names (bytes) whose values are written as
        C{REDACTED} (credentials: API keys, tokens), set by the gateway
        from its filters.
    """

    redact = frozenset()
    unwritable = 0

    def __init__(self, path, reactor, flush_interval=1.0, format="json"):
        """
        @param path: the file to append to, or C{-}/C{stdout}.
        @param format: C{"json"} or C{"combined"}.
        """
        self.path = path
        self._stdout = path in STDOUT
        self._file = None if self._stdout else open(path, "ab", buffering=0)
        self._lines = []
        self._pending = []
        self._reactor = reactor
        self._interval = flush_interval
        self._call = None
        self._clock = _Clock()
        self._combined_second = None
        self._combined_text = ""
        self._text = json_text if format == "json" else combined_text

    def record(self, request):
        """
        Note one finished (or abandoned) request: what its line needs is
        captured now, the line is made with a batch of others.
        """
        pending = self._pending
        pending.append(capture(request, self._reactor.seconds()))
        if len(pending) >= BATCH:
            self._make_lines()
        if self._call is None:
            self._call = self._reactor.callLater(self._interval, self.flush)

    def _make_lines(self):
        """
        Turn the captured requests into lines; one that cannot be made is
        left out (and counted), never the worker's problem.
        """
        pending, self._pending = self._pending, []
        text = self._text
        lines = self._lines
        for record in pending:
            try:
                lines.append(text(self, record))
            except Exception:
                self.unwritable += 1

    def target(self, request):
        """
        The request target as logged: the canonical path and the query with
        the values of credential parameters redacted.
        """
        return self.target_of(request.path, request.query)

    def target_of(self, path, query):
        """
        L{target} of a request's C{path} and C{query}.
        """
        if not query:
            return path
        if self.redact:
            query = redact_query(query, self.redact)
        return path + b"?" + query

    def time(self, now):
        """
        C{now} (seconds since the epoch) as RFC 3339 UTC with milliseconds.
        """
        return self._clock.format(now)

    def quoted_time(self, now):
        """
        L{time} as a JSON string, made once a millisecond.
        """
        return self._clock.quoted(now)

    def combined_time(self, now):
        """
        C{now} as the combined format writes it, made once per second.
        """
        second = int(now)
        if second != self._combined_second:
            self._combined_second = second
            self._combined_text = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._combined_text

    def flush(self):
        """
        Write what has been collected: one write to a file, writes of whole
        lines of at most C{PIPE_BUF} bytes to standard output.
        """
        self._call = None
        if self._pending:
            self._make_lines()
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            if not self._stdout:
                self._file.write(b"".join(lines))
                return
            for chunk in _chunks(lines):
                _write_all(1, chunk)
        except OSError:
            # A full disk or a closed stream must not take the worker down;
            # these lines are lost, the next batch is tried again.
            pass

    def reopen(self):
        """
        Write what has been collected to the current file, then open
        C{path} again (a rotation tool renamed the file): no line is lost
        or split between the two files.
        """
        self.flush()
        if self._stdout:
            return
        old, self._file = self._file, open(self.path, "ab", buffering=0)
        old.close()

    def close(self):
        """
        Flush and close the file.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.flush()
        if self._file is not None:
            self._file.close()


def _chunks(lines):
    """
    C{lines} (bytes ending in a newline) joined into pieces of at most
    C{_PIPE_BUF} bytes, each a run of whole lines (a longer line alone).
    """
    piece, size = [], 0
    for line in lines:
        if piece and size + len(line) > _PIPE_BUF:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield b"".join(piece)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
