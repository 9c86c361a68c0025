"""
Tests for issue 17's target table (bench/_goals.py) and the per-worker
accounting it reads (bench/_workers.py): tables of rows that meet each
target, miss it, were not run, failed, or would divide by zero.
"""

import json
import os
import threading

import attrs
from twisted.trial.unittest import SynchronousTestCase

from bench import _goals, _report, _workers
from bench._goals import MET, NOT_MET, Ran

FULL = Ran({
    "small": (("direct", "nginx", "gatelayer-2w", "gatelayer-2w-pypy"), (32, 128)),
    "latency": (("direct", "nginx", "gatelayer-2w"), (1,)),
    "1mb": (("nginx", "gatelayer-2w"), (32, 128)),
    "filters": (("gatelayer-2w", "gatelayer-2w+jwt", "gatelayer-2w+ratelimit"), (32, 128)),
    "observe": (("gatelayer-2w+nometrics", "gatelayer-2w+accesslog"), (32, 128)),
})
"""What a default run covers, as far as the targets are concerned."""


def cell(scenario, target, connections, rps, cpu=None, p50=1.0, p99=2.0, **kw):
    return _report.Row(scenario, target, connections, rps=rps, requests=int(rps * 5), p50_ms=p50, p99_ms=p99,
                       errors=0, cpu_us_per_request=cpu, **kw)


def workers(requests=(50000, 50000), connections=(16, 16), cpu=(100.0, 104.0)):
    return {"workers": [{"pid": 100 + i, "requests": r, "connections": c, "cpu_s": None,
                         "cpu_us_per_request": u}
                        for i, (r, c, u) in enumerate(zip(requests, connections, cpu))]}


def met_rows():
    """
    One row per cell of L{FULL}, every figure meeting its target.
    """
    return [
        cell("small", "nginx", 32, 40000.0, cpu=20.0), cell("small", "nginx", 128, 40000.0, cpu=20.0),
        cell("small", "gatelayer-2w", 32, 20000.0, cpu=60.0, p99=4.0, rss_workers_mb=[40.5, 41.0],
             extra=workers()),
        cell("small", "gatelayer-2w", 128, 20000.0, cpu=60.0, p99=15.0, rss_workers_mb=[41.0, 42.0],
             extra=workers((60000, 55000), (64, 64))),
        cell("small", "gatelayer-2w-pypy", 32, 30000.0),
        cell("latency", "direct", 1, 20000.0, p50=0.050), cell("latency", "nginx", 1, 12000.0, p50=0.080),
        cell("latency", "gatelayer-2w", 1, 4000.0, p50=0.250),
        cell("1mb", "nginx", 32, 1000.0), cell("1mb", "gatelayer-2w", 32, 800.0),
        cell("filters", "gatelayer-2w", 32, 10000.0), cell("filters", "gatelayer-2w", 128, 10000.0),
        cell("filters", "gatelayer-2w+jwt", 32, 9500.0), cell("filters", "gatelayer-2w+jwt", 128, 9000.0),
        cell("filters", "gatelayer-2w+ratelimit", 32, 9800.0), cell("filters", "gatelayer-2w+ratelimit", 128, 9700.0),
        cell("observe", "gatelayer-2w+nometrics", 32, 10000.0), cell("observe", "gatelayer-2w+nometrics", 128, 10000.0),
        cell("observe", "gatelayer-2w+accesslog", 32, 9500.0), cell("observe", "gatelayer-2w+accesslog", 128, 9200.0),
    ]


def find(rows, scenario, target, connections):
    return [r for r in rows if (r.scenario, r.target, r.connections) == (scenario, target, connections)][0]


def outcome(outcomes, prefix):
    (found,) = [o for o in outcomes if o.name.startswith(prefix)]
    return found


def change(scenario, target, connections, **values):
    """
    A change to one row of L{met_rows}: C{extra} values replace the whole
    per-worker list.
    """
    def apply(rows):
        row = find(rows, scenario, target, connections)
        for key, value in values.items():
            setattr(row, key, value)
    return apply


SMALL = ("small", "gatelayer-2w", 32)

NOT_MET_CASES = [
    # (goal name prefix, change, value expected in the outcome)
    ("1 small req/s", change(*SMALL, rps=15000.0), "0.38 x nginx (15,000 / 40,000 req/s)"),
    ("1 small CPU/req", change(*SMALL, cpu_us_per_request=80.0), "4.0 x nginx (80 / 20 us)"),
    ("1 small p99, gatelayer-2w @32", change(*SMALL, p99_ms=5.0), "5.00 ms"),
    ("1 small p99, gatelayer-2w @128", change("small", "gatelayer-2w", 128, p99_ms=25.0), "25.00 ms"),
    ("2 latency", change("latency", "gatelayer-2w", 1, p50_ms=0.310), "0.260 ms (0.310 - 0.050); nginx adds 0.030"),
    ("3 small req/s, gatelayer-2w-pypy", change("small", "gatelayer-2w-pypy", 32, rps=20000.0), "0.50 x nginx"),
    ("4 1mb", change("1mb", "gatelayer-2w", 32, rps=700.0), "0.70 x nginx"),
    ("5 filters: +jwt", change("filters", "gatelayer-2w+jwt", 128, rps=8900.0), "@32: 5.0%, @128: 11.0%"),
    ("5 filters: +ratelimit", change("filters", "gatelayer-2w+ratelimit", 32, rps=5000.0), "@32: 50.0%"),
    ("6 small worker RSS", change(*SMALL, rss_workers_mb=[40.0, 46.0]), "@32: 40.0 / 46.0 MB"),
    ("7 small requests", change(*SMALL, extra=workers(requests=(1000, 1300))), "@32: 1.30 (1,000 / 1,300)"),
    ("7 small connections", change(*SMALL, extra=workers(connections=(32, 0))), "@32: inf (32 / 0)"),
    ("8 observe", change("observe", "gatelayer-2w+accesslog", 128, rps=9000.0), "@128: 10.0%"),
]

NA_CASES = [
    # (goal name prefix, change to the rows, the Ran, reason expected after "n/a: ")
    ("2 latency", None, attrs.evolve(FULL, cells={k: v for k, v in FULL.cells.items() if k != "latency"}),
     "not run (--scenario latency)"),
    ("3 small req/s, gatelayer-2w-pypy", None,
     attrs.evolve(FULL, cells={**FULL.cells, "small": (("nginx", "gatelayer-2w"), (32, 128))}, no_pypy=True),
     "not run (--no-pypy)"),
    ("3 small req/s, gatelayer-2w-pypy", None,
     attrs.evolve(FULL, cells={**FULL.cells, "small": (("nginx", "gatelayer-2w"), (32, 128))}),
     "not run (--targets gatelayer-2w-pypy)"),
    ("1 small p99, gatelayer-2w @128", None,
     attrs.evolve(FULL, cells={**FULL.cells, "small": (FULL.cells["small"][0], (32,))}),
     "not run (--connections 128)"),
    ("7 small requests", None,
     attrs.evolve(FULL, cells={**FULL.cells, "small": (FULL.cells["small"][0], (1,))}),
     "not run (--connections 2 or more)"),
    ("1 small req/s", change(*SMALL, rps=None, note="error: exited with status 1 under load"), FULL,
     "small gatelayer-2w @32: error: exited with status 1 under load"),
    ("3 small req/s, gatelayer-2w-pypy", change("small", "gatelayer-2w-pypy", 32, rps=None, note="n/a: no pypy3"),
     FULL, "small gatelayer-2w-pypy @32: no pypy3"),
    ("1 small req/s", change(*SMALL, errors=2000), FULL, "small gatelayer-2w @32: errors on 2% of requests"),
    ("1 small req/s", change("small", "nginx", 32, rps=0.0), FULL, "small nginx @32 req/s is 0: no ratio"),
    ("1 small CPU/req", change("small", "nginx", 32, cpu_us_per_request=0.0), FULL,
     "small nginx @32 CPU per request is 0: no ratio"),
    ("1 small CPU/req", change(*SMALL, cpu_us_per_request=None), FULL, "small gatelayer-2w @32: no CPU figure"),
    ("2 latency", change("latency", "direct", 1, p50_ms=None), FULL, "latency direct @1: no p50"),
    ("5 filters: +jwt", change("filters", "gatelayer-2w", 32, rps=0.0), FULL,
     "filters gatelayer-2w @32 req/s is 0: no ratio"),
    ("6 small worker RSS", change(*SMALL, rss_workers_mb=None), FULL, "small gatelayer-2w @32: no per-worker RSS"),
    ("7 small requests", change(*SMALL, extra={}), FULL, "small gatelayer-2w @32: no per-worker requests from /status"),
    ("7 small requests", change(*SMALL, extra=workers(requests=(0, 0))), FULL,
     "small gatelayer-2w @32: no requests counted"),
    ("7 small CPU/req per worker", change(*SMALL, extra=workers(cpu=(100.0, None))), FULL,
     "small gatelayer-2w @32: no per-worker cpu_us_per_request from /status"),
    ("8 observe", change("observe", "gatelayer-2w+nometrics", 32, rps=None, note="error: wrk gave no report"), FULL,
     "observe gatelayer-2w+nometrics @32: error: wrk gave no report"),
]


class GoalTests(SynchronousTestCase):
    """
    Each target row is met, not met, or n/a with the reason, from the rows
    of one run.
    """

    def test_all_met(self):
        """
        Rows meeting every target give C{met} on every row (C{info} on the
        reported CPU per request per worker), with the measured values.
        """
        outcomes = _goals.evaluate(met_rows(), FULL)
        self.assertEqual([o.name for o in outcomes], [name for name, _, _ in _goals.GOALS])
        self.assertEqual({o.status for o in outcomes if "per worker" not in o.name}, {MET})
        self.assertEqual(outcome(outcomes, "7 small CPU/req per worker").status, _goals.INFO)
        self.assertEqual(outcome(outcomes, "7 small CPU/req per worker").value, "@32: 100 / 104 us, @128: 100 / 104 us")
        self.assertEqual(outcome(outcomes, "1 small req/s").value, "0.50 x nginx (20,000 / 40,000 req/s)")
        self.assertEqual(outcome(outcomes, "2 latency").value, "0.200 ms (0.250 - 0.050); nginx adds 0.030")
        self.assertEqual(outcome(outcomes, "5 filters: +jwt").value, "@32: 5.0%, @128: 10.0%")
        self.assertEqual(outcome(outcomes, "7 small requests").value, "@32: 1.00 (50,000 / 50,000), "
                                                                       "@128: 1.09 (60,000 / 55,000)")
        self.assertEqual(_goals.summary(outcomes), "13 met, 0 NOT met, 0 n/a")

    def test_not_met(self):
        """
        Each target is C{NOT met} by a row beyond it (the limits that say
        "under" are not met at the limit itself); the other rows stay met.
        """
        for prefix, apply, value in NOT_MET_CASES:
            rows = met_rows()
            apply(rows)
            outcomes = _goals.evaluate(rows, FULL)
            found = outcome(outcomes, prefix)
            self.assertEqual((prefix, found.status), (prefix, NOT_MET))
            self.assertIn(value, found.value)
            others = {o.status for o in outcomes if o is not found and "per worker" not in o.name}
            self.assertEqual((prefix, others), (prefix, {MET}))

    def test_not_available(self):
        """
        A target whose cells were not run, failed, had errors, lack a figure
        or would divide by zero reads C{n/a: why}.
        """
        for prefix, apply, ran, reason in NA_CASES:
            rows = met_rows()
            if apply is not None:
                apply(rows)
            found = outcome(_goals.evaluate(rows, ran), prefix)
            self.assertEqual((prefix, found.status), (prefix, "n/a: " + reason))

    def test_missing_row(self):
        """
        A cell the run planned but has no row for (the run stopped) is
        n/a, not a crash.
        """
        rows = [r for r in met_rows() if r.scenario != "1mb"]
        self.assertEqual(outcome(_goals.evaluate(rows, FULL), "4 1mb").status,
                         "n/a: 1mb gatelayer-2w @32: no row (the run stopped early)")

    def test_nothing_run(self):
        """
        With no rows and nothing run, every target is n/a and names the
        scenario that would run it.
        """
        outcomes = _goals.evaluate([], Ran({}))
        self.assertEqual({o.status.split("(")[0] for o in outcomes}, {"n/a: not run "})
        self.assertEqual(outcome(outcomes, "5 filters: +jwt").status, "n/a: not run (--scenario filters)")
        self.assertEqual(_goals.summary(outcomes), "0 met, 0 NOT met, 14 n/a")

    def test_failure_wins_over_missing(self):
        """
        A target judged at several connection counts is not met when one
        count misses it though another could not be judged; it is n/a
        (keeping what was measured) when none misses it.
        """
        rows = met_rows()
        change("filters", "gatelayer-2w+jwt", 32, rps=None, note="error: wrk gave no report")(rows)
        found = outcome(_goals.evaluate(rows, FULL), "5 filters: +jwt")
        self.assertEqual((found.status, found.value),
                         ("n/a: filters gatelayer-2w+jwt @32: error: wrk gave no report", "@128: 10.0%"))
        change("filters", "gatelayer-2w+jwt", 128, rps=5000.0)(rows)
        found = outcome(_goals.evaluate(rows, FULL), "5 filters: +jwt")
        self.assertEqual((found.status, found.value), (NOT_MET, "@128: 50.0%"))

    def test_few_errors(self):
        """
        Errors on 1% of the requests or fewer do not stop a row from being
        judged.
        """
        rows = met_rows()
        change(*SMALL, errors=1000)(rows)
        self.assertEqual(outcome(_goals.evaluate(rows, FULL), "1 small req/s").status, MET)

    def test_targets_table_option(self):
        """
        C{--targets-table} runs the rows the target rows need and nothing
        else (PyPy's unless --no-pypy); with every figure met, its run
        meets every target.
        """
        from bench import _cli
        options = _cli.parse_args(["--targets-table"])
        plan = [(s, _cli.selected_targets(s, options)) for s in options.scenarios]
        self.assertEqual({s.name: targets for s, targets in plan}, {
            "small": ["nginx", "gatelayer-2w", "gatelayer-2w-pypy"],
            "latency": ["direct", "nginx", "gatelayer-2w"],
            "1mb": ["nginx", "gatelayer-2w"],
            "filters": ["gatelayer-2w", "gatelayer-2w+jwt", "gatelayer-2w+ratelimit"],
            "observe": ["gatelayer-2w+nometrics", "gatelayer-2w+accesslog"],
        })
        ran = _goals.ran_cells(plan, options.connection_counts)
        self.assertEqual(_goals.summary(_goals.evaluate(met_rows(), ran)), "13 met, 0 NOT met, 0 n/a")
        self.assertRaises(SystemExit, _cli.parse_args, ["--targets-table", "--scenario", "small"])
        no_pypy = _cli.parse_args(["--targets-table", "--no-pypy"])
        self.assertEqual(_cli.selected_targets(no_pypy.scenarios[0], no_pypy), ["nginx", "gatelayer-2w"])

    def test_ran_cells(self):
        """
        The plan of a run becomes its cells; a scenario's own connection
        counts replace the run's.
        """
        from bench._cli import scenarios
        by_name = {s.name: s for s in scenarios()}
        ran = _goals.ran_cells([(by_name["small"], ["nginx"]), (by_name["latency"], ["direct"])], [32], True)
        self.assertEqual(ran, Ran({"small": (("nginx",), (32,)), "latency": (("direct",), (1,))}, True))


class GoalTableTests(SynchronousTestCase):
    """
    The target table is printed, and written to the JSON and Markdown
    results.
    """

    def test_text(self):
        """
        The text table has a summary, a header and one line per target row.
        """
        outcomes = _goals.evaluate(met_rows(), FULL)
        lines = _goals.format_goals(outcomes).splitlines()
        self.assertEqual(lines[0], "issue 17 targets (13 met, 0 NOT met, 0 n/a):")
        self.assertEqual(lines[1].split(), ["target", "row", "measured", "target", "result"])
        self.assertEqual(len(lines), 3 + len(_goals.GOALS))
        self.assertTrue(lines[3].startswith("1 small req/s, gatelayer-2w @32"))
        self.assertTrue(lines[3].endswith("met"))

    def test_results(self):
        """
        The JSON has the outcomes under C{targets}; C{latest.md} has the
        target table after the main one.
        """
        rows = met_rows()
        outcomes = _goals.evaluate(rows, Ran({}))
        directory = self.mktemp()
        _report.write_results(directory, "20261201-000000", {}, rows, outcomes)
        with open(os.path.join(directory, "latest.json")) as f:
            document = json.load(f)
        self.assertEqual(document["targets"][0], {"name": "1 small req/s, gatelayer-2w @32", "value": "-",
                                                  "target": ">= 0.40 x nginx",
                                                  "status": "n/a: not run (--scenario small)"})
        with open(os.path.join(directory, "latest.md")) as f:
            markdown = f.read()
        self.assertIn("Issue 17 targets: 0 met, 0 NOT met, 14 n/a.", markdown)
        table = [line for line in markdown.splitlines() if line.startswith("| 1 small")]
        self.assertEqual(table[0].count("|"), 5)


def status(*workers, **extra):
    """
    A C{/status} document with C{workers}: C{(pid, requests, connections,
    heartbeat age)} each.
    """
    return {"workers": [{"pid": p, "requests": r, "connections": c, "last_heartbeat": age}
                        for p, r, c, age in workers], **extra}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class WorkerCountTests(SynchronousTestCase):
    """
    Each worker's share of a cell comes from two /status documents taken
    after a heartbeat that followed the load.
    """

    def test_fresh(self):
        """
        A status is fresh when every worker's last heartbeat is younger
        than the idle time, with a margin.
        """
        cases = [
            (status((1, 0, 0, 0.1), (2, 0, 0, 0.2)), 0.5, True),
            (status((1, 0, 0, 0.1), (2, 0, 0, 0.6)), 0.5, False),
            (status((1, 0, 0, 0.47)), 0.5, False),
            (status((1, 0, 0, None)), 0.5, False),
            (status(), 0.5, False),
            ({"workers": ["junk"]}, 0.5, False),
            (None, 0.5, False),
        ]
        for document, idle, expected in cases:
            self.assertEqual((document, _workers.fresh(document, idle)), (document, expected))

    def test_fresh_status_waits(self):
        """
        Polling goes on until a heartbeat newer than the idle time comes,
        on an injected clock.
        """
        clock = FakeClock()
        ages = iter([0.9, 0.95, 0.0])
        got = _workers.fresh_status(lambda: status((1, 5, 1, next(ages))), clock(), clock=clock, sleep=clock.sleep)
        self.assertEqual(got["workers"][0]["last_heartbeat"], 0.0)
        self.assertAlmostEqual(clock.now, 100.2)

    def test_fresh_status_deadline(self):
        """
        No fresh status within the deadline gives L{None}.
        """
        clock = FakeClock()
        self.assertIsNone(_workers.fresh_status(lambda: None, clock(), deadline=1.0, clock=clock, sleep=clock.sleep))
        self.assertGreaterEqual(clock.now, 101.0)

    def test_deltas(self):
        """
        A worker's requests are the difference of its counter before and
        after the load, its connections those it held open during the load
        (a gauge), its CPU per request its CPU over its requests; a
        respawned worker is left out.
        """
        before = status((1, 100, 0, 0.0), (2, 200, 0, 0.0))
        during = status((1, 600, 16, 0.0), (2, 700, 14, 0.0))
        after = status((1, 1100, 0, 0.0), (3, 50, 0, 0.0), (2, 1200, 0, 0.0))
        self.assertEqual(_workers.worker_deltas(before, after, {1: 0.1, 3: 0.5}, during), [
            {"pid": 1, "requests": 1000, "connections": 16, "cpu_s": 0.1, "cpu_us_per_request": 100.0},
            {"pid": 2, "requests": 1000, "connections": 14, "cpu_s": None, "cpu_us_per_request": None},
        ])
        self.assertEqual([w["connections"] for w in _workers.worker_deltas(before, after, {})], [None, None])
        idle = status((1, 100, 0, 0.0))
        self.assertEqual(_workers.worker_deltas(idle, idle, {1: 0.1})[0]["cpu_us_per_request"], None)

    def test_cell(self):
        """
        L{WorkerCounts} takes the status before, during and after a load and
        gives each worker's share; without a status it gives L{None}.
        """
        clock = FakeClock()
        idle = status((1, 10, 0, 0.0), (2, 10, 0, 0.0))
        loaded = status((1, 200, 16, 0.0), (2, 150, 16, 0.0))
        done = status((1, 510, 0, 0.0), (2, 410, 0, 0.0))
        phase = [idle]
        counts = _workers.WorkerCounts(None, get=lambda: phase[0], clock=clock, sleep=clock.sleep)
        counts.before()
        self.assertAlmostEqual(clock.now, 100.1)
        phase[0] = loaded
        counts.during(clock(), 2.0)
        self.assertAlmostEqual(clock.now, 100.1 + 0.75)
        phase[0] = done
        shares = counts.after({1: 0.05, 2: 0.04})
        self.assertEqual([(w["requests"], w["connections"], w["cpu_us_per_request"]) for w in shares],
                         [(500, 16, 100.0), (400, 16, 100.0)])
        self.assertEqual(_workers.format_workers(32, shares),
                         "workers @32: pid 1 500 req, 16 conns, 100 us/req; pid 2 400 req, 16 conns, 100 us/req")
        silent = _workers.WorkerCounts(None, get=lambda: None, clock=clock, sleep=clock.sleep)
        silent.before()
        self.assertIsNone(silent.after({}))

    def test_watch(self):
        """
        L{WorkerCounts.watch} takes the status during the load on a thread;
        L{WorkerCounts.after} waits for it.
        """
        clock = FakeClock()
        phase = [status((1, 10, 0, 0.0))]

        def get():
            # The watching thread sees the loaded gateway; this one the
            # gateway before and after the load.
            if threading.current_thread() is not threading.main_thread():
                return status((1, 20, 7, 0.0))
            return phase[0]

        counts = _workers.WorkerCounts(None, get=get, clock=clock, sleep=clock.sleep)
        counts.before()
        phase[0] = status((1, 30, 0, 0.0))
        counts.watch(0.4)
        (share,) = counts.after({1: 0.001})
        self.assertEqual((share["requests"], share["connections"]), (20, 7))
