"""
Worker supervision: what the master knows of each worker slot
(L{WorkerRecord}) and the master's C{workers} service that keeps every slot
served (L{WorkersService}): starting a slot's worker with its sockets on
fixed fds, respawning it with a doubling backoff when it exits or cannot be
started, the heartbeat watchdog that kills a worker which stopped answering,
and the drain at stop.

Kept apart from L{gatelayer.process.master}, which builds the tree around it
(listeners, parts, admin) and answers C{/status}, so that the supervision
policy reads in one place.
"""

import errno

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatelayer.l4.listener import heartbeat_counters
from gatelayer.observe.accesslog import STDOUT
from gatelayer.process.control import Begin, Drain, Heartbeat, heartbeat_interval
from gatelayer.service import MasterPart

#: The worker's end of the control pipe from the master.
CONTROL_IN = 3
#: The worker's end of the control pipe to the master.
CONTROL_OUT = 4
#: A worker's listening sockets are passed on this fd and the next ones.
FIRST_SOCKET_FD = 5

#: The first respawn delay in seconds; it doubles with each quick exit or
#: failed spawn, up to L{BACKOFF_MAX}.
BACKOFF_START = 0.1
BACKOFF_MAX = 30.0
#: A worker that ran this many seconds was stable: its backoff starts over.
STABLE_AFTER = 10.0
#: This many quick exits in a row are logged as a crash loop.
CRASH_LOOP = 5
#: Seconds past C{drain_timeout} before the workers still running are killed.
KILL_GRACE = 2.0
# A worker that never sent its first heartbeat gets at least this long
# (importing, reading its config) before the watchdog kills it.
STARTUP_GRACE = 10.0


@define
class WorkerRecord:
    """
    What the master knows of one worker slot.
    """

    slot: int
    process: object = None
    control: object = None
    pid: int = None
    started: float = None
    last_heartbeat: float = None
    connections: int = 0
    requests: int = 0
    active: int = 0
    restarts: int = 0
    quick_deaths: int = 0
    backoff: float = BACKOFF_START
    respawn_call: object = None
    exited: list = field(factory=list)
    ready: bool = False
    open_files: int = None
    paused: bool = False
    refused_full: int = 0
    refused_per_ip: int = 0
    accept_errors: int = 0
    unanswered: int = 0
    spawn_error: str = None
    spawn_failures: int = 0
    killed_at: float = None
    l4: dict = field(factory=dict)
    watchdog_kills: int = 0

    @property
    def serving(self):
        """
        Whether a worker runs in this slot and has reported since it started.
        """
        return self.process is not None and self.ready and self.killed_at is None

    def state(self):
        """
        A word for C{/status} and C{/healthz}: C{serving}, C{starting},
        C{unresponsive} (being killed by the watchdog), C{respawning} or
        C{spawn failed}.
        """
        if self.process is None:
            return "spawn failed" if self.spawn_error else "respawning"
        if self.killed_at is not None:
            return "unresponsive"
        return "serving" if self.ready else "starting"


class WorkersService(MasterPart):
    """
    The master's C{workers} service: one worker process per slot, spawned
    at start, respawned with backoff, watched by heartbeat and drained at
    stop (the Deferred of L{stopService} fires once every worker exited).

    @ivar workers: slot number to L{WorkerRecord}.
    @ivar stopping: whether the master is draining (no more respawns).
    """

    log = Logger()

    def __init__(self, config, config_text, reactor, spawner, sockets, parts, worker_protocol,
                 on_ready=None):
        """
        @param sockets: returns the master's bound
            L{gatelayer.process.sockets.SocketSet}.
        @param parts: returns every L{gatelayer.service.IMasterPart}
            of the master (this one included), asked to C{register} on and
            C{sync} each new worker's control channel.
        @param worker_protocol: builds a worker process's protocol from
            C{(this service, record, config_text)}.
        @param on_ready: called once when every worker has reported.
        """
        self.name = "workers"
        self.config = config
        self.config_text = config_text
        self.reactor = reactor
        self.spawner = spawner
        self._sockets = sockets
        self._parts = parts
        self.worker_protocol = worker_protocol
        self._on_ready = on_ready
        self.workers = {}
        self.stopping = False
        self._watchdog = None
        self._last_check = None
        self._ready_reported = False
        self._ready_waiters = []
        #: Records of the previous generation of workers, draining after a
        #: listener change (see gatelayer.process.generations).
        self.retired = []

    @property
    def sockets(self):
        """
        The master's bound listening sockets.
        """
        return self._sockets()

    def startService(self):
        """
        Spawn one worker per slot and start the heartbeat watchdog.
        """
        super().startService()
        for slot in range(self.config.gateway.workers):
            self.workers[slot] = WorkerRecord(slot)
            self.spawn(self.workers[slot])
        timeout = self.config.gateway.heartbeat_timeout
        if timeout > 0:
            self._watchdog = LoopingCall(self.check_heartbeats)
            self._watchdog.clock = self.reactor
            self._watchdog.start(heartbeat_interval(timeout), now=False)

    def register(self, control, record):
        """
        Answer a worker's heartbeats: its counters go into C{record}.
        """
        def heartbeat(pid, connections, requests, active, open_files=None, paused=None,
                      refused_full=None, refused_per_ip=None, accept_errors=None, unanswered=None,
                      l4=None):
            record.last_heartbeat = self.reactor.seconds()
            record.l4 = heartbeat_counters(l4)
            record.connections, record.requests, record.active = connections, requests, active
            record.open_files = open_files
            record.paused = bool(paused)
            record.refused_full, record.refused_per_ip = refused_full or 0, refused_per_ip or 0
            record.accept_errors, record.unanswered = accept_errors or 0, unanswered or 0
            if not record.ready:
                record.ready = True
                self._check_ready()
            return {}
        control.register(Heartbeat, heartbeat)

    def register_responders(self, control, record):
        """
        Let every part of the master answer a new worker's commands.
        """
        for part in self._parts():
            part.register(control, record)

    def worker_connected(self, record):
        """
        Send a new worker the current shared state (health verdicts,
        certificates), then tell it to begin accepting.
        """
        control = record.control
        syncs = [part.sync(control) for part in self._parts()]

        def begin(_):
            if control.connected:
                return control.callRemote(Begin)
        def failed(failure):
            # A worker that died during start-up is handled by worker_exited.
            if control.connected:
                self.log.failure("worker {slot}: start-up sync failed", failure, slot=record.slot)
        DeferredList([d for d in syncs if isinstance(d, Deferred)], fireOnOneErrback=True,
                     consumeErrors=True).addCallback(begin).addErrback(failed)

    def _check_ready(self):
        if self._ready_reported or not all(r.ready for r in self.workers.values()):
            return
        self._ready_reported = True
        self.log.info("all {count} workers serving", count=len(self.workers))
        if self._on_ready is not None:
            self._on_ready()
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_ready(self):
        """
        A Deferred firing once every worker slot has a worker that reported.
        """
        waiter = Deferred()
        self._ready_waiters.append(waiter)
        self._check_ready()
        return waiter

    def replace_generation(self):
        """
        Start a new worker in every slot, with the current configuration
        and sockets; the running ones become L{retired} (they are neither
        respawned nor watched any more, and are drained by the caller).

        @return: the retired records.
        """
        old = list(self.workers.values())
        self.retired.extend(old)
        self._ready_reported = False
        self.workers = {}
        for slot in range(self.config.gateway.workers):
            self.workers[slot] = WorkerRecord(slot)
            self.spawn(self.workers[slot])
        return old

    def controls(self):
        """
        The control channels of every connected worker.
        """
        return [r.control for r in self.workers.values() if r.control is not None and r.control.connected]

    def push_config(self, generation, text):
        """
        Hand every connected worker configuration C{generation}; see
        L{gatelayer.process.reconfigure.push_to_workers}.
        """
        from gatelayer.process.reconfigure import push_to_workers
        syncs = [part.sync for part in self._parts() if part is not self]
        return push_to_workers(list(self.workers.values()), generation, text, syncs,
                               self.config.gateway.drain_timeout)

    def stopService(self):
        """
        Drain: every worker stops accepting and finishes its in-flight
        requests within C{drain_timeout}; stragglers are killed. Fires when
        all workers have exited.
        """
        self.stopping = True
        super().stopService()
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        timeout = self.config.gateway.drain_timeout
        waits = [exited for exited in (drain_worker(record, timeout)
                                       for record in list(self.workers.values()) + self.retired)
                 if exited is not None]
        kill_call = self.reactor.callLater(timeout + KILL_GRACE, self._kill_all)

        def finished(_):
            if kill_call.active():
                kill_call.cancel()
        return DeferredList(waits).addCallback(finished)

    def status(self):
        """
        C{{"workers": [...]}}: each slot's state and counters for
        C{/status}.
        """
        now = self.reactor.seconds()
        return {"workers": [
            {
                "slot": r.slot, "pid": r.pid, "state": r.state(),
                "uptime": round(now - r.started, 3) if r.started and r.process else None,
                "started_at": round(r.started, 3) if r.started and r.process else None,
                "alive": r.process is not None, "restarts": r.restarts,
                "connections": r.connections, "requests": r.requests, "active": r.active,
                "last_heartbeat": (round(now - r.last_heartbeat, 3)
                                   if r.last_heartbeat is not None and r.process else None),
                "open_files": r.open_files, "accepting": not r.paused,
                "refused": {"max_connections": r.refused_full,
                            "max_connections_per_ip": r.refused_per_ip},
                "accept_errors": r.accept_errors, "unanswered": r.unanswered,
                "watchdog_kills": r.watchdog_kills,
                "spawn_error": r.spawn_error,
                **({"l4": r.l4} if r.l4 else {}),
            }
            for r in sorted(self.workers.values(), key=lambda r: r.slot)
        ]}

    def spawn(self, record):
        """
        Start the worker process of C{record}'s slot. If the process cannot
        be started (fork or pipe creation failing with EAGAIN, ENOMEM,
        EMFILE...), try again later with the doubling backoff: the slot is
        never given up.
        """
        record.respawn_call = None
        if self.stopping:
            return
        sockets = self.sockets.for_slot(record.slot)
        child_fds = {0: "w", 1: "r", 2: "r", CONTROL_IN: "w", CONTROL_OUT: "r"}
        if self.config.gateway.access_log in STDOUT:
            # The access log's lines go straight to the master's standard
            # output (whole lines per write), not through the master.
            child_fds[1] = 1
        args = ["--config", self.config.path, "--slot", str(record.slot)]
        for offset, bound in enumerate(sockets):
            fd = FIRST_SOCKET_FD + offset
            child_fds[fd] = bound.sock.fileno()
            args += ["--socket", f"{bound.listener.name}:{fd}:{bound.family_name}"]
        protocol = self.worker_protocol(self, record, self.config_text)
        record.started = self.reactor.seconds()
        record.ready = False
        record.last_heartbeat = record.killed_at = None
        record.connections = record.requests = record.active = 0
        record.paused, record.refused_full, record.refused_per_ip = False, 0, 0
        record.accept_errors = record.unanswered = 0
        try:
            process = self.spawner.spawn(protocol, args, child_fds)
        except Exception as e:
            self._spawn_failed(record, e)
            return
        record.process = process
        record.pid = getattr(process, "pid", None)
        record.spawn_error = None
        self.log.info("worker {slot} started, pid {pid}", slot=record.slot, pid=record.pid)

    def _spawn_failed(self, record, error):
        record.process = record.control = record.pid = None
        record.spawn_failures += 1
        delay = record.backoff
        record.backoff = min(record.backoff * 2, BACKOFF_MAX)
        if isinstance(error, OSError) and error.errno is not None:
            name = errno.errorcode.get(error.errno, str(error.errno))
            record.spawn_error = f"{name}: {error.strerror}"
            self.log.error(
                "worker {slot} could not be started ({error}); retrying in {delay}s "
                "(attempt {attempts})", slot=record.slot, error=record.spawn_error, delay=delay,
                attempts=record.spawn_failures)
        else:
            record.spawn_error = f"{type(error).__name__}: {error}"
            self.log.failure(
                "worker {slot} could not be started; retrying in {delay}s", slot=record.slot,
                delay=delay)
        record.respawn_call = self.reactor.callLater(delay, self.spawn, record)

    def worker_exited(self, record, reason):
        """
        A worker process ended: respawn it with backoff unless stopping.
        """
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        lived = self.reactor.seconds() - (record.started or self.reactor.seconds())
        record.process = None
        record.control = None
        retired = any(r is record for r in self.retired)
        waiters, record.exited = record.exited, []
        for waiter in waiters:
            waiter.callback(None)
        if retired:
            self.log.info("worker {slot} (pid {pid}) of the previous generation exited",
                          slot=record.slot, pid=record.pid)
            return
        if self.stopping:
            self.log.info("worker {slot} (pid {pid}) exited", slot=record.slot, pid=record.pid)
            return
        if lived < STABLE_AFTER:
            record.quick_deaths += 1
            delay = record.backoff
            record.backoff = min(record.backoff * 2, BACKOFF_MAX)
        else:
            record.quick_deaths = 0
            record.backoff = BACKOFF_START
            delay = BACKOFF_START
        record.restarts += 1
        if record.quick_deaths >= CRASH_LOOP:
            self.log.error(
                "worker {slot} is crash-looping ({count} exits within {stable}s of starting); "
                "next start in {delay}s", slot=record.slot, count=record.quick_deaths,
                stable=STABLE_AFTER, delay=delay)
        else:
            self.log.warn(
                "worker {slot} (pid {pid}) exited (code {code}, signal {signal}); respawning in {delay}s",
                slot=record.slot, pid=record.pid, code=code, signal=sig, delay=delay)
        record.respawn_call = self.reactor.callLater(delay, self.spawn, record)

    def check_heartbeats(self):
        """
        The watchdog: kill (SIGKILL) every worker that sent no heartbeat
        within C{[gateway] heartbeat_timeout}; it is then respawned like any
        worker that exits. A stopped (SIGSTOP), deadlocked or endlessly busy
        worker holds its slot's listening socket without accepting, so
        its share of new connections would wait forever.
        """
        if self.stopping:
            return
        timeout = self.config.gateway.heartbeat_timeout
        now = self.reactor.seconds()
        last, self._last_check = self._last_check, now
        interval = heartbeat_interval(timeout)
        if last is not None and now - last > 2 * interval + 0.5:
            # The master itself did not run (suspended, stopped, starved)
            # or the clock jumped: the workers' heartbeats are waiting in
            # the pipes, unread. Judge them at the next check.
            self.log.warn("heartbeat check {late:.1f}s late: the master was not running; "
                          "workers are judged at the next check", late=now - last - interval)
            return
        for record in self.workers.values():
            if record.process is None or record.started is None:
                continue
            if record.killed_at is not None:
                if now - record.killed_at < timeout:
                    continue
                since, allowed = record.killed_at, 0
            elif record.last_heartbeat is not None:
                since, allowed = record.last_heartbeat, timeout
            else:
                since, allowed = record.started, max(timeout, STARTUP_GRACE)
            silent = now - since
            if silent <= allowed:
                continue
            if record.killed_at is None:
                self.log.error(
                    "worker {slot} (pid {pid}) sent no heartbeat for {silent:.1f}s "
                    "(heartbeat_timeout {timeout}s): killing it with SIGKILL",
                    slot=record.slot, pid=record.pid, silent=now - (record.last_heartbeat or record.started),
                    timeout=timeout)
                record.watchdog_kills += 1
            else:
                self.log.error("worker {slot} (pid {pid}) still running after SIGKILL; sending it again",
                               slot=record.slot, pid=record.pid)
            record.killed_at = now
            signal_process(record.process, "KILL")

    def _kill_all(self):
        for record in list(self.workers.values()) + self.retired:
            if record.process is not None:
                self.log.warn("worker {slot} did not drain in time: killing it", slot=record.slot)
                signal_process(record.process, "KILL")


def drain_worker(record, timeout):
    """
    Tell the worker of C{record} to stop accepting and finish its requests
    within C{timeout} seconds (C{SIGTERM} when its control channel is gone);
    a pending respawn of the slot is cancelled.

    @return: a Deferred firing when the worker has exited, or L{None} when
        no worker process runs.
    """
    if record.respawn_call is not None and record.respawn_call.active():
        record.respawn_call.cancel()
    if record.process is None:
        return None
    exited = Deferred()
    record.exited.append(exited)
    if record.control is not None and record.control.connected:
        record.control.callRemote(Drain, timeout=timeout).addErrback(lambda f: None)
    else:
        signal_process(record.process, "TERM")
    return exited


def signal_process(process, name):
    """
    Send signal C{name} (C{"KILL"}, C{"TERM"}) to a worker C{process},
    ignoring the errors of one that already exited.
    """
    try:
        process.signalProcess(name)
    except Exception:
        pass


__all__ = [
    "BACKOFF_MAX", "BACKOFF_START", "CONTROL_IN", "CONTROL_OUT", "CRASH_LOOP", "FIRST_SOCKET_FD",
    "KILL_GRACE", "STABLE_AFTER", "STARTUP_GRACE", "WorkerRecord", "WorkersService",
    "drain_worker", "signal_process",
]

