"""
The gateway's own log (not the access log): how a worker's log events
reach the master, and the JSON form of the master's log.

A worker writes each event as one JSON object per line on its standard
error; the master reads the line and logs it once, as an event of its own
that carries the worker's slot and pid, level, namespace, message and, for
a line about a request, its request id. The master's log is text (twistd's
default) or, with C{twistd --logger gatelayer.observe.gatewaylog.observer},
one JSON object per line on standard output: the same fields for every
line, master's and workers' alike.
"""

import json
import os
import sys
import time

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import provider

__all__ = ["WORKER_LINE_FORMAT", "json_observer", "observer", "parse_worker_line", "worker_event",
           "worker_observer"]

WORKER_LINE_FORMAT = "worker {worker} [{pid}] {worker_level} {worker_namespace}: {worker_message}"
"""How the master's log shows a worker's line as text (as it always has)."""


def _message(event):
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    return text


def worker_observer(stream):
    """
    A worker's log observer: one JSON line per event on C{stream} (its
    standard error, which the master reads).
    """
    def observe(event):
        level = event.get("log_level")
        fields = {
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", "-"),
            "message": _message(event),
        }
        request_id = event.get("request_id")
        if request_id:
            fields["request_id"] = str(request_id)
        try:
            stream.write(json.dumps(fields, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass
    return observe


def parse_worker_line(line):
    """
    The fields of one line a worker wrote (bytes), or a plain C{info}
    message for a line that is not one of its JSON events (output of a
    library writing on its own).
    """
    text = line.decode("utf-8", "replace")
    if text.startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError:
            fields = None
        if isinstance(fields, dict) and isinstance(fields.get("message"), str):
            return fields
    return {"level": "info", "namespace": "-", "message": text}


def worker_event(log, slot, pid, line):
    """
    Log the worker's C{line} at the master's C{log} (a
    L{twisted.logger.Logger}) at the worker's level, once, tagged with
    C{slot} and C{pid}.
    """
    fields = parse_worker_line(line)
    name = fields.get("level", "info")
    level = LogLevel.levelWithName(name) if name in _LEVELS else LogLevel.info
    extra = {}
    if fields.get("request_id"):
        extra["request_id"] = str(fields["request_id"])
    log.emit(level, WORKER_LINE_FORMAT, worker=slot, pid=pid, worker_level=name,
             worker_namespace=str(fields.get("namespace", "-")), worker_message=fields["message"],
             **extra)


_LEVELS = frozenset(level.name for level in LogLevel.iterconstants())


def json_observer(stream, pid=None):
    """
    An observer writing each event as one JSON line on C{stream}: time
    (RFC 3339 UTC, milliseconds), level, namespace, message, worker (the
    slot, L{None} for the master's own lines), pid, and request_id for a
    line about a request.
    """
    own_pid = os.getpid() if pid is None else pid

    @provider(ILogObserver)
    def observe(event):
        level = event.get("log_level")
        stamp = event.get("log_time") or time.time()
        second = int(stamp)
        fields = {
            "time": "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
                                  int((stamp - second) * 1000)),
        }
        if "worker_level" in event and "worker" in event:
            fields.update(level=event["worker_level"], namespace=event.get("worker_namespace", "-"),
                          message=str(event.get("worker_message", "")), worker=event["worker"],
                          pid=event.get("pid"))
        else:
            fields.update(level=level.name if level is not None else "info",
                          namespace=event.get("log_namespace", "-"), message=_message(event),
                          worker=None, pid=own_pid)
        if event.get("request_id"):
            fields["request_id"] = str(event["request_id"])
        try:
            stream.write(json.dumps(fields, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass
    return observe


def observer():
    """
    The twistd C{--logger} factory: the master's log as JSON lines on
    standard output.
    """
    return json_observer(sys.stdout)
