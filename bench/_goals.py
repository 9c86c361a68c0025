"""
Issue 17's performance targets, judged on the rows of one run.

Each goal names the cells it needs (scenario, target, connection count),
computes its figure from them and says C{met}, C{NOT met}, or C{n/a: why}:
a cell this invocation did not run (with the option that runs it), a cell
that failed, a row with errors on more than 1% of its requests (quick error
answers make throughput and latency meaningless), a missing figure, or a
ratio to zero. Everything here is pure: rows in, outcomes out.
"""

import attrs

MET = "met"
NOT_MET = "NOT met"
INFO = "info"
"""The status of a row that reports a figure with no target (CPU per request per worker)."""

ERROR_SHARE = 0.01
"""A row with errors on more than this share of its requests is not judged."""

SMALL_RPS = 0.40
SMALL_CPU = 3.5
SMALL_P99_32_MS = 5.0
SMALL_P99_128_MS = 20.0
ADDED_P50_MS = 0.25
PYPY_RPS = 0.60
BIG_RPS = 0.75
FILTER_COST = 0.10
WORKER_RSS_MB = 45.0
SHARE = 1.2
OBSERVE_COST = 0.10


TABLE_CELLS = {
    "small": ("nginx", "gatelayer-2w", "gatelayer-2w-pypy"),
    "latency": ("direct", "nginx", "gatelayer-2w"),
    "1mb": ("nginx", "gatelayer-2w"),
    "filters": ("gatelayer-2w", "gatelayer-2w+jwt", "gatelayer-2w+ratelimit"),
    "observe": ("gatelayer-2w+nometrics", "gatelayer-2w+accesslog"),
}
"""The rows of each scenario the target rows need: what C{bench/run --targets-table} runs."""


@attrs.frozen
class Outcome:
    """
    One row of the target table: its name, the measured value (as text),
    the target (as text) and C{met}, C{NOT met}, C{info} or C{n/a: why}.
    """

    name: str
    value: str
    target: str
    status: str


@attrs.frozen
class Ran:
    """
    What one invocation ran: C{cells} maps each scenario to C{(targets,
    connection counts)}; C{no_pypy} says the PyPy row was dropped by
    C{--no-pypy}.
    """

    cells: dict
    no_pypy: bool = False


def ran_cells(plan, connection_counts, no_pypy=False):
    """
    The L{Ran} of a run's plan: C{[(scenario, [target label, ...])]} and
    the run's connection counts (a scenario with its own replaces them).
    """
    return Ran({s.name: (tuple(targets), tuple(s.connections or connection_counts)) for s, targets in plan},
               no_pypy)


class _Missing(Exception):
    """
    A goal cannot be judged: C{reason} says why, C{value} is what it could
    measure anyway.
    """

    def __init__(self, reason, value="-"):
        super().__init__(reason)
        self.reason = reason
        self.value = value


def _cell(rows, ran, scenario, target, connections):
    """
    The measured row of a cell, or L{_Missing} saying why there is none.
    """
    if scenario not in ran.cells:
        raise _Missing(f"not run (--scenario {scenario})")
    targets, counts = ran.cells[scenario]
    if target not in targets:
        raise _Missing("not run (--no-pypy)" if target.endswith("-pypy") and ran.no_pypy
                       else f"not run (--targets {target})")
    if connections not in counts:
        raise _Missing(f"not run (--connections {connections})")
    label = f"{scenario} {target} @{connections}"
    found = [r for r in rows if (r.scenario, r.target, r.connections) == (scenario, target, connections)]
    if not found:
        raise _Missing(f"{label}: no row (the run stopped early)")
    row = found[0]
    if not row.measured:
        note = row.note or "not measured"
        raise _Missing(f"{label}: {note[len('n/a: '):] if note.startswith('n/a: ') else note}")
    if row.errors and (not row.requests or row.errors > row.requests * ERROR_SHARE):
        share = f"{row.errors / row.requests:.0%}" if row.requests else "all"
        raise _Missing(f"{label}: errors on {share} of requests")
    return row


def _figure(row, attribute, what):
    value = getattr(row, attribute)
    if value is None:
        raise _Missing(f"{row.scenario} {row.target} @{row.connections}: no {what}")
    return value


def _ratio(top, bottom, what):
    """
    C{top / bottom}, rounded so that a figure at a target's limit compares as
    the limit (0.9 of a rate is a cost of 0.1, not 0.0999...).
    """
    if not bottom:
        raise _Missing(f"{what} is 0: no ratio")
    return round(top / bottom, 6)


def _each(ran, scenario, judge, least=1):
    """
    Judge every connection count (at least C{least}) C{scenario} ran at:
    C{judge(connections)} gives C{(text, ok)}. Not met if any count fails;
    else n/a if any count could not be judged; else met (or info).
    """
    if scenario not in ran.cells:
        raise _Missing(f"not run (--scenario {scenario})")
    counts = [c for c in ran.cells[scenario][1] if c >= least]
    if not counts:
        raise _Missing(f"not run (--connections {least} or more)")
    parts, oks, missing = [], [], []
    for connections in counts:
        try:
            text, ok = judge(connections)
        except _Missing as e:
            missing.append(e.reason)
            continue
        parts.append(text)
        oks.append(ok)
    value = ", ".join(parts) or "-"
    if False in oks:
        return value, False
    if missing:
        raise _Missing(missing[0], value)
    return value, None if all(ok is None for ok in oks) else True


def _versus_nginx(rows, ran, scenario, target, least):
    row = _cell(rows, ran, scenario, target, 32)
    nginx = _cell(rows, ran, scenario, "nginx", 32)
    ratio = _ratio(row.rps, nginx.rps, f"{scenario} nginx @32 req/s")
    return f"{ratio:.2f} x nginx ({row.rps:,.0f} / {nginx.rps:,.0f} req/s)", ratio >= least


def small_rps(rows, ran):
    """
    Target 1: gatelayer-2w's req/s over nginx's, small, 32 connections.
    """
    return _versus_nginx(rows, ran, "small", "gatelayer-2w", SMALL_RPS)


def small_cpu(rows, ran):
    """
    Target 1: gatelayer-2w's CPU per request over nginx's, small, 32
    connections.
    """
    row = _cell(rows, ran, "small", "gatelayer-2w", 32)
    nginx = _cell(rows, ran, "small", "nginx", 32)
    mine = _figure(row, "cpu_us_per_request", "CPU figure")
    theirs = _figure(nginx, "cpu_us_per_request", "CPU figure")
    ratio = _ratio(mine, theirs, "small nginx @32 CPU per request")
    return f"{ratio:.1f} x nginx ({mine:.0f} / {theirs:.0f} us)", ratio <= SMALL_CPU


def _p99(connections, limit):
    def judge(rows, ran):
        p99 = _figure(_cell(rows, ran, "small", "gatelayer-2w", connections), "p99_ms", "p99")
        return f"{p99:.2f} ms", p99 < limit
    judge.__doc__ = f"Target 1: gatelayer-2w's p99, small, {connections} connections."
    return judge


def added_latency(rows, ran):
    """
    Target 2: gatelayer-2w's p50 minus the direct connection's, one
    connection (the latency scenario); nginx's own added p50 beside it.
    """
    row = _cell(rows, ran, "latency", "gatelayer-2w", 1)
    direct = _cell(rows, ran, "latency", "direct", 1)
    added = round(_figure(row, "p50_ms", "p50") - _figure(direct, "p50_ms", "p50"), 6)
    value = f"{added:.3f} ms ({row.p50_ms:.3f} - {direct.p50_ms:.3f})"
    try:
        nginx = _cell(rows, ran, "latency", "nginx", 1)
        value += f"; nginx adds {nginx.p50_ms - direct.p50_ms:.3f}"
    except _Missing:
        pass
    return value, added < ADDED_P50_MS


def pypy_rps(rows, ran):
    """
    Target 3: gatelayer-2w-pypy's req/s over nginx's, small, 32 connections.
    """
    return _versus_nginx(rows, ran, "small", "gatelayer-2w-pypy", PYPY_RPS)


def big_rps(rows, ran):
    """
    Target 4: gatelayer-2w's req/s over nginx's, 1mb, 32 connections.
    """
    return _versus_nginx(rows, ran, "1mb", "gatelayer-2w", BIG_RPS)


def _filter_cost(name):
    def judge(rows, ran):
        def at(connections):
            base = _cell(rows, ran, "filters", "gatelayer-2w", connections)
            row = _cell(rows, ran, "filters", "gatelayer-2w+" + name, connections)
            cost = round(1 - _ratio(row.rps, base.rps, f"filters gatelayer-2w @{connections} req/s"), 6)
            return f"@{connections}: {cost:.1%}", cost <= FILTER_COST
        return _each(ran, "filters", at)
    judge.__doc__ = f"Target 5: the req/s +{name} loses against gatelayer-2w, filters, every count."
    return judge


def worker_rss(rows, ran):
    """
    Target 6: the peak RSS of each worker of gatelayer-2w (master left
    out), small, every connection count.
    """
    def at(connections):
        row = _cell(rows, ran, "small", "gatelayer-2w", connections)
        workers = _figure(row, "rss_workers_mb", "per-worker RSS")
        if not workers:
            raise _Missing(f"small gatelayer-2w @{connections}: no per-worker RSS")
        return f"@{connections}: " + " / ".join(f"{mb:.1f}" for mb in workers) + " MB", max(workers) < WORKER_RSS_MB
    return _each(ran, "small", at)


def _workers(rows, ran, connections, key):
    row = _cell(rows, ran, "small", "gatelayer-2w", connections)
    workers = row.extra.get("workers") or []
    values = [w.get(key) for w in workers]
    if len(values) < 2 or None in values:
        raise _Missing(f"small gatelayer-2w @{connections}: no per-worker {key} from /status")
    return values


def _share(key):
    def judge(rows, ran):
        def at(connections):
            values = _workers(rows, ran, connections, key)
            counts = " / ".join(f"{v:,}" for v in values)
            if max(values) <= 0:
                raise _Missing(f"small gatelayer-2w @{connections}: no {key} counted")
            if min(values) <= 0:
                return f"@{connections}: inf ({counts})", False
            ratio = max(values) / min(values)
            return f"@{connections}: {ratio:.2f} ({counts})", ratio < SHARE
        return _each(ran, "small", at, least=2)
    judge.__doc__ = f"Target 7: max/min of the {key} each gatelayer-2w worker served, small, each count."
    return judge


def worker_cpu(rows, ran):
    """
    Target 7: CPU per request of each gatelayer-2w worker, small, each
    connection count (reported, no target).
    """
    def at(connections):
        values = _workers(rows, ran, connections, "cpu_us_per_request")
        return f"@{connections}: " + " / ".join(f"{v:.0f}" for v in values) + " us", None
    return _each(ran, "small", at, least=2)


def observe_cost(rows, ran):
    """
    Target 8: the req/s metrics and the JSON access log together cost
    (+accesslog against +nometrics), observe, every connection count.
    """
    def at(connections):
        base = _cell(rows, ran, "observe", "gatelayer-2w+nometrics", connections)
        row = _cell(rows, ran, "observe", "gatelayer-2w+accesslog", connections)
        cost = round(1 - _ratio(row.rps, base.rps, f"observe gatelayer-2w+nometrics @{connections} req/s"), 6)
        return f"@{connections}: {cost:.1%}", cost < OBSERVE_COST
    return _each(ran, "observe", at)


GOALS = (
    ("1 small req/s, gatelayer-2w @32", f">= {SMALL_RPS:.2f} x nginx", small_rps),
    ("1 small CPU/req, gatelayer-2w @32", f"<= {SMALL_CPU:g} x nginx", small_cpu),
    ("1 small p99, gatelayer-2w @32", f"< {SMALL_P99_32_MS:g} ms", _p99(32, SMALL_P99_32_MS)),
    ("1 small p99, gatelayer-2w @128", f"< {SMALL_P99_128_MS:g} ms", _p99(128, SMALL_P99_128_MS)),
    ("2 latency: p50 added at 1 conn, gatelayer-2w - direct", f"< {ADDED_P50_MS:g} ms", added_latency),
    ("3 small req/s, gatelayer-2w-pypy @32", f">= {PYPY_RPS:.2f} x nginx", pypy_rps),
    ("4 1mb req/s, gatelayer-2w @32", f">= {BIG_RPS:.2f} x nginx", big_rps),
    ("5 filters: +jwt cost", f"<= {FILTER_COST:.0%} of req/s", _filter_cost("jwt")),
    ("5 filters: +ratelimit cost", f"<= {FILTER_COST:.0%} of req/s", _filter_cost("ratelimit")),
    ("6 small worker RSS, gatelayer-2w", f"< {WORKER_RSS_MB:g} MB each", worker_rss),
    ("7 small requests max/min, gatelayer-2w", f"< {SHARE:g}", _share("requests")),
    ("7 small connections max/min, gatelayer-2w", f"< {SHARE:g}", _share("connections")),
    ("7 small CPU/req per worker, gatelayer-2w", "(reported)", worker_cpu),
    ("8 observe: metrics + JSON access log cost", f"< {OBSERVE_COST:.0%} of req/s", observe_cost),
)
"""Every target row: its name (starting with the target's number in issue 17), target text and judge."""


def evaluate(rows, ran, goals=GOALS):
    """
    The L{Outcome} of every goal on C{rows} (the L{bench._report.Row}s of
    one run, ratios not needed) for what L{Ran} says was run.
    """
    out = []
    for name, target, judge in goals:
        try:
            value, ok = judge(rows, ran)
        except _Missing as e:
            out.append(Outcome(name, e.value, target, "n/a: " + e.reason))
            continue
        out.append(Outcome(name, value, target, INFO if ok is None else MET if ok else NOT_MET))
    return out


def summary(outcomes):
    """
    C{"N met, N NOT met, N n/a"}.
    """
    met = sum(o.status == MET for o in outcomes)
    missed = sum(o.status == NOT_MET for o in outcomes)
    other = sum(o.status.startswith("n/a") for o in outcomes)
    return f"{met} met, {missed} NOT met, {other} n/a"


GOAL_COLUMNS = ("target row", "measured", "target", "result")


def _lines(outcomes):
    return [(o.name, o.value, o.target, o.status) for o in outcomes]


def format_goals(outcomes):
    """
    The target table as fixed-width text, with a summary line.
    """
    lines = _lines(outcomes)
    widths = [max([len(c)] + [len(line[i]) for line in lines]) for i, c in enumerate(GOAL_COLUMNS)]
    widths[1] = min(widths[1], 60)

    def render(line):
        return "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()

    header = render(GOAL_COLUMNS)
    return "\n".join([f"issue 17 targets ({summary(outcomes)}):", header, "-" * len(header)]
                     + [render(line) for line in lines])


def format_goals_markdown(outcomes):
    """
    The target table as Markdown, for C{latest.md}.
    """
    out = [f"Issue 17 targets: {summary(outcomes)}.", "",
           "| " + " | ".join(GOAL_COLUMNS) + " |", "|" + "---|" * len(GOAL_COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in _lines(outcomes)]
    return "\n".join(out)
