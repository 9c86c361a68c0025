"""
What the benchmark loads: the direct connection and each proxy, started one
at a time for a scenario, ready when it answers, stopped by pid afterwards.
"""

import os
import subprocess
import sys

import attrs

from bench import _configs
from bench._install import tool_version
from bench._procs import NotReady, free_port, http_get, wait_ready


class Unavailable(Exception):
    """
    The target cannot run this scenario (a feature it lacks, a tool that is
    missing); its row reads C{n/a: <reason>}.
    """


@attrs.frozen
class Scenario:
    """
    One kind of load: the path wrk requests, over TLS or not, with which
    extra request headers, and the targets it compares. An C{http2} one is
    loaded by h2load instead, with up to C{streams} concurrent streams per
    connection. C{connections}, when set, replaces the run's connection
    counts for this scenario.
    """

    name: str
    description: str
    path: str
    targets: tuple
    tls: bool = False
    headers: tuple = ()
    needs_auth: bool = False
    http2: bool = False
    streams: int = 10
    connections: tuple = None


@attrs.define
class Context:
    """
    What every target needs for a run: the supervisor, the temp directory,
    the upstream's ports, TLS and JWT material, tools and interpreters.
    """

    supervisor: object
    tmp: str
    repo: str
    tools: dict
    say: object = print
    python: str = sys.executable
    upstream_process: object = None
    upstream_port: int = None
    upstream_tls_port: int = None
    cert: str = None
    key: str = None
    pem: str = None
    jwt_key: str = None
    jwt_token: str = None
    redis_process: object = None
    redis_port: int = None
    redis_problem: str = None
    pypy: tuple = None
    pypy_problem: str = None
    taken: set = attrs.field(factory=set)

    def port(self):
        """
        A free loopback port not handed out before in this run.
        """
        port = free_port(self.taken)
        self.taken.add(port)
        return port

    def auth_headers(self, scenario):
        """
        The request headers C{scenario} needs beyond its own (a bearer token).
        """
        if scenario.needs_auth:
            return {"Authorization": f"Bearer {self.jwt_token}"}
        return {}


@attrs.frozen
class Started:
    """
    A target that answers: its process (L{None} for the direct connection),
    the port the scenario's load goes to, and extras such as an admin port.
    """

    process: object
    port: int
    admin_port: int = None


class Target:
    """
    Base of the targets: a row label and how to start it for a scenario.
    """

    name = None
    ready_seconds = 15.0
    min_children = 0
    min_warmup = 0.0
    """Seconds of warm-up this target needs at least (a JIT needs more)."""

    def start(self, ctx, scenario):
        """
        Start the target for C{scenario} and return L{Started} once it
        answers C{GET scenario.path}.

        @raise Unavailable: the target cannot serve this scenario.
        @raise NotReady: it was started but failed to answer.
        """
        raise NotImplementedError

    def _ready(self, ctx, scenario, process, plain_port, tls_port, admin_port=None):
        port = tls_port if scenario.tls else plain_port
        try:
            wait_ready(process, port, scenario.path, self.ready_seconds, tls=scenario.tls,
                       headers=ctx.auth_headers(scenario), min_children=self.min_children,
                       supervisor=ctx.supervisor)
        except NotReady:
            ctx.supervisor.stop(process)
            raise
        return Started(process, port, admin_port)


class Direct(Target):
    """
    The upstream itself, no proxy: the ceiling.
    """

    name = "direct"

    def start(self, ctx, scenario):
        return Started(None, ctx.upstream_tls_port if scenario.tls else ctx.upstream_port)


class Nginx(Target):
    """
    nginx as a reverse proxy: 2 workers, upstream keep-alive.
    """

    name = "nginx"
    min_children = 2

    def start(self, ctx, scenario):
        port, tls_port = ctx.port(), ctx.port()
        conf = os.path.join(ctx.tmp, "nginx-proxy.conf")
        os.makedirs(os.path.join(ctx.tmp, "nginx-temp"), exist_ok=True)
        with open(conf, "w") as f:
            http2 = _configs.nginx_http2_style(tool_version(ctx.tools["nginx"])) if scenario.http2 else None
            f.write(_configs.nginx_proxy_conf(ctx.tmp, port, tls_port, ctx.cert, ctx.key, ctx.upstream_port,
                                              http2=http2))
        process = ctx.supervisor.start("nginx-proxy", nginx_argv(ctx, conf, "nginx"))
        return self._ready(ctx, scenario, process, port, tls_port)


def nginx_argv(ctx, conf, name):
    """
    nginx in the foreground with C{conf}, its early errors in the temp dir.
    """
    return [ctx.tools["nginx"], "-p", ctx.tmp + "/", "-e", os.path.join(ctx.tmp, f"{name}-error.log"),
            "-c", conf, "-g", "daemon off;"]


class HAProxy(Target):
    """
    HAProxy with 2 threads and C{http-reuse always}.
    """

    name = "haproxy"

    def start(self, ctx, scenario):
        port, tls_port = ctx.port(), ctx.port()
        conf = os.path.join(ctx.tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(_configs.haproxy_conf(port, tls_port, ctx.pem, ctx.upstream_port))
        process = ctx.supervisor.start("haproxy", [ctx.tools["haproxy"], "-db", "-f", conf])
        return self._ready(ctx, scenario, process, port, tls_port)


class StockTwisted(Target):
    """
    Twisted's C{twisted.web.proxy.ReverseProxyResource}, the naive baseline.
    """

    name = "twisted-proxy"

    def start(self, ctx, scenario):
        port, tls_port = ctx.port(), ctx.port()
        argv = [ctx.python, "-m", "bench.twisted_proxy", "--port", str(port),
                "--upstream-port", str(ctx.upstream_port), "--tls-port", str(tls_port), "--pem", ctx.pem]
        process = ctx.supervisor.start("twisted-proxy", argv, cwd=ctx.repo)
        return self._ready(ctx, scenario, process, port, tls_port)


def twistd_argv(python, pidfile, ini, check=False):
    """
    C{twistd -n gatelayer -c INI} run by C{python}, with its own pidfile so
    that several can run side by side.
    """
    argv = [python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile", pidfile,
            "gatelayer", "-c", ini]
    if check:
        argv.append("--check")
    return argv


class Gatelayer(Target):
    """
    gatelayer with C{workers} workers, optionally with filters on its route
    and optionally on PyPy.
    """

    ready_seconds = 30.0

    def __init__(self, workers, filters=None, pypy=False, http_server=None):
        self.workers = workers
        self.http_server = http_server
        self.filters = filters
        self.pypy = pypy
        self.min_children = workers
        self.name = f"gatelayer-{workers}w" + (f"+{filters}" if filters else "") + ("-pypy" if pypy else "")
        if http_server == "twisted":
            self.name += "-twisted"
        if pypy:
            self.ready_seconds = 60.0
            self.min_warmup = 5.0

    def start(self, ctx, scenario):
        if self.pypy and ctx.pypy is None:
            raise Unavailable(ctx.pypy_problem or "PyPy was not prepared")
        sections = _configs.FILTER_SETS[self.filters] if self.filters else ()
        if "limit_redis" in sections and ctx.redis_port is None:
            raise Unavailable(ctx.redis_problem or "no Redis")
        python, env = ctx.pypy if self.pypy else (ctx.python, None)
        port, tls_port, admin_port = ctx.port(), ctx.port(), ctx.port()
        ini = os.path.join(ctx.tmp, f"{self.name}.ini")
        with open(ini, "w") as f:
            f.write(_configs.gatelayer_ini(
                self.workers, port, ctx.upstream_port, admin_port,
                tls=(tls_port, ctx.pem) if scenario.tls else None, filters=sections,
                jwt_key=ctx.jwt_key, redis_port=ctx.redis_port, http_server=self.http_server,
                access_log=os.path.join(ctx.tmp, f"{self.name}.access.log")))
        pidfile = os.path.join(ctx.tmp, f"{self.name}.pid")
        problem = self._check(python, env, pidfile, ini, ctx.repo)
        if problem is not None:
            if scenario.tls or sections:
                feature = "TLS" if scenario.tls else "filters " + ", ".join(sections)
                raise Unavailable(f"gatelayer rejects a config with {feature}: {problem}")
            raise NotReady(f"gatelayer --check failed: {problem}")
        process = ctx.supervisor.start(self.name, twistd_argv(python, pidfile, ini), env=env, cwd=ctx.tmp)
        if not scenario.tls:
            try:
                return self._ready(ctx, scenario, process, port, tls_port, admin_port)
            except NotReady as e:
                if sections and process.poll() is None:
                    raise Unavailable(f"gatelayer runs but the route with {', '.join(sections)} fails: {e}")
                raise
        # Plain HTTP first: a gateway that runs but does not speak TLS yet is
        # told apart quickly from one that does not start at all.
        try:
            wait_ready(process, port, scenario.path, self.ready_seconds, min_children=self.min_children,
                       supervisor=ctx.supervisor)
        except NotReady:
            ctx.supervisor.stop(process)
            raise
        try:
            wait_ready(process, tls_port, scenario.path, 5.0, tls=True, supervisor=ctx.supervisor)
        except NotReady as e:
            ctx.supervisor.stop(process)
            raise Unavailable(f"gatelayer does not serve TLS yet: {e}") from None
        return Started(process, tls_port, admin_port)

    @staticmethod
    def _check(python, env, pidfile, ini, repo):
        """
        Run C{--check} on the generated config: L{None} if it passes, else
        the last line gatelayer printed. A gatelayer without C{--check}
        counts as passing (starting it will tell).
        """
        try:
            result = subprocess.run(twistd_argv(python, pidfile, ini, check=True), env=env, cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        except subprocess.TimeoutExpired:
            return "--check took longer than 60s"
        if result.returncode == 0:
            return None
        text = result.stdout.decode("utf-8", "replace")
        if "check" in text and ("not recognized" in text or "no such option" in text):
            return None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        meaningful = [line for line in lines if not line.startswith(("Traceback", "File ", "^"))]
        return (meaningful or lines or ["exit status %d" % result.returncode])[-1][:300]


def admin_status(started):
    """
    gatelayer's C{/status} document, or L{None} if it has no admin endpoint
    (yet) or it does not answer JSON.
    """
    import json

    if started.admin_port is None:
        return None
    try:
        status, body = http_get(started.admin_port, "/status", timeout=2.0)
        if status != 200:
            return None
        return json.loads(body)
    except (OSError, ValueError, Exception):
        return None


_COUNT_KEYS = ("requests", "connections", "accepted", "served", "requests_total", "connections_total")


def worker_spread(status):
    """
    C{[(pid, {count_name: value})]} for each worker in a C{/status}
    document, using whatever request/connection counters it reports.
    """
    if not isinstance(status, dict) or not isinstance(status.get("workers"), list):
        return []
    spread = []
    for worker in status["workers"]:
        if not isinstance(worker, dict):
            continue
        counts = {k: worker[k] for k in _COUNT_KEYS if isinstance(worker.get(k), (int, float))}
        spread.append((worker.get("pid"), counts))
    return spread
