"""
The benchmark's results: one row per (scenario, target, connections), the
ratios to nginx and to the direct connection of the same run, and the table
and JSON they are written as.
"""

import json
import os

import attrs

from bench._goals import OBSERVE_COST, format_goals_markdown


@attrs.define
class Row:
    """
    One cell of the benchmark. C{note} is set instead of the numbers when the
    target could not be measured (C{"n/a: ..."} for a feature that is not
    there, C{"error: ..."} for a failure).
    """

    scenario: str
    target: str
    connections: int
    rps: float = None
    requests: int = None
    p50_ms: float = None
    p99_ms: float = None
    errors: int = None
    error_detail: dict = None
    rss_mb: float = None
    rss_by_process_mb: list = None
    rss_workers_mb: list = None
    rss_growth_mb: float = None
    cpu_us_per_request: float = None
    other_cpu_pct: float = None
    x_nginx: float = None
    x_direct: float = None
    note: str = None
    extra: dict = attrs.field(factory=dict)

    @property
    def measured(self):
        """
        Whether this row has numbers.
        """
        return self.rps is not None


def add_ratios(rows, baselines=None):
    """
    Set C{x_nginx} and C{x_direct} on every measured row: its req/s over the
    req/s of the C{nginx} and C{direct} rows with the same scenario and
    connection count. C{baselines} maps a scenario to another one whose
    nginx/direct rows stand in when the scenario has none of its own.
    """
    baselines = baselines or {}
    by_key = {(r.scenario, r.target, r.connections): r for r in rows if r.measured}

    def reference(scenario, target, connections):
        row = by_key.get((scenario, target, connections))
        if row is None and scenario in baselines:
            row = by_key.get((baselines[scenario], target, connections))
        return row.rps if row is not None and row.rps else None

    for row in rows:
        if not row.measured:
            continue
        nginx = reference(row.scenario, "nginx", row.connections)
        direct = reference(row.scenario, "direct", row.connections)
        row.x_nginx = round(row.rps / nginx, 3) if nginx else None
        row.x_direct = round(row.rps / direct, 3) if direct else None


def filter_costs(rows, scenario="filters", base_target="gatelayer-2w"):
    """
    C{[(target, connections, cost, clean)]}: for each filtered gatelayer
    row of C{scenario}, the fraction of req/s it lost against C{base_target}
    (the same gateway with no filter) at the same connection count. C{clean}
    is false when either row had errors on more than 1% of its requests
    (quick error answers make a cost meaningless).
    """
    def clean(row):
        return not row.errors or (row.requests and row.errors <= row.requests / 100)

    base = {r.connections: r for r in rows
            if r.scenario == scenario and r.target == base_target and r.measured and r.rps}
    costs = []
    for r in rows:
        b = base.get(r.connections)
        if r.scenario == scenario and r.target != base_target and r.measured and \
                r.target.startswith(base_target) and b is not None:
            costs.append((r.target, r.connections, round(1 - r.rps / b.rps, 3), bool(clean(r) and clean(b))))
    return costs


OBSERVE_TARGET = OBSERVE_COST
"""The most metrics and the JSON access log together may cost (req/s lost)."""


def observe_costs(rows, scenario="observe", base="gatelayer-2w+nometrics",
                  observed="gatelayer-2w+accesslog"):
    """
    C{[(connections, rps_cost, cpu_cost)]}: what metrics and the JSON access
    log together cost at each connection count of C{scenario}: the share of
    req/s lost (C{observed} against C{base}, which has neither) and the
    share of CPU per request added (L{None} when a row has no CPU figure).
    """
    def by_conns(target):
        return {r.connections: r for r in rows
                if r.scenario == scenario and r.target == target and r.measured and r.rps}

    bases, seen = by_conns(base), by_conns(observed)
    out = []
    for conns in sorted(set(bases) & set(seen)):
        b, o = bases[conns], seen[conns]
        cpu = None
        if b.cpu_us_per_request and o.cpu_us_per_request:
            cpu = round(o.cpu_us_per_request / b.cpu_us_per_request - 1, 3)
        out.append((conns, round(1 - o.rps / b.rps, 3), cpu))
    return out


def worker_rss(rows, prefix="gatelayer"):
    """
    C{[(target, connections, [MB, ...])]}: the peak RSS under load of each
    worker (every process of the tree but the one started, the master) of
    the measured rows whose target starts with C{prefix}.
    """
    return [(r.target, r.connections, r.rss_workers_mb) for r in rows
            if r.measured and r.rss_workers_mb and r.target.startswith(prefix)]


NOTE_WIDTH = 120
"""A row's note is cut to this many characters in the table (the JSON has all of it)."""

COLUMNS = ("scenario", "target", "conns", "req/s", "p50 ms", "p99 ms", "errors", "RSS MB",
           "CPU us/req", "x nginx", "x direct", "other CPU%")


def _num(value, digits=0, thousands=False):
    if value is None:
        return "-"
    if thousands:
        return f"{value:,.{digits}f}"
    return f"{value:.{digits}f}"


def row_cells(row):
    """
    The table cells of C{row}, in L{COLUMNS} order.
    """
    head = [row.scenario, row.target, str(row.connections)]
    if not row.measured:
        note = row.note or "-"
        return head + [note if len(note) <= NOTE_WIDTH else note[:NOTE_WIDTH - 3] + "..."]
    return head + [
        _num(row.rps, 0, True), _num(row.p50_ms, 2), _num(row.p99_ms, 2), str(row.errors),
        _num(row.rss_mb, 1), _num(row.cpu_us_per_request, 0), _num(row.x_nginx, 2), _num(row.x_direct, 2),
        _num(row.other_cpu_pct, 0),
    ]


def format_table(rows):
    """
    A fixed-width text table of C{rows}; a row without numbers shows its note
    across the numeric columns.
    """
    cells = [row_cells(r) for r in rows]
    widths = [len(c) for c in COLUMNS]
    for line in cells:
        if len(line) == len(COLUMNS):
            widths = [max(w, len(c)) for w, c in zip(widths, line)]
        else:
            widths[:3] = [max(w, len(c)) for w, c in zip(widths[:3], line[:3])]

    def render(line):
        if len(line) == len(COLUMNS):
            parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        else:
            parts = [line[0].ljust(widths[0]), line[1].ljust(widths[1]), line[2].rjust(widths[2]), line[3]]
        return "  ".join(parts).rstrip()

    header = render(list(COLUMNS))
    out = [header, "-" * len(header)]
    previous = None
    for row, line in zip(rows, cells):
        if previous is not None and row.scenario != previous:
            out.append("")
        previous = row.scenario
        out.append(render(line))
    return "\n".join(out)


def format_markdown(rows):
    """
    The same table as Markdown, for the README's Performance section.
    """
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        line = row_cells(row)
        if len(line) < len(COLUMNS):
            line = line + [""] * (len(COLUMNS) - len(line))
        out.append("| " + " | ".join(c.replace("|", "/") for c in line) + " |")
    return "\n".join(out)


def write_results(directory, stamp, meta, rows, goals=()):
    """
    Write C{bench-STAMP.json} (and C{latest.json}, C{latest.md}) under
    C{directory}; return the JSON file's path. C{goals}, the
    L{bench._goals.Outcome}s of the run, go under the JSON's C{targets} key
    and after the Markdown table.
    """
    os.makedirs(directory, exist_ok=True)
    document = {"meta": meta, "rows": [attrs.asdict(r) for r in rows],
                "targets": [attrs.asdict(g) for g in goals]}
    text = json.dumps(document, indent=2, sort_keys=False, default=str)
    path = os.path.join(directory, f"bench-{stamp}.json")
    for target in (path, os.path.join(directory, "latest.json")):
        with open(target, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    with open(os.path.join(directory, "latest.md"), "w", encoding="utf-8") as f:
        f.write(format_markdown(rows) + "\n")
        if goals:
            f.write("\n" + format_goals_markdown(goals) + "\n")
    return path
