"""
The master's bound endpoints as services of its tree: the C{listeners}
(the sockets every worker adopts, and the open-file limit they need) and the
C{admin} endpoint.

Both bind in C{bind()}, which the master calls from C{prepare()} before
daemonizing so that an address in use is reported on the terminal; the
services then only adopt (admin) and close what is bound.
"""

from twisted.logger import Logger

from gatelayer.service import MasterPart

__all__ = ["AdminService", "ListenersService"]


class ListenersService(MasterPart):
    """
    The listening sockets, bound once per worker slot, closed when the
    master has stopped (after its workers exited).

    @ivar sockets: the bound L{gatelayer.process.sockets.SocketSet}, or
        L{None} before C{bind()} and after stop.
    @ivar open_files: the master's L{gatelayer.process.rlimits.OpenFilesLimit}
        once raised, or L{None}.
    """

    log = Logger()

    def __init__(self, config, bind, raise_open_files=None):
        """
        @param bind: binds the listeners
            (L{gatelayer.process.sockets.bind_listeners}'s signature).
        @param raise_open_files: raises the open-file limit and returns the
            L{gatelayer.process.rlimits.OpenFilesLimit} (L{None}: leave it).
        """
        self.name = "listeners"
        self.config = config
        self._bind = bind
        self._raise_open_files = raise_open_files
        self.sockets = None
        self.open_files = None

    def bind(self):
        """
        Raise the open-file limit (once) and bind every listener (once).

        @raise gatelayer.process.sockets.BindError: nothing stays bound.
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

    def close(self):
        """
        Close the master's copies of the sockets (the workers hold theirs).
        """
        if self.sockets is not None:
            self.sockets.close()

    def rebind(self, listeners, slots):
        """
        A reload changed the listeners: bind what is new, keep the sockets
        of the addresses that stay (L{gatelayer.process.generations.rebind}).

        @return: the sockets no longer used (to close once the workers
            holding them have exited).
        @raise gatelayer.process.sockets.BindError: nothing changed.
        """
        from gatelayer.process.generations import rebind
        self.sockets, unused = rebind(self.sockets, listeners, slots, self._bind)
        return unused

    def addresses(self):
        """
        C{{listener name: [(host, port), ...]}} as bound (empty if not).
        """
        return self.sockets.addresses() if self.sockets is not None else {}

    def stopService(self):
        """
        Close the sockets: the master stops this service last.
        """
        super().stopService()
        self.close()

    def status(self):
        """
        C{{"listeners": {name: ["host:port", ...]}}} for C{/status}, and
        C{"listener_details"}: per listener its bound addresses and the
        C{[tls:NAME]} it serves (L{None} for plain HTTP), for the dashboard.
        """
        bound = {k: [f"{h}:{p}" for h, p in v] for k, v in self.addresses().items()}
        details = {listener.name: {"binds": bound.get(listener.name, []), "tls": listener.tls}
                   for listener in self.config.listeners}
        return {"listeners": bound, "listener_details": details}


class AdminService(MasterPart):
    """
    The admin endpoint: its socket is bound with the listeners and adopted
    by the reactor at start with the site C{factory(master)} builds.

    @ivar port: the listening port once started, or L{None}.
    """

    log = Logger()

    def __init__(self, config, reactor, master, factory=None, bind=None):
        """
        @param factory: builds the admin site from the master (L{None}: no
            admin endpoint).
        @param bind: binds the admin socket
            (L{gatelayer.process.sockets.bind_admin}'s signature).
        """
        self.name = "admin"
        self.config = config
        self.reactor = reactor
        self._master = master
        self._factory = factory
        self._bind = bind
        self.socket = None
        self.port = None

    def bind(self):
        """
        Bind the admin socket if C{[gateway] admin} is set (once).

        @raise gatelayer.process.sockets.BindError: naming the address.
        """
        admin = self.config.gateway.admin
        if admin is not None and self._factory is not None and self.socket is None and self.port is None:
            self.socket = self._bind(*admin)

    def startService(self):
        """
        Serve the admin site on the bound socket.
        """
        super().startService()
        if self.socket is not None:
            sock, self.socket = self.socket, None
            self.port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, self._factory(self._master))
            sock.close()
            address = self.port.getHost()
            self.log.info("admin endpoint on {host}:{port}", host=address.host, port=address.port)

    def address(self):
        """
        C{[host, port]} of the admin endpoint while it serves, else L{None}.
        """
        if self.port is None:
            return None
        address = self.port.getHost()
        return [address.host, address.port]

    def stopService(self):
        """
        Stop serving; fires when the port is closed.
        """
        super().stopService()
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.port is not None:
            return self.port.stopListening()
