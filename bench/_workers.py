"""
Each gatelayer worker's share of one cell: the requests it served during
the measured load (the difference of two admin C{/status} documents taken
while the gateway is idle), the connections it held open during the load
(a C{/status} taken while the load runs: the counter is a gauge), and the
CPU its process used then, divided into CPU per request per worker.

A worker's counters reach the master in its heartbeat, about once a second:
a C{/status} taken right after a load can miss the last second of it. So
each snapshot waits until every worker's last heartbeat arrived after the
moment that matters (the load's end, or its start for the open
connections).
"""

import threading
import time

from bench._targets import admin_status, worker_spread

HEARTBEAT_WAIT = 3.0
"""Seconds to wait at most for a heartbeat sent after a load (workers send one a second)."""

_MARGIN = 0.05
"""
A heartbeat must be this much younger than the moment it has to follow: one
queued behind the load's last answers is stale.
"""


def fresh(status, elapsed, margin=_MARGIN):
    """
    Whether every worker of C{status} sent a heartbeat that the master got
    less than C{elapsed} seconds ago (C{last_heartbeat} is the age of the
    last one, in seconds, when the master answered).
    """
    if not isinstance(status, dict) or not isinstance(status.get("workers"), list) or not status["workers"]:
        return False
    for worker in status["workers"]:
        if not isinstance(worker, dict):
            return False
        age = worker.get("last_heartbeat")
        if not isinstance(age, (int, float)) or age + margin >= elapsed:
            return False
    return True


def fresh_status(get, since, deadline=HEARTBEAT_WAIT, clock=time.monotonic, sleep=time.sleep, interval=0.1):
    """
    Poll C{get()} (the C{/status} document or L{None}) every C{interval}
    seconds until every worker's last heartbeat came after C{since} (a
    C{clock} time), for at most C{deadline} seconds; L{None} if that never
    happens.
    """
    end = clock() + deadline
    while True:
        status = get()
        if fresh(status, clock() - since):
            return status
        if clock() >= end:
            return None
        sleep(interval)


def worker_deltas(before, after, cpu_by_pid, during=None):
    """
    C{[{"pid", "requests", "connections", "cpu_s", "cpu_us_per_request"}]}:
    the requests each worker of C{after} served since C{before} (two
    C{/status} documents), the connections it held open in C{during} (one
    taken while the load ran; L{None} without it) and the CPU seconds
    C{cpu_by_pid} gives its pid. A worker missing from C{before} (respawned
    in between) is left out: its counters started again from zero. CPU
    figures are L{None} when unknown or when the worker served no request.
    """
    start = dict(worker_spread(before))
    held = dict(worker_spread(during))
    out = []
    for pid, counts in worker_spread(after):
        if pid not in start:
            continue
        first = start[pid]
        entry = {"pid": pid}
        entry["requests"] = counts["requests"] - first["requests"] \
            if "requests" in counts and "requests" in first else None
        entry["connections"] = held.get(pid, {}).get("connections")
        cpu = cpu_by_pid.get(pid)
        entry["cpu_s"] = round(cpu, 3) if cpu is not None else None
        requests = entry["requests"]
        entry["cpu_us_per_request"] = round(cpu / requests * 1e6, 1) if cpu is not None and requests else None
        out.append(entry)
    return out


def format_workers(connections, workers):
    """
    One line of what each worker served in a cell, for the progress output.
    """
    def part(w):
        cpu = w["cpu_us_per_request"]
        return (f"pid {w['pid']} {w['requests'] if w['requests'] is not None else '-'} req, "
                f"{w['connections'] if w['connections'] is not None else '-'} conns"
                + (f", {cpu:.0f} us/req" if cpu is not None else ""))
    return f"workers @{connections}: " + "; ".join(part(w) for w in workers)


class WorkerCounts:
    """
    The per-worker accounting of one cell of a gatelayer target: L{before}
    once the warm-up is over, L{watch} as the measured load starts, L{after}
    once it is over.
    """

    def __init__(self, started, get=None, clock=time.monotonic, sleep=time.sleep):
        self._get = get or (lambda: admin_status(started))
        self._clock = clock
        self._sleep = sleep
        self._before = None
        self._during = None
        self._thread = None

    def _fresh(self):
        return fresh_status(self._get, self._clock(), clock=self._clock, sleep=self._sleep)

    def before(self):
        """
        Take the C{/status} the measured load starts from (the gateway is
        idle: the warm-up is over).
        """
        self._before = self._fresh()

    def during(self, load_started, duration):
        """
        Take the C{/status} of the load that started at C{load_started} (a
        clock time) and lasts C{duration} seconds: the first whose
        heartbeats all came once the load's connections were open (half
        a second into the load, or a quarter of a shorter one), before the
        load's last fifth. It polls less often than the idle snapshots: the master
        answering shares the CPUs with the loaded workers.
        """
        settle = min(0.5, duration / 4)
        self._sleep(max(0.0, load_started + settle - self._clock()))
        deadline = max(0.0, load_started + duration * 0.8 - self._clock())
        self._during = fresh_status(self._get, load_started + settle, deadline, self._clock, self._sleep,
                                    interval=0.25)

    def watch(self, duration):
        """
        Call L{during} on a thread, for a load of C{duration} seconds that
        starts now.
        """
        self._thread = threading.Thread(target=self.during, args=(self._clock(), duration), daemon=True)
        self._thread.start()

    def after(self, cpu_by_pid):
        """
        The L{worker_deltas} of the measured load, or L{None} when the
        C{/status} before or after it could not be had.
        """
        if self._thread is not None:
            self._thread.join(HEARTBEAT_WAIT + 5)
        if self._before is None:
            return None
        after = self._fresh()
        if after is None:
            return None
        return worker_deltas(self._before, after, cpu_by_pid, self._during)
