"""
Tests for a worker's metrics (gatelayer.observe.metrics): what the log phase
counts for each request through an in-memory gateway, the bounded labels
and the histogram buckets.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.observe.metrics import (
    DURATION_BUCKETS, NO_COUNTER, OVERFLOW, SERIES_LIMIT, CounterFamily, HistogramFamily, WorkerMetrics,
    counter_of, routes_of, status_class,
)
from gatelayer.testing.server import InMemoryGateway, parse_response

CONFIG = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80, 10.0.0.2:80
connect_timeout = 1s
read_timeout = 5s
[upstream:beta]
servers = 10.0.0.3:80
[route:app]
path = /api/
upstream = app
[route:hello]
path = /hello
respond = 200 hi
[route:canary]
path = /canary/
upstream = app:50, beta:50
"""


def series(metrics, name):
    """
    C{{labels: value}} of family C{name} in a snapshot of C{metrics}.
    """
    return {tuple(labels): value for labels, value in metrics.snapshot().get(name, [])}


class RequestCountTests(SynchronousTestCase):
    """
    The log phase counts each request under its route, upstream, method and
    status class, with its time, bytes and retries.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG, with_upstreams=True, metrics=True)
        self.reactor = self.gate.reactor
        self.metrics = self.gate.metrics

    def upstream(self, index=-1):
        """
        Complete the pool's latest connection attempt.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport, protocol

    def test_proxied_request(self):
        """
        A proxied request is counted with its route, upstream, method and
        status class; its gateway time and upstream time land in the
        buckets the clock says; body bytes both ways are added.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        self.reactor.advance(0.02)
        _, protocol = self.upstream()
        self.reactor.advance(0.2)
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(parse_response(client.value())[0], 201)
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"),
                         {("app", "app", "POST", "2xx"): 1})
        durations = series(self.metrics, "gatelayer_request_duration_seconds")[("app",)]
        self.assertEqual(durations[DURATION_BUCKETS.index(0.25)], 1)
        self.assertEqual(sum(durations[:-1]), 1)
        self.assertAlmostEqual(durations[-1], 0.22)
        upstream = series(self.metrics, "gatelayer_upstream_response_seconds")[("app", "app")]
        self.assertEqual(upstream[DURATION_BUCKETS.index(0.25)], 1)
        self.assertEqual(series(self.metrics, "gatelayer_received_bytes_total"), {("app",): 3})
        self.assertEqual(series(self.metrics, "gatelayer_sent_bytes_total"), {("app",): 5})
        self.assertEqual(self.metrics.requests, 1)

    def test_unrouted_and_direct(self):
        """
        A request no route takes is counted under route and upstream C{-}
        with its 404; a direct response under its route and upstream C{-}.
        """
        self.gate.exchange(b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.gate.exchange(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"),
                         {("-", "-", "GET", "4xx"): 1, ("hello", "-", "GET", "2xx"): 2})
        durations = series(self.metrics, "gatelayer_request_duration_seconds")
        self.assertEqual((durations[("-",)][0], durations[("hello",)][0]), (1, 2))
        self.assertGreater(series(self.metrics, "gatelayer_sent_bytes_total")[("-",)], 0)

    def test_counts_settled_once(self):
        """
        What the routes count between snapshots is added to the families
        once: a second snapshot adds only the requests since the first, and
        a reload keeps what the old routes had counted.
        """
        hello = b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
        self.gate.exchange(hello)
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"), {("hello", "-", "GET", "2xx"): 1})
        one = series(self.metrics, "gatelayer_sent_bytes_total")[("hello",)]
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"), {("hello", "-", "GET", "2xx"): 1})
        self.gate.exchange(hello)
        self.gate.exchange(hello)
        self.metrics.use_config(self.gate.gateway.config)
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"), {("hello", "-", "GET", "2xx"): 3})
        self.assertEqual(series(self.metrics, "gatelayer_sent_bytes_total"), {("hello",): 3 * one})
        self.assertEqual(series(self.metrics, "gatelayer_received_bytes_total"), {("hello",): 0})

    def test_other_methods_bounded(self):
        """
        A method outside the standard ones is counted as C{OTHER}, so a
        client cannot make new series with made-up methods.
        """
        for method in (b"FOO", b"BAR", b"PROPFIND"):
            self.gate.exchange(method + b" /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        counted = series(self.metrics, "gatelayer_requests_total")
        self.assertEqual({key[2] for key in counted}, {"OTHER"})
        self.assertEqual(sum(counted.values()), 3)

    def test_retry_and_failure(self):
        """
        A refused connection retried on the other server is one retry of
        the upstream; when that fails too the 502 is counted as C{5xx}, and
        no upstream time is observed (no response head came).
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(2):
            factory = self.reactor.tcpClients[-1][2]
            factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(ConnectionRefusedError()))
            self.reactor.advance(0)
        self.assertEqual(parse_response(client.value())[0], 502)
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"), {("app", "app", "GET", "5xx"): 1})
        self.assertEqual(series(self.metrics, "gatelayer_upstream_retries_total"), {("app",): 1})
        self.assertEqual(series(self.metrics, "gatelayer_upstream_response_seconds"), {})

    def test_split_route_upstream(self):
        """
        A split route's request is counted under the upstream of the
        server it went to.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /canary/x HTTP/1.1\r\nHost: x\r\n\r\n")
        host = self.reactor.tcpClients[-1][0]
        _, protocol = self.upstream()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        expected = "beta" if host == "10.0.0.3" else "app"
        self.assertEqual(series(self.metrics, "gatelayer_requests_total"),
                         {("canary", expected, "GET", "2xx"): 1})

    def test_client_gone(self):
        """
        A request whose client went away before any answer is counted
        once, with status class C{0xx} when no status was set.
        """
        channel, client = self.gate.connect()
        channel.dataReceived(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.connectionLost(Failure(ConnectionRefusedError()))
        counted = series(self.metrics, "gatelayer_requests_total")
        self.assertEqual(sum(counted.values()), 1)
        self.assertEqual(self.metrics.requests, 1)


class FamilyTests(SynchronousTestCase):
    """
    The counter and histogram families, status classes, route labels.
    """

    def test_series_capped(self):
        """
        Past L{SERIES_LIMIT} series, new label sets are counted in one
        overflow series: memory stays bounded whatever arrives.
        """
        family = CounterFamily(2)
        for i in range(SERIES_LIMIT + 50):
            family.inc((str(i), "x"))
        self.assertEqual(len(family.values), SERIES_LIMIT + 1)
        self.assertEqual(family.values[(OVERFLOW, OVERFLOW)], 50)
        family.inc(("0", "x"), 2)
        self.assertEqual(family.values[("0", "x")], 3)

    def test_histogram_bounds_inclusive(self):
        """
        A value equal to a bucket's bound is in that bucket (Prometheus'
        C{le}); one above every bound is in the last slot; the sum adds up.
        """
        family = HistogramFamily(1)
        family.observe(("r",), 0.005)
        family.observe(("r",), 0.0051)
        family.observe(("r",), 60.0)
        values = family.values[("r",)]
        self.assertEqual((values[0], values[1], values[len(DURATION_BUCKETS)]), (1, 1, 1))
        self.assertAlmostEqual(values[-1], 60.0101)

    def test_status_class(self):
        """
        Status codes map to their class; none (0) or out of range to C{0xx}.
        """
        self.assertEqual([status_class(c) for c in (101, 204, 308, 429, 503, 0, 999, -1)],
                         ["1xx", "2xx", "3xx", "4xx", "5xx", "0xx", "0xx", "0xx"])

    def test_counter_of_off(self):
        """
        Without metrics, a subsystem's counter counts nothing; with them it
        is the registry's family.
        """
        self.assertIs(counter_of(None, "gatelayer_auth_total"), NO_COUNTER)
        NO_COUNTER.inc(("a", "b", "c"))
        metrics = WorkerMetrics(lambda: 0.0)
        counter_of(metrics, "gatelayer_auth_total").inc(("jwt", "denied", "expired"))
        self.assertEqual(series(metrics, "gatelayer_auth_total"), {("jwt", "denied", "expired"): 1})

    def test_routes_of(self):
        """
        Each route is named by its config name with its upstream; a split
        route maps each server address to its version's upstream.
        """
        routes = routes_of(parse_config_text(CONFIG, "gate.ini", cpu_count=1))
        self.assertEqual((routes["app"].upstream, routes["hello"].upstream), ("app", "-"))
        self.assertEqual(routes["canary"].by_address["10.0.0.3:80"], "beta")
        self.assertEqual(routes["canary"].by_address["10.0.0.1:80"], "app")

    def test_gauge_readers(self):
        """
        Readers installed for a family are read at snapshot time.
        """
        metrics = WorkerMetrics(lambda: 0.0)
        open_now = {("web",): 3}
        metrics.gauges["gatelayer_open_connections"] = lambda: open_now
        self.assertEqual(series(metrics, "gatelayer_open_connections"), {("web",): 3})
        open_now[("web",)] = 1
        self.assertEqual(series(metrics, "gatelayer_open_connections"), {("web",): 1})
