"""
Tests for the memory store, the master store over AMP, the breaker and the
guarded store.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.process.control import ControlProtocol
from gatelayer.ratelimit.algorithms import Decision, Quota
from gatelayer.ratelimit.breaker import CLOSED, HALF_OPEN, OPEN, GuardedStore, StoreBreaker
from gatelayer.ratelimit.control import EmbeddedStorePart, register_master_responders
from gatelayer.ratelimit.interfaces import IRateLimitStore, StoreUnavailable
from gatelayer.ratelimit.master_store import MasterStore
from gatelayer.ratelimit.memory_store import MemoryStore

QUOTA = Quota(rate=5, period=1.0, burst=2)


@implementer(IRateLimitStore)
class ScriptedStore:
    """
    A store whose takes answer with what the test pushes.
    """

    def __init__(self):
        self.pending = []
        self.answer = None

    def take(self, key, quota):
        if self.answer is not None:
            return self.answer()
        d = Deferred()
        self.pending.append(d)
        return d

    def close(self):
        return succeed(None)


class MemoryStoreTests(SynchronousTestCase):
    """
    L{MemoryStore}.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock, sweep_interval=10.0, max_keys=100)
        self.addCleanup(self.store.close)

    def test_interface(self):
        """
        It is an L{IRateLimitStore}.
        """
        self.assertTrue(verifyObject(IRateLimitStore, self.store))

    def test_exact(self):
        """
        Exactly rate + burst pass at once, per key.
        """
        results = [self.successResultOf(self.store.take("a", QUOTA)).allowed for _ in range(20)]
        self.assertEqual(results.count(True), 7)
        self.assertTrue(self.store.take_now("b", QUOTA).allowed)

    def test_refill_with_clock(self):
        """
        The store reads time from the injected clock.
        """
        for _ in range(7):
            self.store.take_now("a", QUOTA)
        decision = self.store.take_now("a", QUOTA)
        self.assertEqual(decision, Decision(False, 0, 0.2, 1.4))
        self.clock.advance(0.2)
        self.assertTrue(self.store.take_now("a", QUOTA).allowed)

    def test_sweep(self):
        """
        Keys whose state has expired are swept by the looping call.
        """
        for i in range(10):
            self.store.take_now(f"k{i}", QUOTA)
        self.assertEqual(len(self.store), 10)
        self.clock.advance(10)
        self.assertEqual(len(self.store), 0)
        self.assertEqual(self.store.stats()["swept"], 10)

    def test_sweep_keeps_live_keys(self):
        """
        A key still within its period survives a sweep.
        """
        long = Quota(rate=1, period=3600.0)
        self.store.take_now("slow", long)
        self.store.take_now("fast", QUOTA)
        self.clock.advance(10)
        self.assertEqual(len(self.store), 1)
        self.assertFalse(self.store.take_now("slow", long).allowed)

    def test_bounded(self):
        """
        At C{max_keys} the oldest keys are forgotten, never more.
        """
        long = Quota(rate=1, period=3600.0)
        for i in range(150):
            self.store.take_now(f"k{i}", long)
        self.assertEqual(len(self.store), 100)
        self.assertEqual(self.store.stats()["evicted"], 50)
        self.assertFalse(self.store.take_now("k149", long).allowed)

    def test_close_stops_sweeper(self):
        """
        After close no timer is left on the clock.
        """
        self.store.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stats(self):
        """
        Decisions are counted.
        """
        for _ in range(9):
            self.store.take_now("a", QUOTA)
        stats = self.store.stats()
        self.assertEqual((stats["takes"], stats["allowed"], stats["rejected"], stats["keys"]), (9, 7, 2, 1))


class MasterStoreTests(SynchronousTestCase):
    """
    L{MasterStore} asks the master's memory store over AMP.
    """

    def setUp(self):
        self.clock = Clock()
        self.memory = MemoryStore(self.clock)
        self.addCleanup(self.memory.close)
        self.master, self.worker, self.pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        register_master_responders(self.master, self.memory)
        self.store = MasterStore(self.worker)

    def take(self, key, quota=QUOTA):
        d = self.store.take(key, quota)
        self.pump.flush()
        return self.successResultOf(d)

    def test_interface(self):
        """
        It is an L{IRateLimitStore}.
        """
        self.assertTrue(verifyObject(IRateLimitStore, self.store))

    def test_decisions_from_master(self):
        """
        Decisions come from the master's store, exactly.
        """
        results = [self.take("k").allowed for _ in range(10)]
        self.assertEqual(results.count(True), 7)
        self.assertEqual(self.memory.stats()["takes"], 10)
        self.assertEqual(self.take("k"), Decision(False, 0, 0.2, 1.4))

    def test_two_workers_share(self):
        """
        Two workers' channels share the master's one count.
        """
        master2, worker2, pump2 = connectedServerAndClient(ControlProtocol, ControlProtocol)
        register_master_responders(master2, self.memory)
        other = MasterStore(worker2)
        allowed = 0
        for i in range(10):
            store, pump = (self.store, self.pump) if i % 2 else (other, pump2)
            d = store.take("shared", QUOTA)
            pump.flush()
            allowed += self.successResultOf(d).allowed
        self.assertEqual(allowed, 7)

    def test_batched_takes(self):
        """
        With a clock, takes of one reactor turn go to the master as one
        batch command and are answered in order, exactly.
        """
        sent = []
        call_remote = self.worker.callRemote

        def counting(command, **kw):
            sent.append(command)
            return call_remote(command, **kw)
        self.worker.callRemote = counting
        store = MasterStore(self.worker, self.clock)
        takes = [store.take("batched", QUOTA) for _ in range(10)]
        self.assertEqual(sent, [])
        self.clock.advance(0)
        self.pump.flush()
        self.assertEqual(len(sent), 1)
        self.assertEqual([self.successResultOf(d).allowed for d in takes], [True] * 7 + [False] * 3)
        self.assertEqual(self.memory.stats()["takes"], 10)

    def test_batch_channel_lost(self):
        """
        A batch whose channel is gone fails every take in it.
        """
        store = MasterStore(self.worker, self.clock)
        takes = [store.take("x", QUOTA) for _ in range(3)]
        self.worker.connected = False
        self.clock.advance(0)
        for d in takes:
            self.failureResultOf(d, ConnectionError)

    def test_settings_object(self):
        """
        The filter's settings can be passed as the quota.
        """
        class Settings:
            rate, period, burst, algorithm = 1, 60.0, 0, "sliding_window"
        self.assertTrue(self.take("s", Settings()).allowed)
        self.assertFalse(self.take("s", Settings()).allowed)

    def test_bad_quota(self):
        """
        A quota the master cannot use fails the take, not the channel.
        """
        d = self.store.take("k", Quota(1, 1.0, 0, "bogus"))
        self.pump.flush()
        self.failureResultOf(d)
        self.assertTrue(self.take("k").allowed)

    def test_abandoned_take(self):
        """
        A take its caller cancelled (timed out) leaves the channel usable
        when the late answer arrives.
        """
        d = self.store.take("k", QUOTA)
        d.cancel()
        self.failureResultOf(d)
        self.pump.flush()
        self.assertTrue(self.take("k").allowed)
        self.assertTrue(self.worker.connected)

    def test_channel_closed(self):
        """
        With the channel down the take fails at once.
        """
        self.worker.connected = False
        self.failureResultOf(self.store.take("k", QUOTA), ConnectionError)


class StoreBreakerTests(SynchronousTestCase):
    """
    L{StoreBreaker}.
    """

    def setUp(self):
        self.clock = Clock()
        self.breaker = StoreBreaker(self.clock, threshold=3, cooldown=2.0)

    def test_opens_after_threshold(self):
        """
        Consecutive failures open it at the threshold.
        """
        self.assertFalse(self.breaker.failure())
        self.assertFalse(self.breaker.failure())
        self.assertTrue(self.breaker.allow())
        self.assertTrue(self.breaker.failure())
        self.assertEqual(self.breaker.state, OPEN)
        self.assertFalse(self.breaker.allow())

    def test_success_resets(self):
        """
        A success in between starts the count again.
        """
        self.breaker.failure()
        self.breaker.failure()
        self.breaker.success()
        self.breaker.failure()
        self.assertEqual(self.breaker.state, CLOSED)

    def test_half_open_single_probe(self):
        """
        After the cool-down exactly one probe goes through; its success
        closes the breaker.
        """
        for _ in range(3):
            self.breaker.failure()
        self.clock.advance(1.9)
        self.assertFalse(self.breaker.allow())
        self.clock.advance(0.1)
        self.assertTrue(self.breaker.allow())
        self.assertEqual(self.breaker.state, HALF_OPEN)
        self.assertFalse(self.breaker.allow())
        self.breaker.success()
        self.assertTrue(self.breaker.allow())

    def test_failed_probe_reopens(self):
        """
        A failed probe opens it for another cool-down.
        """
        for _ in range(3):
            self.breaker.failure()
        self.clock.advance(2)
        self.assertTrue(self.breaker.allow())
        self.assertTrue(self.breaker.failure())
        self.assertFalse(self.breaker.allow())
        self.assertEqual(self.breaker.opened, 2)


class GuardedStoreTests(SynchronousTestCase):
    """
    L{GuardedStore}: timeout, errors and the breaker around a store.
    """

    def setUp(self):
        self.clock = Clock()
        self.inner = ScriptedStore()
        self.guarded = GuardedStore(self.inner, self.clock, 0.1, StoreBreaker(self.clock, 3, 2.0), name="Redis x")

    def test_passes_decisions(self):
        """
        A decision from the store comes through.
        """
        d = self.guarded.take("k", QUOTA)
        decision = Decision(True, 3, 0.0, 1.0)
        self.inner.pending[0].callback(decision)
        self.assertEqual(self.successResultOf(d), decision)

    def test_timeout(self):
        """
        A store slower than the timeout fails the take with reason timeout
        after exactly that time, and the store's call is cancelled.
        """
        d = self.guarded.take("k", QUOTA)
        self.clock.advance(0.099)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        failure = self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(failure.value.reason, "timeout")
        self.assertEqual(self.guarded.counters["timeouts"], 1)
        self.assertTrue(self.inner.pending[0].called)

    def test_error(self):
        """
        A failing store fails the take with reason error.
        """
        self.inner.answer = lambda: fail(ConnectionError("refused"))
        failure = self.failureResultOf(self.guarded.take("k", QUOTA), StoreUnavailable)
        self.assertEqual(failure.value.reason, "error")
        self.assertIn("refused", str(failure.value))

    def test_raising_store(self):
        """
        A store that raises instead of failing is handled the same way.
        """
        def boom():
            raise RuntimeError("bug")
        self.inner.answer = boom
        self.failureResultOf(self.guarded.take("k", QUOTA), StoreUnavailable)

    def test_breaker_skips(self):
        """
        After three failures the store is skipped at once, without a timer,
        until the cool-down ends.
        """
        for _ in range(3):
            d = self.guarded.take("k", QUOTA)
            self.clock.advance(0.1)
            self.failureResultOf(d)
        self.assertEqual(self.guarded.counters["breaker_opened"], 1)
        d = self.guarded.take("k", QUOTA)
        self.assertEqual(self.failureResultOf(d, StoreUnavailable).value.reason, "breaker_open")
        self.assertEqual(len(self.inner.pending), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(2)
        d = self.guarded.take("k", QUOTA)
        self.inner.pending[-1].callback(Decision(True, 0, 0.0, 1.0))
        self.assertTrue(self.successResultOf(d).allowed)
        self.assertEqual(self.guarded.breaker.state, CLOSED)

    def test_no_timer_for_sync_answers(self):
        """
        A store that answers at once costs no timer.
        """
        self.inner.answer = lambda: succeed(Decision(True, 1, 0.0, 1.0))
        self.successResultOf(self.guarded.take("k", QUOTA))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ChainedAnswerTests(SynchronousTestCase):
    """
    A store whose Deferred has fired but waits on an inner Deferred (as
    txredisapi's do) is still bounded by the timeout.
    """

    def test_timeout_on_chained_deferred(self):
        """
        The take times out although the outer Deferred counts as called.
        """
        clock = Clock()
        inner = Deferred()
        store = ScriptedStore()
        store.answer = lambda: succeed(None).addCallback(lambda _: inner)
        guarded = GuardedStore(store, clock, 0.1)
        d = guarded.take("k", QUOTA)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertEqual(self.failureResultOf(d, StoreUnavailable).value.reason, "timeout")
        self.assertTrue(inner.called)


class EmbeddedStorePartTests(SynchronousTestCase):
    """
    L{EmbeddedStorePart}, the master part wrapping the embedded store.
    """

    def test_register_status_stop(self):
        """
        Registered channels take from the one store; status reports it;
        stop leaves no timer.
        """
        clock = Clock()
        part = EmbeddedStorePart(clock)
        master, worker, pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        part.register(master, record=None)
        part.start()
        d = MasterStore(worker).take("k", QUOTA)
        pump.flush()
        self.assertTrue(self.successResultOf(d).allowed)
        self.assertEqual(part.status()["ratelimit"]["takes"], 1)
        self.successResultOf(part.stop())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_master_part(self):
        """
        The part is the master's C{ratelimit} service: it provides
        IMasterPart, keeps its store across a reconfigure and stops the
        store's sweeper when the service stops.
        """
        from zope.interface.verify import verifyObject

        from gatelayer.service import IMasterPart
        clock = Clock()
        part = EmbeddedStorePart(clock)
        verifyObject(IMasterPart, part)
        self.assertEqual(part.name, "ratelimit")
        store = part.store
        part.startService()
        self.assertIsNone(part.reconfigure(object()))
        self.assertIs(part.store, store)
        self.successResultOf(part.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])
