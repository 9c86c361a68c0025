"""
Tests for the gateway's own log (L{gatelayer.observe.gatewaylog}): a
worker's JSON event lines, the master logging each once tagged with the
worker, and the JSON form of the master's log.
"""

import io
import json

from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.gatewaylog import (
    json_observer, parse_worker_line, worker_event, worker_observer,
)
from gatelayer.process.master import WorkerProcessProtocol


class WorkerLineTests(SynchronousTestCase):
    """
    What a worker writes and how the master reads it.
    """

    def test_worker_observer(self):
        """
        One JSON line per event: level, namespace, message (with the
        traceback of a failure) and the request id when the event has one.
        """
        stream = io.StringIO()
        log = Logger(namespace="gatelayer.test", observer=worker_observer(stream))
        log.warn("upstream {name} failed", name="app", request_id="abc-1")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("filter broke")
        first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
        self.assertEqual(first, {"level": "warn", "namespace": "gatelayer.test",
                                 "message": "upstream app failed", "request_id": "abc-1"})
        self.assertEqual(second["level"], "critical")
        self.assertIn("ZeroDivisionError", second["message"])
        self.assertNotIn("request_id", second)

    def test_parse_hostile_lines(self):
        """
        A line that is not a worker event (plain output, broken or hostile
        JSON) is an info message holding the line as text.
        """
        for line in [b"plain output", b"{not json", b'{"message": 3}', b"[1, 2]", b"\xff\xfe{",
                     b'{"level": "nonsense", "message": "m"}']:
            fields = parse_worker_line(line)
            self.assertIsInstance(fields["message"], str, line)
        self.assertEqual(parse_worker_line(b"plain")["level"], "info")

    def test_master_logs_each_line_once(self):
        """
        The master's end of a worker logs each complete line once, as an
        event tagged with the slot and pid, at the worker's level, with the
        same text as ever; a line split over reads is logged when whole.
        """
        events = []

        class Record:
            slot, pid = 1, 4242

        protocol = WorkerProcessProtocol(None, Record(), "")
        protocol.log = Logger(namespace="gatelayer.process.master", observer=events.append)
        line = json.dumps({"level": "error", "namespace": "gatelayer.http", "message": "it broke",
                           "request_id": "r-9"}).encode()
        protocol.childDataReceived(2, line[:10])
        self.assertEqual(events, [])
        protocol.childDataReceived(2, line[10:] + b"\nplain\n")
        self.assertEqual(len(events), 2)
        event, plain = events
        self.assertEqual((event["log_level"], event["worker"], event["pid"], event["request_id"]),
                         (LogLevel.error, 1, 4242, "r-9"))
        self.assertEqual(formatEvent(event), "worker 1 [4242] error gatelayer.http: it broke")
        self.assertEqual(formatEvent(plain), "worker 1 [4242] info -: plain")

    def test_unknown_level(self):
        """
        A level name the logger does not know is logged at info.
        """
        events = []
        worker_event(Logger(observer=events.append), 0, 1, b'{"level": "loud", "message": "m"}')
        self.assertEqual(events[0]["log_level"], LogLevel.info)


class JsonObserverTests(SynchronousTestCase):
    """
    The master's log as JSON lines.
    """

    def test_master_and_worker_lines(self):
        """
        The master's own lines have worker null and the master's pid; a
        worker's line has its slot, pid, level, namespace, message and
        request id.
        """
        stream = io.StringIO()
        log = Logger(namespace="gatelayer.process.master", observer=json_observer(stream, pid=7))
        log.info("worker {slot} started", slot=0)
        worker_event(log, 0, 4242, json.dumps(
            {"level": "warn", "namespace": "gatelayer.upstream", "message": 'said "no"\n',
             "request_id": "r-1"}).encode())
        own, worker = [json.loads(line) for line in stream.getvalue().splitlines()]
        self.assertRegex(own.pop("time"), r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
        self.assertEqual(own, {"level": "info", "namespace": "gatelayer.process.master",
                               "message": "worker 0 started", "worker": None, "pid": 7})
        worker.pop("time")
        self.assertEqual(worker, {"level": "warn", "namespace": "gatelayer.upstream",
                                  "message": 'said "no"\n', "worker": 0, "pid": 4242,
                                  "request_id": "r-1"})
        self.assertEqual(len(stream.getvalue().splitlines()), 2)
