"""
Settings of a C{[filter:NAME] type = cache} section (parsing only: the
filter is L{gatelayer.filters.cache}, the rules and stores
L{gatelayer.cache}).
"""

import os.path
import re

from attrs import frozen

from gatelayer.config import values as v
from gatelayer.net.redisurl import RedisAddress, parse_store_url

__all__ = ["CacheSettings", "KEY_QUERY", "parse_filter"]

KEY_QUERY = ("as_is", "sorted", "ignore")
"""How the query string enters the cache key."""

_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_MAX_SIZE = 64 * 1024 ** 3
_MAX_LOCK = 60.0
_SIZE = 64 * 1024 * 1024
_ENTRY = 1024 * 1024
_LOCK = 5.0


@frozen
class CacheSettings:
    """
    A parsed cache filter section.

    @ivar size: the most bytes each worker's memory store keeps.
    @ivar max_entry_size: the largest response (body and headers) stored;
        a larger one streams to the client and is not kept.
    @ivar default_ttl: seconds a response without explicit freshness stays
        fresh (L{None}: such responses are not stored).
    @ivar lock_timeout: seconds concurrent misses on one key wait for the
        first before each goes upstream itself (0: no coalescing).
    @ivar key_query: C{"as_is"}, C{"sorted"} or C{"ignore"}.
    @ivar key_extra: lower-case request header names (bytes) whose values
        are part of every key.
    @ivar purge_from: the networks (L{ipaddress} networks) whose C{PURGE}
        requests remove entries; empty: C{PURGE} is not the cache's.
    @ivar store: a L{RedisAddress} of a shared store behind each worker's
        memory store, or L{None}.
    @ivar store_timeout: seconds a shared-store lookup may take before it
        counts as a miss.
    """

    size: int = _SIZE
    max_entry_size: int = _ENTRY
    default_ttl: float = None
    lock_timeout: float = _LOCK
    key_query: str = "as_is"
    key_extra: tuple = ()
    purge_from: tuple = ()
    store: RedisAddress = None
    store_timeout: float = 0.1


def _hidden(text):
    # The password of a store URL never goes into an error message.
    return re.sub(r"//([^@/]*)@", "//***@", text)


def _key_extra(text):
    names = []
    for item in v.parse_list(text):
        kind, colon, name = item.partition(":")
        if not colon or kind.strip().lower() != "header" or not _NAME.match(name.strip()):
            raise ValueError(f"has {item!r}: use header:NAME")
        names.append(name.strip().lower().encode("ascii"))
    return tuple(names)


def _choice(options):
    def parse(text):
        if text not in options:
            raise ValueError("is not one of " + ", ".join(options))
        return text
    return parse


def _networks(text):
    return tuple(v.parse_network(item) for item in v.parse_list(text))


def parse_filter(reader):
    """
    Read a C{type = cache} section from C{reader} into L{CacheSettings},
    recording every problem on the reader.
    """
    size = reader.get("size", v.parse_size, _SIZE)
    entry = reader.get("max_entry_size", v.parse_size, _ENTRY)
    ttl = reader.get("default_ttl", v.parse_duration, None)
    lock = reader.get("lock_timeout", v.parse_duration, _LOCK)
    key_query = reader.get("key_query", _choice(KEY_QUERY), "as_is")
    key_extra = reader.get("key_extra", _key_extra, ())
    purge_from = reader.get("purge_from", _networks, ())
    store = None
    store_text = reader.raw("store")
    if store_text is not None and store_text.strip():
        try:
            store = parse_store_url(store_text, reader.base_dir)
        except ValueError as e:
            reader.error("store", str(e), _hidden(store_text.strip()))
        if store is not None and store.ca is not None and not os.path.isfile(store.ca):
            reader.error("store", f"has ca={store.ca}, which is not a file", _hidden(store_text.strip()))
            store = None
    store_timeout = reader.get("store_timeout", v.parse_duration, 0.1)
    if store_timeout is not None and not 0.001 <= store_timeout <= 60:
        reader.error("store_timeout", "must be from 1ms to 60s", reader.raw("store_timeout").strip())
        store_timeout = None
    if size is not None and not 1024 <= size <= _MAX_SIZE:
        reader.error("size", "must be between 1KB and 64GB", reader.raw("size"))
        size = None
    if entry is not None and size is not None and not 1 <= entry <= size:
        reader.error("max_entry_size", "must be at least 1 byte and at most size", reader.raw("max_entry_size"))
        entry = None
    if ttl is not None and ttl <= 0:
        reader.error("default_ttl", "must be more than 0 (omit it for no heuristic freshness)",
                     reader.raw("default_ttl"))
        ttl = None
    if lock is not None and not 0 <= lock <= _MAX_LOCK:
        reader.error("lock_timeout", "must be between 0 and 60s", reader.raw("lock_timeout"))
        lock = None
    return CacheSettings(
        size=_SIZE if size is None else size,
        max_entry_size=_ENTRY if entry is None else entry,
        default_ttl=ttl,
        lock_timeout=_LOCK if lock is None else lock,
        key_query=key_query or "as_is",
        key_extra=key_extra or (),
        purge_from=purge_from or (),
        store=store,
        store_timeout=store_timeout or 0.1,
    )
