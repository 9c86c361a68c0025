"""
Listener changes on reload: a new generation of workers.

A worker adopts its listening sockets once, at start, so a reload that
adds, removes or changes a listener cannot be handed to the running
workers. The master binds what is new (L{rebind}: the sockets of addresses
both configurations have are kept, so no connection waiting in their
backlog is lost), starts a new worker in every slot with the new
configuration and sockets, and once all of them serve, tells the old ones
to drain as a stop does: they stop accepting and finish their requests
within C{drain_timeout} (L{GenerationRoll}). The sockets nothing uses any
more are closed when the last old worker has exited. One old generation
drains at a time.
"""

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from gatelayer.process.sockets import BindError, BoundSocket, SocketSet
from gatelayer.process.supervision import KILL_GRACE, drain_worker, signal_process

__all__ = ["GenerationRoll", "rebind"]


def _configured(bound):
    """
    The C{(host, port)} of C{bound}'s listener spec it was bound for (the
    configured port, which may be 0).
    """
    for host, port in bound.listener.binds:
        if host == bound.host and port in (0, bound.port):
            return host, port
    return bound.host, bound.port


def rebind(current, listeners, slots, bind):
    """
    The sockets of C{listeners}, reusing those of C{current} for every
    address (host and configured port) both have.

    @param current: the running L{SocketSet}.
    @param listeners: the new configuration's listener specs.
    @param bind: binds listeners (L{gatelayer.process.sockets.bind_listeners}).
    @return: C{(new SocketSet, sockets of current it does not use)}.
    @raise BindError: a new address could not be bound (nothing new stays
        bound).
    """
    kept = {}
    for bound in current.sockets:
        kept[_configured(bound) + (bound.slot,)] = bound
    result = SocketSet()
    fresh = []
    try:
        for listener in listeners:
            missing = []
            for host, port in listener.binds:
                for slot in range(slots):
                    old = kept.pop((host, port, slot), None)
                    if old is None:
                        if (host, port) not in missing:
                            missing.append((host, port))
                        continue
                    result.sockets.append(BoundSocket(listener, old.host, old.port, old.family, slot, old.sock))
            if missing:
                bound = bind([attrs.evolve(listener, binds=tuple(missing))], slots)
                for new in bound.sockets:
                    new.listener = listener
                fresh.extend(bound.sockets)
                result.sockets.extend(bound.sockets)
    except BindError:
        SocketSet(fresh).close()
        raise
    used = {id(bound.sock) for bound in result.sockets}
    unused = [bound for bound in current.sockets if id(bound.sock) not in used]
    return result, unused


class GenerationRoll:
    """
    One change of worker generation (see the module docstring).

    @ivar old: the L{gatelayer.process.supervision.WorkerRecord}s of the
        generation being replaced.
    """

    log = Logger()

    def __init__(self, supervisor, reactor, unused_sockets, ready_timeout):
        """
        @param supervisor: the master's
            L{gatelayer.process.supervision.WorkersService}, already given
            the new configuration and sockets.
        @param unused_sockets: the L{BoundSocket}s to close once the old
            generation is gone.
        @param ready_timeout: seconds the new generation has to serve
            before the old one drains all the same.
        """
        self.supervisor = supervisor
        self.reactor = reactor
        self.unused = unused_sockets
        self.ready_timeout = ready_timeout
        self.old = []
        self.gone = Deferred()

    def start(self):
        """
        Start the new generation; drain the old one once it serves.

        @return: a Deferred firing with the problems (empty when the new
            generation served in time) once the old one was told to drain.
        """
        supervisor = self.supervisor
        self.old = supervisor.replace_generation()
        ready = supervisor.when_ready()
        result = Deferred()
        timer = self.reactor.callLater(self.ready_timeout, self._late, ready, result)

        def served(_):
            if timer.active():
                timer.cancel()
            if not result.called:
                self._drain_old()
                result.callback([])
        ready.addCallback(served)
        return result

    def _late(self, ready, result):
        problem = (f"the new generation of workers did not all serve within {self.ready_timeout:g}s; "
                   "the old one drains all the same")
        self.log.error("reload: {problem}", problem=problem)
        self._drain_old()
        result.callback([problem])

    def _drain_old(self):
        supervisor = self.supervisor
        timeout = supervisor.config.gateway.drain_timeout
        waits = []
        for record in self.old:
            exited = drain_worker(record, timeout)
            if exited is None:
                continue
            waits.append(exited)
            self.log.info("worker {slot} (pid {pid}) of the previous generation drains",
                          slot=record.slot, pid=record.pid)
        kill = self.reactor.callLater(timeout + KILL_GRACE, self._kill_old)

        def gone(_):
            if kill.active():
                kill.cancel()
            self._old_gone()
        DeferredList(waits).addCallback(gone)

    def _kill_old(self):
        for record in self.old:
            if record.process is not None:
                self.log.warn("worker {slot} (pid {pid}) of the previous generation did not drain in "
                              "time: killing it", slot=record.slot, pid=record.pid)
                signal_process(record.process, "KILL")

    def _old_gone(self):
        old = {id(r) for r in self.old}
        self.supervisor.retired = [r for r in self.supervisor.retired if id(r) not in old]
        SocketSet(self.unused).close()
        self.log.info("the previous generation of workers has exited; {count} socket(s) closed",
                      count=len(self.unused))
        self.gone.callback(None)
