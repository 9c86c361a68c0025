"""
The master process: binds the listeners, runs and supervises the workers,
and hosts what must be shared between them.
"""

import json
import os
import signal

from attrs import define, field
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from gatelayer.process.control import Begin, ControlProtocol, Drain, Heartbeat
from gatelayer.process.pipes import PipeTransport
from gatelayer.process.sockets import bind_listeners

CONTROL_IN = 3
CONTROL_OUT = 4
FIRST_SOCKET_FD = 5

BACKOFF_START = 0.1
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0
CRASH_LOOP = 5
KILL_GRACE = 2.0


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


class WorkerProcessProtocol(ProcessProtocol):
    """
    The master's end of one worker process: feeds it the config on stdin,
    runs the AMP control channel over fds 3/4 and relays its log lines.
    """

    log = Logger()

    def __init__(self, master, record, config_text):
        self.master = master
        self.record = record
        self.config_text = config_text
        self.control = None
        self._partial = {1: b"", 2: b""}

    def connectionMade(self):
        """
        Send the config snapshot and open the control channel.
        """
        self.transport.writeToChild(0, self.config_text.encode("utf-8"))
        self.transport.closeChildFD(0)
        self.control = ControlProtocol()
        self.master.register_responders(self.control, self.record)
        self.control.makeConnection(PipeTransport(self.transport, CONTROL_IN))
        self.record.control = self.control
        self.master.worker_connected(self.record)

    def childDataReceived(self, childFD, data):
        """
        Control bytes go to AMP; output lines to the master's log.
        """
        if childFD == CONTROL_OUT:
            self.control.dataReceived(data)
            return
        buffered = self._partial.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._partial[childFD] = rest
        for line in lines:
            if line:
                self.log.info("worker {slot} [{pid}] {line}", slot=self.record.slot,
                              pid=self.record.pid, line=line.decode("utf-8", "replace"))

    def childConnectionLost(self, childFD):
        """
        The control pipe from the worker closed.
        """
        if childFD == CONTROL_OUT and self.control is not None and self.control.connected:
            self.control.connectionLost(ProcessDone(0))

    def processEnded(self, reason):
        """
        Tell the master the worker is gone.
        """
        if self.control is not None and self.control.connected:
            self.control.connectionLost(reason)
        self.master.worker_exited(self.record, reason)


class MasterService(service.Service):
    """
    Supervises the workers of one configuration.

    @ivar parts: master-side subsystems (health checks, the embedded
        rate-limit store, certificate reloads) built by
        L{gatelayer.process.wiring.master_parts}; each may have
        C{register(control, record)}, C{start()}, C{stop()}, C{status()},
        C{reload()}.
    """

    log = Logger()

    def __init__(self, config, config_text, reactor, spawner, parts=(), bind=bind_listeners,
                 ready_file=None, install_signals=False, admin_factory=None):
        self.config = config
        self.config_text = config_text
        self.reactor = reactor
        self.spawner = spawner
        self.parts = list(parts)
        self._bind = bind
        self.ready_file = ready_file
        self.install_signals = install_signals
        self.admin_factory = admin_factory
        self.sockets = None
        self.admin_port = None
        self.workers = {}
        self.stopping = False
        self.started = None
        self._ready_written = False
        self._previous_hup = None

    # -- lifecycle ---------------------------------------------------------

    def privilegedStartService(self):
        """
        Bind every listener (before privileges are dropped, before any worker).
        """
        if self.sockets is None:
            self.sockets = self._bind(self.config.listeners, self.config.gateway.workers)
        for name, addresses in self.sockets.addresses().items():
            for host, port in addresses:
                self.log.info("listener {name} bound to {host}:{port}", name=name, host=host, port=port)
        super().privilegedStartService()

    def startService(self):
        """
        Start the master-side parts, the admin endpoint and the workers.
        """
        if self.sockets is None:
            self.privilegedStartService()
        super().startService()
        self.started = self.reactor.seconds()
        for part in self.parts:
            if hasattr(part, "start"):
                part.start()
        admin = self.config.gateway.admin
        if admin is not None and self.admin_factory is not None:
            self.admin_port = self.reactor.listenTCP(admin[1], self.admin_factory(self), interface=admin[0])
            address = self.admin_port.getHost()
            self.log.info("admin endpoint on {host}:{port}", host=address.host, port=address.port)
        for slot in range(self.config.gateway.workers):
            self.workers[slot] = WorkerRecord(slot)
            self.spawn(self.workers[slot])
        if self.install_signals:
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def spawn(self, record):
        """
        Start the worker process of C{record}'s slot.
        """
        record.respawn_call = None
        sockets = self.sockets.for_slot(record.slot)
        child_fds = {0: "w", 1: "r", 2: "r", CONTROL_IN: "w", CONTROL_OUT: "r"}
        args = ["--config", self.config.path, "--slot", str(record.slot)]
        for offset, bound in enumerate(sockets):
            fd = FIRST_SOCKET_FD + offset
            child_fds[fd] = bound.sock.fileno()
            args += ["--socket", f"{bound.listener.name}:{fd}:{bound.family_name}"]
        protocol = WorkerProcessProtocol(self, record, self.config_text)
        record.process = self.spawner.spawn(protocol, args, child_fds)
        record.pid = getattr(record.process, "pid", None)
        record.started = self.reactor.seconds()
        record.ready = False
        record.connections = record.requests = record.active = 0
        self.log.info("worker {slot} started, pid {pid}", slot=record.slot, pid=record.pid)

    def register_responders(self, control, record):
        """
        Answer a worker's control commands.
        """
        def heartbeat(pid, connections, requests, active):
            record.last_heartbeat = self.reactor.seconds()
            record.connections, record.requests, record.active = connections, requests, active
            if not record.ready:
                record.ready = True
                self._check_ready()
            return {}
        control.register(Heartbeat, heartbeat)
        for part in self.parts:
            if hasattr(part, "register"):
                part.register(control, record)

    def worker_connected(self, record):
        """
        Send a new worker the current shared state (health verdicts,
        certificates), then tell it to begin accepting.
        """
        control = record.control
        syncs = [part.sync(control) for part in self.parts if hasattr(part, "sync")]

        def begin(_):
            if control.connected:
                return control.callRemote(Begin)
        def failed(failure):
            # A worker that died during start-up is handled by worker_exited.
            if control.connected:
                self.log.failure("worker {slot}: start-up sync failed", failure, slot=record.slot)
        DeferredList([d for d in syncs if isinstance(d, Deferred)], fireOnOneErrback=True, consumeErrors=True).addCallback(begin).addErrback(failed)

    def worker_exited(self, record, reason):
        """
        A worker process ended: respawn it with backoff unless stopping.
        """
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        lived = self.reactor.seconds() - (record.started or self.reactor.seconds())
        record.process = None
        record.control = None
        waiters, record.exited = record.exited, []
        for waiter in waiters:
            waiter.callback(None)
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

    def _check_ready(self):
        if self._ready_written or not all(r.ready for r in self.workers.values()):
            return
        self._ready_written = True
        self.log.info("all {count} workers serving", count=len(self.workers))
        if self.ready_file:
            data = {
                "pid": os.getpid(),
                "listeners": {k: [list(a) for a in v] for k, v in self.sockets.addresses().items()},
                "admin": None,
            }
            if self.admin_port is not None:
                address = self.admin_port.getHost()
                data["admin"] = [address.host, address.port]
            tmp = self.ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.ready_file)

    def reload(self):
        """
        SIGHUP: ask every part that can reload (certificates) to do so.
        """
        self.log.info("SIGHUP: reloading")
        results = []
        for part in self.parts:
            if hasattr(part, "reload"):
                results.append(part.reload(self))
        return DeferredList([r for r in results if isinstance(r, Deferred)])

    def controls(self):
        """
        The control channels of every connected worker.
        """
        return [r.control for r in self.workers.values() if r.control is not None and r.control.connected]

    def stopService(self):
        """
        Drain: every worker stops accepting and finishes its in-flight
        requests within C{drain_timeout}; stragglers are killed. Fires when
        all workers have exited.
        """
        self.stopping = True
        super().stopService()
        if self.install_signals and self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        timeout = self.config.gateway.drain_timeout
        waits = []
        for record in self.workers.values():
            if record.respawn_call is not None and record.respawn_call.active():
                record.respawn_call.cancel()
            if record.process is None:
                continue
            exited = Deferred()
            record.exited.append(exited)
            waits.append(exited)
            if record.control is not None and record.control.connected:
                record.control.callRemote(Drain, timeout=timeout).addErrback(lambda f: None)
            else:
                _signal(record.process, "TERM")
        kill_call = self.reactor.callLater(timeout + KILL_GRACE, self._kill_all)
        stopping_parts = [part.stop() for part in self.parts if hasattr(part, "stop")]

        def finished(_):
            if kill_call.active():
                kill_call.cancel()
            # twistd re-raises the stopping signal at exit, so a SIGTERM'd
            # master would end "killed by SIGTERM". A completed drain is a
            # clean shutdown: exit status 0, as process supervisors expect.
            if getattr(self.reactor, "_exitSignal", None) is not None:
                self.reactor._exitSignal = None
            if self.sockets is not None:
                self.sockets.close()
            if self.admin_port is not None:
                return self.admin_port.stopListening()
        done = DeferredList(waits + [d for d in stopping_parts if isinstance(d, Deferred)])
        done.addCallback(finished)
        return done

    def _kill_all(self):
        for record in self.workers.values():
            if record.process is not None:
                self.log.warn("worker {slot} did not drain in time: killing it", slot=record.slot)
                _signal(record.process, "KILL")

    # -- status ------------------------------------------------------------

    def status(self):
        """
        The admin C{/status} document (a Deferred: parts may ask the
        workers).
        """
        now = self.reactor.seconds()
        data = {
            "master": {"pid": os.getpid(), "uptime": round(now - (self.started or now), 3)},
            "workers": [
                {
                    "slot": r.slot, "pid": r.pid,
                    "uptime": round(now - r.started, 3) if r.started and r.process else None,
                    "alive": r.process is not None, "restarts": r.restarts,
                    "connections": r.connections, "requests": r.requests, "active": r.active,
                }
                for r in sorted(self.workers.values(), key=lambda r: r.slot)
            ],
            "listeners": {k: [f"{h}:{p}" for h, p in v] for k, v in (self.sockets.addresses() if self.sockets else {}).items()},
        }
        pending = []
        for part in self.parts:
            if hasattr(part, "status"):
                result = part.status()
                if isinstance(result, Deferred):
                    pending.append(result.addCallback(data.update))
                else:
                    data.update(result)
        return DeferredList(pending, consumeErrors=True).addCallback(lambda _: data)


def _signal(process, name):
    try:
        process.signalProcess(name)
    except Exception:
        pass


__all__ = ["MasterService", "WorkerProcessProtocol", "WorkerRecord"]
