"""
The master process: binds the listeners, runs and supervises the workers,
and hosts what must be shared between them.

How the workers are spawned, respawned and watched is in
L{gatelayer.process.supervision}; L{MasterService} runs that as a mixin and
adds the service around it: binding, start and drain, the control channel
to each worker, reloads and C{/status}.
"""

import json
import os
import signal

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatelayer.process.control import Begin, ControlProtocol, Drain, Heartbeat, heartbeat_interval
from gatelayer.process.pipes import PipeTransport
from gatelayer.process.sockets import bind_admin, bind_listeners
# The supervision settings and WorkerRecord were defined here before
# supervision.py existed; they stay importable from this module.
from gatelayer.process.supervision import (
    BACKOFF_MAX, BACKOFF_START, CONTROL_IN, CONTROL_OUT, CRASH_LOOP, FIRST_SOCKET_FD, KILL_GRACE,
    STABLE_AFTER, STARTUP_GRACE, WorkerRecord, WorkerSupervisor, signal_process,
)


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


class MasterService(WorkerSupervisor, service.Service):
    """
    Supervises the workers of one configuration.

    @ivar parts: master-side subsystems (health checks, the embedded
        rate-limit store, certificate reloads) built by
        L{gatelayer.process.wiring.master_parts}; each may have
        C{register(control, record)}, C{start()}, C{stop()}, C{status()},
        C{reload()}.
    """

    log = Logger()
    #: What each worker process is run with (see L{WorkerSupervisor.spawn}).
    worker_protocol = WorkerProcessProtocol

    def __init__(self, config, config_text, reactor, spawner, parts=(), bind=bind_listeners,
                 ready_file=None, install_signals=False, admin_factory=None,
                 bind_admin=bind_admin, raise_open_files=None):
        """
        @param bind: binds the listeners (L{bind_listeners}'s signature).
        @param bind_admin: binds the admin socket (L{bind_admin}'s
            signature).
        @param raise_open_files: a function returning an
            L{gatelayer.process.rlimits.OpenFilesLimit} after raising the
            open-file limit (L{None}: leave the limit alone).
        """
        self.config = config
        self.config_text = config_text
        self.reactor = reactor
        self.spawner = spawner
        self.parts = list(parts)
        self._bind = bind
        self.ready_file = ready_file
        self.install_signals = install_signals
        self.admin_factory = admin_factory
        self._bind_admin = bind_admin
        self._raise_open_files = raise_open_files
        self.open_files = None
        self.sockets = None
        self.admin_socket = None
        self.admin_port = None
        self._watchdog = None
        self._last_check = None
        self.workers = {}
        self.stopping = False
        self.started = None
        self._ready_written = False
        self._previous_hup = None

    # -- lifecycle ---------------------------------------------------------

    def prepare(self):
        """
        Raise the open-file limit and bind every listener and the admin
        endpoint. The entry point calls it before daemonizing, so an
        address in use is reported on the terminal; it is idempotent.

        @raise gatelayer.process.sockets.BindError: naming what could not
            be bound (nothing stays bound).
        """
        gateway = self.config.gateway
        if self.open_files is None and self._raise_open_files is not None:
            self.open_files = limit = self._raise_open_files()
            if limit.error:
                self.log.warn("open-file limit stays at {soft} ({error})", soft=limit.soft,
                              error=limit.error)
            elif limit.previous != limit.soft:
                self.log.info("open-file limit raised from {previous} to {soft}",
                              previous=limit.previous, soft=limit.soft)
            if limit.soft is not None and gateway.max_connections > limit.soft:
                self.log.warn(
                    "[gateway] max_connections ({max}) is above the open-file limit ({soft}): "
                    "workers will run out of file descriptors first (a proxied connection "
                    "uses two); raise the hard limit (ulimit -n, LimitNOFILE=)",
                    max=gateway.max_connections, soft=limit.soft)
        if self.sockets is None:
            self.sockets = self._bind(self.config.listeners, gateway.workers)
        if gateway.admin is not None and self.admin_factory is not None and self.admin_socket is None:
            try:
                self.admin_socket = self._bind_admin(*gateway.admin)
            except BaseException:
                self.sockets.close()
                self.sockets = None
                raise

    def privilegedStartService(self):
        """
        Bind every listener (before privileges are dropped, before any worker).
        """
        self.prepare()
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
        if self.admin_socket is not None:
            sock, self.admin_socket = self.admin_socket, None
            self.admin_port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, self.admin_factory(self))
            sock.close()
            address = self.admin_port.getHost()
            self.log.info("admin endpoint on {host}:{port}", host=address.host, port=address.port)
        for slot in range(self.config.gateway.workers):
            self.workers[slot] = WorkerRecord(slot)
            self.spawn(self.workers[slot])
        timeout = self.config.gateway.heartbeat_timeout
        if timeout > 0:
            self._watchdog = LoopingCall(self.check_heartbeats)
            self._watchdog.clock = self.reactor
            self._watchdog.start(heartbeat_interval(timeout), now=False)
        if self.install_signals:
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def register_responders(self, control, record):
        """
        Answer a worker's control commands.
        """
        def heartbeat(pid, connections, requests, active, open_files=None, paused=None,
                      refused_full=None, refused_per_ip=None, accept_errors=None, unanswered=None):
            record.last_heartbeat = self.reactor.seconds()
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
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
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
                signal_process(record.process, "TERM")
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
            if self.admin_socket is not None:
                self.admin_socket.close()
                self.admin_socket = None
            if self.admin_port is not None:
                return self.admin_port.stopListening()
        done = DeferredList(waits + [d for d in stopping_parts if isinstance(d, Deferred)])
        done.addCallback(finished)
        return done

    # -- status ------------------------------------------------------------

    def status(self):
        """
        The admin C{/status} document (a Deferred: parts may ask the
        workers).
        """
        now = self.reactor.seconds()
        gateway = self.config.gateway
        data = {
            "master": {
                "pid": os.getpid(), "uptime": round(now - (self.started or now), 3),
                "open_files": self.open_files.as_dict() if self.open_files is not None else None,
            },
            "limits": {
                "max_connections": gateway.max_connections,
                "max_connections_per_ip": gateway.max_connections_per_ip,
                "heartbeat_timeout": gateway.heartbeat_timeout,
            },
            "workers": [
                {
                    "slot": r.slot, "pid": r.pid, "state": r.state(),
                    "uptime": round(now - r.started, 3) if r.started and r.process else None,
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


__all__ = [
    "MasterService", "WorkerProcessProtocol", "WorkerRecord",
    "BACKOFF_MAX", "BACKOFF_START", "CONTROL_IN", "CONTROL_OUT", "CRASH_LOOP", "FIRST_SOCKET_FD",
    "KILL_GRACE", "STABLE_AFTER", "STARTUP_GRACE",
]
