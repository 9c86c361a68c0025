"""
Processes the benchmark starts: launching them in the foreground, waiting
until they answer, measuring their memory and CPU through /proc, and stopping
every one of them by pid, also on errors and Ctrl-C.
"""

import ctypes
import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_KB = (os.sysconf("SC_PAGE_SIZE") // 1024) if hasattr(os, "sysconf") else 4


class NotReady(Exception):
    """
    A server did not answer before its deadline, or exited while starting.
    """


def _die_with_parent():
    # Runs in the child between fork and exec: if the benchmark itself is
    # killed with SIGKILL, the kernel sends SIGTERM to its direct children.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def free_port(taken=()):
    """
    A TCP port on 127.0.0.1 that nothing listens on right now and that is not
    in C{taken}.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def children_of(pid, proc="/proc"):
    """
    The pids of every live descendant of C{pid}, read from C{/proc/*/stat}.
    """
    parents = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        stat = _read_stat(entry, proc)
        if stat is not None:
            parents[int(entry)] = stat[1]
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _read_stat(pid, proc="/proc"):
    """
    C{(state, ppid, utime+stime ticks, rss pages)} of a process, or L{None}.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return parse_stat(data)


def parse_stat(data):
    """
    Parse one C{/proc/PID/stat} line into C{(state, ppid, cpu_ticks, rss_pages)}.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last closing parenthesis.
    """
    rest = data[data.rindex(")") + 2:].split()
    state, ppid = rest[0], int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    rss_pages = int(rest[21])
    return state, ppid, utime + stime, rss_pages


def machine_cpu(proc="/proc"):
    """
    C{(busy_seconds, all_seconds)} summed over every CPU since boot, from
    the first line of C{/proc/stat}: busy is everything but idle and iowait.
    """
    with open(f"{proc}/stat") as f:
        return parse_cpu_line(f.readline())


def parse_cpu_line(line):
    """
    Parse the C{cpu ...} line of C{/proc/stat} into C{(busy, all)} seconds.
    """
    ticks = [int(x) for x in line.split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks[:8])
    return (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS


def tree_cpu(pid, proc="/proc"):
    """
    CPU seconds used so far by C{pid} and its descendants.
    """
    return sum(cpu for cpu, _ in tree_usage(pid, proc).values())


def tree_usage(pid, proc="/proc"):
    """
    C{{pid: (cpu_seconds, rss_kb)}} for C{pid} and all its descendants.
    """
    usage = {}
    for p in [pid, *children_of(pid, proc)]:
        stat = _read_stat(p, proc)
        if stat is not None and stat[0] != "Z":
            usage[p] = (stat[2] / _CLOCK_TICKS, stat[3] * _PAGE_KB)
    return usage


class UsageSampler:
    """
    Samples the RSS of a process tree on a thread while a load runs, and the
    CPU it used between L{start} and L{stop}.

    @ivar peak_rss_kb: the highest sum of RSS over the tree seen in one sample.
    @ivar first_rss_kb: the sum of RSS in the first sample (growth = peak - first).
    @ivar peak_by_pid: the highest RSS seen for each process.
    @ivar cpu_seconds: CPU (user + system) the tree used during the sampling.
    @ivar cpu_by_pid: the same for each process of the tree.
    """

    def __init__(self, pid, interval=0.25):
        self.pid = pid
        self.interval = interval
        self.peak_rss_kb = 0
        self.first_rss_kb = None
        self.peak_by_pid = {}
        self.cpu_seconds = 0.0
        self.cpu_by_pid = {}
        self._stop = threading.Event()
        self._thread = None
        self._cpu_start = {}
        self._cpu_last = {}

    def _sample(self):
        usage = tree_usage(self.pid)
        total = 0
        for p, (cpu, rss) in usage.items():
            total += rss
            self.peak_by_pid[p] = max(self.peak_by_pid.get(p, 0), rss)
            self._cpu_start.setdefault(p, cpu)
            self._cpu_last[p] = cpu
        self.peak_rss_kb = max(self.peak_rss_kb, total)
        if self.first_rss_kb is None:
            self.first_rss_kb = total

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self):
        """
        Take a first sample and keep sampling until L{stop}.
        """
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        """
        Take a last sample and stop; fills L{cpu_seconds} and L{cpu_by_pid}.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        self.cpu_by_pid = {p: self._cpu_last[p] - self._cpu_start[p] for p in self._cpu_last}
        self.cpu_seconds = sum(self.cpu_by_pid.values())


class Supervisor:
    """
    Starts processes and guarantees they are stopped: L{stop_all} (run in a
    C{finally}) ends each one by pid, its descendants too.
    """

    def __init__(self, log_dir, say=print):
        self.log_dir = log_dir
        self.say = say
        self._running = []

    def start(self, name, argv, env=None, cwd=None):
        """
        Start C{argv} in its own session, its output going to C{NAME.log} in
        the log directory, and return the L{subprocess.Popen}.
        """
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log = open(log_path, "ab")
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        process.bench_name = name
        process.bench_log = log_path
        self._running.append(process)
        return process

    def log_tail(self, process, lines=6):
        """
        The last lines of a process's output, for error messages.
        """
        try:
            with open(process.bench_log, "rb") as f:
                text = f.read()[-8000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def stop(self, process, timeout=10.0, sig=signal.SIGTERM):
        """
        Stop C{process} and its descendants: C{sig} to the process, a bounded
        wait, then SIGKILL to whatever of the tree is left.
        """
        if process in self._running:
            self._running.remove(process)
        if process.poll() is not None:
            return
        tree = children_of(process.pid)
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.say(f"  {process.bench_name} (pid {process.pid}) ignored {sig.name}; killing it")
            _kill(process.pid)
            process.wait(5)
        deadline = time.monotonic() + timeout
        for pid in tree:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                _kill(pid)

    def stop_all(self):
        """
        Stop everything still running, most recently started first.
        """
        while self._running:
            self.stop(self._running[-1])


def _alive(pid):
    stat = _read_stat(pid)
    return stat is not None and stat[0] != "Z"


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def http_get(port, path, tls=False, headers=None, timeout=2.0):
    """
    One GET to 127.0.0.1:C{port}; returns C{(status, body)}.
    """
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(process, port, path, deadline, tls=False, headers=None, min_children=0,
               supervisor=None, clock=time.monotonic, sleep=time.sleep, get=None, children=None):
    """
    Poll until C{GET path} on C{port} answers 2xx and the process has at least
    C{min_children} descendants, for at most C{deadline} seconds.

    @raise NotReady: with the reason (and the process's last output lines) if
        it exits first or the deadline passes.
    """
    get = get or http_get
    children = children or children_of
    end = clock() + deadline
    last = "no answer"
    while True:
        code = process.poll()
        if code is not None:
            tail = supervisor.log_tail(process) if supervisor else []
            raise NotReady(f"exited with status {code}" + (": " + " | ".join(tail) if tail else ""))
        try:
            status, _ = get(port, path, tls=tls, headers=headers, timeout=1.0)
            if 200 <= status < 300:
                if len(children(process.pid)) >= min_children:
                    return
                last = f"answers, but fewer than {min_children} worker processes yet"
            else:
                last = f"answers {status} to GET {path}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        if clock() >= end:
            tail = supervisor.log_tail(process) if supervisor else []
            raise NotReady(f"not ready after {deadline:g}s ({last})" + (": " + " | ".join(tail) if tail else ""))
        sleep(0.1)
