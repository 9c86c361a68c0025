"""
The master process: binds the listeners, runs and supervises the workers,
and hosts what must be shared between them.

L{MasterService} is a tree of named services, started in this order and
stopped in the reverse one, each waiting for the one after it:

 - C{listeners} (L{gatelayer.process.endpoints.ListenersService}): the
   sockets every worker adopts; closed last.
 - the master parts given to it, each an
   L{gatelayer.service.IMasterPart} (C{tls}, C{tickets}, C{health},
   C{ratelimit}, built by L{gatelayer.process.wiring.master_parts}).
 - C{admin} (L{gatelayer.process.endpoints.AdminService}).
 - C{workers} (L{gatelayer.process.supervision.WorkersService}): spawned
   last, drained first.
"""

import hashlib
import json
import os
import signal

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from gatelayer.observe.gatewaylog import worker_event
from gatelayer.process.control import ControlProtocol, ReopenLogs
from gatelayer.process.endpoints import AdminService, ListenersService
from gatelayer.process.pipes import PipeTransport
from gatelayer.process.reload import ConfigReloader
from gatelayer.service import OrderedMultiService
from gatelayer.process.sockets import bind_admin, bind_listeners
from gatelayer.routing import route_table_view
# The supervision settings and WorkerRecord were defined here before
# supervision.py existed; they stay importable from this module.
from gatelayer.process.supervision import (
    BACKOFF_MAX, BACKOFF_START, CONTROL_IN, CONTROL_OUT, CRASH_LOOP, FIRST_SOCKET_FD, KILL_GRACE,
    STABLE_AFTER, STARTUP_GRACE, WorkerRecord, WorkersService,
)


class WorkerProcessProtocol(ProcessProtocol):
    """
    The master's end of one worker process: feeds it the config on stdin,
    runs the AMP control channel over fds 3/4 and relays its log lines.

    @ivar master: the L{WorkersService} that spawned it.
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
                worker_event(self.log, self.record.slot, self.record.pid, line)

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


class MasterService(OrderedMultiService):
    """
    The master of one configuration: a tree of named services (see the
    module docstring), the SIGHUP handler, the ready file and C{/status}.
    """

    log = Logger()
    #: What each worker process is run with (see L{WorkersService.spawn}).
    worker_protocol = WorkerProcessProtocol

    def __init__(self, config, config_text, reactor, spawner, parts=(), bind=bind_listeners,
                 ready_file=None, install_signals=False, admin_factory=None,
                 bind_admin=bind_admin, raise_open_files=None, reloader=None):
        """
        @param parts: the master parts (L{gatelayer.service.IMasterPart}
            providers); more can be added with L{add_parts} before start.
        @param bind: binds the listeners (L{bind_listeners}'s signature).
        @param admin_factory: builds the admin site from this master.
        @param bind_admin: binds the admin socket (L{bind_admin}'s
            signature).
        @param raise_open_files: a function returning an
            L{gatelayer.process.rlimits.OpenFilesLimit} after raising the
            open-file limit (L{None}: leave the limit alone).
        @param reloader: makes the L{ConfigReloader} of this master (by
            default one checking C{config.path} like C{--check}).
        """
        super().__init__()
        self.config = config
        self.config_text = config_text
        self.reactor = reactor
        self.spawner = spawner
        self.ready_file = ready_file
        self.install_signals = install_signals
        self.started = None
        self._previous_hup = None
        self._previous_usr1 = None
        self.listeners = ListenersService(config, bind, raise_open_files)
        self.admin = AdminService(config, reactor, self, admin_factory, bind_admin)
        self.supervisor = WorkersService(
            config, config_text, reactor, spawner, sockets=lambda: self.listeners.sockets,
            parts=self.parts, worker_protocol=self.worker_protocol, on_ready=self._write_ready)
        self.listeners.setServiceParent(self)
        self.admin.setServiceParent(self)
        self.supervisor.setServiceParent(self)
        self.add_parts(parts)
        digest = hashlib.sha256(config_text.encode("utf-8")).hexdigest()[:12]
        self.reloader = (reloader or ConfigReloader)(self, reactor, digest=digest)

    def take_config(self, checked):
        """
        A reload: C{checked} (a L{gatelayer.process.checking.CheckedConfig})
        becomes the configuration of the master and of every worker spawned
        from now on.
        """
        self.config = self.listeners.config = self.admin.config = checked.config
        self.config_text = checked.text
        self.supervisor.config, self.supervisor.config_text = checked.config, checked.text

    def add_parts(self, parts):
        """
        Add master parts to the tree, after the listeners and before the
        admin endpoint and the workers (which use them).
        """
        for part in parts:
            part.setServiceParent(self)
        for last in (self.admin, self.supervisor):
            self.services.remove(last)
            self.services.append(last)

    def parts(self):
        """
        Every child service, in start order: each is an
        L{gatelayer.service.IMasterPart}.
        """
        return list(self)

    # Views of the children, for the admin pages and the tests.

    @property
    def workers(self):
        """
        Slot number to L{WorkerRecord}.
        """
        return self.supervisor.workers

    @property
    def stopping(self):
        """
        Whether the workers are being drained.
        """
        return self.supervisor.stopping

    @property
    def sockets(self):
        """
        The bound L{gatelayer.process.sockets.SocketSet}, or L{None}.
        """
        return self.listeners.sockets

    @property
    def open_files(self):
        """
        The master's L{gatelayer.process.rlimits.OpenFilesLimit}, or L{None}.
        """
        return self.listeners.open_files

    def controls(self):
        """
        The control channels of every connected worker.
        """
        return self.supervisor.controls()

    # -- lifecycle ---------------------------------------------------------

    def prepare(self):
        """
        Raise the open-file limit and bind every listener and the admin
        endpoint. The entry point calls it before daemonizing, so an
        address in use is reported on the terminal; it is idempotent.

        @raise gatelayer.process.sockets.BindError: naming what could not
            be bound (nothing stays bound).
        """
        self.listeners.bind()
        try:
            self.admin.bind()
        except BaseException:
            self.listeners.close()
            self.listeners.sockets = None
            raise

    def privilegedStartService(self):
        """
        Bind every listener (before privileges are dropped, before any worker).
        """
        self.prepare()
        for name, addresses in self.listeners.addresses().items():
            for host, port in addresses:
                self.log.info("listener {name} bound to {host}:{port}", name=name, host=host, port=port)
        super().privilegedStartService()

    def startService(self):
        """
        Start the children in order: the parts, the admin endpoint, then
        the workers.
        """
        if self.sockets is None:
            self.privilegedStartService()
        self.started = self.reactor.seconds()
        super().startService()
        if self.install_signals:
            self._previous_hup = signal.signal(signal.SIGHUP, self._on_sighup)
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_sigusr1)

    def _on_sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def _on_sigusr1(self, signum, frame):
        # twistd's own handler (when it logs to a file) rotates twistd.log.
        if callable(self._previous_usr1):
            self._previous_usr1(signum, frame)
        self.reactor.callFromThread(self.reopen_logs)

    def reopen_logs(self):
        """
        SIGUSR1: tell every worker to reopen its access log (a rotation
        renamed the file). Fires when every worker answered.
        """
        self.log.info("SIGUSR1: reopening the access logs")
        return DeferredList([control.callRemote(ReopenLogs) for control in self.controls()],
                            consumeErrors=True)

    def _write_ready(self):
        if not self.ready_file:
            return
        listeners = {k: [list(a) for a in v] for k, v in self.listeners.addresses().items()}
        data = {"pid": os.getpid(), "listeners": listeners, "admin": self.admin.address()}
        tmp = self.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.ready_file)

    def reload(self, trigger="SIGHUP"):
        """
        SIGHUP (or C{POST /reload}): re-read and check the configuration
        file and everything it names, and apply it all or nothing (see
        L{gatelayer.process.reload}).

        @return: a Deferred firing with the
            L{gatelayer.process.reload.ReloadOutcome}.
        """
        self.log.info("{trigger}: reloading {path}", trigger=trigger, path=self.config.path)
        return self.reloader.reload(trigger).addCallback(self.reload_finished)

    def reload_finished(self, outcome):
        """
        Every reload attempt's outcome passes here once (counted, reported).
        """
        if not outcome.busy:
            for part in self.parts():
                part.reloaded(outcome)
        return outcome

    def stopService(self):
        """
        Drain: the workers stop accepting and finish their in-flight
        requests within C{drain_timeout} (stragglers are killed), then the
        other children stop in reverse order. Fires when all have.
        """
        if self.install_signals and self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        if self.install_signals and self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)

        def finished(_):
            # twistd re-raises the stopping signal at exit, so a SIGTERM'd
            # master would end "killed by SIGTERM". A completed drain is a
            # clean shutdown: exit status 0, as process supervisors expect.
            if getattr(self.reactor, "_exitSignal", None) is not None:
                self.reactor._exitSignal = None
        return super().stopService().addCallback(finished)

    # -- status ------------------------------------------------------------

    def status(self):
        """
        The admin C{/status} document (a Deferred: parts may ask the
        workers).
        """
        now = self.reactor.seconds()
        gateway = self.config.gateway
        open_files = self.open_files
        data = {
            "master": {
                "pid": os.getpid(), "uptime": round(now - (self.started or now), 3),
                "open_files": open_files.as_dict() if open_files is not None else None,
            },
            "limits": {
                "max_connections": gateway.max_connections,
                "max_connections_per_ip": gateway.max_connections_per_ip,
                "heartbeat_timeout": gateway.heartbeat_timeout,
            },
            "routes": route_table_view(self.config.routes),
            "reload": self.reloader.status(),
        }
        pending = []
        for part in self.parts():
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
