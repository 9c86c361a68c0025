"""
Tests for the embedded store's leases (L{gatelayer.ratelimit.leases}): the
grant arithmetic, giving back, the worker's lease table, and two workers'
L{MasterStore}s leasing from one master over AMP (iosim, a Clock) while the
count stays exact.
"""

import json

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.chain import Exchange
from gatelayer.config.filter_ratelimit import RateLimitSettings
from gatelayer.filters.ratelimit import RateLimitFilter
from gatelayer.process.control import ControlProtocol
from gatelayer.ratelimit.algorithms import Decision, Quota
from gatelayer.ratelimit.breaker import GuardedStore
from gatelayer.ratelimit.control import RateLimitGiveBack, RateLimitTakeBatch, register_master_responders
from gatelayer.ratelimit.leases import LEASE_GRACE, LEASE_IDLE, LEASE_LIFE, LEASE_MIN, LeaseTable, lease_terms
from gatelayer.ratelimit.master_store import MasterStore
from gatelayer.ratelimit.memory_store import MemoryStore
from gatelayer.testing.exchange import raw_headers

GCRA = Quota(rate=100, period=60.0, burst=0, algorithm="gcra")
WINDOW = Quota(rate=100, period=60.0, burst=0, algorithm="sliding_window")
START = 1_000_000.0


def spec_of(quota):
    """
    The C{(rate, period, burst, algorithm)} tuple leases are kept under.
    """
    return (quota.rate, float(quota.period), quota.burst, quota.algorithm)


class LeaseTermsTests(SynchronousTestCase):
    """
    L{lease_terms}: how much the master may lease, and on what terms.
    """

    def test_table(self):
        """
        No lease after a refusal, near the limit, or for a worker that asks
        for none; otherwise at most half of what remains above a margin of
        a quarter of the quota, at most what was asked for, and at most
        what the quota refills in a tenth of a second (or 8).
        """
        allowed = Decision(True, 99, 0.0, 0.6)
        cases = [
            ("refused", Decision(False, 0, 1.0, 1.0), GCRA, 8, 0),
            ("at the margin", Decision(True, 25, 0.0, 45.0), GCRA, 8, 0),
            ("one above the margin", Decision(True, 26, 0.0, 45.0), GCRA, 8, 0),
            ("two above the margin", Decision(True, 27, 0.0, 45.0), GCRA, 8, 1),
            ("asks for none", allowed, GCRA, 0, 0),
            ("asks for little", allowed, GCRA, 3, 3),
            ("rate bound", allowed, GCRA, 1000, LEASE_MIN),
            ("spare bound", Decision(True, 250_074, 0.0, 0.001), Quota(1_000_000, 1.0), 10**9, 37),
            ("high rate", Decision(True, 999_999, 0.0, 0.0), Quota(1_000_000, 1.0), 10**9, 100_000),
        ]
        for name, decision, quota, want, count in cases:
            with self.subTest(name):
                self.assertEqual(lease_terms(decision, quota, 0, want)[0], count, name)

    def test_spare_bound_small_quota(self):
        """
        A quota of 7 (rate 5, burst 2) leases 2 after its first take: (6 -
        1) // 2, with a margin of one.
        """
        quota = Quota(rate=5, period=1.0, burst=2)
        self.assertEqual(lease_terms(Decision(True, 6, 0.0, 0.2), quota, 0, 100)[0], 2)

    def test_gcra_terms(self):
        """
        Under GCRA each leased take adds one emission interval to reset,
        and the lease lives L{LEASE_LIFE} (it is a reservation: the quota
        refilling meanwhile does not hand its takes out twice).
        """
        count, step, life, window = lease_terms(Decision(True, 99, 0.0, 0.6), GCRA, 0, 8)
        self.assertEqual((count, step, window), (8, 0.6, 0))
        self.assertEqual(life, LEASE_LIFE)
        fast = Quota(rate=1000, period=1.0)
        count, step, life, _ = lease_terms(Decision(True, 999, 0.0, 0.001), fast, 0, 50)
        self.assertEqual((count, step, life), (50, 0.001, LEASE_LIFE))

    def test_window_terms(self):
        """
        Under the sliding window a lease ends with the window it was
        counted in, whose index it carries.
        """
        now_us = 125_500_000  # 125.5 s: window 2 of 60 s, 54.5 s before its end
        count, step, life, window = lease_terms(Decision(True, 99, 0.0, 54.5), WINDOW, now_us, 8)
        self.assertEqual((count, step, life, window), (8, 0.0, LEASE_LIFE, 2))
        _, _, life, _ = lease_terms(Decision(True, 99, 0.0, 0.2), WINDOW, now_us, 8)
        self.assertEqual(life, 0.2)


class MemoryStoreLeaseTests(SynchronousTestCase):
    """
    L{MemoryStore.take_lease} and L{MemoryStore.give_back}.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore(self.clock)
        self.addCleanup(self.store.close)

    def test_leased_decisions_are_the_sequential_ones(self):
        """
        The decisions a lease hands out are exactly those the store would
        have made for as many takes at the grant, and the take after the
        lease continues from them, for both algorithms.
        """
        for quota in (GCRA, WINDOW, Quota(rate=7, period=1.0, burst=13), Quota(3, 1.0, 40, "sliding_window")):
            with self.subTest(quota.algorithm):
                reference = MemoryStore(self.clock)
                self.addCleanup(reference.close)
                expected = [reference.take_now("k", quota) for _ in range(quota.limit + 2)]
                store = MemoryStore(self.clock)
                self.addCleanup(store.close)
                table = LeaseTable(self.clock, lambda *a: None)
                got = []
                while len(got) < quota.limit + 2:
                    decision, terms = store.take_lease("k", quota, 1000)
                    got.append(decision)
                    if terms[0]:
                        table.add("k", spec_of(quota), decision, terms, self.clock.seconds())
                        while (leased := table.use("k", spec_of(quota))) is not None:
                            got.append(leased)
                self.assertEqual(got[:quota.limit + 2], expected)
                self.assertEqual(store.stats()["allowed"], quota.limit)
                self.assertGreater(store.stats()["leases"], 0)

    def test_give_back_gcra(self):
        """
        A GCRA lease reserves its takes; at its end the unused ones are
        available again, the used ones are charged, and the counters forget
        the unused.
        """
        decision, (count, _, _, _, lease) = self.store.take_lease("k", GCRA, 8)
        self.assertEqual((decision.remaining, count), (99, 8))
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 90)
        self.store.give_back("k", GCRA, 5, 0, 3, lease)
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 94)
        stats = self.store.stats()
        self.assertEqual((stats["takes"], stats["allowed"], stats["given_back"]), (6, 6, 5))

    def test_reservation_does_not_refill(self):
        """
        While a GCRA lease is out, the quota refilling does not free its
        takes: a full quota of time later, the reserved takes still count;
        the used ones are charged when the lease ends, not before.
        """
        _, (count, _, _, _, lease) = self.store.take_lease("k", GCRA, 8)
        self.clock.advance(0.5)
        decision = self.store.take_now("k", GCRA)
        self.assertEqual(decision.remaining, 99 - count - 1)
        self.assertAlmostEqual(decision.reset, 0.7 + count * 0.6)
        self.store.give_back("k", GCRA, 0, 0, count, lease)
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 99 - count - 2)

    def test_unreported_lease_charged_whole(self):
        """
        A GCRA lease whose worker never reports is charged whole once its
        life and grace are over; a late report changes nothing.
        """
        _, (count, _, _, _, lease) = self.store.take_lease("k", GCRA, 8)
        self.clock.advance(LEASE_LIFE + LEASE_GRACE)
        self.store.sweep()
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 99 - count)
        self.store.give_back("k", GCRA, count, 0, 0, lease)
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 99 - count - 1)

    def test_give_back_never_overfills(self):
        """
        Giving back after the quota has come back whole leaves it whole,
        not more.
        """
        _, (count, _, _, _, lease) = self.store.take_lease("k", GCRA, 8)
        self.clock.advance(LEASE_LIFE)
        self.store.give_back("k", GCRA, count, 0, 0, lease)
        self.assertEqual(self.store.take_now("k", GCRA).remaining, 99)

    def test_give_back_sliding_window(self):
        """
        Tokens go back to the window they were counted in: the current
        one, or the previous one after the edge; a window older than that
        no longer counts and is left alone.
        """
        self.clock.advance(60 - self.clock.seconds() % 60)  # the start of a window
        window = int(self.clock.seconds() // 60)
        _, (count, _, _, leased_in) = self.store.take_lease("k", WINDOW, 8)
        self.assertEqual((count, leased_in), (8, window))
        self.store.give_back("k", WINDOW, 8, leased_in)
        self.assertEqual(self.store.take_now("k", WINDOW).remaining, 98)
        _, (count, *_) = self.store.take_lease("k", WINDOW, 8)
        self.clock.advance(60)
        self.assertEqual(self.store.take_now("k", WINDOW).remaining, 88)
        self.store.give_back("k", WINDOW, count, leased_in)
        self.assertEqual(self.store.take_now("k", WINDOW).remaining, 95)
        self.store.give_back("k", WINDOW, 1, leased_in - 5)
        self.assertEqual(self.store.take_now("k", WINDOW).remaining, 94)


class LeaseTableTests(SynchronousTestCase):
    """
    L{LeaseTable}: a worker's leases and their ends.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.returned = []
        self.table = LeaseTable(self.clock, lambda *a: self.returned.append(a))
        self.spec = spec_of(GCRA)

    def grant(self, count=4, life=LEASE_LIFE, key="k"):
        self.table.add(key, self.spec, Decision(True, 50, 0.0, 30.0), (count, 0.6, life, 0),
                       self.clock.seconds())

    def test_used_up(self):
        """
        A lease answers its count of takes, each with one less remaining and
        reset grown by the step less the time passed, then no more; nothing
        is given back and no timer is left.
        """
        self.grant()
        self.clock.advance(0.1)
        decisions = [self.table.use("k", self.spec) for _ in range(5)]
        self.assertEqual([d.remaining for d in decisions[:4]], [49, 48, 47, 46])
        self.assertAlmostEqual(decisions[0].reset, 30.5)
        self.assertIsNone(decisions[4])
        self.assertEqual(self.returned, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_gives_back(self):
        """
        A lease unused for L{LEASE_IDLE} seconds ends and gives back what is
        left; using it keeps it alive.
        """
        self.grant()
        self.clock.advance(LEASE_IDLE * 0.8)
        self.assertIsNotNone(self.table.use("k", self.spec))
        self.clock.advance(LEASE_IDLE * 0.8)
        self.assertEqual(self.returned, [])
        self.clock.advance(LEASE_IDLE * 0.3)
        self.assertEqual(self.returned, [("k", self.spec, 3, 0, 1, 0)])
        self.assertIsNone(self.table.use("k", self.spec))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_life_bound(self):
        """
        However often used, a lease ends at its life.
        """
        self.grant(count=1000, life=0.5)
        for _ in range(10):
            self.clock.advance(0.049)
            self.assertIsNotNone(self.table.use("k", self.spec))
        self.clock.advance(0.01)
        self.assertIsNone(self.table.use("k", self.spec))
        self.assertEqual(self.returned, [("k", self.spec, 990, 0, 10, 0)])

    def test_other_quota(self):
        """
        A take under another quota (a reload changed it) does not use the
        lease, which ends and gives back.
        """
        self.grant()
        self.assertIsNone(self.table.use("k", spec_of(WINDOW)))
        self.assertEqual(self.returned, [("k", self.spec, 4, 0, 0, 0)])

    def test_close(self):
        """
        Closing gives back every unused take and leaves no timer.
        """
        self.grant(key="a")
        self.grant(key="b")
        self.table.use("a", self.spec)
        self.table.close()
        self.assertEqual(sorted(self.returned), [("a", self.spec, 3, 0, 1, 0), ("b", self.spec, 4, 0, 0, 0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_demand_and_sizes(self):
        """
        A lease is asked for a key taken twice in a batch or again soon,
        not for one seen once; a used-up lease doubles the next request,
        one given back shrinks it to what was used.
        """
        self.assertEqual(self.table.wants(["a", "b", "b"], self.clock.seconds()), {"b": LEASE_MIN})
        self.assertEqual(self.table.wants(["a"], self.clock.seconds()), {"a": LEASE_MIN})
        self.table.answered("a", self.spec, Decision(True, 50, 0.0, 1.0), (4, 0.6, 1.0, 0), START)
        self.table.answered("b", self.spec, Decision(True, 50, 0.0, 1.0), None, START)
        for _ in range(4):
            self.table.use("a", self.spec)
        self.clock.advance(0.1)
        self.assertEqual(self.table.wants(["a", "b"], self.clock.seconds()), {"a": 8})
        self.table.answered("a", self.spec, Decision(True, 50, 0.0, 1.0), (8, 0.6, 1.0, 0), START)
        self.table.use("a", self.spec)
        self.clock.advance(LEASE_IDLE)
        self.assertEqual(self.returned, [("a", self.spec, 7, 0, 1, 0)])
        self.assertEqual(self.table.wants(["a", "a", "b", "b"], self.clock.seconds()),
                         {"a": LEASE_MIN, "b": LEASE_MIN})

    def test_held_takes(self):
        """
        Takes held while a lease is asked for are served from it when it
        comes, in order; those it cannot serve, and all of them when no
        lease comes, are handed back to be asked for; cancelled ones are
        skipped; a take is not held on an ask the master has left
        unanswered for L{LEASE_LIFE}.
        """
        self.assertEqual(self.table.wants(["k", "k"], START), {"k": LEASE_MIN})
        held = [Deferred() for _ in range(4)]
        for d in held:
            self.assertTrue(self.table.hold("k", self.spec, d))
        self.assertFalse(self.table.hold("other", self.spec, Deferred()))
        held[1].cancel()
        self.failureResultOf(held[1], CancelledError)
        left = self.table.answered("k", self.spec, Decision(True, 50, 0.0, 1.0), (2, 0.6, 1.0, 0), START)
        self.assertEqual([self.successResultOf(d).remaining for d in (held[0], held[2])], [49, 48])
        self.assertEqual(left, [(self.spec, held[3])])
        self.table.wants(["k"], START)
        waiting = Deferred()
        self.table.hold("k", self.spec, waiting)
        self.assertEqual(self.table.answered("k", self.spec, Decision(True, 5, 0.0, 1.0), None, START),
                         [(self.spec, waiting)])
        self.clock.advance(LEASE_IDLE)
        self.assertEqual(self.table.wants(["k", "k"], self.clock.seconds()), {"k": 4})  # 2 used up, doubled
        self.assertTrue(self.table.hold("k", self.spec, Deferred()))
        self.clock.advance(LEASE_LIFE + 0.1)
        self.assertFalse(self.table.hold("k", self.spec, Deferred()))


class LeasedMasterStoreTests(SynchronousTestCase):
    """
    Workers' L{MasterStore}s with a clock lease from one master over AMP.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.memory = MemoryStore(self.clock)
        self.addCleanup(self.memory.close)
        self.workers = []
        self.sent = []
        for _ in range(2):
            master, worker, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
            register_master_responders(master, self.memory)
            call_remote = worker.callRemote

            def counting(command, _call=call_remote, **kw):
                self.sent.append((command, kw))
                return _call(command, **kw)
            worker.callRemote = counting
            store = MasterStore(worker, self.clock)
            self.addCleanup(store.close)
            self.workers.append((store, pump))

    def turn(self):
        """
        One reactor turn of every worker: flush batches, deliver answers.
        """
        self.clock.advance(0)
        for _, pump in self.workers:
            pump.flush()

    def test_exact_over_two_workers(self):
        """
        Two workers taking one key turn after turn, several takes a turn
        each, admit exactly the quota, with every remaining count once,
        though most takes were answered from leases.
        """
        quota = Quota(rate=100, period=3600.0, burst=20)
        decisions = []
        for turn in range(60):
            for index, (store, _) in enumerate(self.workers):
                for _ in range(1 + (turn + index) % 3):
                    store.take("k", quota).addCallback(decisions.append)
            self.turn()
            self.clock.advance(0.01)
        allowed = [d for d in decisions if d.allowed]
        self.assertEqual(len(allowed), 120)
        self.assertEqual(sorted(d.remaining for d in allowed), list(range(120)))
        stats = self.memory.stats()
        self.assertEqual((stats["takes"], stats["allowed"]), (len(decisions), 120))
        self.assertGreater(stats["leases"], 0)
        asked = sum(len(json.loads(kw["takes"])) for c, kw in self.sent if c is RateLimitTakeBatch)
        self.assertLess(asked, len(decisions) * 0.7)

    def test_answered_at_once(self):
        """
        With a lease in hand a take is answered synchronously
        (C{take_local}) and costs no command.
        """
        store, _ = self.workers[0]
        first = [store.take("k", GCRA) for _ in range(2)]
        self.turn()
        self.assertEqual([self.successResultOf(d).remaining for d in first], [99, 98])
        sent = len(self.sent)
        self.assertEqual(store.take_local("k", GCRA).remaining, 97)
        self.assertEqual(self.successResultOf(store.take("k", GCRA)).remaining, 96)
        self.assertEqual(len(self.sent), sent)
        self.assertIsNone(store.take_local("other", GCRA))

    def test_held_then_served(self):
        """
        Takes made while the lease is being asked for wait for it and are
        served from it: one command for all.
        """
        store, pump = self.workers[0]
        asked = [store.take("k", GCRA) for _ in range(2)]
        self.clock.advance(0)
        held = [store.take("k", GCRA) for _ in range(3)]
        pump.flush()
        self.clock.advance(0)
        pump.flush()
        results = [self.successResultOf(d).remaining for d in asked + held]
        self.assertEqual(results, [99, 98, 97, 96, 95])
        self.assertEqual([c for c, _ in self.sent], [RateLimitTakeBatch])

    def test_idle_lease_given_back(self):
        """
        A lease left unused is given back to the master after
        L{LEASE_IDLE}, where the next take sees the tokens again.
        """
        store, pump = self.workers[0]
        [store.take("k", GCRA) for _ in range(2)]
        self.turn()
        self.clock.advance(LEASE_IDLE)
        self.turn()
        gave = [kw for c, kw in self.sent if c is RateLimitGiveBack]
        self.assertEqual(len(gave), 1)
        self.assertEqual(json.loads(gave[0]["leases"]), [["k", 100, 60.0, 0, "gcra", LEASE_MIN, 0, 0, 1]])
        self.assertEqual(self.memory.stats()["given_back"], LEASE_MIN)
        other, _ = self.workers[1]
        d = other.take("k", GCRA)
        self.turn()
        self.assertEqual(self.successResultOf(d).remaining, 97)

    def test_lost_channel_fails_held(self):
        """
        A batch that fails fails the takes held for its lease as well.
        """
        store, pump = self.workers[0]
        asked = [store.take("k", GCRA) for _ in range(2)]
        self.clock.advance(0)
        held = store.take("k", GCRA)
        store._protocol.connectionLost(Failure(ConnectionLost()))
        for d in asked + [held]:
            self.failureResultOf(d)


class SynchronousFilterTests(SynchronousTestCase):
    """
    The filter decides without a Deferred when its store answers at once.
    """

    def test_no_deferred(self):
        """
        Over a memory store and over a lease, C{on_request} returns L{None}
        (pass) or a reply, never a Deferred.
        """
        clock = Clock()
        memory = MemoryStore(clock)
        self.addCleanup(memory.close)
        settings = RateLimitSettings(rate=2, period=60.0)
        f = RateLimitFilter("f", settings, GuardedStore(memory, clock, 1.0), clock)
        results = [f.on_request(Exchange(method=b"GET", path=b"/", query=b"", headers=raw_headers(()),
                                         client_ip="10.0.0.1", route="r", context={}))
                   for _ in range(3)]
        self.assertIsNone(results[0])
        self.assertIsNone(results[1])
        self.assertEqual(results[2].status, 429)
