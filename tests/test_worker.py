"""
Tests for the worker's process-level wiring (gatelayer.process.worker): its
ports get the connection limits, its heartbeats carry the limits' state and
its open-file limit, at an interval below the master's timeout. In memory.
"""

import os
import socket

from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.http.factory import GatewayHTTPFactory
from gatelayer.process.control import Heartbeat
from gatelayer.process.limits import LimitedFactory
from gatelayer.process.rlimits import OpenFilesLimit
from gatelayer.process.worker import Worker

CONFIG = """
[gateway]
workers = 1
max_connections = 50
max_connections_per_ip = 5
heartbeat_timeout = 2s
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /
respond = 200 hi
"""


class FakeControl:
    """
    The worker's end of the control channel, recording commands sent.
    """

    connected = True

    def __init__(self):
        self.sent = []
        self.responders = {}

    def register(self, command, responder):
        """
        Record a responder.
        """
        self.responders[command] = responder

    def callRemote(self, command, **arguments):
        """
        Record a command.
        """
        self.sent.append((command, arguments))
        return succeed({})


class ReadingPort:
    """
    An adopted port that can pause reading, as tcp.Port can.
    """

    def __init__(self):
        self.reading = True

    def stopReading(self):
        """
        Pause.
        """
        self.reading = False

    def startReading(self):
        """
        Resume.
        """
        self.reading = True

    def stopListening(self):
        """
        Closed at once.
        """
        return succeed(None)


class PortReactor(MemoryReactorClock):
    """
    A memory reactor whose adopted ports are L{ReadingPort}s.
    """

    def adoptStreamPort(self, fileno, addressFamily, factory):
        """
        Record the adoption; return a L{ReadingPort}.
        """
        super().adoptStreamPort(fileno, addressFamily, factory)
        port = ReadingPort()
        self.ports = getattr(self, "ports", []) + [port]
        return port


class WorkerTests(SynchronousTestCase):
    """
    A worker started on a memory reactor.
    """

    def setUp(self):
        """
        A started worker with a fake control channel and an open-file limit of 4096.
        """
        self.reactor = PortReactor()
        self.config = parse_config_text(CONFIG, "/etc/gate.ini")
        self.control = FakeControl()
        read, write = os.pipe()
        os.close(write)
        self.worker = Worker(self.reactor, self.config, 0, [(self.config.listeners[0], read, socket.AF_INET)],
                             master=self.control, open_files=OpenFilesLimit(4096, 4096, 1024))
        self.worker.start()

    def test_port_factory(self):
        """
        The adopted port's factory asks the limits first, then builds the
        listener's HTTP channels, which report to the same limits.
        """
        [(fd, family, factory)] = self.reactor.adoptedPorts
        self.assertIsInstance(factory, LimitedFactory)
        self.assertIs(factory.limits, self.worker.limits)
        self.assertIsInstance(factory.wrapped, GatewayHTTPFactory)
        self.assertIs(factory.wrapped.limits, self.worker.limits)
        self.assertEqual((self.worker.limits.max_connections, self.worker.limits.max_per_ip), (50, 5))

    def test_heartbeat(self):
        """
        Heartbeats carry the open-file limit and the limits' counters,
        five per heartbeat_timeout.
        """
        self.worker.limits.refused_per_ip = 3
        self.reactor.advance(0.4)
        beats = [arguments for command, arguments in self.control.sent if command is Heartbeat]
        self.assertEqual(len(beats), 2)
        self.assertEqual(beats[-1]["open_files"], 4096)
        self.assertEqual(beats[-1]["refused_per_ip"], 3)
        self.assertIs(beats[-1]["paused"], False)
        self.assertEqual(beats[-1]["accept_errors"], 0)

    def test_drain(self):
        """
        A draining worker's limits let go of the closing ports and leave
        no timer behind.
        """
        self.worker.limits.accept_failed("ENFILE")
        self.assertFalse(self.reactor.ports[0].reading)
        self.worker.drain(timeout=1)
        self.assertEqual(self.worker.limits._ports, [])
        self.reactor.advance(1)
        self.assertIsNone(self.worker.limits._backoff)
        self.assertFalse(self.reactor.ports[0].reading)
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])


class WorkerTreeTests(SynchronousTestCase):
    """
    The worker is a tree of named services, started in order and stopped
    in the reverse one, the drain first.
    """

    NAMES = ["stores", "access_log", "tracing", "upstreams", "gateway", "ports", "heartbeat"]

    def setUp(self):
        """
        A prepared, not yet started worker with a fake control channel.
        """
        self.reactor = PortReactor()
        self.config = parse_config_text(CONFIG, "/etc/gate.ini")
        self.control = FakeControl()
        read, write = os.pipe()
        os.close(write)
        self.exited = []
        self.worker = Worker(self.reactor, self.config, 0, [(self.config.listeners[0], read, socket.AF_INET)],
                             master=self.control, exit=lambda: self.exited.append(True))
        self.worker.prepare()

    def test_named_children(self):
        """
        The children, in start order, each reconfigurable; the filters get
        the tree's store registry.
        """
        from zope.interface.verify import verifyObject

        from gatelayer.service import IReconfigurable
        self.assertEqual(self.worker.child_names(), self.NAMES)
        for child in self.worker:
            verifyObject(IReconfigurable, child)
        self.assertIs(self.worker.getServiceNamed("gateway").gateway, self.worker.gateway)

    def test_stores_reach_the_filters(self):
        """
        A rate-limit filter built by the worker takes its fallback store
        from the worker's registry, which the worker closes when it stops.
        """
        text = CONFIG.replace("respond = 200 hi", "respond = 200 hi\nfilters = rl") + (
            "[filter:rl]\ntype = rate_limit\nrate = 10/s\n")
        read, write = os.pipe()
        os.close(write)
        config = parse_config_text(text, "/etc/gate.ini")
        worker = Worker(self.reactor, config, 0, [(config.listeners[0], read, socket.AF_INET)],
                        master=self.control)
        worker.prepare()
        registry = worker.getServiceNamed("stores").registry
        self.assertIs(worker.gateway.filters["rl"]._fallback.store, registry.memory(self.reactor))
        worker.start()
        self.successResultOf(worker.drain(timeout=1))
        self.assertEqual(registry._stores, {})

    def test_start_and_stop_order(self):
        """
        Children start in order and stop in reverse order; the stop is the
        drain, after which C{exit} is called and no timer is left.
        """
        calls = []
        for child in self.worker:
            self.patch(child, "startService", lambda child=child, start=child.startService: (
                calls.append(("start", child.name)), start()))
            self.patch(child, "stopService", lambda child=child, stop=child.stopService: (
                calls.append(("stop", child.name)), stop())[1])
        self.worker.startService()
        self.assertEqual(len(self.reactor.adoptedPorts), 1)
        d = self.worker.stopService()
        self.successResultOf(d)
        self.assertEqual(calls, [("start", n) for n in self.NAMES] + [("stop", n) for n in reversed(self.NAMES)])
        self.assertEqual(self.exited, [True])
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_reconfigure_reaches_each_child(self):
        """
        reconfigure walks the worker's tree in start order.
        """
        reached = []
        for child in self.worker:
            self.patch(child, "reconfigure", lambda config, child=child: reached.append(child.name))
        self.successResultOf(self.worker.reconfigure(self.config))
        self.assertEqual(reached, self.NAMES)
