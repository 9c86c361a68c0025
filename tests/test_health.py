"""
Tests for L{gatelayer.upstream.health} (active checks in the master) and
L{gatelayer.upstream.control} (pushing verdicts to workers).

Probes connect through a L{MemoryReactorClock}; each connection attempt is
answered by an in-memory twisted.web site (or refused, or left hanging),
joined with L{twisted.test.iosim}, so real HTTP is spoken without sockets.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from gatelayer.config._loader import parse_server
from gatelayer.config.model import HealthSpec, UpstreamSpec
from gatelayer.process.control import ControlProtocol
from gatelayer.testing.server import feed
from gatelayer.upstream.control import (
    HealthChanged, collect_status, push_all_states, push_health_change, register_worker_responders,
)
from gatelayer.upstream.health import HealthMonitor, ProbeFailed, probe_status
from gatelayer.upstream.state import UpstreamState


class StatusResource(Resource):
    """
    Answers every request with a settable status and records what it saw.
    """

    isLeaf = True

    def __init__(self, code):
        super().__init__()
        self.code = code
        self.seen = []

    def render_GET(self, request):
        self.seen.append((request.uri, request.getHeader(b"host")))
        request.setResponseCode(self.code)
        return b"ok\n"


class Garbage(Protocol):
    """
    A server that is not HTTP.
    """

    def connectionMade(self):
        self.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n")


class Silent(Protocol):
    """
    A server that accepts and never answers.
    """


class Upstreams:
    """
    Scripted servers behind a L{MemoryReactorClock}: C{behaviours} maps
    C{(host, port)} to a L{StatusResource}, C{"refuse"}, C{"hang"} (the
    connection never completes), C{"silent"} or C{"garbage"}.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.behaviours = {}
        self.connections = 0

    def answer(self):
        """
        Answer every pending connection attempt and deliver all the bytes.
        """
        pending = list(zip(self.reactor.tcpClients, self.reactor.connectors))
        self.reactor.tcpClients[:], self.reactor.connectors[:] = [], []
        for attempt, connector in pending:
            host, port, factory, timeout, bind = attempt
            if connector.stoppedConnecting:
                continue
            behaviour = self.behaviours[(host, port)]
            if behaviour == "hang":
                self.reactor.tcpClients.append(attempt)
                self.reactor.connectors.append(connector)
                continue
            if behaviour == "refuse":
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
                continue
            self.connections += 1
            if behaviour == "garbage":
                server = Garbage()
            elif behaviour == "silent":
                server = Silent()
            else:
                server = Site(behaviour, reactor=Clock()).buildProtocol(None)
            address = IPv4Address("TCP", host, port)
            client = factory.buildProtocol(address)
            pump = connect(server, FakeTransport(server, True), client,
                           FakeTransport(client, False, peerAddress=address))
            pump.flush()

    def tick(self, seconds):
        """
        Advance the clock by C{seconds}, answering connections on the way.
        """
        self.answer()
        self.reactor.advance(seconds)
        self.answer()


def app(*servers, health=None, name="app", **settings):
    """
    An upstream spec with health checks every 2 s, rise 2, fall 3.
    """
    if health is None:
        health = HealthSpec(path="/healthz", interval=2.0, timeout=1.0, rise=2, fall=3)
    return UpstreamSpec(name=name, servers=tuple(parse_server(s) for s in servers),
                        health=health, **settings)


class MonitorTestCase(SynchronousTestCase):
    """
    A monitor of upstream C{app} (10.0.0.1:80 and 10.0.0.2:80) recording
    its changes.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.upstreams = Upstreams(self.reactor)
        self.one = StatusResource(200)
        self.two = StatusResource(200)
        self.upstreams.behaviours = {("10.0.0.1", 80): self.one, ("10.0.0.2", 80): self.two}
        self.changes = []
        self.monitor = HealthMonitor(
            self.reactor, {"app": app("10.0.0.1:80", "10.0.0.2:80")},
            lambda *change: self.changes.append(change))

    def stop(self):
        """
        Stop the monitor and check nothing is left scheduled.
        """
        d = self.monitor.stop()
        self.upstreams.answer()
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class HealthMonitorTests(MonitorTestCase):
    """
    L{HealthMonitor} turns check results into verdicts with rise and fall.
    """

    def test_starts_healthy(self):
        """
        Before any check every server is healthy; down servers and upstreams
        without a check are not monitored.
        """
        monitor = HealthMonitor(self.reactor, {
            "app": app("10.0.0.1:80", "10.0.0.3:80 down"),
            "plain": UpstreamSpec(name="plain", servers=(parse_server("10.0.0.9:80"),)),
        }, self.changes.append)
        self.assertEqual(monitor.states(), {"app": {"10.0.0.1:80": True}})

    def test_request(self):
        """
        The probe is C{GET} of the check path with the server address as Host
        (or C{health_host}), checked once per interval.
        """
        self.monitor.start()
        self.upstreams.tick(2)
        self.upstreams.tick(2)
        self.assertEqual(self.one.seen, [(b"/healthz", b"10.0.0.1:80")] * 3)
        self.stop()
        monitor = HealthMonitor(self.reactor, {"app": app(
            "10.0.0.1:80", health=HealthSpec(path="/ping?deep=1", host="app.internal"))},
            self.changes.append)
        monitor.start()
        self.upstreams.answer()
        self.assertEqual(self.one.seen[-1], (b"/ping?deep=1", b"app.internal"))
        self.successResultOf(monitor.stop())

    def test_fall_then_rise(self):
        """
        Three failing checks in a row make a server unhealthy (reported once);
        two passing ones make it healthy again.
        """
        self.monitor.start()
        self.one.code = 500
        self.upstreams.answer()
        self.upstreams.tick(2)
        self.assertEqual(self.changes, [])
        self.upstreams.tick(2)
        self.assertEqual(self.changes, [("app", "10.0.0.1:80", False)])
        self.upstreams.tick(2)
        self.assertEqual(len(self.changes), 1)
        self.assertEqual(self.monitor.states(), {"app": {"10.0.0.1:80": False, "10.0.0.2:80": True}})
        self.one.code = 204
        self.upstreams.tick(2)
        self.assertEqual(len(self.changes), 1)
        self.upstreams.tick(2)
        self.assertEqual(self.changes[1:], [("app", "10.0.0.1:80", True)])
        self.assertEqual(self.monitor.states()["app"]["10.0.0.1:80"], True)
        self.stop()

    def test_streak_must_be_consecutive(self):
        """
        A pass between failures restarts the count.
        """
        self.monitor.start()
        for code in (500, 500, 200, 500, 500, 200, 500):
            self.one.code = code
            self.upstreams.answer()
            self.reactor.advance(2)
        self.assertEqual(len(self.one.seen), 7)
        self.assertEqual(self.changes, [])
        self.stop()

    def test_refused(self):
        """
        A refused connection is a failed check.
        """
        self.upstreams.behaviours[("10.0.0.2", 80)] = "refuse"
        self.monitor.start()
        for _ in range(3):
            self.upstreams.tick(2)
        self.assertEqual(self.changes, [("app", "10.0.0.2:80", False)])
        self.assertIn("ConnectionRefusedError", self.monitor.status()["app"]["10.0.0.2:80"]["last"])
        self.stop()

    def test_timeouts(self):
        """
        A connection that never completes, or a server that never answers,
        fails the check after C{health_timeout}.
        """
        self.upstreams.behaviours[("10.0.0.1", 80)] = "hang"
        self.upstreams.behaviours[("10.0.0.2", 80)] = "silent"
        self.monitor.start()
        for _ in range(3):
            self.upstreams.tick(1)
            self.upstreams.tick(1)
        self.assertEqual(sorted(self.changes),
                         [("app", "10.0.0.1:80", False), ("app", "10.0.0.2:80", False)])
        status = self.monitor.status()["app"]
        self.assertEqual(status["10.0.0.1:80"]["last"], "no status line within 1s")
        self.assertEqual(status["10.0.0.2:80"]["last"], "no status line within 1s")
        self.assertEqual(status["10.0.0.2:80"]["checks"], 3)
        self.stop()

    def test_not_http(self):
        """
        An answer that is not HTTP is a failed check.
        """
        self.upstreams.behaviours[("10.0.0.1", 80)] = "garbage"
        self.monitor.start()
        self.upstreams.answer()
        self.assertEqual(self.monitor.status()["app"]["10.0.0.1:80"]["fails"], 1)
        self.assertIn("not HTTP", self.monitor.status()["app"]["10.0.0.1:80"]["last"])
        self.stop()

    def test_status_range(self):
        """
        Only statuses in C{health_status} pass.
        """
        monitor = HealthMonitor(self.reactor, {"app": app("10.0.0.1:80", health=HealthSpec(
            path="/h", fall=1, status=frozenset(range(200, 300))))}, lambda *c: self.changes.append(c))
        self.one.code = 302
        monitor.start()
        self.upstreams.answer()
        self.assertEqual(self.changes, [("app", "10.0.0.1:80", False)])
        self.successResultOf(monitor.stop())

    def test_transitions_logged(self):
        """
        Each transition is logged with structured fields.
        """
        self.one.code = 503
        with capturedLogs() as events:
            self.monitor.start()
            for _ in range(3):
                self.upstreams.tick(2)
        changes = [e for e in events if e.get("event") == "health_change"]
        self.assertEqual(len(changes), 1)
        self.assertEqual((changes[0]["upstream"], changes[0]["address"], changes[0]["healthy"]),
                         ("app", "10.0.0.1:80", False))
        self.assertEqual(changes[0]["result"], "status 503")
        self.stop()

    def test_on_change_error(self):
        """
        A failing C{on_change} is logged and the checks go on.
        """
        def broken(*change):
            self.changes.append(change)
            raise RuntimeError("worker gone")
        monitor = HealthMonitor(self.reactor, {"app": app("10.0.0.1:80")}, broken)
        self.one.code = 500
        with capturedLogs():
            monitor.start()
            for _ in range(3):
                self.upstreams.tick(2)
        self.assertEqual(len(self.changes), 1)
        self.one.code = 200
        self.upstreams.tick(2)
        self.upstreams.tick(2)
        self.assertEqual(len(self.changes), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.successResultOf(monitor.stop())

    def test_stop_in_flight(self):
        """
        Stopping with a probe in flight drops it, reports nothing, and leaves
        no delayed call behind.
        """
        self.upstreams.behaviours[("10.0.0.1", 80)] = "hang"
        self.monitor.start()
        self.upstreams.answer()
        self.stop()
        self.assertEqual(self.changes, [])
        self.assertEqual(self.monitor.status()["app"]["10.0.0.1:80"]["checks"], 0)

    def test_service(self):
        """
        As a service, starting runs the checks and stopping ends them.
        """
        self.monitor.startService()
        self.assertTrue(self.monitor.running)
        self.upstreams.answer()
        self.assertEqual(len(self.one.seen), 1)
        self.successResultOf(self.monitor.stopService())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_reconfigure(self):
        """
        After a reload, kept servers keep their verdict, new ones start
        healthy and removed ones are no longer checked.
        """
        self.one.code = 500
        self.monitor.start()
        for _ in range(3):
            self.upstreams.tick(2)
        self.upstreams.behaviours[("10.0.0.3", 80)] = StatusResource(200)
        d = self.monitor.reconfigure({"app": app("10.0.0.1:80", "10.0.0.3:80")})
        self.upstreams.answer()
        self.successResultOf(d)
        self.assertEqual(self.monitor.states(), {"app": {"10.0.0.1:80": False, "10.0.0.3:80": True}})
        seen = len(self.two.seen)
        self.upstreams.tick(2)
        self.assertEqual(len(self.two.seen), seen)
        self.stop()


class TlsProbeTests(SynchronousTestCase):
    """
    Probes of a TLS upstream go through the creator it is given.
    """

    def test_creator_used(self):
        """
        The monitor asks the upstream's creator function for each server and
        connects through TLS.
        """
        reactor = MemoryReactorClock()
        asked = []

        def creator_for(server):
            asked.append(server.address)
            return optionsForClientTLS("app.internal")

        monitor = HealthMonitor(reactor, {"app": app("10.0.0.1:443", tls=True)}, lambda *c: None,
                                tls_creators={"app": creator_for})
        monitor.start()
        self.assertEqual(asked, ["10.0.0.1:443"])
        protocol = reactor.tcpClients[0][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        # A TLS handshake record (a ClientHello), not a clear-text GET.
        self.assertEqual(transport.value()[:1], b"\x16")
        self.successResultOf(monitor.stop())

    def test_creators_replaced_on_reload(self):
        """
        After set_tls_creators, a TLS upstream added by a reload is probed
        through its new creator.
        """
        reactor = MemoryReactorClock()
        asked = []

        def creator_for(server):
            asked.append(server.address)
            return optionsForClientTLS("app.internal")

        monitor = HealthMonitor(reactor, {}, lambda *c: None)
        monitor.start()
        monitor.set_tls_creators({"app": creator_for})
        self.successResultOf(monitor.reconfigure({"app": app("10.0.0.2:443", tls=True)}))
        self.assertEqual(asked, ["10.0.0.2:443"])
        self.assertEqual(len(reactor.tcpClients), 1)
        self.successResultOf(monitor.stop())

    def test_creator_required(self):
        """
        Without a creator a TLS upstream's check cannot start: it is logged
        and counted as a failed check rather than sent in clear text.
        """
        reactor = MemoryReactorClock()
        monitor = HealthMonitor(reactor, {"app": app("10.0.0.1:443", tls=True)}, lambda *c: None)
        with capturedLogs():
            monitor.start()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(reactor.tcpClients, [])
        self.assertIn("[upstream:app] uses tls", monitor.status()["app"]["10.0.0.1:443"]["last"])
        self.successResultOf(monitor.stop())


class ProbeTests(SynchronousTestCase):
    """
    L{probe_status} on its own.
    """

    def test_cancel(self):
        """
        Cancelling a probe whose connection is pending fails it at once and
        leaves no timer.
        """
        reactor = MemoryReactorClock()
        d = probe_status(reactor, TCP4ClientEndpoint(reactor, "10.0.0.1", 80), "h", "/", 1.0)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_closed_early(self):
        """
        A server closing before a status line fails the probe.
        """
        reactor = MemoryReactorClock()
        d = probe_status(reactor, TCP4ClientEndpoint(reactor, "10.0.0.1", 80), "h", "/", 1.0)
        client = reactor.tcpClients[0][2].buildProtocol(None)
        server = Protocol()
        pump = connect(server, FakeTransport(server, True), client, FakeTransport(client, False))
        server.transport.loseConnection()
        pump.flush()
        self.assertIsInstance(self.failureResultOf(d).value, ProbeFailed)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def probe(self, answer, split):
        """
        The outcome of a probe answered with C{answer}, sent whole or byte
        by byte: the status code or the L{ProbeFailed} text.
        """
        reactor = MemoryReactorClock()
        d = probe_status(reactor, TCP4ClientEndpoint(reactor, "10.0.0.1", 80), "h", "/", 1.0)
        client = reactor.tcpClients[0][2].buildProtocol(None)
        client.makeConnection(StringTransport())
        feed(client, answer, split)
        self.assertEqual(reactor.getDelayedCalls(), [])
        outcomes = []
        d.addCallbacks(outcomes.append, lambda f: outcomes.append(str(f.trap(ProbeFailed) and f.value)))
        return outcomes[0]

    def test_status_line_grammar(self):
        """
        The probe reads the status line by the upstream client's grammar
        (L{gatelayer.http1.parse_status_line}): what the proxy would refuse
        as a bad response is a failed check, whole or byte by byte.
        """
        cases = [
            (b"HTTP/1.1 200 OK\r\n", 200),
            (b"HTTP/1.0 503 Busy\r\nContent-Length: 0\r\n\r\n", 503),
            (b"HTTP/1.1 204\r\n", 204),
            (b"HTTP/1.1 200 OK\n", "not HTTP/1.x (status line not ended by CRLF)"),
            (b"HTTP/1.1 700 OK\r\n", "not HTTP/1.x (invalid status line b'HTTP/1.1 700 OK')"),
            (b"HTTP/2 200\r\n", "not HTTP/1.x (invalid status line b'HTTP/2 200')"),
            (b"HTTP/1.1  200 OK\r\n", "not HTTP/1.x (invalid status line b'HTTP/1.1  200 OK')"),
            (b"SSH-2.0-OpenSSH_9.6\r\n",
             "not HTTP/1.x (invalid status line b'SSH-2.0-OpenSSH_9.6')"),
        ]
        for answer, expected in cases:
            for split in (False, True):
                outcome = self.probe(answer, split)
                if isinstance(expected, int):
                    self.assertEqual(outcome, expected, answer)
                else:
                    self.assertIn(expected, outcome, answer)


class ControlTests(SynchronousTestCase):
    """
    Verdicts travel from the master to workers over AMP.
    """

    def worker(self, states):
        """
        A connected (worker, master) pair of control protocols and the pump.
        """
        worker, master, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        register_worker_responders(worker, states)
        return worker, master, pump

    def test_health_changed(self):
        """
        L{push_health_change} reaches every worker's L{UpstreamState}, and a
        worker without that upstream ignores it.
        """
        clock = Clock()
        states = [{"app": UpstreamState(app("10.0.0.1:80", "10.0.0.2:80"), clock)}, {}]
        pairs = [self.worker(s) for s in states]
        d = push_health_change([m for _, m, _ in pairs], "app", "10.0.0.1:80", False)
        for _, _, pump in pairs:
            pump.flush()
        self.successResultOf(d)
        self.assertEqual({s.address for _ in range(4) for s in [states[0]["app"].pick("")]},
                         {"10.0.0.2:80"})

    def test_push_all_states(self):
        """
        A new worker gets every current verdict, in batches if there are
        many; a callable C{states} is looked up on each command.
        """
        clock = Clock()
        many = ["10.1.%d.%d:80" % (i // 250, i % 250) for i in range(450)]
        table = {"app": UpstreamState(app("10.0.0.1:80", "10.0.0.2:80"), clock),
                 "big": UpstreamState(app(*many, name="big"), clock)}
        worker, master, pump = self.worker(lambda: table)

        class Monitor:
            def states(self):
                verdicts = {address: i % 2 == 0 for i, address in enumerate(many)}
                return {"app": {"10.0.0.1:80": False, "10.0.0.2:80": True}, "big": verdicts,
                        "gone": {"10.9.9.9:80": False}}

        d = push_all_states(master, Monitor())
        pump.flush()
        self.successResultOf(d)
        self.assertEqual(table["app"].pick("").address, "10.0.0.2:80")
        healthy = {row["address"]: row["healthy"] for row in table["big"].snapshot()}
        self.assertEqual(sum(healthy.values()), 225)

    def test_unreachable_worker(self):
        """
        A worker whose pipe is gone is skipped; the push still completes.
        """
        clock = Clock()
        state = {"app": UpstreamState(app("10.0.0.1:80", "10.0.0.2:80"), clock)}
        worker, master, pump = self.worker(state)
        gone = ControlProtocol()
        d = push_health_change([gone, master], "app", "10.0.0.2:80", False)
        pump.flush()
        self.successResultOf(d)
        self.assertFalse(state["app"].snapshot()[1]["healthy"])

    def test_failed_send_logged(self):
        """
        A send that fails (the worker went away mid-call) is logged and the
        push still fires.
        """
        worker, master, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        with capturedLogs() as events:
            d = push_health_change([master], "app", "10.0.0.1:80", False)
            pump.flush()
        self.successResultOf(d)
        self.assertTrue([e for e in events if e.get("what") == "a health change"])
        self.assertEqual(HealthChanged.commandName, b"HealthChanged")

    def test_collect_status(self):
        """
        L{collect_status} adds up the workers' counters per server.
        """
        clock = Clock()
        spec = app("10.0.0.1:80", "10.0.0.2:80", max_fails=1)
        first, second = UpstreamState(spec, clock), UpstreamState(spec, clock)
        a = spec.servers[0]
        first.request_started(a)
        second.request_started(a)
        second.request_started(a)
        second.report_failure(a, "timeout")
        pairs = [self.worker({"app": first}), self.worker({"app": second})]
        d = collect_status([m for _, m, _ in pairs], ["app", "other"])
        for _, _, pump in pairs:
            pump.flush()
        result = self.successResultOf(d)
        self.assertEqual(result["other"], [])
        row = result["app"][0]
        self.assertEqual((row["address"], row["active"], row["requests"], row["failures"],
                          row["ejected"], row["ejected_by"]), ("10.0.0.1:80", 3, 3, 1, True, 1))
        self.assertEqual(result["app"][1]["requests"], 0)
