"""
Tests for gatelayer.routing.split: weighted rendezvous hashing spreads keys
by weight, keeps each key on its version, and moves as few keys as a weight
change allows.
"""

from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.routing.split import WeightedRendezvous

KEYS = [b"user-%d" % (i,) for i in range(20000)]
# Where k0..k15 go on a 50/50 split of v1 and v2 (the last digit of the name).
KNOWN_16 = "2112111212112112"


def assert_near(case, actual, expected, delta):
    """
    Fail C{case} unless C{actual} is within C{delta} of C{expected}.
    """
    case.assertTrue(abs(actual - expected) <= delta, f"{actual} is not within {delta} of {expected}")


def assignment(versions, keys=KEYS):
    """
    The version name each of C{keys} goes to under C{versions}.
    """
    split = WeightedRendezvous(versions)
    return {key: split.name_for(key) for key in keys}


class WeightedRendezvousTests(SynchronousTestCase):
    """
    The properties a canary split relies on.
    """

    def test_shares_follow_weights(self):
        """
        Over many keys each version's share is its share of the weights,
        within a percentage point.
        """
        for versions in [(("v1", 90), ("v2", 10)), (("a", 50), ("b", 50)),
                         (("a", 70), ("b", 20), ("c", 10)), (("x", 1), ("y", 3))]:
            with self.subTest(versions=versions):
                counts = Counter(assignment(versions).values())
                total = sum(weight for _, weight in versions)
                for name, weight in versions:
                    assert_near(self, counts[name] / len(KEYS), weight / total, 0.01)

    def test_same_key_same_version(self):
        """
        A key goes to the same version every time and in every new object
        built from the same weights (another worker, after a restart).
        """
        versions = (("v1", 90), ("v2", 10))
        first = assignment(versions, KEYS[:2000])
        for _ in range(3):
            self.assertEqual(assignment(versions, KEYS[:2000]), first)

    def test_known_answers(self):
        """
        The hash is fixed (BLAKE2b of name and key), not Python's per-process
        hash(): these keys go where they always went.
        """
        split = WeightedRendezvous((("v1", 50), ("v2", 50)))
        self.assertEqual("".join(split.name_for(b"k%d" % (i,))[1] for i in range(16)), KNOWN_16)

    def test_raised_weight_only_gains(self):
        """
        90/10 to 80/20: the only keys that move go to v2; none leaves it.
        """
        before = assignment((("v1", 90), ("v2", 10)))
        after = assignment((("v1", 80), ("v2", 20)))
        moved = [key for key in KEYS if before[key] != after[key]]
        self.assertTrue(moved)
        self.assertEqual({(before[k], after[k]) for k in moved}, {("v1", "v2")})
        assert_near(self, len(moved) / len(KEYS), 0.10, 0.01)

    def test_no_shuffle_between_unchanged_versions(self):
        """
        With three versions, raising one weight moves keys only to that
        version: none moves between the two whose weights stayed.
        """
        before = assignment((("v1", 80), ("v2", 10), ("v3", 10)))
        after = assignment((("v1", 80), ("v2", 10), ("v3", 20)))
        moves = {(before[k], after[k]) for k in KEYS if before[k] != after[k]}
        self.assertEqual(moves, {("v1", "v3"), ("v2", "v3")})

    def test_removed_version_spreads_over_the_rest(self):
        """
        Removing a version (or giving it weight 0) moves only its keys,
        spread over the others by their weights.
        """
        before = assignment((("a", 50), ("b", 30), ("c", 20)))
        for after_versions in [(("a", 50), ("b", 30)), (("a", 50), ("b", 30), ("c", 0))]:
            with self.subTest(after=after_versions):
                after = assignment(after_versions)
                for key in KEYS:
                    if before[key] != "c":
                        self.assertEqual(after[key], before[key])
                spread = Counter(after[k] for k in KEYS if before[k] == "c")
                assert_near(self, spread["a"] / sum(spread.values()), 50 / 80, 0.03)

    def test_weight_zero_gets_nothing(self):
        """
        A version of weight 0 stays configured and gets no key; with one
        live version every key goes to it.
        """
        split = WeightedRendezvous((("v1", 0), ("v2", 5), ("v3", 0)))
        self.assertEqual({split.choose(key) for key in KEYS[:500]}, {1})
        self.assertEqual(split.versions, (("v1", 0), ("v2", 5), ("v3", 0)))

    def test_bad_versions(self):
        """
        No version, or no positive weight, is refused.
        """
        for versions in [(), (("a", 0),), (("a", 0), ("b", 0))]:
            with self.subTest(versions=versions):
                self.assertRaises(ValueError, WeightedRendezvous, versions)

    def test_odd_keys(self):
        """
        Empty, long and binary keys all get a version (never an error).
        """
        split = WeightedRendezvous((("v1", 1), ("v2", 1)))
        for key in [b"", b"\0" * 3, b"\xff" * 10000, "é".encode("utf-8")]:
            with self.subTest(key=key[:8]):
                self.assertIn(split.name_for(key), ("v1", "v2"))
