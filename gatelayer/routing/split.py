"""
Weighted rendezvous hashing (highest random weight): which version of a
route a client's key goes to, for canary and versioned routes.

Every version scores a key with C{-weight / ln(u)}, where C{u} in (0, 1)
comes from a hash of the version's name and the key, and the highest score
wins. A key's share of wins per version is that version's share of the
weights, a key always lands on the same version while the weights hold,
and when they change only the keys that must move do: raising one weight
moves keys only to that version; removing a version moves only its own
keys, spread over the others by their weights.

The hash is BLAKE2b (not Python's C{hash()}, which changes per process), so
every worker and every restart sends a key to the same version.
"""

import math
from hashlib import blake2b

__all__ = ["WeightedRendezvous"]

_SCALE = 1.0 / 4503599627370496.0  # 2 ** -52


class WeightedRendezvous:
    """
    The versions of one route with their weights, choosing one per key.
    Immutable once built: new weights make a new one.

    @ivar versions: C{((name, weight), ...)} as configured, in order.
    """

    __slots__ = ("versions", "_seeds", "_weights", "_only")

    def __init__(self, versions):
        """
        @param versions: C{(name, weight)} pairs, names distinct (str),
            weights non-negative integers with a positive sum.
        """
        versions = tuple((name, weight) for name, weight in versions)
        if not versions or sum(weight for _, weight in versions) <= 0:
            raise ValueError("a split needs a version with a positive weight")
        self.versions = versions
        live = [(index, name, weight) for index, (name, weight) in enumerate(versions) if weight > 0]
        # A version of weight 0 never wins, so it is never scored. The name
        # is hashed ahead of the key, NUL-separated, so ("a", "bc") and
        # ("ab", "c") differ.
        self._seeds = tuple((index, blake2b(name.encode("utf-8") + b"\0", digest_size=8))
                            for index, name, _ in live)
        self._weights = tuple(float(weight) for _, _, weight in live)
        self._only = live[0][0] if len(live) == 1 else None

    def choose(self, key):
        """
        The index in C{versions} of the version C{key} (bytes) goes to.
        """
        if self._only is not None:
            return self._only
        best, best_score = 0, -1.0
        for (index, seed), weight in zip(self._seeds, self._weights):
            hasher = seed.copy()
            hasher.update(key)
            # The middle of one of 2**52 equal slices (52 bits: the float
            # holds it exactly), so never 0 nor 1.
            u = ((int.from_bytes(hasher.digest(), "big") >> 12) + 0.5) * _SCALE
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = index, score
        return best

    def name_for(self, key):
        """
        The name of the version C{key} (bytes) goes to.
        """
        return self.versions[self.choose(key)][0]
