"""
Tests for metrics over the control channel (gatelayer.observe.control):
worker snapshots sent over real AMP connections in memory (iosim), the
master's scrape with its bounded wait, respawned workers' totals, and the
master's own families.
"""

import datetime
import random

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.control import (
    CHUNK, COLLECT_TIMEOUT, CollectMetrics, MetricsPart, WorkerReporter, certificate_expiry,
    decode_snapshot, encode_snapshot, server_up,
)
from gatelayer.observe.metrics import WorkerMetrics
from gatelayer.process.control import ControlProtocol
from gatelayer.process.reload import ReloadOutcome
from gatelayer.process.supervision import WorkerRecord

ROUTE = ("r", "u", "GET", "2xx")


def samples(text):
    """
    C{{(sample name, sorted label items): value}} of an exposition.
    """
    out = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


class _Worker:
    """
    One worker's end: its metrics, its reporter on an AMP connection to the
    master's end (C{self.control}), pumped by C{self.pump}.
    """

    def __init__(self, part, record):
        self.metrics = WorkerMetrics(lambda: 0.0)
        master_end, worker_end, self.pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        self.control = master_end
        record.control = master_end
        part.register(master_end, record)
        self.reporter = WorkerReporter(self.metrics, worker_end).register()

    def count(self, n, labels=ROUTE):
        """
        Count C{n} requests.
        """
        self.metrics.counter("gatelayer_requests_total").inc(labels, n)
        self.metrics.requests += n


class _Silent:
    """
    A worker's control channel that never answers.
    """

    connected = True

    def callRemote(self, command, **arguments):
        """
        A Deferred that never fires.
        """
        return Deferred()


class ScrapeTests(SynchronousTestCase):
    """
    A scrape asks every worker for a fresh snapshot and sums them.
    """

    def setUp(self):
        self.clock = Clock()
        self.controls = []
        self.part = MetricsPart(self.clock, lambda: list(self.controls))
        self.records = {slot: WorkerRecord(slot) for slot in (0, 1)}

    def worker(self, slot):
        """
        Connect a new worker in C{slot}.
        """
        previous = self.records[slot].control
        worker = _Worker(self.part, self.records[slot])
        self.controls = [c for c in self.controls if c.connected and c is not previous]
        self.controls.append(worker.control)
        return worker

    def scrape(self, *workers):
        """
        Scrape and let the workers answer; the exposition's samples.
        """
        d = self.part.scrape()
        for worker in workers:
            worker.pump.flush()
        return samples(self.successResultOf(d))

    def test_fresh_sum(self):
        """
        What every worker counted up to the scrape is in the sum, though
        neither sent a snapshot before; no timer is left behind.
        """
        first, second = self.worker(0), self.worker(1)
        first.count(3)
        second.count(4)
        found = self.scrape(first, second)
        key = ("gatelayer_requests_total", (("code", "2xx"), ("method", "GET"), ("route", "r"),
                                            ("upstream", "u")))
        self.assertEqual(found[key], 7.0)
        self.assertEqual(found[("gatelayer_worker_requests_total", (("slot", "0"),))], 3.0)
        self.assertEqual(found[("gatelayer_worker_requests_total", (("slot", "1"),))], 4.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_big_snapshot_in_chunks(self):
        """
        A snapshot larger than one AMP value travels in several chunks and
        is summed whole.
        """
        worker = self.worker(0)
        auth = worker.metrics.counter("gatelayer_auth_total")
        rng = random.Random(1)
        for i in range(1500):
            auth.inc(("%048x" % (rng.getrandbits(192),), "denied", "%048x" % (rng.getrandbits(192),)), i)
        self.assertGreater(len(encode_snapshot(0, worker.metrics.snapshot())), 1)
        found = self.scrape(worker)
        total = sum(v for (name, _), v in found.items() if name == "gatelayer_auth_total")
        self.assertEqual(total, sum(range(1500)))

    def test_silent_worker_bounded(self):
        """
        A worker that does not answer holds a scrape no longer than
        L{COLLECT_TIMEOUT}: its last heartbeat snapshot stands in.
        """
        worker = self.worker(0)
        worker.count(2)
        worker.reporter.send()
        worker.pump.flush()
        worker.count(5)
        self.controls = [_Silent()]
        d = self.part.scrape()
        self.assertNoResult(d)
        self.clock.advance(COLLECT_TIMEOUT)
        found = samples(self.successResultOf(d))
        self.assertEqual(found[("gatelayer_worker_requests_total", (("slot", "0"),))], 2.0)

    def test_respawned_worker_adds(self):
        """
        A slot's worker dies and is replaced: what the dead one last sent
        is kept, the new one's counts are added, and the sum never goes
        down in between.
        """
        old = self.worker(0)
        old.count(10)
        self.scrape(old)
        old.control.connectionLost(Exception("killed"))
        self.records[0].restarts += 1
        key = ("gatelayer_worker_requests_total", (("slot", "0"),))
        self.assertEqual(self.scrape()[key], 10.0)
        new = self.worker(0)
        self.assertEqual(self.scrape(new)[key], 10.0)
        new.count(3)
        found = self.scrape(new)
        self.assertEqual(found[key], 13.0)
        self.assertEqual(found[("gatelayer_worker_restarts_total", (("slot", "0"),))], 1.0)

    def test_late_snapshot_of_old_worker_ignored(self):
        """
        A snapshot arriving from a slot's previous worker after the new one
        registered is not taken as the new one's.
        """
        old = self.worker(0)
        old.count(10)
        old.reporter.send()
        new = self.worker(0)
        old.pump.flush()
        new.count(1)
        found = self.scrape(new)
        self.assertEqual(found[("gatelayer_worker_requests_total", (("slot", "0"),))], 1.0)

    def test_bad_chunks_ignored(self):
        """
        Chunks out of order, a count out of range, or a snapshot that is not
        compressed JSON change nothing and raise nothing.
        """
        worker = self.worker(0)
        worker.count(1)
        self.scrape(worker)
        control = worker.control
        self.part._chunk(0, control, 9, 1, 2, b"x")
        self.part._chunk(0, control, 9, 0, 0, b"x")
        self.part._chunk(0, control, 9, 0, 1000, b"x")
        self.part._chunk(0, control, 9, 0, 1, b"not zlib")
        self.assertEqual(self.part.totals.slot_requests(), {0: 1})
        self.assertRaises(ValueError, decode_snapshot, b"garbage")
        self.assertRaises(ValueError, decode_snapshot, encode_snapshot("x", {})[0])

    def test_chunk_size(self):
        """
        Every chunk fits one AMP value.
        """
        metrics = WorkerMetrics(lambda: 0.0)
        family = metrics.counter("gatelayer_cache_total")
        for i in range(6000):
            family.inc(("c%d" % (i * 2654435761 % 10 ** 9,), "hit"), i)
        chunks = encode_snapshot(1, metrics.snapshot())
        self.assertTrue(all(len(c) <= CHUNK for c in chunks))
        self.assertEqual(decode_snapshot(b"".join(chunks))[0], 1)

    def test_collect_command_answers_after_chunks(self):
        """
        The worker answers L{CollectMetrics} with the generation it just
        sent.
        """
        worker = self.worker(0)
        d = worker.control.callRemote(CollectMetrics)
        worker.pump.flush()
        self.assertEqual(self.successResultOf(d), {"generation": 1})


class _Monitor:
    def __init__(self, verdicts):
        self.verdicts = verdicts

    def status(self):
        return self.verdicts


class _Server:
    def __init__(self, address, down=False):
        self.address = address
        self.down = down


class _Upstream:
    def __init__(self, *servers):
        self.servers = servers


class _Entry:
    def __init__(self, names, not_after):
        self.names = names
        self.not_after = not_after


class _Set:
    def __init__(self, *entries):
        self.entries = entries


class _Reloader:
    def __init__(self):
        self.last_reload = None
        self.current = {}


class MasterFamilyTests(SynchronousTestCase):
    """
    The families the master makes from its own parts.
    """

    def test_server_up(self):
        """
        The monitor's verdict for checked servers; unchecked servers are up
        unless marked down.
        """
        monitor = _Monitor({"app": {"10.0.0.1:80": {"healthy": False}, "10.0.0.2:80": {"healthy": True}}})
        upstreams = {"app": _Upstream(_Server("10.0.0.1:80"), _Server("10.0.0.2:80")),
                     "plain": _Upstream(_Server("10.0.0.3:80"), _Server("10.0.0.4:80", down=True))}
        self.assertEqual(server_up(monitor, upstreams), {
            ("app", "10.0.0.1:80"): 0, ("app", "10.0.0.2:80"): 1,
            ("plain", "10.0.0.3:80"): 1, ("plain", "10.0.0.4:80"): 0})

    def test_certificate_expiry(self):
        """
        Each name a certificate serves, with its not-after as Unix time.
        """
        when = datetime.datetime(2030, 1, 2, tzinfo=datetime.timezone.utc)
        current = {"main": _Set(_Entry(("a.example", "*.b.example"), when))}
        self.assertEqual(certificate_expiry(current), {
            ("main", "a.example"): when.timestamp(), ("main", "*.b.example"): when.timestamp()})

    def test_reloads_and_workers(self):
        """
        Configuration reloads are counted by outcome (applied or refused);
        slots serving, restarts and crash loops come from the worker
        records.
        """
        part = MetricsPart(Clock(), lambda: [], certificates=_Reloader(), crash_loop=5)
        part.reloaded(ReloadOutcome(at=1.0, trigger="SIGHUP", ok=True, problems=(), generation=2, digest="d"))
        part.reloaded(ReloadOutcome(at=2.0, trigger="SIGHUP", ok=False, problems=("x",), generation=2, digest="d"))
        looping = WorkerRecord(1, quick_deaths=5, restarts=7)
        serving = WorkerRecord(0, process=object(), ready=True)
        part.records = {0: serving, 1: looping}
        found = samples(self.successResultOf(part.scrape()))
        self.assertEqual(found[("gatelayer_reloads_total", (("outcome", "ok"),))], 1.0)
        self.assertEqual(found[("gatelayer_reloads_total", (("outcome", "failed"),))], 1.0)
        self.assertEqual(found[("gatelayer_reload_last_success", ())], 0.0)
        self.assertEqual(found[("gatelayer_workers", ())], 1.0)
        self.assertEqual(found[("gatelayer_worker_crash_loop", (("slot", "1"),))], 1.0)
        self.assertEqual(found[("gatelayer_worker_crash_loop", (("slot", "0"),))], 0.0)
        self.assertEqual(found[("gatelayer_worker_restarts_total", (("slot", "1"),))], 7.0)
