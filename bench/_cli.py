"""
The benchmark's command line: pick scenarios and targets, install what is
missing, start the upstream, then for each scenario start each target in
turn, load it with wrk and sample its processes, and print one table.
"""

import argparse
import datetime
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import _configs
from bench._goals import TABLE_CELLS, evaluate, format_goals, ran_cells
from bench._install import InstallError, Installer, tool_version
from bench._l4 import TCP_TARGETS, GatelayerTcp, HAProxyTcp
from bench._procs import NotReady, Supervisor, UsageSampler, machine_cpu, tree_cpu, wait_ready
from bench._pypy import PyPyUnavailable, prepare_pypy
from bench._report import (
    OBSERVE_TARGET, Row, add_ratios, filter_costs, format_table, observe_costs, worker_rss, write_results,
)
from bench._targets import (
    Context, Direct, Gatelayer, HAProxy, Nginx, Scenario, StockTwisted, Unavailable, admin_status,
)
from bench._h2load import h2load_argv, parse_h2load
from bench._workers import WorkerCounts, format_workers
from bench._wrk import WrkOutputError, parse_wrk, wrk_argv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROXIES = ("direct", "nginx", "haproxy", "twisted-proxy", "gatelayer-1w", "gatelayer-2w")


def scenarios():
    """
    Every scenario, in the order they run.
    """
    return [
        Scenario("small", "small response, HTTP/1.1 keep-alive", "/small",
                 PROXIES + ("gatelayer-1w-twisted", "gatelayer-2w-twisted", "gatelayer-2w-pypy")),
        Scenario("latency", "small response, one connection (wrk -t1 -c1): the latency a proxy adds", "/small",
                 ("direct", "nginx", "gatelayer-2w"), connections=(1,)),
        Scenario("1mb", "1 MB response, keep-alive", "/" + _configs.BIG_NAME, PROXIES),
        Scenario("tls", "small response over TLS, keep-alive", "/small", PROXIES, tls=True),
        Scenario("tls-close", "TLS, a new connection (handshake) per request", "/small", PROXIES,
                 tls=True, headers=("Connection: close",)),
        Scenario("filters", "small response through JWT and rate-limit filters", "/small",
                 ("gatelayer-2w", "gatelayer-2w+jwt", "gatelayer-2w+ratelimit",
                  "gatelayer-2w+ratelimit-redis", "gatelayer-2w+jwt+ratelimit"),
                 needs_auth=True),
        Scenario("api", "small JSON response: proxied, transformed, aggregated from 3 parts", "/json/item",
                 ("direct", "nginx", "gatelayer-2w", "gatelayer-2w+transform", "gatelayer-2w+bff")),
        Scenario("edge", "8 KB text (client accepts gzip): proxied, cached, compressed, WAF", "/" + _configs.TEXT_NAME,
                 ("direct", "nginx", "gatelayer-2w", "gatelayer-2w+cache", "gatelayer-2w+compress",
                  "gatelayer-2w+waf"), headers=("Accept-Encoding: gzip",)),
        Scenario("observe", "small response: metrics off, metrics on, metrics and the access log", "/small",
                 ("direct", "nginx", "gatelayer-2w+nometrics", "gatelayer-2w", "gatelayer-2w+accesslog")),
        Scenario("h2", "small response over HTTP/2 (TLS, h2load, 10 streams per connection)", "/small",
                 ("nginx", "gatelayer-1w", "gatelayer-2w"), tls=True, http2=True, connections=(32,)),
        Scenario("tcp", "small response over keep-alive HTTP, relayed at layer 4 (mode tcp)", "/small",
                 TCP_TARGETS),
        Scenario("tcp-1mb", "1 MB response over keep-alive HTTP, relayed at layer 4 (mode tcp)",
                 "/" + _configs.BIG_NAME, TCP_TARGETS),
    ]


BASELINES = {"filters": "small"}
"""Scenarios that borrow the nginx/direct rows of another one for their ratios."""


def make_target(name):
    """
    The target object for a row label such as C{gatelayer-2w+jwt}.
    """
    fixed = {"direct": Direct, "nginx": Nginx, "haproxy": HAProxy, "twisted-proxy": StockTwisted,
             "haproxy-tcp": HAProxyTcp}
    if name in fixed:
        return fixed[name]()
    if name.endswith("-tcp"):
        return GatelayerTcp(int(name[len("gatelayer-"):-len("-tcp")].rstrip("w")))
    rest = name[len("gatelayer-"):]
    twisted_channel = rest.endswith("-twisted")
    if twisted_channel:
        rest = rest[:-len("-twisted")]
    pypy = rest.endswith("-pypy")
    if pypy:
        rest = rest[:-len("-pypy")]
    workers, _, filters = rest.partition("+")
    return Gatelayer(int(workers.rstrip("w")), filters or None, pypy, "twisted" if twisted_channel else None)


def parse_args(argv):
    """
    The command line options.
    """
    names = [s.name for s in scenarios()]
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Measure gatelayer against a direct connection, nginx, HAProxy and twisted.web.proxy "
                    "on this machine (everything on 127.0.0.1).")
    parser.add_argument("--scenario", default=None,
                        help="comma-separated, from: " + ", ".join(names) + " (default: all)")
    parser.add_argument("--targets", default=None,
                        help="only these rows: comma-separated labels, or prefixes (e.g. nginx,gatelayer)")
    parser.add_argument("--targets-table", action="store_true",
                        help="only the rows issue 17's target table needs: " + "; ".join(
                            f"{s}: {','.join(t)}" for s, t in TABLE_CELLS.items()))
    parser.add_argument("--connections", default="32,128", help="wrk connection counts (default 32,128)")
    parser.add_argument("--duration", type=float, default=5, help="seconds measured per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per cell (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s per cell, 1 s warm-up, 32 connections only")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install; fail instead")
    parser.add_argument("--no-pypy", action="store_true", help="skip the PyPy row")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"),
                        help="directory for the JSON results (default bench/results)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the generated configs and logs")
    options = parser.parse_args(argv)
    if options.targets_table:
        if options.scenario is not None or options.targets is not None:
            parser.error("--targets-table picks its own --scenario and --targets")
        options.scenario = ",".join(TABLE_CELLS)
    options.scenario = options.scenario or ",".join(names)
    wanted = [s.strip() for s in options.scenario.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in names]
    if unknown:
        parser.error(f"--scenario: unknown {', '.join(unknown)} (use {', '.join(names)})")
    options.scenarios = [s for s in scenarios() if s.name in wanted]
    try:
        options.connection_counts = [int(c) for c in options.connections.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--connections: {options.connections!r} is not a list of numbers")
    if options.quick:
        options.duration, options.warmup = 2, 1
        if options.connections == "32,128":
            options.connection_counts = [32]
    if options.duration < 1 or options.warmup < 0:
        parser.error("--duration must be at least 1 and --warmup at least 0")
    options.target_filter = [t.strip() for t in options.targets.split(",") if t.strip()] \
        if options.targets else None
    return options


def selected_targets(scenario, options):
    """
    The row labels of C{scenario} that the options keep.
    """
    names = list(scenario.targets)
    if options.targets_table:
        names = [n for n in names if n in TABLE_CELLS.get(scenario.name, ())]
    if options.no_pypy:
        names = [n for n in names if not n.endswith("-pypy")]
    if options.target_filter:
        # A full label picks that row only; anything else is a prefix.
        keep = set()
        for wanted in options.target_filter:
            keep.update([wanted] if wanted in names else [n for n in names if n.startswith(wanted)])
        names = [n for n in names if n in keep]
    if scenario.name in BASELINES and any(n.startswith("gatelayer") for n in names):
        base = BASELINES[scenario.name]
        if base not in [s.name for s in options.scenarios]:
            names = ["direct", "nginx"] + names
    return names


class Bench:
    """
    One run of the benchmark.
    """

    def __init__(self, options, say=None):
        self.options = options
        self.say = say or (lambda text: print(text, flush=True))
        self.rows = []
        self.meta = {}

    def run(self):
        """
        Run everything; return the process exit status.
        """
        options = self.options
        installer = Installer(self.say, allowed=not options.no_install)
        plan = [(s, selected_targets(s, options)) for s in options.scenarios]
        self.ran = ran_cells(plan, options.connection_counts, options.no_pypy)
        needs_redis = any("redis" in t for _, targets in plan for t in targets)
        try:
            tools = installer.ensure(["nginx", "haproxy", "wrk"]
                                     + (["h2load"] if any(s.http2 for s, _ in plan) else []))
        except InstallError as e:
            self.say(f"bench: {e}")
            return 2
        cells = sum(len(t) * len(s.connections or options.connection_counts) for s, t in plan)
        # A gatelayer cell also waits for heartbeats before and after its load (about 1.5 s).
        gateways = sum(sum(n.startswith("gatelayer") for n in t) * len(s.connections or options.connection_counts)
                       for s, t in plan)
        estimate = cells * (options.duration + options.warmup + 1.5) + gateways * 1.5
        self.say(f"bench: {cells} cells, about {estimate / 60:.1f} minutes "
                 f"({options.warmup:g}s warm-up + {options.duration:g}s per cell)")
        load = os.getloadavg()[0]
        if load > 0.5:
            self.say(f"bench: the machine is already busy (load average {load:.1f}): expect low, noisy numbers; "
                     "the 'other CPU%' column shows how much other work ran during each cell")
        tmp = tempfile.mkdtemp(prefix="gatelayer-bench-")
        os.chmod(tmp, 0o755)
        supervisor = Supervisor(tmp, self.say)
        ctx = Context(supervisor=supervisor, tmp=tmp, repo=REPO, tools=tools, say=self.say)
        started_at = datetime.datetime.now()
        try:
            self._prepare(ctx, installer, plan, needs_redis)
            for scenario, targets in plan:
                self.say(f"\n== {scenario.name}: {scenario.description}")
                for name in targets:
                    self._measure_target(ctx, scenario, make_target(name))
        except KeyboardInterrupt:
            self.say("\nbench: interrupted; stopping everything it started")
            return 130
        except NotReady as e:
            self.say(f"bench: the upstream nginx did not start: {e}")
            return 1
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                supervisor.stop_all()
            finally:
                signal.signal(signal.SIGINT, previous)
            if options.keep_temp:
                self.say(f"bench: configs and logs kept in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        self._finish(ctx, started_at)
        return 0

    def _prepare(self, ctx, installer, plan, needs_redis):
        ctx.cert, ctx.key, ctx.pem = _configs.write_certificate(ctx.tmp)
        for path in (ctx.key, ctx.pem):
            os.chmod(path, 0o600)
        ctx.jwt_key, ctx.jwt_token = _configs.write_jwt_material(ctx.tmp)
        root = _configs.write_big_file(ctx.tmp)
        os.makedirs(os.path.join(ctx.tmp, "upstream-temp"), exist_ok=True)
        ctx.upstream_port, ctx.upstream_tls_port = ctx.port(), ctx.port()
        conf = os.path.join(ctx.tmp, "upstream.conf")
        with open(conf, "w") as f:
            f.write(_configs.nginx_upstream_conf(
                ctx.tmp, ctx.upstream_port, ctx.upstream_tls_port, ctx.cert, ctx.key, root))
        from bench._targets import nginx_argv
        upstream = ctx.upstream_process = ctx.supervisor.start("upstream", nginx_argv(ctx, conf, "upstream"))
        wait_ready(upstream, ctx.upstream_port, "/small", 10.0, min_children=2, supervisor=ctx.supervisor)
        self.say(f"upstream: nginx on 127.0.0.1:{ctx.upstream_port} (HTTPS {ctx.upstream_tls_port})")
        if needs_redis:
            self._start_redis(ctx, installer)
        if any(t.endswith("-pypy") for _, targets in plan for t in targets):
            try:
                cache = os.path.join(os.path.expanduser("~"), ".cache", "gatelayer-bench")
                ctx.pypy = prepare_pypy(installer, ctx.repo, cache, self.say)
            except PyPyUnavailable as e:
                ctx.pypy_problem = str(e)
                self.say(f"PyPy row skipped: {e}")
        self.meta = {
            "python": platform.python_implementation() + " " + platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "nginx": tool_version(ctx.tools["nginx"]),
            "haproxy": tool_version(ctx.tools["haproxy"]),
            "wrk": tool_version(ctx.tools["wrk"]),
            "gatelayer_commit": _git_commit(ctx.repo),
            "duration_s": self.options.duration,
            "warmup_s": self.options.warmup,
            "threads": self.options.threads,
            "connections": self.options.connection_counts,
        }

    def _start_redis(self, ctx, installer):
        try:
            redis = installer.ensure(["redis-server"])["redis-server"]
        except InstallError as e:
            ctx.redis_problem = f"redis-server: {e}"
            return
        port = ctx.port()
        conf = os.path.join(ctx.tmp, "redis.conf")
        with open(conf, "w") as f:
            f.write(_configs.redis_conf(port, ctx.tmp))
        process = ctx.redis_process = ctx.supervisor.start("redis", [redis, conf])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                out = subprocess.run([redis.replace("redis-server", "redis-cli"), "-p", str(port), "ping"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=2).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = b""
            if b"PONG" in out:
                ctx.redis_port = port
                return
            time.sleep(0.1)
        ctx.redis_problem = "redis-server did not answer PING within 10s"

    def _measure_target(self, ctx, scenario, target):
        counts = scenario.connections or self.options.connection_counts
        self.say(f"-- {target.name}")
        try:
            started = target.start(ctx, scenario)
        except Unavailable as e:
            self._note_rows(scenario, target, counts, f"n/a: {e}")
            return
        except NotReady as e:
            self._note_rows(scenario, target, counts, f"error: {e}")
            return
        try:
            for connections in counts:
                row = self._cell(ctx, scenario, target, started, connections)
                self.rows.append(row)
                self.say("   " + _summary(row))
                if row.extra.get("workers"):
                    self.say("   " + format_workers(connections, row.extra["workers"]))
            if started.admin_port is not None:
                status = admin_status(started)
                if status is not None:
                    self.rows[-1].extra["status"] = status
        finally:
            if started.process is not None:
                ctx.supervisor.stop(started.process)

    def _note_rows(self, scenario, target, counts, note):
        self.say("   " + note)
        for connections in counts:
            self.rows.append(Row(scenario.name, target.name, connections, note=note))

    def _cell(self, ctx, scenario, target, started, connections):
        options = self.options
        scheme = "https" if scenario.tls else "http"
        url = f"{scheme}://127.0.0.1:{started.port}{scenario.path}"
        headers = list(scenario.headers) + [f"{k}: {v}" for k, v in ctx.auth_headers(scenario).items()]

        def load(seconds):
            if scenario.http2:
                argv = h2load_argv(url, connections, scenario.streams, seconds, options.threads, headers,
                                   h2load=ctx.tools["h2load"])
            else:
                argv = wrk_argv(url, connections, seconds, options.threads, headers, wrk=ctx.tools["wrk"])
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    timeout=seconds + 30)
            text = result.stdout.decode("utf-8", "replace")
            return parse_h2load(text) if scenario.http2 else parse_wrk(text)

        row = Row(scenario.name, target.name, connections)
        try:
            warmup = max(options.warmup, target.min_warmup)
            if warmup:
                load(warmup)
            workers = WorkerCounts(started) if started.admin_port is not None else None
            if workers:
                workers.before()
            sampler = UsageSampler(started.process.pid) if started.process is not None else None
            if sampler:
                sampler.start()
            if workers:
                workers.watch(options.duration)
            before = _cpu_snapshot(ctx)
            try:
                result = load(options.duration)
            finally:
                if sampler:
                    sampler.stop()
            after = _cpu_snapshot(ctx)
            if workers:
                row.extra["workers"] = workers.after(sampler.cpu_by_pid)
        except (WrkOutputError, subprocess.TimeoutExpired) as e:
            row.note = f"error: {e}"
            return row
        if started.process is not None and started.process.poll() is not None:
            row.note = f"error: exited with status {started.process.returncode} under load"
            return row
        row.rps = result.rps
        row.requests = result.requests
        row.p50_ms = round(result.p50_ms, 3)
        row.p99_ms = round(result.p99_ms, 3)
        row.errors = result.errors
        row.error_detail = {"non_2xx": result.non_2xx, **result.socket_errors}
        row.other_cpu_pct = _other_cpu_pct(before, after, sampler.cpu_seconds if sampler else 0.0)
        if sampler:
            row.rss_mb = round(sampler.peak_rss_kb / 1024, 1)
            row.rss_growth_mb = round((sampler.peak_rss_kb - sampler.first_rss_kb) / 1024, 1)
            row.rss_by_process_mb = sorted(round(kb / 1024, 1) for kb in sampler.peak_by_pid.values())
            row.rss_workers_mb = sorted(round(kb / 1024, 1) for pid, kb in sampler.peak_by_pid.items()
                                        if pid != started.process.pid)
            if result.requests:
                row.cpu_us_per_request = round(sampler.cpu_seconds / result.requests * 1e6, 1)
        return row

    def _finish(self, ctx, started_at):
        add_ratios(self.rows, BASELINES)
        self.say("\n" + format_table(self.rows))
        costs = filter_costs(self.rows) + filter_costs(self.rows, scenario="api") + \
            filter_costs(self.rows, scenario="edge") + filter_costs(self.rows, scenario="observe")
        if costs:
            self.say("\nfilter cost (req/s lost against gatelayer-2w with no filter): " +
                     ", ".join(f"{t} @{c}: {cost:.0%}" + ("" if clean else " (with errors)")
                               for t, c, cost, clean in costs))
        observe = observe_costs(self.rows)
        if observe:
            self.say(f"\nmetrics + JSON access log cost (against neither; target under {OBSERVE_TARGET:.0%} of req/s): "
                     + ", ".join(f"@{c}: {cost:.1%} of req/s"
                                 + (f", CPU per request {cpu:+.1%}" if cpu is not None else "")
                                 + (" (met)" if cost < OBSERVE_TARGET else " (NOT met)")
                                 for c, cost, cpu in observe))
        self.meta["observe_costs"] = observe
        workers = worker_rss(self.rows)
        if workers:
            self.say("\nworker RSS (peak under load, MB, master left out): " +
                     ", ".join(f"{t} @{c}: " + " / ".join(f"{mb:.1f}" for mb in mbs) for t, c, mbs in workers))
        self.meta["started"] = started_at.isoformat(timespec="seconds")
        self.meta["filter_costs"] = costs
        goals = evaluate(self.rows, self.ran)
        self.say("\n" + format_goals(goals))
        stamp = started_at.strftime("%Y%m%d-%H%M%S")
        path = write_results(self.options.results, stamp, self.meta, self.rows, goals)
        self.say(f"\nresults: {os.path.relpath(path, REPO) if path.startswith(REPO) else path}")


def _cpu_snapshot(ctx):
    """
    CPU seconds so far: the whole machine (busy, all), the upstream (and
    the benchmark's Redis), wrk (this process's reaped children) and this
    process.
    """
    busy, total = machine_cpu()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    upstream = sum(tree_cpu(p.pid) for p in (ctx.upstream_process, ctx.redis_process) if p is not None)
    return busy, total, upstream, children.ru_utime + children.ru_stime, me.ru_utime + me.ru_stime


def _other_cpu_pct(before, after, target_cpu):
    """
    The share of the machine's CPU (in % of all CPUs) used during a cell by
    anything but the target, the upstream, wrk and the benchmark itself:
    other work that makes the numbers of that cell low and noisy.
    """
    busy, total, upstream, wrk, me = (a - b for a, b in zip(after, before))
    if total <= 0:
        return None
    other = busy - target_cpu - upstream - wrk - me
    return round(max(0.0, other) / total * 100, 1)


def _summary(row):
    if not row.measured:
        return f"{row.connections:>4} conns: {row.note}"
    return (f"{row.connections:>4} conns: {row.rps:,.0f} req/s, p50 {row.p50_ms:.2f} ms, "
            f"p99 {row.p99_ms:.2f} ms, errors {row.errors}"
            + (f", RSS {row.rss_mb:.1f} MB" if row.rss_mb is not None else ""))


def _git_commit(repo):
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
        return out or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """
    Entry point of C{python -m bench}; returns the exit status.
    """
    options = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    return Bench(options).run()
