"""
Request ids: one short id per request, made by the worker or taken from a
trusted proxy, that the access log, the error log, the gateway's error
bodies, the upstream and the client all see.

A made id is a random prefix chosen once per worker process (60 bits,
base32) and a counter: unique across workers and restarts without a
random draw per request.
"""

import base64
import os
import re

from gatelayer.net.forwarded import is_trusted

__all__ = ["MAX_LENGTH", "RequestIds", "sane_request_id"]

MAX_LENGTH = 128
"""The longest request id accepted from a trusted proxy, in bytes."""

_SANE = re.compile(rb"[\x21-\x7e]{1,%d}\Z" % (MAX_LENGTH,)).match


def sane_request_id(value):
    """
    Whether C{value} (bytes) may be used as a request id: 1 to
    L{MAX_LENGTH} visible ASCII characters (no spaces, no control bytes,
    nothing beyond ASCII).
    """
    return _SANE(value) is not None


def _prefix():
    return base64.b32encode(os.urandom(8))[:12].lower()


class RequestIds:
    """
    Chooses each request's id: the client's own (the request id header's
    first value) only when the TCP peer is one of the C{trusted} proxies
    and the value is sane, else a new one.

    @ivar prefix: this process's random prefix (bytes).
    """

    __slots__ = ("prefix", "_count", "_trusted")

    def __init__(self, trusted=(), prefix=None):
        """
        @param trusted: the C{[gateway] trusted_proxies} networks.
        @param prefix: the prefix of made ids (bytes); random by default.
        """
        self.prefix = _prefix() if prefix is None else prefix
        self._count = 0
        self._trusted = tuple(trusted)

    def new(self):
        """
        A new id (bytes), e.g. C{b"mfrggzdfmztw-1a"}.
        """
        self._count += 1
        return b"%s-%x" % (self.prefix, self._count)

    def choose(self, values, peer_ip):
        """
        The id of a request whose request id header had C{values} (a list
        of bytes, or L{None}) and came from C{peer_ip}.
        """
        if values and self._trusted:
            value = values[0]
            if _SANE(value) is not None and is_trusted(peer_ip, self._trusted):
                return value
        self._count += 1
        return b"%s-%x" % (self.prefix, self._count)
