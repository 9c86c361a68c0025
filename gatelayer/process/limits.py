"""
Connection limits of one worker: C{[gateway] max_connections} (open client
connections over all listeners) and C{max_connections_per_ip}.

Reaching C{max_connections} pauses the worker's listening ports: new
connections wait in the kernel's accept queue until a connection closes,
instead of being accepted into a worker with no room. The accept loop of a
port takes a batch of connections per readiness event, so a batch can cross
the limit; the connections past the limit are closed at once (as nginx does
when C{worker_connections} are not enough) and counted.

Reaching C{max_connections_per_ip} closes the new connection from that
address at once: one client cannot take the whole worker.

An accept that fails for want of resources is handled in two ways. On
EMFILE (the open-file limit) Twisted's port frees a descriptor it keeps in
reserve and closes what waits in the queue, so clients fail fast and
nothing spins; that is only counted and warned about. On ENFILE (the
system's file table), ENOBUFS, ENOMEM, or EMFILE with the reserve gone, the
port gives up for that turn and returns to a socket that stays readable: it
would try again at once, forever. Then the ports pause for
L{ACCEPT_BACKOFF} seconds, as nginx pauses accepting on these errors.

All of these are logged as warnings at most once per interval, with a count
of what was left unsaid.
"""

from twisted.internet.protocol import Factory
from twisted.logger import Logger

WARN_INTERVAL = 5.0
ACCEPT_BACKOFF = 0.5

_ACCEPT_ERRORS = {
    "EMFILE": "the worker's open-file limit is reached",
    "ENFILE": "the system's file table is full",
    "ENOBUFS": "the kernel is out of buffers",
    "ENOMEM": "the kernel is out of memory",
}
# Twisted's tcp.Port logs under its class's name: the worker's ports are
# gatelayer.transports's subclass of it (other code may still use tcp.Port).
_PORT_NAMESPACES = frozenset(("twisted.internet.tcp.Port", "gatelayer.transports._EagerPort"))


def accept_event(event):
    """
    Recognise Twisted's C{tcp.Port} log events about failed accepts.

    @return: C{("failed", errno name)} for an accept that failed and left
        the connections waiting (the port would try again at once),
        C{("shedding", "EMFILE")} when Twisted starts closing the waiting
        connections to recover from EMFILE, C{("closed", address)} for each
        connection it closed unanswered, C{("quiet", None)} for its other
        recovery chatter, L{None} for any other event.
    """
    if event.get("log_namespace") not in _PORT_NAMESPACES:
        return None
    error = event.get("acceptError")
    if error is not None:
        return ("failed", error) if error in _ACCEPT_ERRORS else None
    text = event.get("log_format") or ""
    if text.startswith("EMFILE encountered"):
        return ("shedding", "EMFILE")
    if text.startswith("EMFILE recovery: Closed socket"):
        return ("closed", event.get("address"))
    if text.startswith("Re-reserving EMFILE"):
        return ("quiet", None)
    return None


class AcceptErrorFilter:
    """
    A log observer in front of a worker's own: Twisted's accept-failure
    events (up to three lines per connection under a flood) go to the
    worker's L{ConnectionLimits}, which pauses accepting and warns once per
    interval; every other event goes on to C{observer}.

    @ivar limits: the L{ConnectionLimits} to tell, set once the worker
        exists; until then the events are logged as they are.
    """

    def __init__(self, observer):
        self.observer = observer
        self.limits = None

    def __call__(self, event):
        """
        Observe one log event.
        """
        kind = accept_event(event) if self.limits is not None else None
        if kind is None:
            self.observer(event)
        elif kind[0] == "failed":
            self.limits.accept_failed(kind[1])
        elif kind[0] == "shedding":
            self.limits.accept_failed(kind[1], backoff=False)
        elif kind[0] == "closed":
            self.limits.accept_closed(kind[1])


class ThrottledWarning:
    """
    A warning logged at most once per C{interval} seconds. Occurrences in
    between are counted, and a summary line with the count is logged when
    the interval ends.
    """

    def __init__(self, clock, log, event, summary, interval=WARN_INTERVAL, extra=None):
        """
        @param event: the log format of one occurrence.
        @param summary: the log format of the summary; it gets C{count} and
            C{interval} besides the fields of the last occurrence.
        @param extra: a function returning more fields for the summary,
            called when it is logged.
        """
        self.clock = clock
        self.log = log
        self.event = event
        self.summary = summary
        self.interval = interval
        self.suppressed = 0
        self._quiet_until = None
        self._flush = None
        self._fields = {}
        self._extra = extra

    def __call__(self, **fields):
        """
        Log one occurrence, or count it if a line was logged less than
        C{interval} seconds ago.
        """
        now = self.clock.seconds()
        if self._quiet_until is None or now >= self._quiet_until:
            self.log.warn(self.event, **fields)
            self._quiet_until = now + self.interval
            return
        self.suppressed += 1
        self._fields = fields
        if self._flush is None:
            self._flush = self.clock.callLater(self._quiet_until - now, self._summarize)

    def _summarize(self):
        self._flush = None
        count, self.suppressed = self.suppressed, 0
        if count:
            fields = dict(self._fields)
            if self._extra is not None:
                fields.update(self._extra())
            self.log.warn(self.summary, count=count, interval=self.interval, **fields)
            self._quiet_until = self.clock.seconds() + self.interval

    def stop(self):
        """
        Log the pending summary now and cancel its timer.
        """
        if self._flush is not None:
            self._flush.cancel()
            self._summarize()


class ConnectionLimits:
    """
    Counts a worker's open client connections (total and per client
    address) and enforces C{max_connections} and C{max_connections_per_ip}.

    The listener factories report every connection they open and close
    (L{opened}, L{closed}); L{LimitedFactory} asks L{admit} before a
    connection gets a protocol.

    @ivar open: open connections over all listeners.
    @ivar paused: whether the ports are paused because C{open} reached
        C{max_connections}.
    @ivar accept_errors: accepts that failed for want of resources.
    @ivar unanswered: connections Twisted closed unanswered to recover from
        EMFILE.
    """

    log = Logger()

    def __init__(self, clock, max_connections, max_per_ip=0, warn_interval=WARN_INTERVAL,
                 accept_backoff=ACCEPT_BACKOFF):
        """
        @param clock: an L{IReactorTime} for the warning throttles.
        @param max_connections: open connections at which the ports pause.
        @param max_per_ip: open connections one client address may have;
            C{0} for no such limit.
        """
        self.clock = clock
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.open = 0
        self.paused = False
        self.pauses = 0
        self.refused_full = 0
        self.refused_per_ip = 0
        self.accept_errors = 0
        self.unanswered = 0
        self.accept_backoff = accept_backoff
        self._backoff = None
        self._reading = True
        self._per_ip = {}
        self._hosts = {}
        self._ports = []
        self._warn_full = ThrottledWarning(
            clock, self.log,
            "max_connections ({limit}) reached: not accepting new connections until one closes",
            "max_connections ({limit}) reached {count} more time(s) in the last {interval}s "
            "({refused} connection(s) closed at once so far)",
            warn_interval)
        self._warn_ip = ThrottledWarning(
            clock, self.log,
            "connection from {host} closed: max_connections_per_ip ({limit}) reached",
            "{count} more connection(s) closed by max_connections_per_ip ({limit}) in the last "
            "{interval}s (the last from {host})",
            warn_interval)
        self._warn_accept = ThrottledWarning(
            clock, self.log,
            "accept failed with {error} ({meaning}): {action}",
            "{count} more failed accept(s) in the last {interval}s (the last {error}: {meaning}); "
            "{unanswered} connection(s) closed unanswered so far",
            warn_interval, extra=lambda: {"unanswered": self.unanswered})

    def add_port(self, port):
        """
        Pause and resume C{port} (a listening port with C{stopReading} and
        C{startReading}) with the limit.
        """
        self._ports.append(port)
        if not self._reading:
            port.stopReading()

    def forget_ports(self):
        """
        Stop pausing and resuming the ports (they are closing: a draining
        worker must not start reading them again).
        """
        self._ports = []

    def wrap(self, factory):
        """
        A L{LimitedFactory} for C{factory}, for a listening port.
        """
        return LimitedFactory(factory, self)

    def admit(self, host):
        """
        Whether a new connection from C{host} gets a protocol; L{False}
        means it is closed at once.
        """
        if self.open >= self.max_connections:
            self.refused_full += 1
            self._warn_full(limit=self.max_connections, refused=self.refused_full)
            return False
        if self.max_per_ip and self._per_ip.get(host, 0) >= self.max_per_ip:
            self.refused_per_ip += 1
            self._warn_ip(host=host, limit=self.max_per_ip)
            return False
        return True

    def opened(self, channel):
        """
        C{channel} (a connected protocol) opened; pause the ports when the
        limit is reached.
        """
        self.open += 1
        if self.max_per_ip:
            host = getattr(channel.transport.getPeer(), "host", None)
            self._hosts[channel] = host
            self._per_ip[host] = self._per_ip.get(host, 0) + 1
        if self.open >= self.max_connections and not self.paused:
            self.paused = True
            self.pauses += 1
            self._warn_full(limit=self.max_connections, refused=self.refused_full)
            self._update_ports()

    def closed(self, channel):
        """
        C{channel}, reported by L{opened} before, closed; resume the ports
        when there is room again.
        """
        self.open -= 1
        if self.max_per_ip:
            host = self._hosts.pop(channel, None)
            left = self._per_ip.get(host, 0) - 1
            if left > 0:
                self._per_ip[host] = left
            else:
                self._per_ip.pop(host, None)
        if self.paused and self.open < self.max_connections:
            self.paused = False
            self._update_ports()

    def accept_failed(self, error, backoff=True):
        """
        An accept failed with C{error} (an errno name such as C{"ENFILE"}):
        stop accepting for C{accept_backoff} seconds (unless C{backoff} is
        false: Twisted is closing the waiting connections itself).
        """
        self.accept_errors += 1
        if backoff:
            action = f"not accepting for {self.accept_backoff}s"
        else:
            action = "closing the connections waiting to be accepted"
        self._warn_accept(error=error, meaning=_ACCEPT_ERRORS.get(error, "out of resources"),
                          action=action)
        if backoff and self._backoff is None:
            self._backoff = self.clock.callLater(self.accept_backoff, self._backoff_over)
            self._update_ports()

    def accept_closed(self, address):
        """
        Twisted closed a connection from C{address} unanswered to recover
        from EMFILE.
        """
        self.unanswered += 1

    def _backoff_over(self):
        self._backoff = None
        self._update_ports()

    def _update_ports(self):
        reading = not self.paused and self._backoff is None
        if reading == self._reading:
            return
        self._reading = reading
        room = self.max_connections - self.open
        for port in self._ports:
            if not reading:
                port.stopReading()
                continue
            # The next accept batch takes no more than there is room for
            # (tcp.Port grows it again by itself when the backlog is deep).
            if getattr(port, "numberAccepts", 0) > room:
                port.numberAccepts = max(1, room)
            port.startReading()

    def per_ip(self, host):
        """
        Open connections from C{host} (counted only with a per-IP limit).
        """
        return self._per_ip.get(host, 0)

    def status(self):
        """
        Counters for C{/status}.
        """
        return {
            "open": self.open, "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_per_ip, "paused": self.paused,
            "pauses": self.pauses, "refused_full": self.refused_full,
            "refused_per_ip": self.refused_per_ip, "accept_errors": self.accept_errors,
            "unanswered": self.unanswered,
        }

    def stop(self):
        """
        Log pending warning summaries and cancel every timer.
        """
        if self._backoff is not None:
            self._backoff.cancel()
            self._backoff = None
        self._warn_full.stop()
        self._warn_ip.stop()
        self._warn_accept.stop()


class LimitedFactory(Factory):
    """
    The factory a worker's listening port uses: asks L{ConnectionLimits}
    before building a protocol with the wrapped factory (which may be a TLS
    wrapper). A refused connection gets no protocol: the port closes its
    socket before reading a byte, and no TLS handshake or timer is spent on
    it.
    """

    noisy = False

    def __init__(self, wrapped, limits):
        self.wrapped = wrapped
        self.limits = limits

    def buildProtocol(self, addr):
        """
        The wrapped factory's protocol, or L{None} when over a limit.
        """
        if not self.limits.admit(getattr(addr, "host", None)):
            return None
        return self.wrapped.buildProtocol(addr)

    def doStart(self):
        """
        Start the wrapped factory.
        """
        self.wrapped.doStart()

    def doStop(self):
        """
        Stop the wrapped factory.
        """
        self.wrapped.doStop()

    def logPrefix(self):
        """
        The wrapped factory's log prefix.
        """
        prefix = getattr(self.wrapped, "logPrefix", None)
        return prefix() if prefix is not None else self.wrapped.__class__.__name__


__all__ = ["ACCEPT_BACKOFF", "AcceptErrorFilter", "ConnectionLimits", "LimitedFactory", "ThrottledWarning",
           "WARN_INTERVAL", "accept_event"]
