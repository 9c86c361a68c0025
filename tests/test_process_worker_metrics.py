"""
Tests for a worker's metrics wiring (gatelayer.process.worker_metrics): what
its subsystems feed the snapshot, the snapshot sent with each heartbeat, the
master's "snapshot now" answered, and nothing of it with C{metrics = no}.
In memory.
"""

import os
import socket

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.observe.control import CollectMetrics, MetricsChunk, decode_snapshot
from gatelayer.process.control import Heartbeat
from gatelayer.process.worker import Worker
from gatelayer.process.worker_metrics import CarriedCounts, cache_outcomes
from tests.test_worker import FakeControl, PortReactor

CONFIG = """
[gateway]
workers = 1
heartbeat_timeout = 5s
{extra}
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80, 10.0.0.2:80
[filter:tight]
type = rate_limit
key = ip
rate = 10/minute
[filter:cache]
type = cache
[route:app]
path = /
upstream = app
filters = tight, cache
"""


def _families(chunks):
    requests, families = decode_snapshot(b"".join(chunks))
    return requests, {name: {tuple(k): v for k, v in series} for name, series in families.items()}


class WorkerMetricsTests(SynchronousTestCase):
    """
    A started worker with a fake control channel.
    """

    def start(self, extra=""):
        """
        Start a worker of C{CONFIG} with C{extra} in its C{[gateway]}.
        """
        self.reactor = PortReactor()
        self.config = parse_config_text(CONFIG.format(extra=extra), "/etc/gate.ini")
        self.control = FakeControl()
        read, write = os.pipe()
        os.close(write)
        self.worker = Worker(self.reactor, self.config, 0, [(self.config.listeners[0], read, socket.AF_INET)],
                             master=self.control)
        self.worker.start()
        self.addCleanup(self.worker.drain, 0)

    def chunks(self):
        """
        The data of the last snapshot's chunks sent.
        """
        sent = [a for c, a in self.control.sent if c is MetricsChunk]
        last = sent[-1]["generation"]
        return [a["data"] for a in sent if a["generation"] == last]

    def test_snapshot_with_heartbeat(self):
        """
        Each heartbeat is followed by a snapshot; the master's
        L{CollectMetrics} is answered with a new one.
        """
        self.start()
        commands = [c for c, _ in self.control.sent]
        self.assertEqual(commands[:2], [Heartbeat, MetricsChunk])
        answer = self.control.responders[CollectMetrics]()
        self.assertEqual(answer, {"generation": 2})
        self.assertEqual(self.chunks(), [a["data"] for c, a in self.control.sent
                                         if c is MetricsChunk and a["generation"] == 2])

    def test_subsystem_counters(self):
        """
        Open connections per listener, per-server failures and ejections,
        rate-limit decisions and cache outcomes are read into the snapshot.
        """
        self.start()
        flt = self.worker.gateway.filters["tight"]
        flt.counters["allowed"] += 5
        flt.counters["rejected"] += 2
        flt.counters["fallback_open"] += 1
        self.worker.gateway.filters["cache"].counts["HIT"] += 3
        state = self.worker.upstreams["app"].state
        server = self.config.upstreams["app"].servers[0]
        for _ in range(3):
            state.report_failure(server, "connect_error")
        channel = self.worker.factories[0].buildProtocol(None)
        channel.makeConnection(StringTransport())
        self.control.responders[CollectMetrics]()
        _, families = _families(self.chunks())
        self.assertEqual(families["gatelayer_open_connections"], {("web",): 1})
        self.assertEqual(families["gatelayer_upstream_connect_failures_total"],
                         {("app", "10.0.0.1:80"): 3, ("app", "10.0.0.2:80"): 0})
        self.assertEqual(families["gatelayer_upstream_ejections_total"][("app", "10.0.0.1:80")], 1)
        self.assertEqual(families["gatelayer_ratelimit_decisions_total"], {
            ("tight", "allowed"): 5, ("tight", "limited"): 2, ("tight", "shadow_limited"): 0,
            ("tight", "store_error"): 1})
        self.assertEqual(families["gatelayer_ratelimit_breaker_open"], {("tight",): 0})
        self.assertEqual(families["gatelayer_cache_total"][("cache", "hit")], 3)

    def test_metrics_off(self):
        """
        With C{metrics = no} the worker counts nothing, sends no snapshot
        and does not answer L{CollectMetrics}.
        """
        self.start("metrics = no")
        self.reactor.advance(3)
        self.assertIsNone(self.worker.gateway.metrics)
        self.assertNotIn(MetricsChunk, [c for c, _ in self.control.sent])
        self.assertIn(Heartbeat, [c for c, _ in self.control.sent])
        self.assertNotIn(CollectMetrics, self.control.responders)


class _Counting:
    def __init__(self, **counts):
        self.counts = counts


class CarriedCountsTests(SynchronousTestCase):
    """
    Counters read from filter objects never go down when a reload replaces
    the objects with new ones counting from zero.
    """

    def test_replaced_filter_keeps_its_counts(self):
        """
        The old object's last counts are added to the new one's; a filter
        that stays is read as it is, and one added later joins.
        """
        first = _Counting(HIT=5, MISS=2)
        running = [("c", first)]
        reader = CarriedCounts(lambda: running, cache_outcomes)
        self.assertEqual(reader(), {("c", "hit"): 5, ("c", "miss"): 2})
        first.counts["HIT"] = 7
        self.assertEqual(reader()[("c", "hit")], 7)
        second = _Counting(HIT=1)
        running[:] = [("c", second), ("d", _Counting(STALE=3))]
        self.assertEqual(reader(), {("c", "hit"): 8, ("c", "miss"): 2, ("d", "stale"): 3})
        second.counts["HIT"] = 4
        self.assertEqual(reader(), {("c", "hit"): 11, ("c", "miss"): 2, ("d", "stale"): 3})

    def test_removed_filter_keeps_its_last_counts(self):
        """
        A filter a reload removed is still counted as it was last read.
        """
        running = [("c", _Counting(HIT=5)), ("d", _Counting(MISS=1))]
        reader = CarriedCounts(lambda: running, cache_outcomes)
        reader()
        running[:] = [("d", running[1][1])]
        self.assertEqual(reader(), {("c", "hit"): 5, ("d", "miss"): 1})
