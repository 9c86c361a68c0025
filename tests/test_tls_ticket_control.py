"""
Tests for L{gatelayer.tls.ticket_control}: the master's ticket key schedule
on a clock, the push to workers over AMP, and the worker's receiver.
"""

import itertools
import json

import attrs
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import GateConfig, GatewaySpec, TlsSpec
from gatelayer.process.control import ControlProtocol
from gatelayer.tls.ticket_control import (
    TicketKeyError, TicketKeyPart, TicketKeyReceiver, TicketKeys, TicketKeySchedule,
)
from gatelayer.tls.tickets import SharedTickets, shared_tickets

HOUR = 3600.0


def _keys():
    """
    A key maker giving recognisable 80-byte sets: C{b"1" * 80}, C{b"2" * 80}...
    """
    counter = itertools.count(1)
    return lambda: str(next(counter) % 10).encode() * 80


def _specs(**sections):
    return {name: TlsSpec(name=name, certificates=(), **keys) for name, keys in sections.items()}


def _config(tls):
    return GateConfig(path="gate.ini", gateway=GatewaySpec(workers=2), tls=tls)


def _channel():
    worker, master, pump = iosim.connectedServerAndClient(ControlProtocol, ControlProtocol)
    return master, worker, pump


class ScheduleTests(SynchronousTestCase):
    """
    L{TicketKeySchedule} keeps a current and a previous key set per section
    and knows when each is due.
    """

    def test_rotation(self):
        """
        A section starts with one key set; after C{ticket_key_rotation} it
        is due, and a rotation puts a new set first and keeps the old one as
        the previous; a second rotation forgets the first set.
        """
        clock = Clock()
        schedule = TicketKeySchedule(clock, _specs(main={}), _keys())
        self.assertEqual(schedule.keys, {"main": [b"1" * 80]})
        self.assertEqual(schedule.next_check(), HOUR)
        clock.advance(HOUR - 1)
        self.assertEqual(schedule.due(), [])
        clock.advance(1)
        self.assertEqual(schedule.due(), ["main"])
        schedule.rotate("main")
        self.assertEqual(schedule.keys["main"], [b"2" * 80, b"1" * 80])
        schedule.rotate("main")
        self.assertEqual(schedule.keys["main"], [b"3" * 80, b"2" * 80])

    def test_sections(self):
        """
        Sections with C{session_tickets = no} get no keys; an update keeps
        the keys of kept sections, adds new ones and drops removed ones.
        """
        clock = Clock()
        schedule = TicketKeySchedule(clock, _specs(a={}, off={"session_tickets": False}), _keys())
        self.assertEqual(sorted(schedule.keys), ["a"])
        kept = schedule.keys["a"]
        schedule.update(_specs(a={"ticket_key_rotation": 60.0}, b={}))
        self.assertEqual(schedule.keys["a"], kept)
        self.assertEqual(sorted(schedule.keys), ["a", "b"])
        self.assertEqual(schedule.next_check(), 60.0)
        schedule.update({})
        self.assertEqual(schedule.keys, {})
        self.assertIsNone(schedule.next_check())


class _Control:
    """
    A worker control channel that records the ticket keys sent on it.
    """

    def __init__(self):
        self.sent = []

    def callRemote(self, command, **arguments):
        from twisted.internet.defer import succeed
        self.sent.append((command, arguments))
        return succeed({})


class PartTests(SynchronousTestCase):
    """
    L{TicketKeyPart} rotates on its clock and sends the keys to every
    worker, and to a new one before it serves.
    """

    def setUp(self):
        self.clock = Clock()
        self.controls = [_Control(), _Control()]
        config = _config(_specs(main={"ticket_key_rotation": HOUR}, api={"ticket_key_rotation": 2 * HOUR}))
        self.part = TicketKeyPart(config, self.clock, lambda: self.controls, make_key=_keys(),
                                  shared=lambda: SharedTickets(None, "test"))
        self.part.startService()
        self.addCleanup(self.part.stopService)

    def test_sync(self):
        """
        A new worker is sent every section's keys.
        """
        control = _Control()
        self.successResultOf(self.part.sync(control))
        self.assertEqual(sorted((c, a["tls"]) for c, a in control.sent), [(TicketKeys, "api"), (TicketKeys, "main")])

    def test_rotation_pushed(self):
        """
        When a section's period ends, its keys rotate and both sets go to
        every worker; the other section is not sent until its own turn.
        """
        self.clock.advance(HOUR)
        for control in self.controls:
            self.assertEqual(control.sent, [(TicketKeys, {"tls": "main", "keys": self.part.schedule.keys["main"]})])
        self.assertEqual(len(self.part.schedule.keys["main"]), 2)
        self.clock.advance(HOUR)
        self.assertEqual([a["tls"] for _, a in self.controls[0].sent], ["main", "api", "main"])
        self.assertEqual(self.part.rotations, 3)
        self.assertEqual(self.part.last_push["workers"], 2)
        self.assertEqual(self.part.last_push["failed"], 0)

    def test_stop(self):
        """
        A stopped part leaves no timer behind.
        """
        self.part.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reconfigure(self):
        """
        A new configuration's shorter period re-arms the timer; kept keys
        stay.
        """
        before = self.part.schedule.keys["main"]
        self.part.reconfigure(_config(_specs(main={"ticket_key_rotation": 60.0})))
        self.assertEqual(self.part.schedule.keys["main"], before)
        self.clock.advance(60)
        self.assertEqual(self.part.schedule.keys["main"][1], before[0])

    def test_status(self):
        """
        C{/status} tells whether keys are shared (and why not), each
        section's period and last rotation, and never a key.
        """
        status = self.part.status()["tls_tickets"]
        self.assertEqual(status["shared"], False)
        self.assertEqual(status["reason"], "test")
        self.assertEqual(status["sections"]["main"]["rotation_seconds"], HOUR)
        self.assertEqual(status["sections"]["main"]["key_sets"], 1)
        text = json.dumps(status)
        for sets in self.part.schedule.keys.values():
            for key in sets:
                self.assertNotIn(key.decode(), text)
                self.assertNotIn(key.hex(), text)


class ReceiverTests(SynchronousTestCase):
    """
    The worker's L{TicketKeyReceiver} over a real AMP channel in memory.
    """

    def setUp(self):
        self.master, self.worker, self.pump = _channel()
        self.receiver = TicketKeyReceiver(_specs(main={}, off={"session_tickets": False})).register(self.worker)

    def send(self, **arguments):
        results, failures = [], []
        self.master.callRemote(TicketKeys, **arguments).addCallbacks(results.append, failures.append)
        self.pump.flush()
        return results, failures

    def test_keys_reach_the_ring(self):
        """
        Keys sent by the master are the ring's, current first; a section
        without tickets has no ring.
        """
        self.assertTrue(shared_tickets().available)
        self.assertIsNone(self.receiver.ring_for("off"))
        current, previous = b"c" * 80, b"p" * 80
        results, failures = self.send(tls="main", keys=[current, previous])
        self.assertEqual((len(results), failures), (1, []))
        self.assertEqual(self.receiver.ring_for("main").names, (b"c" * 16, b"p" * 16))

    def test_hostile_keys(self):
        """
        Malformed keys are refused with L{TicketKeyError}; the ring keeps
        the keys it had.
        """
        self.send(tls="main", keys=[b"k" * 80])
        cases = [[], [b""], [b"x" * 79], [b"x" * 81], [b"x" * 80] * 3, [b"x" * 80, b"y" * 16]]
        for keys in cases:
            results, [failure] = self.send(tls="main", keys=keys)
            failure.trap(TicketKeyError)
            self.assertEqual(self.receiver.ring_for("main").names, (b"k" * 16,), keys)

    def test_unavailable(self):
        """
        Where keys cannot be shared the worker makes no ring (OpenSSL's own
        keys serve) and accepts the master's keys without using them.
        """
        receiver = TicketKeyReceiver(_specs(main={}), shared=lambda: SharedTickets(None, "no"))
        self.assertIsNone(receiver.ring_for("main"))
        self.assertEqual(receiver.take("main", [b"k" * 80]), {})

    def test_no_tickets_no_check(self):
        """
        With tickets off everywhere the process is not even probed.
        """
        def probe():
            raise AssertionError("probed")
        receiver = TicketKeyReceiver(_specs(main={"session_tickets": False}), shared=probe)
        self.assertEqual(receiver.rings, {})


class ConfigTests(SynchronousTestCase):
    """
    The C{[tls:NAME]} keys the tickets use come from the config model.
    """

    def test_defaults(self):
        """
        Tickets are on, rotated hourly, by default.
        """
        spec = TlsSpec(name="main", certificates=())
        self.assertTrue(spec.session_tickets)
        self.assertEqual(spec.ticket_key_rotation, HOUR)
        self.assertFalse(attrs.evolve(spec, session_tickets=False).session_tickets)
