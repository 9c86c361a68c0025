"""
Tests for a worker's connection limits (gatelayer.process.limits):
max_connections pauses the listening ports, max_connections_per_ip closes
new connections, failed accepts pause accepting briefly, warnings are
throttled. In memory, on a Clock.
"""

import errno

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.transports import _EagerPort
from gatelayer.process.limits import (
    ACCEPT_BACKOFF, AcceptErrorFilter, ConnectionLimits, LimitedFactory, ThrottledWarning,
)
from gatelayer.testing.server import InMemoryGateway

CONFIG = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /
respond = 200 hi
"""


class FakePort:
    """
    A listening port that records pauses and resumes.
    """

    def __init__(self):
        self.reading = True
        self.calls = []
        self.numberAccepts = 100

    def stopReading(self):
        """
        Pause.
        """
        self.reading = False
        self.calls.append("stop")

    def startReading(self):
        """
        Resume.
        """
        self.reading = True
        self.calls.append("start")


class FakeChannel:
    """
    A connected protocol as the factory reports it.
    """

    def __init__(self, host):
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))


def collect_warnings(test):
    """
    Collect the formatted text of warnings logged during C{test}.
    """
    lines = []

    def observe(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class MaxConnectionsTests(SynchronousTestCase):
    """
    Reaching max_connections pauses every port; a close resumes them.
    """

    def setUp(self):
        """
        Limits of three connections over two ports.
        """
        self.clock = Clock()
        self.limits = ConnectionLimits(self.clock, max_connections=3)
        self.ports = [FakePort(), FakePort()]
        for port in self.ports:
            self.limits.add_port(port)
        self.warnings = collect_warnings(self)

    def test_pause_and_resume(self):
        """
        The third connection pauses both ports; closing one resumes them,
        with the next accept batch no bigger than the room left.
        """
        channels = [FakeChannel("10.0.0.%d" % i) for i in range(3)]
        for channel in channels[:2]:
            self.assertTrue(self.limits.admit("10.0.0.1"))
            self.limits.opened(channel)
        self.assertTrue(all(p.reading for p in self.ports))
        self.limits.opened(channels[2])
        self.assertEqual([p.calls for p in self.ports], [["stop"], ["stop"]])
        self.assertTrue(self.limits.paused)
        self.assertEqual(self.warnings, [
            "max_connections (3) reached: not accepting new connections until one closes"])
        self.limits.closed(channels[0])
        self.assertEqual([p.calls for p in self.ports], [["stop", "start"], ["stop", "start"]])
        self.assertEqual([p.numberAccepts for p in self.ports], [1, 1])
        self.assertFalse(self.limits.paused)
        self.assertEqual(self.limits.status()["pauses"], 1)

    def test_batch_past_the_limit(self):
        """
        Connections the port accepted in the same batch after the limit
        was reached are refused (closed at once) and counted.
        """
        for i in range(3):
            self.limits.opened(FakeChannel("10.0.0.1"))
        for i in range(5):
            self.assertFalse(self.limits.admit("10.0.0.9"))
        self.assertEqual(self.limits.refused_full, 5)
        self.assertEqual(len(self.warnings), 1)

    def test_port_added_while_paused(self):
        """
        A port added while paused starts paused.
        """
        for i in range(3):
            self.limits.opened(FakeChannel("10.0.0.1"))
        late = FakePort()
        self.limits.add_port(late)
        self.assertFalse(late.reading)

    def test_draining_ports_stay_closed(self):
        """
        After forget_ports (the worker drains and closes its ports) a close
        resumes nothing.
        """
        channels = [FakeChannel("10.0.0.1") for _ in range(3)]
        for channel in channels:
            self.limits.opened(channel)
        self.limits.forget_ports()
        self.limits.closed(channels[0])
        self.assertEqual([p.calls for p in self.ports], [["stop"], ["stop"]])


class PerIPTests(SynchronousTestCase):
    """
    max_connections_per_ip closes a client's connection past its share.
    """

    def setUp(self):
        """
        Limits of two connections per address.
        """
        self.clock = Clock()
        self.limits = ConnectionLimits(self.clock, max_connections=100, max_per_ip=2)
        self.warnings = collect_warnings(self)

    def test_refused_then_admitted(self):
        """
        A third connection from one address is refused while another
        address is admitted; a close makes room again.
        """
        first, second = FakeChannel("192.0.2.1"), FakeChannel("192.0.2.1")
        for channel in (first, second):
            self.assertTrue(self.limits.admit("192.0.2.1"))
            self.limits.opened(channel)
        self.assertFalse(self.limits.admit("192.0.2.1"))
        self.assertTrue(self.limits.admit("192.0.2.2"))
        self.assertEqual(self.warnings, [
            "connection from 192.0.2.1 closed: max_connections_per_ip (2) reached"])
        self.limits.closed(first)
        self.assertTrue(self.limits.admit("192.0.2.1"))
        self.limits.closed(second)
        self.assertEqual(self.limits.per_ip("192.0.2.1"), 0)
        self.assertEqual(self.limits._per_ip, {})
        self.assertEqual(self.limits.refused_per_ip, 1)

    def test_off(self):
        """
        0 (the default) counts nothing per address.
        """
        limits = ConnectionLimits(self.clock, max_connections=100)
        for _ in range(50):
            self.assertTrue(limits.admit("192.0.2.1"))
            limits.opened(FakeChannel("192.0.2.1"))
        self.assertEqual(limits._per_ip, {})


class ThrottledWarningTests(SynchronousTestCase):
    """
    At most one line per interval; the rest are counted into a summary.
    """

    def test_throttled(self):
        """
        A burst of 100 refusals logs one line at once and one summary with
        the count when the interval ends; no timer is left behind.
        """
        clock = Clock()
        warnings = collect_warnings(self)
        limits = ConnectionLimits(clock, max_connections=100, max_per_ip=1, warn_interval=5.0)
        limits.opened(FakeChannel("192.0.2.1"))
        for i in range(100):
            limits.admit("192.0.2.1")
            clock.advance(0.01)
        self.assertEqual(len(warnings), 1)
        clock.advance(5)
        self.assertEqual(warnings[1], "99 more connection(s) closed by max_connections_per_ip (1) in the "
                                      "last 5.0s (the last from 192.0.2.1)")
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(3)
        limits.admit("192.0.2.1")
        self.assertEqual(len(warnings), 2)
        clock.advance(2)
        self.assertEqual(len(warnings), 3)
        clock.advance(10)
        limits.admit("192.0.2.1")
        self.assertEqual(len(warnings), 4)
        self.assertIn("connection from 192.0.2.1 closed", warnings[3])

    def test_stop_flushes(self):
        """
        stop() logs the pending summary now and leaves no timer.
        """
        clock = Clock()
        warnings = collect_warnings(self)
        from twisted.logger import Logger
        warn = ThrottledWarning(clock, Logger(), "one {x}", "{count} more (last {x})", 5.0)
        warn(x=1)
        warn(x=2)
        warn(x=3)
        warn.stop()
        self.assertEqual(warnings, ["one 1", "2 more (last 3)"])
        self.assertEqual(clock.getDelayedCalls(), [])


class Recorder(Factory):
    """
    A factory recording what the limited factory asks of it.
    """

    def __init__(self):
        self.calls = []

    def buildProtocol(self, addr):
        """
        A plain protocol, recorded.
        """
        self.calls.append(("build", addr.host))
        return Protocol()

    def doStart(self):
        """
        Recorded.
        """
        self.calls.append("start")

    def doStop(self):
        """
        Recorded.
        """
        self.calls.append("stop")


class LimitedFactoryTests(SynchronousTestCase):
    """
    The port's factory: no protocol for a refused connection.
    """

    def test_refused_gets_no_protocol(self):
        """
        Over the per-IP limit buildProtocol returns None (the port closes
        the socket) without asking the wrapped factory.
        """
        limits = ConnectionLimits(Clock(), max_connections=10, max_per_ip=1)
        wrapped = Recorder()
        factory = LimitedFactory(wrapped, limits)
        self.assertIsInstance(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)), Protocol)
        limits.opened(FakeChannel("192.0.2.1"))
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 2)))
        self.assertEqual(wrapped.calls, [("build", "192.0.2.1")])
        factory.doStart()
        factory.doStop()
        self.assertEqual(wrapped.calls[1:], ["start", "stop"])
        self.assertFalse(factory.noisy)


class FactoryCountingTests(SynchronousTestCase):
    """
    The listener factory reports its channels' opens and closes, for both
    HTTP channels.
    """

    def check(self, config_text):
        """
        Open and close connections through the listener factory of C{config_text}
        with limits of two connections, one per address.
        """
        gate = InMemoryGateway(config_text)
        ports = [FakePort()]
        limits = ConnectionLimits(gate.reactor, max_connections=2, max_per_ip=1)
        limits.add_port(ports[0])
        gate.factory.limits = limits
        limited = LimitedFactory(gate.factory, limits)
        first, _ = gate.connect("192.0.2.1")
        self.assertEqual(limits.per_ip("192.0.2.1"), 1)
        self.assertIsNone(limited.buildProtocol(IPv4Address("TCP", "192.0.2.1", 2)))
        second, _ = gate.connect("192.0.2.2")
        self.assertFalse(ports[0].reading)
        self.assertIsNone(limited.buildProtocol(IPv4Address("TCP", "192.0.2.3", 2)))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(ports[0].reading)
        self.assertEqual(limits.open, 1)
        self.assertEqual(limits.per_ip("192.0.2.1"), 0)
        second.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(limits.open, 0)

    def test_lean_channel(self):
        """
        http_server = gatelayer (the default).
        """
        self.check(CONFIG)

    def test_twisted_channel(self):
        """
        http_server = twisted.
        """
        self.check(CONFIG.replace("workers = 1", "workers = 1\nhttp_server = twisted"))


class FakeListener:
    """
    A listening socket whose accept() returns or raises what it is given,
    then says EAGAIN.
    """

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)

    def accept(self):
        """
        The next outcome: a C{(socket, address)} or an error raised.
        """
        if not self.outcomes:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def fileno(self):
        """
        A fake descriptor.
        """
        return 99


class FakeClientSocket:
    """
    An accepted client socket Twisted may close.
    """

    def __init__(self):
        self.closed = False

    def close(self):
        """
        Record the close.
        """
        self.closed = True

    def fileno(self):
        """
        A fake descriptor.
        """
        return 98


class FakeReservation:
    """
    Twisted's reserved EMFILE-recovery descriptor, without a file.
    """

    def available(self):
        """
        Always there.
        """
        return True

    def reserve(self):
        """
        Nothing to open.
        """
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class AcceptErrorTests(SynchronousTestCase):
    """
    A failing accept in Twisted's own tcp.Port.doRead: the worker's log
    filter turns its events into a pause of ACCEPT_BACKOFF and one throttled
    warning, so the port does not try again at once (a spin on ENFILE) and
    the log is not flooded.
    """

    port_class = tcp.Port

    def setUp(self):
        """
        Limits on a memory reactor and the worker's log filter on the global publisher.
        """
        self.reactor = MemoryReactorClock()
        self.limits = ConnectionLimits(self.reactor, max_connections=100)
        self.passed = []
        self.filter = AcceptErrorFilter(self.passed.append)
        self.filter.limits = self.limits
        globalLogPublisher.addObserver(self.filter)
        self.addCleanup(globalLogPublisher.removeObserver, self.filter)
        self.warnings = collect_warnings(self)

    def port(self, outcomes):
        """
        A real tcp.Port on the memory reactor whose socket's accept gives
        C{outcomes}, paused and resumed by the limits.
        """
        port = self.port_class(0, Recorder(), reactor=self.reactor)
        port.socket = FakeListener(outcomes)
        port.fileno = port.socket.fileno
        port.numberAccepts = 100
        port.connected = True
        port.startReading()
        self.limits.add_port(port)
        return port

    def test_pauses(self):
        """
        ENFILE, ENOBUFS, ENOMEM, and EMFILE with Twisted's reserve
        descriptor gone: the port, which would read again at once, stops
        reading for ACCEPT_BACKOFF, then reads again; one warning names the
        error; Twisted's own line is not logged.
        """
        class NoReservation(FakeReservation):
            def available(self):
                return False
        self.patch(tcp, "_reservedFD", NoReservation())
        cases = [(errno.ENFILE, "ENFILE (the system's file table is full)"),
                 (errno.ENOBUFS, "ENOBUFS (the kernel is out of buffers)"),
                 (errno.ENOMEM, "ENOMEM (the kernel is out of memory)"),
                 (errno.EMFILE, "EMFILE (the worker's open-file limit is reached)")]
        for number, named in cases:
            del self.warnings[:]
            port = self.port([OSError(number, "out")])
            port.doRead()
            self.assertNotIn(port, self.reactor.getReaders(), named)
            self.assertEqual(self.warnings, [f"accept failed with {named}: not accepting for 0.5s"])
            self.reactor.advance(ACCEPT_BACKOFF)
            self.assertIn(port, self.reactor.getReaders())
            self.reactor.advance(5)
            self.limits.forget_ports()
        self.assertEqual(self.limits.accept_errors, 4)
        self.assertFalse([e for e in self.passed if e.get("log_namespace") == "twisted.internet.tcp.Port"
                          and "acceptError" in e])

    def test_emfile_recovery(self):
        """
        EMFILE with Twisted's reserve descriptor: the waiting connections
        are closed unanswered (clients fail fast) and counted, the port
        keeps reading (nothing spins), one warning replaces Twisted's lines
        per connection.
        """
        self.patch(tcp, "_reservedFD", FakeReservation())
        clients = [FakeClientSocket(), FakeClientSocket()]
        port = self.port([OSError(errno.EMFILE, "Too many open files"),
                          (clients[0], ("192.0.2.1", 1)), (clients[1], ("192.0.2.2", 2))])
        port.doRead()
        self.assertTrue(all(c.closed for c in clients))
        self.assertEqual((self.limits.accept_errors, self.limits.unanswered), (1, 2))
        self.assertIn(port, self.reactor.getReaders())
        self.assertEqual(self.warnings, [
            "accept failed with EMFILE (the worker's open-file limit is reached): closing the "
            "connections waiting to be accepted"])
        self.assertFalse([e for e in self.passed if "EMFILE" in (e.get("log_format") or "")])

    def test_flood_throttled(self):
        """
        A hundred failing accepts: one warning, then one summary with the
        count and the connections closed unanswered.
        """
        for i in range(100):
            self.filter({"log_namespace": "twisted.internet.tcp.Port", "acceptError": "EMFILE",
                         "log_format": "Could not accept new connection ({acceptError})"})
            self.filter({"log_namespace": "twisted.internet.tcp.Port", "address": ("192.0.2.1", i),
                         "log_format": "EMFILE recovery: Closed socket from {address}"})
            self.reactor.advance(0.01)
        self.reactor.advance(5)
        self.assertEqual(len(self.warnings), 2)
        self.assertEqual(self.warnings[1], "99 more failed accept(s) in the last 5.0s (the last EMFILE: "
                                           "the worker's open-file limit is reached); 100 connection(s) "
                                           "closed unanswered so far")
        self.limits.stop()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_paused_by_both(self):
        """
        A port paused by max_connections stays paused when the accept
        backoff ends, and the reverse.
        """
        port = FakePort()
        limits = ConnectionLimits(self.reactor, max_connections=1)
        limits.add_port(port)
        channel = FakeChannel("192.0.2.1")
        limits.opened(channel)
        limits.accept_failed("EMFILE")
        self.reactor.advance(ACCEPT_BACKOFF)
        self.assertFalse(port.reading)
        limits.accept_failed("EMFILE")
        limits.closed(channel)
        self.assertFalse(port.reading)
        self.reactor.advance(ACCEPT_BACKOFF)
        self.assertTrue(port.reading)

    def test_other_events_pass(self):
        """
        Other events, ECONNABORTED (a client gave up; nothing to back off
        from) included, go on to the log unchanged.
        """
        events = [{"log_namespace": "twisted.internet.tcp.Port", "acceptError": "ECONNABORTED"},
                  {"log_namespace": "gatelayer.x", "log_format": "EMFILE encountered"},
                  {"log_namespace": "twisted.internet.tcp.Port", "log_format": "something else"}]
        for event in events:
            self.filter(event)
        self.assertEqual(self.passed[-3:], events)
        self.assertEqual(self.limits.accept_errors, 0)

    def test_before_the_worker(self):
        """
        Until the worker's limits exist, accept events are logged as they
        are.
        """
        passed = []
        unbound = AcceptErrorFilter(passed.append)
        event = {"log_namespace": "twisted.internet.tcp.Port", "acceptError": "EMFILE"}
        unbound(event)
        self.assertEqual(passed, [event])


class EagerPortAcceptErrorTests(AcceptErrorTests):
    """
    The same with the worker's own port class (L{gatelayer.transports}),
    whose events are logged under its own name.
    """

    port_class = _EagerPort
