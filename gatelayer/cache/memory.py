"""
The per-worker memory store of the response cache: entries kept by key in
least-recently-used order, bounded by bytes.
"""

from collections import OrderedDict

from zope.interface import implementer

from gatelayer.cache.store import ICacheStore, VARIANT_SEPARATOR

__all__ = ["MemoryStore"]


@implementer(ICacheStore)
class MemoryStore:
    """
    Entries of one worker, at most C{capacity} bytes of them (each counts
    its L{gatelayer.cache.entry.Entry.size}); storing past it evicts the
    least recently used. The C{Vary} names of each URL are kept beside
    its variants, so one lookup finds the variant a request selects.

    @ivar used: the bytes the entries count now.
    """

    def __init__(self, capacity, clock):
        """
        @param capacity: the most bytes kept.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}; an
            entry is dropped once its C{keep_for} has passed.
        """
        self.capacity = capacity
        self.clock = clock
        self.used = 0
        self._entries = OrderedDict()
        self._vary = {}
        self._variants = {}

    def __len__(self):
        return len(self._entries)

    def vary(self, primary):
        """
        The C{Vary} names last stored for the URL key C{primary}, or
        L{None} when nothing is stored for it.
        """
        return self._vary.get(primary)

    def get(self, key):
        """
        The entry stored under C{key} (a URL key, the separator and a
        variant), or L{None}; a hit makes it the most recently used.
        """
        found = self._entries.get(key)
        if found is None:
            return None
        entry, until = found
        if self.clock.seconds() >= until:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key, entry):
        """
        Store C{entry} under C{key}, evicting the least recently used
        entries until it fits (one larger than the whole store is not
        kept).
        """
        if entry.size > self.capacity:
            return
        if key in self._entries:
            self._drop(key)
        primary = key.partition(VARIANT_SEPARATOR)[0]
        self._entries[key] = (entry, self.clock.seconds() + entry.keep_for())
        self.used += entry.size
        if self._vary.get(primary) != entry.vary:
            # New Vary names make the variants stored under the old ones
            # unreachable: drop them.
            for old in tuple(self._variants.get(primary, ())):
                if old != key:
                    self._drop(old)
        self._vary[primary] = entry.vary
        self._variants.setdefault(primary, set()).add(key)
        while self.used > self.capacity:
            self._drop(next(iter(self._entries)))

    def remove(self, primary):
        """
        Remove every variant of the URL key C{primary}; returns how many.
        """
        keys = tuple(self._variants.get(primary, ()))
        for key in keys:
            self._drop(key)
        return len(keys)

    def remove_prefix(self, prefix):
        """
        Remove every variant of every URL key starting with C{prefix};
        returns how many.
        """
        count = 0
        for primary in [p for p in self._variants if p.startswith(prefix)]:
            count += self.remove(primary)
        return count

    def _drop(self, key):
        entry, _ = self._entries.pop(key)
        self.used -= entry.size
        primary = key.partition(VARIANT_SEPARATOR)[0]
        variants = self._variants.get(primary)
        if variants is not None:
            variants.discard(key)
            if not variants:
                del self._variants[primary]
                self._vary.pop(primary, None)
