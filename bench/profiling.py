"""
C{bench/profile}: where a gatelayer worker spends its time under load.

Starts the upstream and gatelayer with one worker on 127.0.0.1, loads it
with wrk, and samples the worker with py-spy (installed with pip if it is
missing) or, failing that, profiles it with cProfile; then prints the
functions with the most samples, by own time and including callees, and
keeps the raw profile under bench/results/.
"""

import argparse
import collections
import datetime
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import _configs
from bench._cli import REPO
from bench._install import InstallError, Installer, find_tool
from bench._procs import NotReady, Supervisor, children_of, wait_ready
from bench._targets import Context, Gatelayer, Scenario, Unavailable, nginx_argv
from bench._wrk import WrkOutputError, parse_wrk, wrk_argv

_HOOK = '''\
# Written by the gatelayer profiler: profiles this interpreter with cProfile
# and writes the statistics when told to (SIGUSR2) or at exit.
import os
if os.environ.get("GATELAYER_PROFILE_DIR"):
    import atexit, cProfile, signal
    _profile = cProfile.Profile()
    _path = os.path.join(os.environ["GATELAYER_PROFILE_DIR"], "%d.prof" % os.getpid())
    def _dump(*_):
        _profile.disable()
        _profile.dump_stats(_path)
    signal.signal(signal.SIGUSR2, _dump)
    atexit.register(lambda: os.path.exists(_path) or _dump())
    _profile.enable()
'''


def top_from_collapsed(lines, limit=25):
    """
    Summarise py-spy's collapsed stacks (C{frame;frame;... count} per line):
    C{(total_samples, own, inclusive)} where C{own} and C{inclusive} are
    C{[(frame, samples)]}, most samples first. A frame counts once per stack
    for the inclusive figure, however deep it recurses.
    """
    own, inclusive = collections.Counter(), collections.Counter()
    total = 0
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return total, own.most_common(limit), inclusive.most_common(limit)


def _print_top(say, total, own, inclusive):
    say(f"\n{total} samples of the worker")
    for title, rows in (("own time (the function itself)", own), ("including what it calls", inclusive)):
        say(f"\ntop by {title}:")
        for frame, n in rows:
            say(f"  {100.0 * n / total:5.1f}%  {frame}")


def ensure_py_spy(say, allowed):
    """
    The path of py-spy, installing it with pip into this interpreter's
    environment if needed, or L{None} when it cannot be had.
    """
    found = find_tool("py-spy") or _beside_python("py-spy")
    if found or not allowed:
        return found
    say("installing: pip install py-spy")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        say("py-spy could not be installed; using cProfile")
        return None
    return find_tool("py-spy") or _beside_python("py-spy")


def _beside_python(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    return path if os.access(path, os.X_OK) else None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv):
    """
    The profiler's options.
    """
    parser = argparse.ArgumentParser(prog="bench/profile", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load to profile (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--path", default="/small", help="path to request: /small or /1mb (default /small)")
    parser.add_argument("--filters", choices=sorted(_configs.FILTER_SETS), help="put these filters on the route")
    parser.add_argument("--cprofile", action="store_true", help="use cProfile even if py-spy is available")
    parser.add_argument("--top", type=int, default=25, help="how many functions to list (default 25)")
    parser.add_argument("--no-install", action="store_true", help="never install anything")
    return parser.parse_args(argv)


def main(argv=None):
    """
    Entry point of C{bench/profile}; returns the exit status.
    """
    options = parse_args(sys.argv[1:] if argv is None else argv)

    def say(text):
        print(text, flush=True)

    installer = Installer(say, allowed=not options.no_install)
    try:
        tools = installer.ensure(["nginx", "wrk"])
    except InstallError as e:
        say(f"profile: {e}")
        return 2
    py_spy = None if options.cprofile else ensure_py_spy(say, not options.no_install)
    tmp = tempfile.mkdtemp(prefix="gatelayer-profile-")
    os.chmod(tmp, 0o755)
    supervisor = Supervisor(tmp, say)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _profile(options, say, tools, py_spy, tmp, supervisor)
    except KeyboardInterrupt:
        say("profile: interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def _profile(options, say, tools, py_spy, tmp, supervisor):
    ctx = Context(supervisor=supervisor, tmp=tmp, repo=REPO, tools=tools, say=say)
    ctx.cert, ctx.key, ctx.pem = _configs.write_certificate(tmp)
    ctx.jwt_key, ctx.jwt_token = _configs.write_jwt_material(tmp)
    root = _configs.write_big_file(tmp)
    os.makedirs(os.path.join(tmp, "upstream-temp"), exist_ok=True)
    ctx.upstream_port, ctx.upstream_tls_port = ctx.port(), ctx.port()
    conf = os.path.join(tmp, "upstream.conf")
    with open(conf, "w") as f:
        f.write(_configs.nginx_upstream_conf(tmp, ctx.upstream_port, ctx.upstream_tls_port, ctx.cert, ctx.key, root))
    upstream = supervisor.start("upstream", nginx_argv(ctx, conf, "upstream"))
    wait_ready(upstream, ctx.upstream_port, "/small", 10.0, min_children=2, supervisor=supervisor)

    profile_dir = None
    if py_spy is None:
        profile_dir = os.path.join(tmp, "profiles")
        hook = os.path.join(tmp, "hook")
        os.makedirs(profile_dir)
        os.makedirs(hook)
        with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
            f.write(_HOOK)
        os.environ["GATELAYER_PROFILE_DIR"] = profile_dir
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [hook, os.environ.get("PYTHONPATH")]))
    scenario = Scenario("profile", "profile", options.path, ("gatelayer-1w",),
                        needs_auth=bool(options.filters and "jwt" in options.filters))
    target = Gatelayer(1, options.filters)
    try:
        started = target.start(ctx, scenario)
    except (Unavailable, NotReady) as e:
        say(f"profile: gatelayer did not start: {e}")
        return 1
    workers = children_of(started.process.pid)
    if not workers:
        say("profile: gatelayer has no worker process")
        return 1
    worker = workers[0]
    say(f"gatelayer master {started.process.pid}, worker {worker}; "
        f"{options.connections} connections on {options.path} for {options.duration:g}s")

    url = f"http://127.0.0.1:{started.port}{options.path}"
    headers = [f"{k}: {v}" for k, v in ctx.auth_headers(scenario).items()]
    subprocess.run(wrk_argv(url, options.connections, 2, headers=headers, wrk=tools["wrk"]),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    wrk = subprocess.Popen(wrk_argv(url, options.connections, options.duration, headers=headers, wrk=tools["wrk"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = os.path.join(REPO, "bench", "results")
    os.makedirs(results, exist_ok=True)
    try:
        if py_spy is not None:
            raw = os.path.join(results, f"profile-{stamp}.txt")
            spy = subprocess.run(
                [py_spy, "record", "--pid", str(worker), "--duration", str(max(1, int(options.duration) - 1)),
                 "--rate", "250", "--format", "raw", "--output", raw, "--nonblocking"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=options.duration + 60)
            if spy.returncode != 0 or not os.path.exists(raw):
                say("py-spy failed: " + spy.stdout.decode("utf-8", "replace").strip()[-500:])
                return 1
        out, _ = wrk.communicate(timeout=options.duration + 30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    try:
        result = parse_wrk(out.decode("utf-8", "replace"))
        say(f"load while profiling: {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms, errors {result.errors}")
    except WrkOutputError as e:
        say(f"wrk: {e}")

    if py_spy is not None:
        with open(raw) as f:
            total, own, inclusive = top_from_collapsed(f, options.top)
        if not total:
            say("py-spy recorded no samples")
            return 1
        _print_top(say, total, own, inclusive)
        say(f"\ncollapsed stacks: {os.path.relpath(raw, REPO)} (feed to flamegraph.pl or speedscope)")
        return 0

    os.kill(worker, signal.SIGUSR2)
    path = os.path.join(profile_dir, f"{worker}.prof")
    deadline, size = time.monotonic() + 10, -1
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = os.path.getsize(path) if os.path.exists(path) else -1
        if current > 0 and current == size:
            break
        size = current
    else:
        say("cProfile wrote no statistics for the worker (was its environment passed on?)")
        return 1
    kept = os.path.join(results, f"profile-{stamp}.prof")
    shutil.copy(path, kept)
    stats = pstats.Stats(kept)
    stats.sort_stats("tottime").print_stats(options.top)
    stats.sort_stats("cumulative").print_stats(options.top)
    say(f"cProfile statistics: {os.path.relpath(kept, REPO)} (python -m pstats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
