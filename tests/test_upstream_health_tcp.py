"""
Tests for L{gatelayer.upstream.health_tcp}: C{health_check = tcp} checks, a
connection that opens passes, and the PROXY C{LOCAL} header they send.
"""

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config.model import HealthSpec
from gatelayer.l4.proxyproto import encode_local
from gatelayer.upstream.health import HealthMonitor
from gatelayer.upstream.health_tcp import CONNECTED, local_header, probe_connect
from tests.test_health import Upstreams, app

TCP = HealthSpec(path=None, kind="tcp", interval=2.0, timeout=1.0, rise=2, fall=3)


class _ConnectedEndpoint:
    """
    An endpoint whose connection opens at once onto a L{StringTransport}.
    """

    def __init__(self):
        self.transport = StringTransport()

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(self.transport)
        return succeed(protocol)


class TcpCheckTests(SynchronousTestCase):
    """
    The monitor's verdicts with C{tcp} checks.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.upstreams = Upstreams(self.reactor)
        self.upstreams.behaviours = {("10.0.0.1", 80): "silent", ("10.0.0.2", 80): "silent"}
        self.changes = []
        self.monitor = HealthMonitor(self.reactor, {"db": app("10.0.0.1:80", "10.0.0.2:80", health=TCP)},
                                     lambda *change: self.changes.append(change))

    def test_connection_passes(self):
        """
        A server that accepts the connection passes, whatever it says (here
        nothing at all).
        """
        self.monitor.start()
        for _ in range(4):
            self.upstreams.tick(2)
        self.assertEqual(self.changes, [])
        self.assertEqual(self.monitor.states(), {"db": {"10.0.0.1:80": True, "10.0.0.2:80": True}})
        self.assertEqual(self.monitor.status()["db"]["10.0.0.1:80"]["last"], "connected")
        self.successResultOf(self.monitor.stop())

    def test_refused_and_hanging_fail(self):
        """
        A refused connection, or one not open within C{health_timeout},
        fails; after C{health_fall} failures the server is unhealthy.
        """
        self.upstreams.behaviours[("10.0.0.1", 80)] = "refuse"
        self.upstreams.behaviours[("10.0.0.2", 80)] = "hang"
        self.monitor.start()
        for _ in range(8):
            self.upstreams.tick(2)
        self.assertEqual(self.monitor.states(), {"db": {"10.0.0.1:80": False, "10.0.0.2:80": False}})
        self.successResultOf(self.monitor.stop())


class ProbeConnectTests(SynchronousTestCase):
    """
    L{probe_connect} on its own.
    """

    def test_local_header_then_close(self):
        """
        The probe writes its hello (a PROXY LOCAL header for an upstream
        with C{send_proxy}) and closes.
        """
        endpoint = _ConnectedEndpoint()
        result = probe_connect(MemoryReactorClock(), endpoint, 1.0, encode_local())
        self.assertEqual(self.successResultOf(result), CONNECTED)
        self.assertEqual(endpoint.transport.value(), encode_local())
        self.assertTrue(endpoint.transport.disconnecting)

    def test_local_header_by_version(self):
        """
        C{local_header} is empty without C{send_proxy}, v1's C{PROXY
        UNKNOWN} or v2's C{LOCAL} with it.
        """
        self.assertEqual(local_header(app("10.0.0.1:80", health=TCP)), b"")
        self.assertEqual(local_header(app("10.0.0.1:80", health=TCP, send_proxy="v1")), b"PROXY UNKNOWN\r\n")
        self.assertEqual(local_header(app("10.0.0.1:80", health=TCP, send_proxy="v2")), encode_local())

    def test_timeout(self):
        """
        A connection not open within the timeout fails the probe and
        leaves no timer.
        """
        reactor = MemoryReactorClock()

        class Hanging:
            def connect(self, factory):
                from twisted.internet.defer import Deferred
                return Deferred(lambda d: d.errback(ConnectingCancelledError(None)))
        result = probe_connect(reactor, Hanging(), 1.0)
        self.assertNoResult(result)
        reactor.advance(1.0)
        self.failureResultOf(result, ConnectingCancelledError)
        self.assertEqual(reactor.getDelayedCalls(), [])
