"""
Tests for L{gatelayer.upstream.state}: which server a worker uses, passive
ejection, health verdicts and counters.
"""

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config._loader import parse_server
from gatelayer.config.model import HealthSpec, RouteSpec, UpstreamSpec
from gatelayer.upstream.balancers import LeastConnectionsBalancer
from gatelayer.upstream.state import UpstreamState, may_retry_method


def upstream(*servers, **settings):
    """
    An L{UpstreamSpec} named C{app} with servers written as in C{gate.ini}.
    """
    return UpstreamSpec(name="app", servers=tuple(parse_server(s) for s in servers), **settings)


def make_state(*servers, **settings):
    """
    An L{UpstreamState} on a fresh L{Clock}, and the clock.
    """
    clock = Clock()
    return UpstreamState(upstream(*servers, **settings), clock), clock


def addresses(state, count, client_ip="192.0.2.1", exclude=()):
    """
    The addresses of C{count} successive picks.
    """
    picked = []
    for _ in range(count):
        server = state.pick(client_ip, exclude)
        picked.append(server.address if server is not None else None)
    return picked


class PickTests(SynchronousTestCase):
    """
    L{UpstreamState.pick} honours down, backup, health and exclusions.
    """

    def test_round_robin_by_default(self):
        """
        Without a C{balance} setting, primaries take turns.
        """
        state, _ = make_state("10.0.0.1:80", "10.0.0.2:80")
        self.assertEqual(addresses(state, 4), ["10.0.0.1:80", "10.0.0.2:80"] * 2)

    def test_balance_setting(self):
        """
        C{balance = weighted} uses smooth weighted round robin.
        """
        state, _ = make_state("a:1 weight=5", "b:1", "c:1", balance="weighted")
        self.assertEqual(addresses(state, 7), ["a:1", "a:1", "b:1", "a:1", "c:1", "a:1", "a:1"])

    def test_down_never(self):
        """
        A C{down} server is never picked, not even when nothing else is usable.
        """
        state, _ = make_state("10.0.0.1:80", "10.0.0.2:80 down", "10.0.0.3:80 down backup")
        self.assertEqual(set(addresses(state, 10)), {"10.0.0.1:80"})
        state.set_healthy("10.0.0.1:80", False)
        self.assertIsNone(state.pick("192.0.2.1"))

    def test_backup_only_without_primaries(self):
        """
        Backups get nothing while a primary is usable, everything once none
        is, and nothing again once a primary is back.
        """
        state, _ = make_state("p1:80", "p2:80", "b1:80 backup")
        self.assertNotIn("b1:80", addresses(state, 10))
        state.set_healthy("p1:80", False)
        self.assertEqual(set(addresses(state, 10)), {"p2:80"})
        state.set_healthy("p2:80", False)
        self.assertEqual(set(addresses(state, 10)), {"b1:80"})
        state.set_healthy("p1:80", True)
        self.assertEqual(set(addresses(state, 10)), {"p1:80"})

    def test_no_usable_server(self):
        """
        When every server is unhealthy, L{UpstreamState.pick} returns L{None}
        (the 503 case).
        """
        state, _ = make_state("p1:80", "b1:80 backup")
        state.set_healthy("p1:80", False)
        state.set_healthy("b1:80", False)
        self.assertIsNone(state.pick("192.0.2.1"))

    def test_one_primary(self):
        """
        With one primary (and a backup), the primary is picked while it is
        healthy and not ejected; the backup while it is not; and once its
        ejection is over it is back, on probation.
        """
        state, clock = make_state("p1:80", "b1:80 backup", max_fails=1, fail_timeout=10)
        self.assertEqual(addresses(state, 2), ["p1:80"] * 2)
        state.set_healthy("p1:80", False)
        self.assertEqual(addresses(state, 2), ["b1:80"] * 2)
        state.set_healthy("p1:80", True)
        primary = state.pick("192.0.2.1")
        state.report_failure(primary, "timeout")
        self.assertEqual(addresses(state, 2), ["b1:80"] * 2)
        clock.advance(10)
        self.assertEqual(addresses(state, 2), ["p1:80"] * 2)
        self.assertTrue(state.snapshot()[0]["ejections"])
        state.report_failure(primary, "timeout")
        self.assertEqual(addresses(state, 1), ["b1:80"])

    def test_retry_goes_elsewhere(self):
        """
        A server already tried by the request (given as server or address) is
        not picked again.
        """
        state, _ = make_state("p1:80", "p2:80", "p3:80")
        first = state.pick("192.0.2.1")
        for _ in range(6):
            self.assertNotEqual(state.pick("192.0.2.1", exclude=[first]), first)
            self.assertNotEqual(state.pick("192.0.2.1", exclude=[first.address]), first)

    def test_retry_to_backup(self):
        """
        Once every primary has been tried, a retry goes to a backup; once
        everything has been tried there is nothing left.
        """
        state, _ = make_state("p1:80", "b1:80 backup")
        self.assertEqual(state.pick("192.0.2.1", exclude=["p1:80"]).address, "b1:80")
        self.assertIsNone(state.pick("192.0.2.1", exclude=["p1:80", "b1:80"]))

    def test_ip_hash_sticky_and_failover(self):
        """
        With C{ip_hash} a client keeps its server, moves when it becomes
        unhealthy and returns when it is healthy again.
        """
        state, _ = make_state("a:1", "b:1", "c:1", balance="ip_hash")
        home = state.pick("198.51.100.9")
        self.assertEqual({state.pick("198.51.100.9") for _ in range(5)}, {home})
        state.set_healthy(home.address, False)
        away = state.pick("198.51.100.9")
        self.assertNotEqual(away, home)
        state.set_healthy(home.address, True)
        self.assertEqual(state.pick("198.51.100.9"), home)

    def test_least_conn_uses_active_counts(self):
        """
        C{least_conn} sees the requests in progress recorded through
        L{UpstreamState.request_started} and L{UpstreamState.request_finished}.
        """
        state, _ = make_state("a:1", "b:1", balance="least_conn")
        self.assertIsInstance(state.balancer, LeastConnectionsBalancer)
        a = state.pick("")
        state.request_started(a)
        b = state.pick("")
        self.assertNotEqual(a, b)
        state.request_started(b)
        state.request_started(b)
        self.assertEqual(state.pick(""), a)
        state.request_finished(b)
        state.request_finished(b)
        self.assertEqual(state.pick(""), b)

    def test_saturated_server_skipped(self):
        """
        A server at C{max_connections} is passed over while another has room,
        and still picked when all are full (the pool queues).
        """
        state, _ = make_state("a:1", "b:1", max_connections=2)
        a = [s for s in state.spec.servers if s.address == "a:1"][0]
        b = [s for s in state.spec.servers if s.address == "b:1"][0]
        state.request_started(a)
        state.request_started(a)
        self.assertEqual(set(addresses(state, 4)), {"b:1"})
        state.request_started(b)
        state.request_started(b)
        self.assertEqual(set(addresses(state, 4)), {"a:1", "b:1"})

    def test_set_healthy_unknown(self):
        """
        A verdict on an address that is not a server of this upstream is
        ignored and reported as such.
        """
        state, _ = make_state("a:1")
        self.assertFalse(state.set_healthy("z:9", False))
        self.assertTrue(state.set_healthy("a:1", True))


class PassiveEjectionTests(SynchronousTestCase):
    """
    C{max_fails} failures within C{fail_timeout} eject a server for
    C{fail_timeout}.
    """

    def setUp(self):
        self.state, self.clock = make_state("a:1", "b:1", max_fails=3, fail_timeout=10.0)
        self.a, self.b = self.state.spec.servers

    def test_ejected_after_max_fails(self):
        """
        The third connect error within 10 s ejects the server: only the other
        one is picked.
        """
        self.state.report_failure(self.a, "connect_error")
        self.clock.advance(4)
        self.state.report_failure(self.a, "timeout")
        self.assertIn("a:1", addresses(self.state, 2))
        self.clock.advance(4)
        self.state.report_failure(self.a, "connect_error")
        self.assertEqual(set(addresses(self.state, 6)), {"b:1"})

    def test_failures_outside_window(self):
        """
        Failures spread over more than C{fail_timeout} never add up to an
        ejection.
        """
        for _ in range(10):
            self.state.report_failure(self.a, "connect_error")
            self.clock.advance(6)
        self.assertIn("a:1", addresses(self.state, 2))

    def test_returns_after_fail_timeout(self):
        """
        An ejected server is picked again once C{fail_timeout} has passed.
        """
        for _ in range(3):
            self.state.report_failure(self.a, "connect_error")
        self.clock.advance(9.9)
        self.assertEqual(set(addresses(self.state, 4)), {"b:1"})
        self.clock.advance(0.1)
        self.assertIn("a:1", addresses(self.state, 2))

    def test_probation_failure_ejects_at_once(self):
        """
        The first failure after an ejection ended ejects the server again;
        after a success it takes C{max_fails} failures again.
        """
        for _ in range(3):
            self.state.report_failure(self.a, "connect_error")
        self.clock.advance(10)
        self.state.report_failure(self.a, "timeout")
        self.assertEqual(set(addresses(self.state, 4)), {"b:1"})
        self.clock.advance(10)
        self.state.pick("")
        self.state.report_success(self.a)
        self.state.report_failure(self.a, "timeout")
        self.assertIn("a:1", addresses(self.state, 2))

    def test_all_ejected_is_none(self):
        """
        With every server ejected there is nothing to pick: 503 at once, and
        Retry-After is the time until the first one returns.
        """
        for server in (self.a, self.b):
            for _ in range(3):
                self.state.report_failure(server, "connect_error")
            self.clock.advance(3)
        self.assertIsNone(self.state.pick(""))
        self.assertEqual(self.state.retry_after(), 4)

    def test_5xx_counted_only_with_retry_on(self):
        """
        502/503/504 count as failures only when C{retry_on} lists them.
        """
        for _ in range(5):
            self.assertFalse(self.state.report_failure(self.a, "502"))
        self.assertIn("a:1", addresses(self.state, 2))
        state, _ = make_state("a:1", "b:1", retry_on=frozenset({"connect_error", "502"}))
        a = state.spec.servers[0]
        for _ in range(3):
            self.assertTrue(state.report_failure(a, "502"))
        self.assertEqual(set(addresses(state, 4)), {"b:1"})

    def test_overloaded_not_counted(self):
        """
        A full local connection queue says nothing about the server.
        """
        for _ in range(5):
            self.assertFalse(self.state.report_failure(self.a, "overloaded"))
        self.assertIn("a:1", addresses(self.state, 2))
        self.assertEqual(self.state.snapshot()[0]["failures"], 0)

    def test_unknown_kind(self):
        """
        An unknown failure kind is a programming error.
        """
        self.assertRaises(ValueError, self.state.report_failure, self.a, "oops")

    def test_single_server_never_ejected(self):
        """
        An upstream with one server keeps using it: ejecting it would only
        turn failures into 503s.
        """
        state, _ = make_state("only:1")
        for _ in range(10):
            state.report_failure(state.spec.servers[0], "connect_error")
        self.assertEqual(state.pick("").address, "only:1")

    def test_max_fails_zero_disables(self):
        """
        C{max_fails = 0} turns passive ejection off.
        """
        state, _ = make_state("a:1", "b:1", max_fails=0)
        for _ in range(10):
            state.report_failure(state.spec.servers[0], "connect_error")
        self.assertIn("a:1", addresses(state, 2))

    def test_ejection_logged(self):
        """
        An ejection is logged with structured fields.
        """
        with capturedLogs() as events:
            for _ in range(3):
                self.state.report_failure(self.a, "timeout")
        ejected = [e for e in events if e.get("event") == "ejected"]
        self.assertEqual(len(ejected), 1)
        self.assertEqual(ejected[0]["upstream"], "app")
        self.assertEqual(ejected[0]["address"], "a:1")
        self.assertEqual(ejected[0]["count"], 3)
        self.assertEqual(ejected[0]["kind"], "timeout")


class RetryTests(SynchronousTestCase):
    """
    L{UpstreamState.should_retry} and L{may_retry_method}.
    """

    def test_retry_on(self):
        """
        Only kinds listed in C{retry_on}, and only C{retries} times.
        """
        state, _ = make_state("a:1", "b:1", retries=2)
        self.assertTrue(state.should_retry("connect_error"))
        self.assertTrue(state.should_retry("timeout", attempts=2))
        self.assertFalse(state.should_retry("timeout", attempts=3))
        self.assertFalse(state.should_retry("502"))
        self.assertFalse(state.should_retry("invalid_response"))
        none, _ = make_state("a:1", retries=0)
        self.assertFalse(none.should_retry("connect_error"))

    def test_retry_target(self):
        """
        L{UpstreamState.retry_target} names an untried usable server only
        when the policy allows a retry and such a server exists; a single
        server, retries outnumbering the servers, or the others being
        unhealthy or ejected give L{None} (the caller then answers with the
        attempt's own outcome).
        """
        retry_on = frozenset({"connect_error", "timeout", "503"})
        cases = [
            # servers, retries, failed kind, tried, unhealthy, expected
            (("a:1",), 1, "timeout", ["a:1"], (), None),
            (("a:1",), 3, "503", ["a:1"], (), None),
            (("a:1", "b:1"), 1, "timeout", ["a:1"], (), "b:1"),
            (("a:1", "b:1"), 1, "503", ["b:1"], (), "a:1"),
            (("a:1", "b:1"), 5, "timeout", ["a:1", "b:1"], (), None),
            (("a:1", "b:1"), 1, "timeout", ["a:1"], ("b:1",), None),
            (("a:1", "b:1"), 1, "502", ["a:1"], (), None),
            (("a:1", "b:1"), 0, "timeout", ["a:1"], (), None),
            (("a:1", "b:1", "c:1"), 1, "timeout", ["a:1", "b:1"], (), None),
            (("a:1", "b:1 backup"), 1, "connect_error", ["a:1"], (), "b:1"),
        ]
        for servers, retries, kind, tried, unhealthy, expected in cases:
            state, _ = make_state(*servers, retries=retries, retry_on=retry_on)
            for address in unhealthy:
                state.set_healthy(address, False)
            target = state.retry_target(kind, "192.0.2.1", [parse_server(t) for t in tried])
            label = (servers, retries, kind, tried, unhealthy)
            self.assertEqual(None if target is None else target.address, expected, label)

    def test_methods(self):
        """
        Idempotent methods may be retried; POST and PATCH only when the route
        says C{retry_non_idempotent}.
        """
        plain = RouteSpec(name="r", path="/", upstream="app")
        allowing = RouteSpec(name="r", path="/", upstream="app", retry_non_idempotent=True)
        for method in (b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"):
            self.assertTrue(may_retry_method(method, plain), method)
        for method in (b"POST", b"PATCH"):
            self.assertFalse(may_retry_method(method, plain), method)
            self.assertTrue(may_retry_method(method, allowing), method)


class SnapshotTests(SynchronousTestCase):
    """
    L{UpstreamState.snapshot} reports every server for /status.
    """

    def test_fields(self):
        """
        Each server's row carries its configuration, verdicts and counters.
        """
        state, clock = make_state("a:1 weight=2", "b:1 backup", "c:1 down", max_fails=1)
        a = state.spec.servers[0]
        state.request_started(a)
        state.request_started(a)
        state.request_finished(a)
        state.report_failure(a, "connect_error")
        state.set_healthy("b:1", False)
        clock.advance(4)
        rows = {row["address"]: row for row in state.snapshot()}
        self.assertEqual(list(rows), ["a:1", "b:1", "c:1"])
        self.assertEqual(rows["a:1"], {
            "address": "a:1", "weight": 2, "backup": False, "down": False, "healthy": True,
            "ejected": True, "ejected_for": 6.0, "active": 1, "requests": 2, "failures": 1,
            "ejections": 1,
        })
        self.assertFalse(rows["b:1"]["healthy"])
        self.assertTrue(rows["b:1"]["backup"])
        self.assertTrue(rows["c:1"]["down"])

    def test_retry_after_with_health(self):
        """
        Without ejections, Retry-After is how long a server needs to rise.
        """
        state, _ = make_state("a:1", health=HealthSpec(path="/h", interval=2.0, rise=2))
        state.set_healthy("a:1", False)
        self.assertEqual(state.retry_after(), 4)
        plain, _ = make_state("a:1")
        self.assertEqual(plain.retry_after(), 1)

    def test_adopt(self):
        """
        A state built for a reloaded configuration keeps the verdicts and
        counters of servers it shares with the old one.
        """
        old, clock = make_state("a:1", "b:1")
        old.set_healthy("a:1", False)
        old.request_started(old.spec.servers[1])
        new = UpstreamState(upstream("a:1", "b:1", "c:1"), clock)
        new.adopt(old)
        rows = {row["address"]: row for row in new.snapshot()}
        self.assertFalse(rows["a:1"]["healthy"])
        self.assertEqual(rows["b:1"]["requests"], 1)
        self.assertTrue(rows["c:1"]["healthy"])
