"""
The seam between the cache filter and where entries live, and the shape of
cache keys.
"""

from zope.interface import Attribute, Interface

__all__ = ["ICacheStore", "VARIANT_SEPARATOR"]

VARIANT_SEPARATOR = b"\x01"
"""
What separates a URL key from the variant part of a full key (a byte no
header value or normalized URL holds).
"""


class ICacheStore(Interface):
    """
    Where cached responses are kept. Keys are bytes: a URL key
    (C{scheme://host/path?query}, plus any C{key_extra} values), then
    L{VARIANT_SEPARATOR}, then the values of the request headers the
    response's C{Vary} names.
    """

    used = Attribute("How many bytes the entries count now.")

    def vary(primary):
        """
        The C{Vary} names last stored for the URL key C{primary}, or
        L{None} when nothing is stored for it.
        """

    def get(key):
        """
        The L{gatelayer.cache.entry.Entry} stored under C{key}, or L{None}.
        """

    def put(key, entry):
        """
        Store C{entry} under C{key}.
        """

    def remove(primary):
        """
        Remove every variant of the URL key C{primary}; returns how many.
        """

    def remove_prefix(prefix):
        """
        Remove every variant of each URL key starting with C{prefix};
        returns how many.
        """
