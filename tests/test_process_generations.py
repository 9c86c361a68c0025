"""
Tests for listener changes on reload (gatelayer.process.generations):
which sockets are kept, bound and closed, and a new generation of workers
replacing the old one, with a fake spawner, fake sockets and a memory
clock.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.process.generations import GenerationRoll, rebind
from gatelayer.process.sockets import BindError
from gatelayer.process.supervision import KILL_GRACE
from tests.test_master import CONFIG, fake_bind, heartbeat, master_for


def listeners(text):
    """
    The listener specs of C{text}.
    """
    return parse_config_text(text, "/etc/gate.ini").listeners


class RebindTests(SynchronousTestCase):
    """
    rebind keeps the sockets of addresses that stay and binds the others.
    """

    def setUp(self):
        """
        The sockets of CONFIG's two listeners for two slots.
        """
        self.current = fake_bind(listeners(CONFIG), 2)

    def test_same_listeners(self):
        """
        Nothing to bind, nothing unused: the same socket objects, under the
        new specs.
        """
        new, unused = rebind(self.current, listeners(CONFIG), 2, lambda *a: self.fail("bound"))
        self.assertEqual([b.sock for b in new.sockets], [b.sock for b in self.current.sockets])
        self.assertEqual(unused, [])

    def test_moved_listener(self):
        """
        A listener on another port gets new sockets (one per slot); its
        old ones are unused; the other listener keeps its sockets.
        """
        bound = []

        def bind(specs, slots):
            bound.append([(spec.name, spec.binds) for spec in specs])
            return fake_bind(specs, slots)
        new, unused = rebind(self.current, listeners(CONFIG.replace("8081", "9091")), 2, bind)
        self.assertEqual(bound, [[("alt", (("127.0.0.1", 9091),))]])
        self.assertEqual(sorted((b.listener.name, b.port, b.slot) for b in new.sockets),
                         [("alt", 9091, 0), ("alt", 9091, 1), ("web", 8080, 0), ("web", 8080, 1)])
        self.assertEqual(sorted((b.port, b.slot) for b in unused), [(8081, 0), (8081, 1)])
        web = [b.sock for b in self.current.sockets if b.port == 8080]
        self.assertEqual([b.sock for b in new.sockets if b.port == 8080], web)

    def test_bind_error(self):
        """
        A new address that cannot be bound raises; nothing new stays open.
        """
        def bind(specs, slots):
            raise BindError("[listener:alt]", "127.0.0.1", 9091, OSError(98, "Address already in use"))
        self.assertRaises(BindError, rebind, self.current, listeners(CONFIG.replace("8081", "9091")), 2, bind)


class GenerationRollTests(SynchronousTestCase):
    """
    A new generation of workers serves before the old one drains; the
    unused sockets close when the old one is gone.
    """

    def setUp(self):
        """
        A started two-worker master whose workers have reported.
        """
        self.master = master_for(self, CONFIG)
        self.master.startService()
        for record in self.master.workers.values():
            record.control.connected = True
            heartbeat(record)
        self.old = list(self.master.workers.values())
        self.unused = fake_bind(listeners(CONFIG), 1).sockets[:1]

    def test_roll(self):
        """
        New workers are spawned in every slot; the old ones drain only once
        all the new ones reported; the unused sockets close when the old
        ones exited, and the old ones are not respawned.
        """
        roll = GenerationRoll(self.master.supervisor, self.reactor, self.unused, 10)
        d = roll.start()
        self.assertEqual(len(self.spawner.processes), 4)
        self.assertEqual(self.master.supervisor.retired, self.old)
        self.assertNoResult(d)
        new = list(self.master.workers.values())
        new[0].control.connected = True
        heartbeat(new[0])
        self.assertNoResult(d)
        new[1].control.connected = True
        heartbeat(new[1])
        self.assertEqual(self.successResultOf(d), [])
        for process in self.spawner.processes[:2]:
            self.assertIn(b"drain", b"".join(process.written.get(3, [])).lower())
        self.assertFalse(self.unused[0].sock.closed)
        self.spawner.processes[0].exit(0)
        self.spawner.processes[1].exit(0)
        self.successResultOf(roll.gone)
        self.assertTrue(self.unused[0].sock.closed)
        self.assertEqual(self.master.supervisor.retired, [])
        self.reactor.advance(60)
        self.assertEqual(len(self.spawner.processes), 4)

    def test_new_generation_late(self):
        """
        A new generation that does not all serve in time is reported; the
        old one drains all the same, and is killed if it does not exit.
        """
        roll = GenerationRoll(self.master.supervisor, self.reactor, self.unused, 10)
        d = roll.start()
        self.reactor.advance(10)
        [problem] = self.successResultOf(d)
        self.assertIn("did not all serve within 10s", problem)
        self.reactor.advance(5 + KILL_GRACE)
        for process in self.spawner.processes[:2]:
            self.assertIn("KILL", process.signals)
