"""
Session ticket keys made by the master and shared by every worker, so a
client resumes its TLS session whichever worker accepts its next
connection.

The master (L{TicketKeyPart}) makes a random key set per C{[tls:NAME]}
section with C{session_tickets = yes}, replaces it every
C{ticket_key_rotation} while keeping the previous one, and sends both to
every worker over AMP (L{TicketKeys}): at once to the running workers when
it rotates, and to a new or respawned worker before it accepts. The worker
(L{TicketKeyReceiver}) hands them to the L{gatelayer.tls.tickets.TicketKeyRing}
of the section, which every server context of the section asks for keys.

Keys exist only in the memory of the master and the workers and on the
control pipes between them: never on disk, never in a log line.
"""

import datetime

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.protocols import amp

from gatelayer.service import MasterPart

from .tickets import KEY_SET_SIZE, new_key_set, shared_tickets

__all__ = ["TicketKeys", "TicketKeyError", "TicketKeySchedule", "TicketKeyPart", "TicketKeyReceiver"]


class TicketKeyError(Exception):
    """
    A worker refused ticket keys: an unknown section or malformed keys.
    """


class TicketKeys(amp.Command):
    """
    Master -> worker: the ticket keys of section C{tls}, the current set
    first, then the previous one (still accepted).
    """

    arguments = [(b"tls", amp.Unicode()), (b"keys", amp.ListOf(amp.String()))]
    response = []
    errors = {TicketKeyError: b"TICKET_KEY_ERROR"}


class TicketKeySchedule:
    """
    The key sets of the sections with tickets and when each was last
    rotated, on a clock.

    @ivar keys: C{{tls name: [current, previous]}} (C{previous} is absent
        until the first rotation).
    @ivar rotated_at: C{{tls name: clock seconds of the last new key set}}.
    """

    def __init__(self, clock, specs, make_key=new_key_set):
        """
        @param clock: an C{IReactorTime}.
        @param specs: C{{tls name: TlsSpec}}; sections with
            C{session_tickets = no} are left out.
        @param make_key: makes one key set (tests may replace it).
        """
        self._clock = clock
        self._make_key = make_key
        self.specs = {}
        self.keys = {}
        self.rotated_at = {}
        self.update(specs)

    def update(self, specs):
        """
        Follow a new configuration's sections: kept sections keep their keys
        (tickets stay valid across a reload), new ones get keys, removed
        ones are dropped.
        """
        self.specs = {name: spec for name, spec in specs.items() if spec.session_tickets}
        for name in list(self.keys):
            if name not in self.specs:
                del self.keys[name]
                del self.rotated_at[name]
        for name in self.specs:
            if name not in self.keys:
                self.keys[name] = [self._make_key()]
                self.rotated_at[name] = self._clock.seconds()

    def due(self):
        """
        The sections whose keys are C{ticket_key_rotation} old or older.
        """
        now = self._clock.seconds()
        return sorted(name for name, spec in self.specs.items()
                      if now - self.rotated_at[name] >= spec.ticket_key_rotation)

    def rotate(self, name):
        """
        Make a new current key set for section C{name}; the old current one
        becomes the previous, and the one before is forgotten.
        """
        self.keys[name] = [self._make_key(), self.keys[name][0]]
        self.rotated_at[name] = self._clock.seconds()

    def next_check(self):
        """
        Seconds until the next section is due (for the timer), or L{None}
        with no section.
        """
        if not self.specs:
            return None
        now = self._clock.seconds()
        return max(0.0, min(self.rotated_at[name] + spec.ticket_key_rotation - now
                            for name, spec in self.specs.items()))


def push_ticket_keys(control, keys):
    """
    Send every section's key sets of C{keys} (C{{tls name: [sets]}}) to the
    worker at the other end of C{control}; a Deferred firing when it has
    taken all of them.
    """
    return defer.gatherResults(
        [control.callRemote(TicketKeys, tls=name, keys=list(sets)) for name, sets in sorted(keys.items())],
        consumeErrors=True)


class TicketKeyPart(MasterPart):
    """
    The master's C{tickets} service: owns the L{TicketKeySchedule}, rotates
    on time and pushes the keys to every worker.
    """

    log = Logger()

    def __init__(self, config, clock, controls, make_key=new_key_set, shared=shared_tickets):
        """
        @param config: the L{gatelayer.config.model.GateConfig}.
        @param clock: an C{IReactorTime}.
        @param controls: a callable returning the connected workers' control
            protocols.
        @param shared: returns the process's L{gatelayer.tls.tickets.SharedTickets}
            (reported on C{/status}; the workers check for themselves).
        """
        self.name = "tickets"
        self._clock = clock
        self._controls = controls
        self._shared = shared
        self.schedule = TicketKeySchedule(clock, config.tls, make_key)
        self._timer = None
        self.rotations = 0
        self.last_push = None

    def startService(self):
        """
        Start the rotation timer; check (and log) at once whether tickets
        can be shared here, rather than on the first C{/status}.
        """
        super().startService()
        if self.schedule.specs:
            self._shared()
        self._arm()

    def stopService(self):
        """
        Stop the rotation timer.
        """
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        delay = self.schedule.next_check()
        if delay is not None and self.running:
            self._timer = self._clock.callLater(delay, self._tick)

    def _tick(self):
        self._timer = None
        due = self.schedule.due()
        for name in due:
            self.schedule.rotate(name)
            self.rotations += 1
            self.log.info("[tls:{section}] new session ticket keys; the previous ones are still accepted",
                          section=name)
        if due:
            self.push({name: self.schedule.keys[name] for name in due})
        self._arm()

    def push(self, keys=None):
        """
        Send C{keys} (default: every section's) to every connected worker.
        A worker that refuses is logged; it keeps the keys it had.

        @return: a Deferred firing with a C{DeferredList} result.
        """
        keys = self.schedule.keys if keys is None else keys
        ds = [push_ticket_keys(control, keys).addErrback(self._push_failed) for control in self._controls()]

        def record(results):
            failed = sum(1 for ok, _ in results if not ok)
            self.last_push = {"at": self._iso(self._clock.seconds()), "workers": len(results), "failed": failed}
            return results
        return defer.DeferredList(ds, consumeErrors=True).addCallback(record)

    def _push_failed(self, failure):
        self.log.error("a worker did not take the session ticket keys: {error}", error=failure.getErrorMessage())
        return failure

    def sync(self, control):
        """
        Send a new worker every section's keys before it accepts.
        """
        return push_ticket_keys(control, self.schedule.keys)

    def reconfigure(self, new_config):
        """
        Follow the sections of C{new_config}: kept sections keep their keys,
        so tickets issued before the reload still resume.
        """
        self.schedule.update(new_config.tls)
        self._arm()

    @staticmethod
    def _iso(seconds):
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()

    def status(self):
        """
        C{{"tls_tickets": ...}} for C{/status}: whether keys are shared
        across workers (and why not), and per section the rotation period and
        the time of the last new key set. Never the keys.
        """
        shared = self._shared()
        sections = {
            name: {"rotation_seconds": spec.ticket_key_rotation,
                   "rotated_at": self._iso(self.schedule.rotated_at[name]),
                   "key_sets": len(self.schedule.keys[name])}
            for name, spec in sorted(self.schedule.specs.items())}
        return {"tls_tickets": {"shared": shared.available, "reason": shared.reason,
                                "sections": sections, "rotations": self.rotations,
                                "last_push": self.last_push}}


class TicketKeyReceiver:
    """
    The worker end: one L{gatelayer.tls.tickets.TicketKeyRing} per section
    with tickets (none when keys cannot be shared here), filled by the
    master's L{TicketKeys}.

    @ivar rings: C{{tls name: TicketKeyRing}}.
    """

    log = Logger()

    def __init__(self, specs, shared=shared_tickets):
        """
        @param specs: C{{tls name: TlsSpec}} of the worker's configuration.
        @param shared: returns the process's L{gatelayer.tls.tickets.SharedTickets}.
        """
        self.rings = {}
        wanted = [name for name, spec in sorted(specs.items()) if spec.session_tickets]
        if wanted:
            tickets = shared()
            if tickets.available:
                self.rings = {name: tickets.make_ring() for name in wanted}

    def register(self, protocol):
        """
        Answer L{TicketKeys} on C{protocol}; returns C{self}.
        """
        protocol.register(TicketKeys, self.take)
        return self

    def ring_for(self, name):
        """
        The ring section C{name}'s contexts use, or L{None} (OpenSSL's own
        per-context keys then).
        """
        return self.rings.get(name)

    def take(self, tls, keys):
        """
        Use C{keys} for section C{tls} from the next handshake on. A worker
        without shared tickets accepts and ignores them.
        """
        if any(len(key) != KEY_SET_SIZE for key in keys) or not 1 <= len(keys) <= 2:
            raise TicketKeyError(f"[tls:{tls}] ticket keys must be one or two sets of {KEY_SET_SIZE} bytes")
        ring = self.rings.get(tls)
        if ring is not None:
            ring.set_keys(keys)
        return {}
