"""
The response cache's parts without I/O: the RFC 9111 rules
(L{gatelayer.cache.policy}), stored entries (L{gatelayer.cache.entry}) and
the stores entries live in (L{gatelayer.cache.store},
L{gatelayer.cache.memory}). The filter answering from them is
L{gatelayer.filters.cache}.
"""

from gatelayer.cache.entry import Entry, make_entry, refreshed
from gatelayer.cache.memory import MemoryStore
from gatelayer.cache.store import VARIANT_SEPARATOR, ICacheStore

__all__ = ["Entry", "ICacheStore", "MemoryStore", "VARIANT_SEPARATOR", "make_entry", "refreshed"]
