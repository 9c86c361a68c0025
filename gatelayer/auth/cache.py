"""
A small bounded cache whose entries expire at a time of their own.

The JWT filter keeps the claims of tokens it has already verified here, so a
client sending the same token on every request costs one signature check per
worker until the token expires. The cache is bounded: a client minting a new
token per request can only push older entries out, never grow the worker.
"""

from collections import OrderedDict


class ExpiringCache:
    """
    A least-recently-used mapping of at most C{size} entries, each valid until
    the time given when it was stored.

    Times are whatever clock the caller uses (the reactor's C{seconds()}); the
    cache never reads a clock itself, so tests drive it with plain numbers.
    """

    def __init__(self, size):
        """
        @param size: the most entries kept; 0 disables the cache.
        """
        self.size = size
        self._entries = OrderedDict()

    def __len__(self):
        return len(self._entries)

    def get(self, key, now):
        """
        The value stored under C{key} if it is still valid at C{now}, else
        L{None} (an expired entry is dropped on the way).
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, until = entry
        if now >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key, value, until):
        """
        Keep C{value} under C{key} until time C{until}, evicting the least
        recently used entry when full.
        """
        if self.size <= 0:
            return
        self._entries[key] = (value, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self):
        """
        Forget everything (the keys that verified the entries changed).
        """
        self._entries.clear()
