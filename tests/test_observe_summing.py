"""
Tests for the master's sums of worker snapshots (gatelayer.observe.summing)
and their Prometheus exposition (gatelayer.observe.exposition), read back
with prometheus-client's own parser.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.exposition import MASTER_FAMILIES, exposition
from gatelayer.observe.metrics import DURATION_BUCKETS, FAMILIES, WorkerMetrics
from gatelayer.observe.summing import SlotTotals, merge_into

REQUESTS = "gatelayer_requests_total"
DURATION = "gatelayer_request_duration_seconds"
OPEN = "gatelayer_open_connections"


def snapshot(count, connections=0, duration=None):
    """
    A worker snapshot with C{count} GET 2xx requests on route C{r}, a gauge
    of C{connections} and, optionally, one observed duration.
    """
    metrics = WorkerMetrics(lambda: 0.0)
    if count:
        metrics.counter(REQUESTS).inc(("r", "u", "GET", "2xx"), count)
    if duration is not None:
        metrics.families[DURATION].observe(("r",), duration)
    metrics.gauges[OPEN] = lambda: {("web",): connections}
    return metrics.snapshot()


def parsed(text):
    """
    C{{sample name: {labels tuple (sorted items): value}}} of an exposition.
    """
    out = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


class SlotTotalsTests(SynchronousTestCase):
    """
    Snapshots are summed over slots; a replaced worker's counts are kept.
    """

    def test_summed_over_slots(self):
        """
        Two workers' counters, histograms and gauges add up.
        """
        totals = SlotTotals()
        totals.update(0, "w0", 3, snapshot(3, 2, duration=0.01))
        totals.update(1, "w1", 4, snapshot(4, 1, duration=0.3))
        summed = totals.totals()
        self.assertEqual(summed[REQUESTS], {("r", "u", "GET", "2xx"): 7})
        self.assertEqual(summed[OPEN], {("web",): 3})
        self.assertEqual(sum(summed[DURATION][("r",)][:-1]), 2)
        self.assertEqual(totals.slot_requests(), {0: 3, 1: 4})

    def test_later_snapshot_replaces(self):
        """
        A worker's snapshots are cumulative: the last one replaces the
        previous one, it is not added to it.
        """
        totals = SlotTotals()
        totals.update(0, "w0", 3, snapshot(3))
        totals.update(0, "w0", 5, snapshot(5))
        self.assertEqual(totals.totals()[REQUESTS], {("r", "u", "GET", "2xx"): 5})

    def test_respawn_never_goes_back(self):
        """
        When a slot's worker is replaced, its last counts are retired and
        the new worker's are added to them: the sum never goes down. Its
        gauges go with it.
        """
        totals = SlotTotals()
        totals.update(0, "old", 10, snapshot(10, connections=4))
        totals.update(1, "other", 1, snapshot(1))
        totals.retire(0, "old")
        self.assertEqual(totals.totals()[REQUESTS], {("r", "u", "GET", "2xx"): 11})
        self.assertEqual(totals.totals()[OPEN], {("web",): 0})
        totals.update(0, "new", 2, snapshot(2, connections=1))
        self.assertEqual(totals.totals()[REQUESTS], {("r", "u", "GET", "2xx"): 13})
        self.assertEqual(totals.totals()[OPEN], {("web",): 1})
        self.assertEqual(totals.slot_requests(), {0: 12, 1: 1})

    def test_new_owner_retires_the_old(self):
        """
        A snapshot from a new worker in a slot retires the previous
        worker's, even when nobody said it was gone; retiring a stale owner
        again changes nothing.
        """
        totals = SlotTotals()
        totals.update(0, "old", 10, snapshot(10))
        totals.update(0, "new", 1, snapshot(1))
        totals.retire(0, "old")
        self.assertEqual(totals.totals()[REQUESTS], {("r", "u", "GET", "2xx"): 11})

    def test_malformed_ignored(self):
        """
        Unknown families, wrong label counts, non-numbers and histograms of
        another shape are skipped, not raised.
        """
        target = merge_into({}, {
            "nonsense_total": [[["a"], 1]],
            REQUESTS: [[["r", "u"], 1], ["bad"], [["r", "u", "GET", "2xx"], "x"],
                       [["r", "u", "GET", "2xx"], 2]],
            DURATION: [[["r"], 3], [["r"], [1, 2]]],
            OPEN: "not a list",
        })
        target = merge_into(target, {DURATION: [[["r"], [1, 2, 3]]]})
        self.assertEqual(target[REQUESTS], {("r", "u", "GET", "2xx"): 2})
        self.assertEqual(target[DURATION], {("r",): [1, 2]})
        self.assertNotIn("nonsense_total", target)


class ExpositionTests(SynchronousTestCase):
    """
    The text served at /metrics parses as Prometheus text with the
    contract's names and labels.
    """

    def test_every_family_named(self):
        """
        Every family of the contract is in the exposition with its type,
        even with no samples yet.
        """
        text = exposition(lambda: {})
        types = {f.name: f.type for f in text_string_to_metric_families(text.decode("utf-8"))}
        for name, (kind, _, _) in list(FAMILIES.items()) + list(MASTER_FAMILIES.items()):
            base = name[:-len("_total")] if kind == "counter" else name
            self.assertEqual(types.get(base), kind, name)

    def test_counters_and_histograms(self):
        """
        Summed counters are exposed with their labels; a histogram's
        buckets are cumulative, with C{+Inf}, C{_count} and C{_sum}.
        """
        totals = SlotTotals()
        totals.update(0, "w0", 3, snapshot(3, duration=0.004))
        totals.update(1, "w1", 4, snapshot(4, duration=0.3))
        samples = parsed(exposition(totals.totals))
        self.assertEqual(samples["gatelayer_requests_total"], {
            (("code", "2xx"), ("method", "GET"), ("route", "r"), ("upstream", "u")): 7.0})
        buckets = samples["gatelayer_request_duration_seconds_bucket"]
        self.assertEqual(buckets[(("le", "0.005"), ("route", "r"))], 1.0)
        self.assertEqual(buckets[(("le", "0.25"), ("route", "r"))], 1.0)
        self.assertEqual(buckets[(("le", "0.5"), ("route", "r"))], 2.0)
        self.assertEqual(buckets[(("le", "+Inf"), ("route", "r"))], 2.0)
        self.assertEqual(len(buckets), len(DURATION_BUCKETS) + 1)
        self.assertEqual(samples["gatelayer_request_duration_seconds_count"], {(("route", "r"),): 2.0})
        self.assertAlmostEqual(samples["gatelayer_request_duration_seconds_sum"][(("route", "r"),)], 0.304)

    def test_label_values_escaped(self):
        """
        Label values with quotes, backslashes and newlines come back intact
        (the exposition is prometheus-client's, not hand-written).
        """
        odd = 'a"b\\c\nd'
        samples = parsed(exposition(lambda: {"gatelayer_cache_total": {(odd, "hit"): 1}}))
        self.assertEqual(samples["gatelayer_cache_total"], {(("filter", odd), ("outcome", "hit")): 1.0})
