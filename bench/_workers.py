"""
Each gatelayer worker's share of one cell: the requests and connections it
served during the measured load (the difference of two admin C{/status}
documents taken while the gateway is idle) and the CPU its process used
then, divided into CPU per request per worker.

A worker's counters reach the master in its heartbeat, about once a second:
a C{/status} taken right after a load can miss the last second of it. So
each snapshot waits until every worker's last heartbeat arrived after the
load ended.
"""

import time

from bench._targets import admin_status, worker_spread

HEARTBEAT_WAIT = 3.0
"""Seconds to wait at most for a heartbeat sent after a load (workers send one a second)."""

_MARGIN = 0.05
"""
A heartbeat must be this much younger than the end of the load: one queued
behind the load's last answers is stale.
"""


def fresh(status, idle_seconds, margin=_MARGIN):
    """
    Whether every worker of C{status} sent a heartbeat that the master got
    after the gateway went idle C{idle_seconds} ago (C{last_heartbeat} is
    the age of the last one, in seconds, when the master answered).
    """
    if not isinstance(status, dict) or not isinstance(status.get("workers"), list) or not status["workers"]:
        return False
    for worker in status["workers"]:
        if not isinstance(worker, dict):
            return False
        age = worker.get("last_heartbeat")
        if not isinstance(age, (int, float)) or age + margin >= idle_seconds:
            return False
    return True


def fresh_status(get, idle_since, deadline=HEARTBEAT_WAIT, clock=time.monotonic, sleep=time.sleep):
    """
    Poll C{get()} (the C{/status} document or L{None}) until L{fresh} for a
    gateway idle since C{idle_since} (a C{clock} time), for at most
    C{deadline} seconds; L{None} if it never is.
    """
    end = clock() + deadline
    while True:
        status = get()
        if fresh(status, clock() - idle_since):
            return status
        if clock() >= end:
            return None
        sleep(0.1)


def worker_deltas(before, after, cpu_by_pid):
    """
    C{[{"pid", "requests", "connections", "cpu_s", "cpu_us_per_request"}]}:
    what each worker of C{after} served since C{before} (two C{/status}
    documents) and the CPU seconds C{cpu_by_pid} gives its pid. A worker
    missing from C{before} (respawned in between) is left out: its counters
    started again from zero. CPU figures are L{None} when unknown or when
    the worker served no request.
    """
    start = dict(worker_spread(before))
    out = []
    for pid, counts in worker_spread(after):
        if pid not in start:
            continue
        first = start[pid]
        entry = {"pid": pid}
        for key in ("requests", "connections"):
            entry[key] = counts[key] - first[key] if key in counts and key in first else None
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
    once the warm-up is over, L{after} once the measured load is over.
    """

    def __init__(self, started, get=None, clock=time.monotonic, sleep=time.sleep):
        self._get = get or (lambda: admin_status(started))
        self._clock = clock
        self._sleep = sleep
        self._before = None

    def _fresh(self):
        return fresh_status(self._get, self._clock(), clock=self._clock, sleep=self._sleep)

    def before(self):
        """
        Take the C{/status} the measured load starts from (the gateway is
        idle: the warm-up is over).
        """
        self._before = self._fresh()

    def after(self, cpu_by_pid):
        """
        The L{worker_deltas} of the measured load, or L{None} when either
        C{/status} could not be had.
        """
        if self._before is None:
            return None
        after = self._fresh()
        if after is None:
            return None
        return worker_deltas(self._before, after, cpu_by_pid)
