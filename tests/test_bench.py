"""
Tests for the benchmark harness (bench/): parsing wrk's report, the
generated configurations, ratios and the table, process accounting through
/proc, readiness polling and the installer. No load is generated here: the
benchmark itself is run with C{bench/run}.
"""

import json
import os
import zlib

from twisted.trial.unittest import SynchronousTestCase

from bench import _cli, _configs, _h2load, _procs, _report, _targets, _wrk
from bench._install import InstallError, Installer
from bench._pypy import requirements
from gatelayer.config import parse_config_text

WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:8080/small
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.31us  301.22us   9.81ms   90.10%
    Req/Sec    26.01k     1.20k   28.11k    71.00%
  Latency Distribution
     50%  575.00us
     75%  690.00us
     90%  812.00us
     99%    1.71ms
  258812 requests in 5.00s, 52.12MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  51762.40
Transfer/sec:     10.42MB
"""


class ParseWrkTests(SynchronousTestCase):
    """
    wrk's C{--latency} report becomes numbers in milliseconds.
    """

    def test_full_report(self):
        """
        Rate, request count, p50/p99 and both kinds of errors are read.
        """
        result = _wrk.parse_wrk(WRK_REPORT)
        self.assertEqual(result.requests, 258812)
        self.assertEqual(result.seconds, 5.0)
        self.assertEqual(result.rps, 51762.40)
        self.assertAlmostEqual(result.p50_ms, 0.575)
        self.assertAlmostEqual(result.p99_ms, 1.71)
        self.assertEqual(result.non_2xx, 7)
        self.assertEqual(result.socket_errors, {"connect": 0, "read": 3, "write": 0, "timeout": 2})
        self.assertEqual(result.errors, 12)

    def test_units(self):
        """
        Percentiles in us, ms, s and m are all converted to milliseconds.
        """
        cases = [("250.00us", 0.25), ("3.50ms", 3.5), ("1.20s", 1200.0), ("1.00m", 60000.0)]
        for text, expected in cases:
            report = WRK_REPORT.replace("1.71ms", text)
            self.assertAlmostEqual(_wrk.parse_wrk(report).p99_ms, expected, msg=text)

    def test_no_errors(self):
        """
        A report without error lines has zero errors.
        """
        report = "\n".join(line for line in WRK_REPORT.splitlines() if "errors" not in line and "Non-2xx" not in line)
        result = _wrk.parse_wrk(report)
        self.assertEqual((result.errors, result.socket_errors), (0, {}))

    def test_incomplete(self):
        """
        wrk's own error message (or nothing) is reported, not a crash.
        """
        for text in ("", "unable to connect to 127.0.0.1:1 Connection refused\n",
                     WRK_REPORT.replace("     99%    1.71ms\n", "")):
            self.assertRaises(_wrk.WrkOutputError, _wrk.parse_wrk, text)
        error = self.assertRaises(_wrk.WrkOutputError, _wrk.parse_wrk, "unable to connect\n")
        self.assertIn("unable to connect", str(error))

    def test_argv(self):
        """
        The command line keeps connections alive, asks for latency
        percentiles, passes headers and never uses more threads than
        connections.
        """
        argv = _wrk.wrk_argv("https://127.0.0.1:9/x", 32, 5, 2, ["Connection: close"], wrk="/usr/bin/wrk")
        self.assertEqual(argv, ["/usr/bin/wrk", "-t2", "-c32", "-d5s", "--timeout=5s", "--latency",
                                "-H", "Connection: close", "https://127.0.0.1:9/x"])
        self.assertIn("-t1", _wrk.wrk_argv("http://127.0.0.1:9/", 1, 0.2, 2))
        self.assertIn("-d1s", _wrk.wrk_argv("http://127.0.0.1:9/", 1, 0.2, 2))


H2LOAD_REPORT = """\
starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Application protocol: h2

finished in 2.00s, 12345.50 req/s, 1.20MB/s
requests: 24691 total, 24701 started, 24691 done, 24680 succeeded, 11 failed, 3 errored, 2 timeout
status codes: 24680 2xx, 0 3xx, 4 4xx, 7 5xx
traffic: 2.40MB (2516545) total, 241.17KB (246955) headers (space savings 94.12%), 578.63KB (592520) data
                     min         max         mean         sd        +/- sd
time for request:      226us     35.11ms      6.56ms      3.02ms    76.50%
time for connect:     2.31ms      9.87ms      5.01ms      2.11ms    62.50%
time to 1st byte:     9.12ms     20.02ms     13.01ms      3.33ms    68.75%
req/s           :     748.02      800.23      771.59       14.29    68.75%
"""


class H2loadTests(SynchronousTestCase):
    """
    The h2 scenario's load: h2load's command line and report.
    """

    def test_argv(self):
        """
        Connections, streams per connection (C{-m}) and a timed run
        (C{-D}), headers passed, never more threads than connections.
        """
        argv = _h2load.h2load_argv("https://127.0.0.1:9/small", 32, 10, 5, 2, ["X-A: b"], h2load="/bin/h2load")
        self.assertEqual(argv, ["/bin/h2load", "-t2", "-c32", "-m10", "-D5", "-H", "X-A: b",
                                "https://127.0.0.1:9/small"])
        self.assertIn("-t1", _h2load.h2load_argv("https://127.0.0.1:9/", 1, 10, 0.2))
        self.assertIn("-D1", _h2load.h2load_argv("https://127.0.0.1:9/", 1, 10, 0.2))

    def test_report(self):
        """
        The rate, the completed requests, the mean and maximum time for a
        request (in the p50 and p99 places: h2load has no percentiles) and
        the errors are read.
        """
        result = _h2load.parse_h2load(H2LOAD_REPORT)
        self.assertEqual((result.rps, result.requests, result.seconds), (12345.5, 24691, 2.0))
        self.assertAlmostEqual(result.p50_ms, 6.56)
        self.assertAlmostEqual(result.p99_ms, 35.11)
        self.assertEqual(result.non_2xx, 11)
        self.assertEqual(result.socket_errors, {"failed": 11, "errored": 3, "timeout": 2})
        self.assertEqual(result.errors, 27)

    def test_incomplete(self):
        """
        A report without its totals (h2load could not connect) is an
        error naming its last line.
        """
        error = self.assertRaises(_wrk.WrkOutputError, _h2load.parse_h2load, "starting benchmark...\nNo protocol negotiated\n")
        self.assertIn("No protocol negotiated", str(error))

    def test_scenario(self):
        """
        The h2 scenario runs over TLS with h2load at 32 connections and 10
        streams each, against nginx and gatelayer.
        """
        (h2,) = [s for s in _cli.scenarios() if s.name == "h2"]
        self.assertEqual((h2.tls, h2.http2, h2.streams, h2.connections), (True, True, 10, (32,)))
        self.assertEqual(h2.targets, ("nginx", "gatelayer-1w", "gatelayer-2w"))

    def test_nginx_http2(self):
        """
        nginx gets C{http2 on;} from 1.25.1 and the C{listen ... http2}
        parameter before; without HTTP/2 neither.
        """
        self.assertEqual(_configs.nginx_http2_style("nginx version: nginx/1.22.1"), "listen")
        self.assertEqual(_configs.nginx_http2_style("nginx version: nginx/1.25.1"), "on")
        self.assertEqual(_configs.nginx_http2_style("nginx version: nginx/1.27.0 (Ubuntu)"), "on")
        on = _configs.nginx_proxy_conf("/t", 3, 4, "/c", "/k", 1, http2="on")
        listen = _configs.nginx_proxy_conf("/t", 3, 4, "/c", "/k", 1, http2="listen")
        plain = _configs.nginx_proxy_conf("/t", 3, 4, "/c", "/k", 1)
        self.assertIn("\n        http2 on;\n", on)
        self.assertIn("listen 127.0.0.1:4 ssl http2 backlog=4096;", listen)
        self.assertNotIn("http2", plain)
        self.assertEqual(on.replace("        http2 on;\n", ""), plain)

    def test_gatelayer_tls_offers_h2(self):
        """
        The generated TLS listener of gatelayer offers HTTP/2 (the default).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        _, _, pem = _configs.write_certificate(directory)
        text = _configs.gatelayer_ini(2, 8080, 9000, 9901, tls=(8443, pem))
        config = parse_config_text(text, os.path.join(directory, "gate.ini"))
        self.assertEqual([listener.http2 for listener in config.listeners], [False, True])


class GeneratedConfigTests(SynchronousTestCase):
    """
    The generated configurations listen on loopback only and, for
    gatelayer, pass gatelayer's own validation.
    """

    def test_gatelayer_ini_valid(self):
        """
        The plain, TLS and filtered gate.ini files are accepted by the
        gateway's config loader with the intended workers, binds and filters.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        _, _, pem = _configs.write_certificate(directory)
        jwt_key, token = _configs.write_jwt_material(directory)
        self.assertEqual(token.count("."), 2)
        for workers, tls, filters in [(1, None, ()), (2, (8443, pem), ()),
                                      (2, None, ("jwt", "limit")), (2, None, ("limit_redis",)),
                                      (2, None, ("transform",)), (2, None, ("cache",)),
                                      (2, None, ("compress",))]:
            text = _configs.gatelayer_ini(workers, 8080, 9000, 9901, tls=tls, filters=filters,
                                          jwt_key=jwt_key, redis_port=6390)
            config = parse_config_text(text, os.path.join(directory, "gate.ini"))
            self.assertEqual(config.gateway.workers, workers)
            self.assertEqual(config.gateway.admin, ("127.0.0.1", 9901))
            self.assertEqual(config.routes[0].filters, tuple(filters))
            self.assertEqual(config.upstreams["app"].servers[0].address, "127.0.0.1:9000")
            binds = [b for listener in config.listeners for b in listener.binds]
            self.assertTrue(all(host == "127.0.0.1" for host, _ in binds), binds)
            self.assertEqual(len(binds), 2 if tls else 1)

    def test_gatelayer_tcp_ini_valid(self):
        """
        The tcp scenario's gate.ini is a valid layer 4 configuration
        relaying to the upstream.
        """
        from bench._l4 import gatelayer_tcp_ini
        config = parse_config_text(gatelayer_tcp_ini(2, 8080, 9000, 9901), "gate.ini")
        listener = config.listeners[0]
        self.assertEqual((listener.mode, listener.upstream, listener.binds), ("tcp", "app", (("127.0.0.1", 8080),)))
        self.assertEqual(config.upstreams["app"].health.kind, "tcp")

    def test_gatelayer_ini_aggregate(self):
        """
        The C{bff} row's gate.ini makes the route an aggregate of three parts
        on the upstream's JSON paths, with no filter.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        text = _configs.gatelayer_ini(2, 8080, 9000, 9901, filters=("bff",))
        route = parse_config_text(text, os.path.join(directory, "gate.ini")).routes[0]
        self.assertEqual(route.terminal, "aggregate")
        self.assertEqual(route.filters, ())
        self.assertIn("GET /json/stock", text)
        self.assertEqual(len(_configs.AGGREGATE_PARTS), 3)

    def test_gatelayer_ini_observe(self):
        """
        The observe scenario's rows: C{nometrics} turns metrics off,
        C{accesslog} writes the access log where asked; neither is a filter
        on the route, and the plain row keeps metrics on.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "gate.ini")
        off = parse_config_text(_configs.gatelayer_ini(2, 8080, 9000, 9901, filters=("nometrics",)), path)
        logged = parse_config_text(_configs.gatelayer_ini(
            2, 8080, 9000, 9901, filters=("accesslog",), access_log="/var/x.log"), path)
        plain = parse_config_text(_configs.gatelayer_ini(2, 8080, 9000, 9901), path)
        self.assertEqual((off.gateway.metrics, off.gateway.access_log, off.routes[0].filters), (False, None, ()))
        self.assertEqual((logged.gateway.metrics, logged.gateway.access_log, logged.routes[0].filters),
                         (True, "/var/x.log", ()))
        self.assertEqual((plain.gateway.metrics, plain.gateway.access_log), (True, None))

    def test_upstream_serves_json(self):
        """
        The upstream answers the API scenario's paths with the JSON document,
        typed as JSON (the transform and aggregate rows need that).
        """
        conf = _configs.nginx_upstream_conf("/p", 9000, 9443, "/c.pem", "/k.pem", "/r")
        self.assertIn("location ^~ /json/", conf)
        self.assertIn("default_type application/json;", conf)
        self.assertIn(_configs.JSON_BODY, conf)
        json.loads(_configs.JSON_BODY)

    def test_text_document(self):
        """
        The edge scenario's document is the same on every run, as long as
        asked, and compresses like prose (well, but not to nothing).
        """
        text = _configs.text_document()
        self.assertEqual(len(text), 8192)
        self.assertEqual(text, _configs.text_document())
        ratio = len(zlib.compress(text.encode("ascii"))) / len(text)
        self.assertTrue(0.05 < ratio < 0.5, ratio)
        conf = _configs.nginx_upstream_conf("/p", 9000, 9443, "/c.pem", "/k.pem", "/r")
        self.assertIn(f"location = /{_configs.TEXT_NAME}", conf)

    def test_loopback_only(self):
        """
        Every address nginx, HAProxy and Redis are told to use is on
        127.0.0.1.
        """
        texts = [
            _configs.nginx_upstream_conf("/t", 1, 2, "/c", "/k", "/r"),
            _configs.nginx_proxy_conf("/t", 3, 4, "/c", "/k", 1),
            _configs.haproxy_conf(5, 6, "/p", 1),
            _configs.redis_conf(7, "/t"),
        ]
        for text in texts:
            for line in text.splitlines():
                words = line.split()
                if len(words) > 1 and words[0] in ("listen", "bind", "server") and words[1] != "{":
                    self.assertIn("127.0.0.1", line)

    def test_big_file(self):
        """
        The large response is exactly 1 MB.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        root = _configs.write_big_file(directory)
        self.assertEqual(os.path.getsize(os.path.join(root, _configs.BIG_NAME)), 1024 * 1024)


def row(scenario, target, connections, rps, **kw):
    return _report.Row(scenario, target, connections, rps=rps, p50_ms=1.0, p99_ms=2.0, errors=0, **kw)


class ReportTests(SynchronousTestCase):
    """
    Ratios come from the same run, and the table shows notes for rows that
    could not be measured.
    """

    def test_ratios(self):
        """
        Each row is compared with nginx and direct at the same scenario and
        connection count; a scenario without its own baselines borrows them.
        """
        rows = [
            row("small", "direct", 32, 100000.0), row("small", "nginx", 32, 50000.0),
            row("small", "gatelayer-2w", 32, 20000.0), row("small", "gatelayer-2w", 128, 10000.0),
            row("filters", "gatelayer-2w+jwt", 32, 15000.0),
            _report.Row("small", "gatelayer-1w", 32, note="n/a: nope"),
        ]
        _report.add_ratios(rows, {"filters": "small"})
        self.assertEqual((rows[2].x_nginx, rows[2].x_direct), (0.4, 0.2))
        self.assertEqual((rows[3].x_nginx, rows[3].x_direct), (None, None))
        self.assertEqual((rows[4].x_nginx, rows[4].x_direct), (0.3, 0.15))
        self.assertEqual(rows[1].x_nginx, 1.0)
        self.assertIsNone(rows[5].x_nginx)

    def test_filter_costs(self):
        """
        A filtered row's cost is the share of req/s it lost against the
        unfiltered gateway.
        """
        rows = [row("filters", "gatelayer-2w", 32, 10000.0), row("filters", "gatelayer-2w+jwt", 32, 9000.0),
                row("filters", "gatelayer-2w+jwt", 128, 9000.0), row("small", "gatelayer-2w+x", 32, 1.0),
                row("filters", "gatelayer-2w+limit", 32, 12000.0, requests=1000)]
        rows[-1].errors = 11
        self.assertEqual(_report.filter_costs(rows), [("gatelayer-2w+jwt", 32, 0.1, True),
                                                       ("gatelayer-2w+limit", 32, -0.2, False)])

    def test_observe_costs(self):
        """
        Metrics and the access log cost the req/s the access-log row lost
        against the row with neither, and the CPU per request it added;
        a connection count missing either row is left out.
        """
        rows = [row("observe", "gatelayer-2w+nometrics", 32, 10000.0),
                row("observe", "gatelayer-2w+accesslog", 32, 9200.0),
                row("observe", "gatelayer-2w+nometrics", 128, 8000.0),
                row("observe", "gatelayer-2w+accesslog", 256, 1.0),
                row("small", "gatelayer-2w+accesslog", 128, 1.0)]
        rows[0].cpu_us_per_request, rows[1].cpu_us_per_request = 200.0, 215.0
        self.assertEqual(_report.observe_costs(rows), [(32, 0.08, 0.075)])
        rows[1].cpu_us_per_request = None
        self.assertEqual(_report.observe_costs(rows), [(32, 0.08, None)])

    def test_worker_rss(self):
        """
        The workers' RSS is reported for measured gatelayer rows that have
        it, not for other targets or unmeasured rows.
        """
        rows = [row("filters", "gatelayer-2w", 32, 10000.0), row("filters", "nginx", 32, 30000.0),
                row("filters", "gatelayer-2w+jwt", 32, 9000.0), _report.Row("filters", "gatelayer-1w", 32)]
        rows[0].rss_workers_mb = [40.1, 40.3]
        rows[1].rss_workers_mb = [5.0]
        rows[3].rss_workers_mb = [41.0]
        self.assertEqual(_report.worker_rss(rows), [("gatelayer-2w", 32, [40.1, 40.3])])

    def test_table(self):
        """
        The text table has one line per row, numbers formatted, and a long
        note cut short.
        """
        rows = [row("small", "nginx", 32, 51762.4, rss_mb=23.44, cpu_us_per_request=18.0),
                _report.Row("small", "gatelayer-2w", 32, note="error: " + "x" * 300)]
        _report.add_ratios(rows)
        lines = format_lines(_report.format_table(rows))
        self.assertIn("req/s", lines[0])
        self.assertEqual(lines[2].split(), ["small", "nginx", "32", "51,762", "1.00", "2.00", "0", "23.4",
                                            "18", "1.00", "-", "-"])
        self.assertTrue(lines[3].endswith("..."))
        self.assertLess(len(lines[3]), 200)

    def test_markdown_and_json(self):
        """
        The results directory gets the JSON (timestamped and latest) and a
        Markdown table with one line per row.
        """
        rows = [row("small", "nginx", 32, 5.0), _report.Row("tls", "gatelayer-1w", 32, note="n/a: no TLS")]
        directory = self.mktemp()
        path = _report.write_results(directory, "20260101-000000", {"cpus": 2}, rows)
        self.assertTrue(path.endswith("bench-20260101-000000.json"))
        with open(os.path.join(directory, "latest.json")) as f:
            document = json.load(f)
        self.assertEqual(document["meta"], {"cpus": 2})
        self.assertEqual([r["target"] for r in document["rows"]], ["nginx", "gatelayer-1w"])
        self.assertEqual(document["targets"], [])
        with open(os.path.join(directory, "latest.md")) as f:
            markdown = f.read().splitlines()
        self.assertEqual(len(markdown), 4)
        self.assertEqual({line.count("|") for line in markdown}, {len(_report.COLUMNS) + 1})
        self.assertIn("n/a: no TLS", markdown[3])


def format_lines(text):
    return [line for line in text.splitlines() if line.strip()]


class ProcTests(SynchronousTestCase):
    """
    Process trees, CPU and RSS come from /proc.
    """

    def fake_proc(self, processes):
        """
        A directory shaped like /proc with a C{stat} file per process:
        C{{pid: (ppid, cpu_ticks, rss_pages)}}.
        """
        root = self.mktemp()
        os.makedirs(root)
        for pid, (ppid, ticks, pages) in processes.items():
            os.makedirs(os.path.join(root, str(pid)))
            fields = ["S", str(ppid)] + ["0"] * 9 + [str(ticks), "0"] + ["0"] * 8 + [str(pages)]
            with open(os.path.join(root, str(pid), "stat"), "w") as f:
                f.write(f"{pid} (python3 (x) y) " + " ".join(fields) + "\n")
        os.makedirs(os.path.join(root, "self"))
        return root

    def test_parse_stat(self):
        """
        A command name with spaces and parentheses does not shift the fields.
        """
        line = "42 (odd (name) here) S 7 1 1 0 -1 4194560 1 0 0 0 30 12 0 0 20 0 1 0 9 1000 256 0\n"
        self.assertEqual(_procs.parse_stat(line), ("S", 7, 42, 256))

    def test_tree(self):
        """
        Descendants at any depth are found, other processes are not.
        """
        root = self.fake_proc({10: (1, 5, 100), 11: (10, 7, 200), 12: (11, 1, 50), 20: (1, 9, 999)})
        self.assertEqual(sorted(_procs.children_of(10, root)), [11, 12])
        usage = _procs.tree_usage(10, root)
        self.assertEqual(sorted(usage), [10, 11, 12])
        self.assertEqual(sum(rss for _, rss in usage.values()), 350 * _procs._PAGE_KB)

    def test_cpu_line(self):
        """
        Busy time is everything but idle and iowait; guest time (already in
        user) is not counted twice.
        """
        line = "cpu  100 5 50 800 20 3 2 0 7 0\n"
        busy, total = _procs.parse_cpu_line(line)
        self.assertAlmostEqual(busy * _procs._CLOCK_TICKS, 160)
        self.assertAlmostEqual(total * _procs._CLOCK_TICKS, 980)

    def test_other_cpu(self):
        """
        Other work is the machine's busy CPU less the target, the upstream,
        wrk and the benchmark, as a share of all CPUs; never negative.
        """
        before = (100.0, 1000.0, 10.0, 5.0, 1.0)
        after = (109.0, 1010.0, 12.0, 7.0, 1.5)
        self.assertEqual(_cli._other_cpu_pct(before, after, 3.0), 15.0)
        self.assertEqual(_cli._other_cpu_pct(before, after, 9.0), 0.0)
        self.assertIsNone(_cli._other_cpu_pct(before, before, 0.0))

    def test_sampler(self):
        """
        The sampler records a first and a peak RSS and the CPU used between
        start and stop, for a live process tree.
        """
        sampler = _procs.UsageSampler(os.getpid(), interval=3600)
        sampler.start()
        sum(range(100000))
        sampler.stop()
        self.assertGreater(sampler.peak_rss_kb, 0)
        self.assertGreaterEqual(sampler.peak_rss_kb, sampler.first_rss_kb)
        self.assertIn(os.getpid(), sampler.peak_by_pid)
        self.assertGreaterEqual(sampler.cpu_seconds, 0)
        self.assertEqual(list(sampler.cpu_by_pid), [os.getpid()])
        self.assertEqual(sampler.cpu_by_pid[os.getpid()], sampler.cpu_seconds)

    def test_own_process(self):
        """
        This test's own process has a resident size and used some CPU.
        """
        usage = _procs.tree_usage(os.getpid())
        cpu, rss = usage[os.getpid()]
        self.assertGreater(rss, 1000)
        self.assertGreater(cpu, 0)


class FakeProcess:
    """
    Enough of L{subprocess.Popen} for readiness polling.
    """

    pid = 4242

    def __init__(self, codes):
        self.codes = list(codes)

    def poll(self):
        return self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class WaitReadyTests(SynchronousTestCase):
    """
    Readiness is polled with a bounded deadline on an injected clock.
    """

    def wait(self, process, answers, deadline=1.0, children=0, min_children=0):
        clock = FakeClock()
        answers = list(answers)

        def get(port, path, **kw):
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, Exception):
                raise answer
            return answer, b""

        _procs.wait_ready(process, 1, "/small", deadline, min_children=min_children, clock=clock,
                          sleep=clock.sleep, get=get, children=lambda pid: [0] * children)
        return clock.now

    def test_ready_after_refusals(self):
        """
        Refused connections are retried until a 2xx answer.
        """
        elapsed = self.wait(FakeProcess([None]), [ConnectionRefusedError(), ConnectionRefusedError(), 200])
        self.assertAlmostEqual(elapsed, 0.2)

    def test_deadline(self):
        """
        A server that keeps answering 502 fails at the deadline, saying so.
        """
        error = self.assertRaises(_procs.NotReady, self.wait, FakeProcess([None]), [502])
        self.assertIn("answers 502", str(error))

    def test_exited(self):
        """
        A process that exits while starting fails at once with its status.
        """
        error = self.assertRaises(_procs.NotReady, self.wait, FakeProcess([None, 3]), [ConnectionRefusedError()])
        self.assertIn("exited with status 3", str(error))

    def test_waits_for_workers(self):
        """
        A master answering before its workers are all up is not ready yet.
        """
        error = self.assertRaises(_procs.NotReady, self.wait, FakeProcess([None]), [200],
                                  children=1, min_children=2)
        self.assertIn("fewer than 2 worker", str(error))


class InstallerTests(SynchronousTestCase):
    """
    Missing tools are installed with apt-get (update once), with service
    starts refused while apt runs.
    """

    def setUp(self):
        self.present = {"apt-get", "nginx"}
        self.calls = []
        self.policy = os.path.abspath(self.mktemp())
        self.said = []

    def find(self, command):
        return f"/usr/bin/{command}" if command in self.present else None

    def apt_run(self, argv, **kw):
        self.calls.append((argv, os.path.exists(self.policy), kw["env"].get("DEBIAN_FRONTEND")))
        if argv[1] == "install":
            self.present.update(argv[4:])

        class Result:
            returncode = 0
            stdout = b""
        return Result()

    def installer(self, **kw):
        return Installer(self.said.append, run=self.apt_run, find=self.find, policy_path=self.policy,
                         is_root=lambda: True, **kw)

    def test_installs_missing(self):
        """
        Only the missing packages are installed, after one update, and the
        temporary policy file is gone afterwards.
        """
        installer = self.installer()
        paths = installer.ensure(["nginx", "haproxy", "wrk"])
        installer.ensure(["redis-server"])
        self.assertEqual(paths, {"nginx": "/usr/bin/nginx", "haproxy": "/usr/bin/haproxy", "wrk": "/usr/bin/wrk"})
        self.assertEqual([c[0][:2] for c in self.calls],
                         [["apt-get", "update"], ["apt-get", "install"], ["apt-get", "install"]])
        self.assertEqual(self.calls[1][0][-2:], ["haproxy", "wrk"])
        self.assertTrue(all(policy and frontend == "noninteractive" for _, policy, frontend in self.calls))
        self.assertFalse(os.path.exists(self.policy))
        self.assertIn("installing: apt-get install haproxy wrk", self.said)

    def test_nothing_missing(self):
        """
        Nothing runs when every tool is there.
        """
        self.installer().ensure(["nginx"])
        self.assertEqual(self.calls, [])

    def test_not_allowed(self):
        """
        With installing turned off, a missing tool is an error naming it.
        """
        error = self.assertRaises(InstallError, self.installer(allowed=False).ensure, ["wrk"])
        self.assertIn("wrk", str(error))
        self.assertEqual(self.calls, [])

    def test_apt_failure(self):
        """
        A failing apt-get is reported with its last lines.
        """
        def run(argv, **kw):
            class Result:
                returncode = 100
                stdout = b"E: Unable to locate package wrk\n"
            return Result()
        installer = Installer(self.said.append, run=run, find=self.find, policy_path=self.policy,
                              is_root=lambda: True)
        error = self.assertRaises(InstallError, installer.ensure, ["wrk"])
        self.assertIn("Unable to locate package wrk", str(error))
        self.assertFalse(os.path.exists(self.policy))


class CommandLineTests(SynchronousTestCase):
    """
    Scenarios and targets are chosen by flags.
    """

    def test_defaults(self):
        """
        By default every scenario runs at 32 and 128 connections (h2 at
        its own 32, latency at one connection).
        """
        options = _cli.parse_args([])
        self.assertEqual([s.name for s in options.scenarios],
                         ["small", "latency", "1mb", "tls", "tls-close", "filters", "api", "edge", "observe",
                          "h2", "tcp", "tcp-1mb"])
        self.assertEqual(options.connection_counts, [32, 128])

    def test_latency(self):
        """
        The latency scenario loads direct, nginx and gatelayer-2w with one
        wrk thread on one connection, whatever --connections says.
        """
        options = _cli.parse_args(["--scenario", "latency", "--connections", "32,128"])
        (latency,) = options.scenarios
        self.assertEqual(latency.connections, (1,))
        self.assertEqual(_cli.selected_targets(latency, options), ["direct", "nginx", "gatelayer-2w"])
        argv = _wrk.wrk_argv("http://127.0.0.1:1/small", latency.connections[0], 5, options.threads)
        self.assertEqual(argv[1:3], ["-t1", "-c1"])

    def test_quick(self):
        """
        --quick shortens every cell and keeps 32 connections.
        """
        options = _cli.parse_args(["--quick", "--scenario", "small,tls"])
        self.assertEqual((options.duration, options.warmup, options.connection_counts), (2, 1, [32]))
        self.assertEqual([s.name for s in options.scenarios], ["small", "tls"])

    def test_unknown_scenario(self):
        """
        An unknown scenario name is refused.
        """
        self.assertRaises(SystemExit, _cli.parse_args, ["--scenario", "small,huge"])

    def test_targets(self):
        """
        --targets keeps rows by prefix; --no-pypy drops the PyPy row; a
        filter scenario run alone brings its own nginx and direct rows.
        """
        options = _cli.parse_args(["--targets", "nginx,gatelayer-2w", "--no-pypy"])
        by_name = {s.name: s for s in options.scenarios}
        small, filters = by_name["small"], by_name["filters"]
        self.assertEqual(_cli.selected_targets(small, options), ["nginx", "gatelayer-2w"])
        self.assertEqual(_cli.selected_targets(filters, options)[0], "gatelayer-2w")
        alone = _cli.parse_args(["--scenario", "filters", "--targets", "gatelayer-2w+jwt"])
        self.assertEqual(_cli.selected_targets(alone.scenarios[0], alone),
                         ["direct", "nginx", "gatelayer-2w+jwt"])

    def test_make_target(self):
        """
        Row labels map to targets with the right workers, filters and
        interpreter.
        """
        target = _cli.make_target("gatelayer-2w+jwt+ratelimit")
        self.assertEqual((target.workers, target.filters, target.pypy), (2, "jwt+ratelimit", False))
        self.assertEqual(target.name, "gatelayer-2w+jwt+ratelimit")
        pypy = _cli.make_target("gatelayer-2w-pypy")
        self.assertEqual((pypy.workers, pypy.filters, pypy.pypy, pypy.name), (2, None, True, "gatelayer-2w-pypy"))
        for name in _cli.PROXIES:
            self.assertEqual(_cli.make_target(name).name, name)
        for scenario in _cli.scenarios():
            for name in scenario.targets:
                self.assertEqual(_cli.make_target(name).name, name)


class TargetTests(SynchronousTestCase):
    """
    Small pieces of the targets.
    """

    def test_twistd_argv(self):
        """
        gatelayer runs in the foreground with its own pidfile.
        """
        argv = _targets.twistd_argv("/py", "/t/g.pid", "/t/g.ini", check=True)
        self.assertEqual(argv[3:], ["-n", "--pidfile", "/t/g.pid", "gatelayer", "-c", "/t/g.ini", "--check"])

    def test_worker_spread(self):
        """
        Per-worker counters are read from /status, whatever of them it has.
        """
        status = {"workers": [{"pid": 1, "requests": 10, "connections": 3, "uptime": 9.5},
                              {"pid": 2, "requests": 12}, "junk"]}
        self.assertEqual(_targets.worker_spread(status),
                         [(1, {"requests": 10, "connections": 3}), (2, {"requests": 12})])
        self.assertEqual(_targets.worker_spread({"master": 1}), [])
        self.assertEqual(_targets.worker_spread(None), [])

    def test_pypy_requirements(self):
        """
        PyPy gets the dependencies listed in setup.cfg.
        """
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        needs = requirements(os.path.join(here, "setup.cfg"))
        self.assertTrue(any(n.lower().startswith("twisted") for n in needs), needs)


class CollapsedStacksTests(SynchronousTestCase):
    """
    py-spy's collapsed stacks are summarised by own and inclusive samples.
    """

    def test_top(self):
        """
        The leaf frame gets the own samples; every frame of a stack gets
        them once as inclusive samples, even when it recurses.
        """
        from bench.profiling import top_from_collapsed
        lines = ["main;run;read 6\n", "main;run;write 3\n", "main;f;f;f 1\n", "garbage\n", "\n"]
        total, own, inclusive = top_from_collapsed(lines, limit=3)
        self.assertEqual(total, 10)
        self.assertEqual(own, [("read", 6), ("write", 3), ("f", 1)])
        self.assertEqual(inclusive, [("main", 10), ("run", 9), ("read", 6)])


class OpcodesTests(SynchronousTestCase):
    """
    C{python -m bench.opcodes} counts the bytecodes of the in-memory
    gateway's requests, function by function.
    """

    def test_counted_per_request(self):
        """
        Each function is counted with its calls: the gateway routes each
        of the traced requests once, and the tracer in place before is
        back after.
        """
        import sys
        import tempfile

        from bench import instructions, opcodes
        before = sys.gettrace()
        with tempfile.TemporaryDirectory() as directory:
            loop = instructions.Loop((), 12, None, directory)
            counted, calls = opcodes.count(loop, 3)
        self.assertIs(sys.gettrace(), before)
        routed = [key for key in calls if key[2] == "early_route"]
        self.assertEqual([calls[key] for key in routed], [3])
        self.assertGreater(counted[routed[0]], 3 * 50)
