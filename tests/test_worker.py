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
