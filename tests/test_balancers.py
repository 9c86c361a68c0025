"""
Tests for L{gatelayer.upstream.balancers}: each algorithm, table-style.
"""

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config.model import ServerSpec
from gatelayer.upstream.balancers import (
    BALANCERS, ConsistentHashBalancer, IBalancer, LeastConnectionsBalancer, PowerOfTwoBalancer,
    RoundRobinBalancer, SmoothWeightedBalancer, balancer_for,
)


def servers(*weights):
    """
    Servers 10.0.0.1:80, 10.0.0.2:80, ... with the given weights.
    """
    return [ServerSpec(host=f"10.0.0.{i + 1}", port=80, weight=w) for i, w in enumerate(weights)]


def idle(server):
    """
    An C{active} function for an upstream with no request in progress.
    """
    return 0


def client_ips(count):
    """
    C{count} distinct, deterministic client addresses.
    """
    return [f"172.{16 + i // 65536}.{(i // 256) % 256}.{i % 256}" for i in range(count)]


def assert_within(case, actual, expected, tolerance=0.02):
    """
    Fail C{case} unless C{actual} is within C{tolerance} of C{expected}.
    """
    if abs(actual - expected) > tolerance:
        case.fail(f"{actual!r} is not within {tolerance} of {expected!r}")


def shares(balancer, candidates, picks=10000, ips=None, active=idle):
    """
    The fraction of C{picks} each candidate got.
    """
    counts = Counter()
    for i in range(picks):
        ip = ips[i] if ips is not None else "192.0.2.1"
        counts[balancer.pick(candidates, ip, active)] += 1
    return {s: counts[s] / picks for s in candidates}


class InterfaceTests(SynchronousTestCase):
    """
    Every balancer provides L{IBalancer} and is reachable by its config name.
    """

    def test_all_provide_interface(self):
        """
        Each class in L{BALANCERS} builds an object that verifies as
        L{IBalancer}.
        """
        for name in BALANCERS:
            self.assertTrue(verifyObject(IBalancer, balancer_for(name)), name)

    def test_names(self):
        """
        The config names map to the expected classes.
        """
        self.assertIsInstance(balancer_for("round_robin"), RoundRobinBalancer)
        self.assertIsInstance(balancer_for("weighted"), SmoothWeightedBalancer)
        self.assertIsInstance(balancer_for("least_conn"), LeastConnectionsBalancer)
        self.assertIsInstance(balancer_for("ip_hash"), ConsistentHashBalancer)
        self.assertIsInstance(balancer_for("random2"), PowerOfTwoBalancer)

    def test_unknown_name(self):
        """
        An unknown name is a L{ValueError} listing the known ones.
        """
        e = self.assertRaises(ValueError, balancer_for, "fastest")
        self.assertIn("least_conn", str(e))


class RoundRobinBalancerTests(SynchronousTestCase):
    """
    L{RoundRobinBalancer} rotates, ignoring weights.
    """

    def test_rotation(self):
        """
        Three servers are picked in turn.
        """
        a, b, c = servers(1, 1, 1)
        balancer = RoundRobinBalancer()
        self.assertEqual([balancer.pick([a, b, c], "", idle) for _ in range(7)],
                         [a, b, c, a, b, c, a])

    def test_even_distribution(self):
        """
        Over 10,000 picks each of four servers gets a quarter (within 2%),
        whatever their weights.
        """
        candidates = servers(5, 1, 1, 1)
        for share in shares(RoundRobinBalancer(), candidates).values():
            assert_within(self, share, 0.25)

    def test_shrinking_candidates(self):
        """
        When a server leaves the candidates the rotation continues over the
        rest without error.
        """
        a, b, c = servers(1, 1, 1)
        balancer = RoundRobinBalancer()
        picked = [balancer.pick([a, b, c], "", idle) for _ in range(2)]
        picked += [balancer.pick([a, c], "", idle) for _ in range(4)]
        self.assertEqual(picked[2:], [a, c, a, c])


class SmoothWeightedBalancerTests(SynchronousTestCase):
    """
    L{SmoothWeightedBalancer} is nginx's smooth weighted round robin.
    """

    def test_exact_sequence_5_1_1(self):
        """
        Weights 5:1:1 give exactly a a b a c a a, repeating.
        """
        a, b, c = servers(5, 1, 1)
        balancer = SmoothWeightedBalancer()
        picked = [balancer.pick([a, b, c], "", idle) for _ in range(14)]
        self.assertEqual(picked, [a, a, b, a, c, a, a] * 2)

    def test_exact_sequences(self):
        """
        More weight tables and their exact cycles.
        """
        table = [
            ((1, 1), "ab"),
            ((2, 1), "aba"),
            ((3, 1), "aaba"),
            ((4, 2, 1), "abacaba"),
            ((1, 1, 1), "abc"),
        ]
        for weights, expected in table:
            candidates = servers(*weights)
            names = {s: "abcdefg"[i] for i, s in enumerate(candidates)}
            balancer = SmoothWeightedBalancer()
            picked = "".join(names[balancer.pick(candidates, "", idle)] for _ in range(len(expected) * 3))
            self.assertEqual(picked, expected * 3, weights)

    def test_distribution_follows_weights(self):
        """
        Over 10,000 picks with weights 3:2:1 the shares are 1/2, 1/3, 1/6
        within 2%.
        """
        candidates = servers(3, 2, 1)
        got = shares(SmoothWeightedBalancer(), candidates)
        for server, expected in zip(candidates, (3 / 6, 2 / 6, 1 / 6)):
            assert_within(self, got[server], expected)

    def test_server_leaving(self):
        """
        With one server gone the others keep their relative weights.
        """
        a, b, c = servers(3, 1, 2)
        balancer = SmoothWeightedBalancer()
        for _ in range(5):
            balancer.pick([a, b, c], "", idle)
        got = shares(balancer, [a, c], picks=5000)
        assert_within(self, got[a], 0.6)
        assert_within(self, got[c], 0.4)


class LeastConnectionsBalancerTests(SynchronousTestCase):
    """
    L{LeastConnectionsBalancer} picks the fewest active requests per weight.
    """

    def test_fewest_active(self):
        """
        The server with the fewest active requests wins.
        """
        a, b, c = servers(1, 1, 1)
        load = {a: 5, b: 2, c: 7}
        self.assertIs(LeastConnectionsBalancer().pick([a, b, c], "", load.get), b)

    def test_weighed_by_weight(self):
        """
        Active counts are divided by weight: 5 requests on weight 3 (1.67)
        beat 2 requests on weight 1.
        """
        table = [
            ((3, 1), (5, 2), 0),
            ((3, 1), (7, 2), 1),
            ((1, 4), (1, 3), 1),
            ((2, 1), (4, 2), None),
        ]
        for weights, counts, winner in table:
            candidates = servers(*weights)
            load = dict(zip(candidates, counts))
            picked = LeastConnectionsBalancer().pick(candidates, "", load.get)
            if winner is not None:
                self.assertIs(picked, candidates[winner], (weights, counts))
            else:
                self.assertIn(picked, candidates)

    def test_ties_rotate(self):
        """
        Equally loaded servers take turns.
        """
        a, b, c = servers(1, 1, 1)
        balancer = LeastConnectionsBalancer()
        self.assertEqual([balancer.pick([a, b, c], "", idle) for _ in range(6)], [a, b, c, a, b, c])

    def test_ties_respect_weight(self):
        """
        When idle, a 3:1 upstream is spread 3:1.
        """
        candidates = servers(3, 1)
        got = shares(LeastConnectionsBalancer(), candidates)
        assert_within(self, got[candidates[0]], 0.75)

    def test_tracks_load(self):
        """
        With requests that never finish, the load evens out by weight.
        """
        candidates = servers(2, 1, 1)
        load = Counter()
        balancer = LeastConnectionsBalancer()
        for _ in range(400):
            load[balancer.pick(candidates, "", load.__getitem__)] += 1
        self.assertEqual([load[s] for s in candidates], [200, 100, 100])


class ConsistentHashBalancerTests(SynchronousTestCase):
    """
    L{ConsistentHashBalancer} is weighted rendezvous hashing on the client.
    """

    def test_sticky(self):
        """
        The same client always gets the same server, and a new balancer (as
        in another worker) agrees.
        """
        candidates = servers(1, 1, 1, 1, 1)
        ips = client_ips(200)
        first = [ConsistentHashBalancer().pick(candidates, ip, idle) for ip in ips]
        balancer = ConsistentHashBalancer()
        self.assertEqual([balancer.pick(candidates, ip, idle) for ip in ips], first)
        self.assertEqual([balancer.pick(candidates, ip, idle) for ip in ips], first)

    def test_even_distribution(self):
        """
        Over 10,000 clients each of 5 equal servers gets a fifth, within 2%.
        """
        candidates = servers(1, 1, 1, 1, 1)
        got = shares(ConsistentHashBalancer(), candidates, ips=client_ips(10000))
        for share in got.values():
            assert_within(self, share, 0.2)

    def test_weights_honoured(self):
        """
        Over 10,000 clients, weights 3:1 and 1:2:1 give shares within 2%.
        """
        for weights in [(3, 1), (1, 2, 1)]:
            candidates = servers(*weights)
            got = shares(ConsistentHashBalancer(), candidates, ips=client_ips(10000))
            for server in candidates:
                assert_within(self, got[server], server.weight / sum(weights))

    def test_removal_moves_only_its_clients(self):
        """
        Removing 1 of 5 servers moves exactly the clients it had; putting it
        back returns them, and no one else moves.
        """
        candidates = servers(1, 1, 1, 1, 1)
        balancer = ConsistentHashBalancer()
        ips = client_ips(5000)
        before = {ip: balancer.pick(candidates, ip, idle) for ip in ips}
        gone = candidates[2]
        remaining = [s for s in candidates if s is not gone]
        during = {ip: balancer.pick(remaining, ip, idle) for ip in ips}
        moved = {ip for ip in ips if during[ip] != before[ip]}
        self.assertEqual(moved, {ip for ip in ips if before[ip] == gone})
        self.assertTrue(moved)
        # The moved clients spread over the four others rather than piling on one.
        spread = Counter(during[ip] for ip in moved)
        self.assertEqual(len(spread), 4)
        after = {ip: balancer.pick(candidates, ip, idle) for ip in ips}
        self.assertEqual(after, before)

    def test_single_candidate(self):
        """
        With one candidate it is chosen.
        """
        only = servers(1)
        self.assertIs(ConsistentHashBalancer().pick(only, "198.51.100.7", idle), only[0])

    def test_ipv6_client(self):
        """
        IPv6 client addresses hash like any other.
        """
        candidates = servers(1, 1)
        picked = ConsistentHashBalancer().pick(candidates, "2001:db8::1", idle)
        self.assertIn(picked, candidates)


class PowerOfTwoBalancerTests(SynchronousTestCase):
    """
    L{PowerOfTwoBalancer} takes the less loaded of two random candidates.
    """

    def test_less_loaded_of_two(self):
        """
        Of the two drawn, the one with fewer active requests per weight wins;
        the most loaded server is never chosen while three others exist.
        """
        candidates = servers(1, 1, 1, 1)
        load = dict(zip(candidates, (9, 1, 2, 3)))
        balancer = PowerOfTwoBalancer(random.Random(4))
        picked = Counter(balancer.pick(candidates, "", load.get) for _ in range(1000))
        self.assertEqual(picked[candidates[0]], 0)
        self.assertGreater(picked[candidates[1]], picked[candidates[3]])

    def test_deterministic_with_seed(self):
        """
        The same seed gives the same choices.
        """
        candidates = servers(1, 1, 1, 1)
        runs = []
        for _ in range(2):
            balancer = PowerOfTwoBalancer(random.Random(7))
            runs.append([balancer.pick(candidates, "", idle) for _ in range(20)])
        self.assertEqual(runs[0], runs[1])
        self.assertGreater(len(set(runs[0])), 1)

    def test_idle_distribution(self):
        """
        Idle equal servers each get about a third of 10,000 picks (within 2%).
        """
        candidates = servers(1, 1, 1)
        got = shares(PowerOfTwoBalancer(random.Random(1)), candidates)
        for share in got.values():
            assert_within(self, share, 1 / 3)

    def test_single_candidate(self):
        """
        With one candidate it is chosen without drawing.
        """
        only = servers(1)
        self.assertIs(PowerOfTwoBalancer(random.Random(0)).pick(only, "", idle), only[0])
