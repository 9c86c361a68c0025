"""
Tests for L{gatelayer.ratelimit.algorithms}: exact admission counts, refill,
burst and Retry-After, with time given explicitly.
"""

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.ratelimit.algorithms import (
    Decision, Quota, decide, gcra, gcra_interval_us, quota_of, sliding_window, sliding_window_ms,
)

S = 1_000_000  # microseconds per second


def run(quota, times_us, state=None):
    """
    Take once at each of C{times_us}; return the decisions and the state.
    """
    decisions = []
    for now in times_us:
        decision, new_state, _ = decide(state, now, quota)
        if new_state is not None:
            state = new_state
        decisions.append(decision)
    return decisions, state


class QuotaTests(SynchronousTestCase):
    """
    L{Quota} and the derived whole-number units.
    """

    def test_limit(self):
        """
        A fresh key admits rate + burst at once.
        """
        self.assertEqual(Quota(rate=100, period=60.0, burst=20).limit, 120)

    def test_interval_whole_microseconds(self):
        """
        The GCRA interval is rounded to whole microseconds, at least one.
        """
        for rate, period, expected in [(10, 1.0, 100_000), (7, 60.0, 8_571_429),
                                       (3_000_000, 1.0, 1), (1, 86400.0, 86_400_000_000)]:
            self.assertEqual(gcra_interval_us(rate, period), expected)

    def test_window_whole_milliseconds(self):
        """
        The sliding window is the period in whole milliseconds.
        """
        self.assertEqual(sliding_window_ms(60.0), 60_000)
        self.assertEqual(sliding_window_ms(1.0), 1_000)

    def test_invalid(self):
        """
        A rate or period that is not positive is refused.
        """
        self.assertRaises(ValueError, Quota, rate=0, period=1.0)
        self.assertRaises(ValueError, Quota, rate=1, period=0.0)

    def test_quota_of_settings(self):
        """
        Anything with rate, period, burst and algorithm converts to a quota.
        """
        class Settings:
            rate, period, burst, algorithm = 5, 1.0, 2, "sliding_window"
        self.assertEqual(quota_of(Settings()), Quota(5, 1.0, 2, "sliding_window"))
        quota = Quota(1, 1.0)
        self.assertIs(quota_of(quota), quota)

    def test_unknown_algorithm(self):
        """
        L{decide} refuses an algorithm it does not know.
        """
        self.assertRaises(ValueError, decide, None, 0, Quota(1, 1.0, 0, "fixed_window"))

    def test_other_algorithms_state(self):
        """
        A key whose stored state has the other algorithm's form (a reload
        changed the filter's algorithm) starts afresh instead of failing.
        """
        gcra_quota = Quota(2, 60.0, 0, "gcra")
        window_quota = Quota(2, 60.0, 0, "sliding_window")
        _, tat = run(gcra_quota, [S, S])
        decisions, window_state = run(window_quota, [S, S, S], state=tat)
        self.assertEqual([d.allowed for d in decisions], [True, True, False])
        self.assertIsInstance(window_state, tuple)
        decisions, _ = run(gcra_quota, [S, S, S], state=window_state)
        self.assertEqual([d.allowed for d in decisions], [True, True, False])


class GcraTests(SynchronousTestCase):
    """
    The generic cell rate algorithm.
    """

    def test_exact_admission_at_once(self):
        """
        Of many requests at the same instant exactly rate + burst pass.
        """
        for rate, burst in [(1, 0), (10, 0), (10, 5), (100, 20), (7, 3)]:
            decisions, _ = run(Quota(rate, 60.0, burst), [1000 * S] * 300)
            allowed = [d.allowed for d in decisions]
            self.assertEqual(allowed.count(True), rate + burst, (rate, burst))
            self.assertEqual(allowed, [True] * (rate + burst) + [False] * (300 - rate - burst))

    def test_remaining_counts_down(self):
        """
        Each admitted request reports how many more would pass now.
        """
        decisions, _ = run(Quota(3, 1.0, 2), [0] * 6)
        self.assertEqual([d.remaining for d in decisions], [4, 3, 2, 1, 0, 0])

    def test_retry_after_and_refill(self):
        """
        After the bucket is empty the next request may pass one interval
        later, and Retry-After says exactly that.
        """
        quota = Quota(10, 1.0)
        decisions, state = run(quota, [0] * 11)
        self.assertEqual(decisions[-1], Decision(False, 0, 0.1, 1.0))
        # a microsecond too early: still rejected, retry in 1us
        early, _, _ = decide(state, 100_000 - 1, quota)
        self.assertFalse(early.allowed)
        self.assertAlmostEqual(early.retry_after, 1e-6)
        on_time, _, _ = decide(state, 100_000, quota)
        self.assertTrue(on_time.allowed)
        self.assertEqual(on_time.remaining, 0)

    def test_steady_rate(self):
        """
        Requests arriving exactly at the rate all pass, forever.
        """
        decisions, _ = run(Quota(10, 1.0), [i * 100_000 for i in range(1000)])
        self.assertTrue(all(d.allowed for d in decisions))

    def test_faster_than_rate(self):
        """
        Requests twice as fast as the rate: after the burst is used up,
        every other one passes; over 10 seconds, rate * 10 + limit pass.
        """
        decisions, _ = run(Quota(10, 1.0, 5), [i * 50_000 for i in range(200)])
        # 10 s of requests: 15 at once plus 10 per second refilled, less the
        # last refill that has not arrived at the final instant
        self.assertEqual(sum(d.allowed for d in decisions), 15 + 99)

    def test_full_refill(self):
        """
        After a whole period of silence the full burst is available again.
        """
        quota = Quota(5, 1.0, 5)
        decisions, state = run(quota, [0] * 20)
        self.assertEqual(sum(d.allowed for d in decisions), 10)
        again, _ = run(quota, [2 * S] * 20, state)
        self.assertEqual(sum(d.allowed for d in again), 10)

    def test_reset_is_time_to_full(self):
        """
        An allowed request's reset is the time until the bucket is full.
        """
        decision, _, ttl = gcra(None, 0, 100_000, 10)
        self.assertEqual(decision.reset, 0.1)
        self.assertEqual(ttl, 100_000)

    def test_rejection_writes_nothing(self):
        """
        A rejected request does not change the state (it costs nothing).
        """
        _, state = run(Quota(1, 1.0), [0])
        decision, new_state, _ = decide(state, 0, Quota(1, 1.0))
        self.assertFalse(decision.allowed)
        self.assertIsNone(new_state)

    def test_odd_intervals_stay_exact(self):
        """
        A rate that does not divide the period still admits exactly its
        limit at once, whatever the absolute time.
        """
        for now in (0, 1_700_000_000 * S + 123_457):
            decisions, _ = run(Quota(7, 60.0, 13), [now] * 50)
            self.assertEqual(sum(d.allowed for d in decisions), 20)


class SlidingWindowTests(SynchronousTestCase):
    """
    The two-counter sliding window.
    """

    def test_exact_admission_at_once(self):
        """
        Of many requests at one instant exactly rate + burst pass.
        """
        for rate, burst in [(1, 0), (10, 0), (10, 5), (100, 20)]:
            quota = Quota(rate, 60.0, burst, "sliding_window")
            decisions, _ = run(quota, [1000 * S + 123] * 300)
            self.assertEqual(sum(d.allowed for d in decisions), rate + burst)

    def test_no_double_burst_at_window_edge(self):
        """
        A full window just before the edge still counts just after it: a
        fixed window would admit twice the rate here.
        """
        quota = Quota(10, 60.0, 0, "sliding_window")
        decisions, state = run(quota, [59 * S] * 10)
        self.assertTrue(all(d.allowed for d in decisions))
        after, _ = run(quota, [60 * S + 1000] * 10, state)
        self.assertEqual(sum(d.allowed for d in after), 0)

    def test_retry_after_next_window(self):
        """
        A window filled at its start reopens in the next window once a
        tenth of it has slid out (for a limit of 10), and Retry-After says
        so.
        """
        quota = Quota(10, 60.0, 0, "sliding_window")
        decisions, state = run(quota, [0] * 11)
        self.assertEqual(decisions[-1].retry_after, 66.0)
        early, _, _ = decide(state, 65_999_000, quota)
        self.assertFalse(early.allowed)
        on_time, _, _ = decide(state, 66_000_000, quota)
        self.assertTrue(on_time.allowed)

    def test_retry_after_within_window(self):
        """
        With most of the count in the previous window, the retry time is
        when enough of it has slid out.
        """
        window = 1000
        # previous window had 10, current has 2; limit 10
        decision, _, _ = sliding_window((0, 10, 0), 1000, window, 10)
        self.assertFalse(decision.allowed)
        state = (1, 2, 10)
        decision, _, _ = sliding_window(state, 1000, window, 10)
        self.assertFalse(decision.allowed)
        # need ceil(10 * (1000 - t) / 1000) + 2 < 10, i.e. t >= 300
        self.assertEqual(decision.retry_after, 0.3)
        passed, _, _ = sliding_window(state, 1300, window, 10)
        self.assertTrue(passed.allowed)
        blocked, _, _ = sliding_window(state, 1299, window, 10)
        self.assertFalse(blocked.allowed)

    def test_retry_after_past_the_period(self):
        """
        A window filled in its first instants gives a Retry-After longer
        than the period: the count only drops below the limit once the
        next window is 1/limit of the way in (here 1000 - 10 + 100 ms).
        """
        window = 1000
        state = (5, 10, 0)
        decision, _, _ = sliding_window(state, 5010, window, 10)
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.retry_after, 1.09)
        self.assertTrue(sliding_window(state, 5010 + 1090, window, 10)[0].allowed)
        self.assertFalse(sliding_window(state, 5010 + 1089, window, 10)[0].allowed)

    def test_retry_after_is_exact(self):
        """
        For a range of states, waiting Retry-After admits, and a millisecond
        less does not.
        """
        window, limit = 1000, 7
        for prev in range(0, 12):
            for curr in range(0, 9):
                for elapsed in (0, 1, 250, 999):
                    now = 5 * window + elapsed
                    state = (5, curr, prev)
                    decision, _, _ = sliding_window(state, now, window, limit)
                    if decision.allowed:
                        continue
                    wait = round(decision.retry_after * 1000)
                    later, _, _ = sliding_window(state, now + wait, window, limit)
                    self.assertTrue(later.allowed, (prev, curr, elapsed, wait))
                    sooner, _, _ = sliding_window(state, now + wait - 1, window, limit)
                    self.assertFalse(sooner.allowed, (prev, curr, elapsed, wait))

    def test_old_state_forgotten(self):
        """
        State two windows old counts for nothing.
        """
        decision, new_state, _ = sliding_window((3, 100, 100), 5000, 1000, 10)
        self.assertTrue(decision.allowed)
        self.assertEqual(new_state, (5, 1, 0))

    def test_clock_step_back(self):
        """
        A state from a later window (the store's clock stepped back) keeps
        counting in that window.
        """
        decision, new_state, _ = sliding_window((6, 3, 0), 5500, 1000, 10)
        self.assertTrue(decision.allowed)
        self.assertEqual(new_state, (6, 4, 0))

    def test_ttl_covers_two_windows(self):
        """
        The state is kept until it no longer weighs in: the end of the next
        window.
        """
        _, _, ttl = sliding_window(None, 1250, 1000, 10)
        self.assertEqual(ttl, 1750)
