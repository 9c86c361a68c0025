"""
Tests for the master's recent errors (gatelayer.observe.errors): which log
events are kept, what of them, how many, and the part that observes the log
while the master runs and answers recent_errors in /status.
"""

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.errors import MAX_ERRORS, MAX_TEXT, RecentErrors, RecentErrorsPart
from gatelayer.process.master import WorkerProcessProtocol
from gatelayer.process.supervision import WorkerRecord


def observed(*emit):
    """
    A L{RecentErrors} that observed what each of C{emit} logs on a
    L{Logger} of its own.
    """
    ring = RecentErrors()
    log = Logger(namespace="gatelayer.test", observer=ring)
    for call in emit:
        call(log)
    return ring


class RecentErrorsTests(SynchronousTestCase):
    """
    The ring keeps the master's error-level events and its workers' error
    lines, as messages only, newest first, at most MAX_ERRORS.
    """

    def test_levels(self):
        """
        error and critical are kept; debug, info and warn are not.
        """
        ring = observed(lambda log: log.debug("d"), lambda log: log.info("i"), lambda log: log.warn("w"),
                        lambda log: log.error("e {n}", n=1), lambda log: log.critical("c"))
        self.assertEqual([(e["source"], e["text"]) for e in ring.as_list()], [("master", "c"), ("master", "e 1")])
        self.assertEqual(ring.seen, 2)

    def test_time(self):
        """
        Each entry has the event's time (epoch seconds).
        """
        ring = RecentErrors()
        ring({"log_level": LogLevel.error, "log_format": "x", "log_time": 1234.56789})
        self.assertEqual(ring.as_list(), [{"time": 1234.568, "source": "master", "text": "x"}])

    def test_failure_without_traceback(self):
        """
        A failure is kept as its message and the exception's type, never
        the traceback or the exception's text (which may hold data).
        """
        def fail(log):
            try:
                raise ValueError("secret=hunter2")
            except ValueError:
                log.failure("reload failed")
        text = observed(fail).as_list()[0]["text"]
        self.assertEqual(text, "reload failed (ValueError)")

    def test_bounded(self):
        """
        Only the last MAX_ERRORS are kept; the count of all seen goes on.
        """
        ring = observed(*[(lambda log, n=n: log.error("error {n}", n=n)) for n in range(MAX_ERRORS + 7)])
        kept = ring.as_list()
        self.assertEqual(len(kept), MAX_ERRORS)
        self.assertEqual(kept[0]["text"], f"error {MAX_ERRORS + 6}")
        self.assertEqual(kept[-1]["text"], "error 7")
        self.assertEqual(ring.seen, MAX_ERRORS + 7)

    def test_long_text_cut(self):
        """
        A message longer than MAX_TEXT is cut, marked with "...".
        """
        text = observed(lambda log: log.error("{x}", x="a" * 5000)).as_list()[0]["text"]
        self.assertEqual(len(text), MAX_TEXT)
        self.assertTrue(text.endswith("..."))

    def test_hostile_events(self):
        """
        Events that do not format (a bad format string, a missing field, a
        field whose str() raises) neither raise nor stop the ring.
        """
        class Bad:
            def __str__(self):
                raise RuntimeError("no")
        ring = RecentErrors()
        for event in ({"log_level": LogLevel.error, "log_format": "{"},
                      {"log_level": LogLevel.error, "log_format": "{missing}"},
                      {"log_level": LogLevel.error, "log_format": "{bad}", "bad": Bad()},
                      {"log_level": LogLevel.error, "log_format": "x", "log_failure": object()},
                      {"worker_level": "error", "log_level": LogLevel.error, "worker_message": b"bytes"},
                      {}):
            ring(event)
        ring({"log_level": LogLevel.error, "log_format": "after"})
        self.assertEqual(ring.as_list()[0]["text"], "after")

    def test_worker_lines(self):
        """
        A relayed worker line at level error or critical is kept with its
        message (without a traceback) and the slot as source; other lines
        (info, output not in the worker's log format) are not.
        """
        ring = RecentErrors()
        record = WorkerRecord(slot=1, pid=4242)
        protocol = WorkerProcessProtocol(None, record, "")
        protocol.log = Logger(namespace="gatelayer.process.master", observer=ring)
        protocol.childDataReceived(2, b'{"level":"info","namespace":"gatelayer.http.proxy","message":"fine"}\n'
                                      b'{"level":"error","namespace":"gatelayer.upstream.pool",'
                                      b'"message":"upstream app: connect fail')
        protocol.childDataReceived(2, b'ed"}\nTraceback (most recent call last):\n  File \"x\", line 1\n'
                                      b'{"level":"critical","namespace":"gatelayer.process.main",'
                                      b'"message":"worker cannot use the config\\nTraceback (most recent'
                                      b' call last):\\n  File"}\n')
        protocol.childDataReceived(2, b"error: raw stderr without namespace\n")
        self.assertEqual([(e["source"], e["text"]) for e in ring.as_list()], [
            ("worker 1", "worker cannot use the config"),
            ("worker 1", "upstream app: connect failed"),
        ])

    def test_master_relay_is_info(self):
        """
        The relayed info lines are not errors, though they are logged by
        the master (at info).
        """
        ring = RecentErrors()
        protocol = WorkerProcessProtocol(None, WorkerRecord(slot=0), "")
        protocol.log = Logger(observer=ring)
        protocol.childDataReceived(2, b'{"level":"warn","namespace":"gatelayer.x","message":"slow"}\n'
                                      b'{"level":"info","namespace":"gatelayer.x","message":"errors happen"}\n')
        self.assertEqual(ring.as_list(), [])


class RecentErrorsPartTests(SynchronousTestCase):
    """
    The master's errors part observes its publisher only while running and
    answers recent_errors in /status.
    """

    def test_observes_while_running(self):
        """
        Errors published while the part runs are in its status; before
        start and after stop they are not observed.
        """
        publisher = LogPublisher()
        log = Logger(observer=publisher)
        part = RecentErrorsPart(publisher)
        log.error("before")
        part.startService()
        log.error("during {what}", what="<b>markup</b>")
        part.stopService()
        log.error("after")
        self.assertEqual(part.name, "errors")
        status = part.status()
        self.assertEqual([e["text"] for e in status["recent_errors"]], ["during <b>markup</b>"])
        self.assertEqual(status["errors_seen"], 1)

    def test_failure_event(self):
        """
        log.failure events from the master are kept (a real Failure).
        """
        publisher = LogPublisher()
        part = RecentErrorsPart(publisher, size=2)
        part.startService()
        self.addCleanup(part.stopService)
        Logger(observer=publisher).failure("x {n}", Failure(KeyError("k")), n=3)
        self.assertEqual(part.status()["recent_errors"][0]["text"], "x 3 (KeyError)")
