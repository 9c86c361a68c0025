"""
Tests for the master's supervision logic (gatelayer.process.master) with a
fake spawner: no processes, no sockets.
"""

import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config import parse_config_text
from gatelayer.process import master as master_module
from gatelayer.process.control import ControlProtocol, Heartbeat
from gatelayer.process.master import MasterService
from gatelayer.process.sockets import BoundSocket, SocketSet
from gatelayer.process.spawner import ISpawner
from gatelayer.testing.spawner import FakeSpawner

CONFIG = """
[gateway]
workers = 2
drain_timeout = 5s
[listener:web]
bind = 127.0.0.1:8080
[listener:alt]
bind = 127.0.0.1:8081
[route:hello]
path = /
respond = 200 hi
"""


class FakeSocket:
    def __init__(self, fd):
        self.fd = fd
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        self.closed = True


def fake_bind(listeners, slots):
    result = SocketSet()
    fd = 100
    for listener in listeners:
        for host, port in listener.binds:
            for slot in range(slots):
                fd += 1
                result.sockets.append(BoundSocket(listener, host, port, 2, slot, FakeSocket(fd)))
    return result


class MasterTests(SynchronousTestCase):
    """
    Spawning, respawning with backoff, draining.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.spawner = FakeSpawner()
        verifyObject(ISpawner, self.spawner)
        self.config = parse_config_text(CONFIG, "/etc/gate.ini")
        self.ready = os.path.abspath(self.mktemp())
        self.master = MasterService(self.config, CONFIG, self.reactor, self.spawner, bind=fake_bind,
                                    ready_file=self.ready)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_spawn(self):
        """
        One worker per slot, each given the config on stdin, control pipes
        on fds 3/4 and its own sockets from fd 5 on.
        """
        self.master.startService()
        self.assertEqual(len(self.spawner.processes), 2)
        first = self.spawner.processes[0]
        self.assertEqual(first.child_fds[3], "w")
        self.assertEqual(first.child_fds[4], "r")
        self.assertEqual({first.child_fds[5], first.child_fds[6]}, {101, 103})
        self.assertIn("--socket", first.args)
        self.assertIn("web:5:inet", first.args)
        self.assertEqual(b"".join(first.written[0]), CONFIG.encode())
        self.assertIn(0, first.closed)
        second = self.spawner.processes[1]
        self.assertEqual({second.child_fds[5], second.child_fds[6]}, {102, 104})

    def test_ready_file(self):
        """
        The ready file is written once every worker sent a heartbeat.
        """
        self.master.startService()
        for record in self.master.workers.values():
            heartbeat = record.control.lookupFunction(Heartbeat.commandName)
            self.assertFalse(os.path.exists(self.ready))
            heartbeat(amp.AmpBox(pid=b"1", connections=b"0", requests=b"5", active=b"0"))
        with open(self.ready) as f:
            self.assertEqual(json.load(f)["listeners"]["web"], [["127.0.0.1", 8080]])
        status = self.successResultOf(self.master.status())
        self.assertEqual([w["requests"] for w in status["workers"]], [5, 5])

    def test_respawn_backoff(self):
        """
        A worker that dies is respawned after a delay that doubles while it
        keeps dying young, and a crash loop is logged.
        """
        self.master.startService()
        delays = []
        for _ in range(6):
            process = self.spawner.processes[-2] if len(delays) == 0 else self.spawner.processes[-1]
            count = len(self.spawner.processes)
            process.exit(1)
            calls = [c for c in self.reactor.getDelayedCalls() if c.active()]
            delays.append(calls[-1].getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
            self.assertEqual(len(self.spawner.processes), count + 1)
        self.assertEqual([round(d, 6) for d in delays], [0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
        self.assertTrue(any("crash-looping" in e.get("log_format", "") for e in self.events))
        self.assertEqual(self.master.workers[0].restarts, 6)

    def test_stable_worker_resets_backoff(self):
        """
        A worker that lived long enough is respawned after the short delay.
        """
        self.master.startService()
        self.spawner.processes[0].exit(1)
        self.reactor.advance(0.1)
        self.reactor.advance(master_module.STABLE_AFTER + 1)
        self.spawner.processes[-1].exit(1)
        call = [c for c in self.reactor.getDelayedCalls() if c.active()][-1]
        self.assertAlmostEqual(call.getTime() - self.reactor.seconds(), 0.1)

    def test_drain(self):
        """
        stopService asks each worker to drain and fires once all exited;
        no respawn happens while stopping.
        """
        self.master.startService()
        for process in self.spawner.processes:
            process.protocol.control.connected = True
        d = self.master.stopService()
        for process in self.spawner.processes:
            self.assertIn(b"drain", b"".join(process.written.get(3, [])).lower())
        self.assertNoResult(d)
        self.spawner.processes[0].exit(0)
        self.assertNoResult(d)
        self.spawner.processes[1].exit(0)
        self.successResultOf(d)
        self.assertEqual(len(self.spawner.processes), 2)
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_drain_deadline(self):
        """
        A worker still running after drain_timeout plus a grace is killed.
        """
        self.master.startService()
        d = self.master.stopService()
        self.reactor.advance(5 + master_module.KILL_GRACE)
        for process in self.spawner.processes:
            self.assertIn("KILL", process.signals)
            process.exit(signal=9)
        self.successResultOf(d)


class ControlProtocolTests(SynchronousTestCase):
    """
    Registered responders answer AMP commands.
    """

    def test_register(self):
        """
        A responder registered at run time answers its command.
        """
        from twisted.test.iosim import connectedServerAndClient
        seen = []

        def heartbeat(**kw):
            seen.append(kw)
            return {}
        server_proto = ControlProtocol()
        server_proto.register(Heartbeat, heartbeat)
        client, server, pump = connectedServerAndClient(lambda: server_proto, ControlProtocol)
        client.callRemote(Heartbeat, pid=1, connections=2, requests=3, active=4)
        pump.flush()
        self.assertEqual(seen, [{"pid": 1, "connections": 2, "requests": 3, "active": 4}])
