"""
Session tickets every worker can decrypt: the keys come from the master
(L{gatelayer.tls.ticket_control}), and OpenSSL asks this module for them on
every ticket it issues or reads.

A key set is 80 bytes: a 16-byte name sent in the clear in each ticket, a
32-byte HMAC-SHA256 key and a 32-byte AES-256-CBC key, the layout OpenSSL
uses for its own tickets. A L{TicketKeyRing} holds the current set (new
tickets) and the previous one (still accepted, and the client is given a
new ticket), so a ticket outlives one rotation; a ticket of an older set is
not decrypted and the client simply makes a full handshake.

OpenSSL's C{SSL_CTX_set_tlsext_ticket_key_evp_cb} is reached through
L{gatelayer.tls.native}. Whether it works here is proved once per process
(L{shared_tickets}): a handshake in memory, then a resumption with rotated
keys. When anything fails, contexts keep OpenSSL's own per-context keys:
resumption still works on the worker that issued the ticket.
"""

import functools
import os
import struct

from OpenSSL import SSL
from OpenSSL._util import ffi
from twisted.logger import Logger

from . import native

__all__ = ["KEY_SET_SIZE", "TicketKeyRing", "new_key_set", "shared_tickets", "SharedTickets"]

#: Bytes of one key set: name (16), HMAC key (32), AES key (32).
KEY_SET_SIZE = 80

_CALLBACK = "int (*)(void *, unsigned char *, unsigned char *, void *, void *, int)"

# OSSL_PARAM (64-bit): key pointer, data type (+ padding), data pointer,
# data size, return size.
_PARAM = "<QIxxxxQQQ"
_PARAM_SIZE = 40
_UTF8_STRING, _OCTET_STRING = 4, 5
_UNMODIFIED = 2 ** 64 - 1

log = Logger()


def new_key_set():
    """
    A fresh random key set of L{KEY_SET_SIZE} bytes.
    """
    return os.urandom(KEY_SET_SIZE)


def _address(cdata):
    return int(ffi.cast("uintptr_t", cdata))


class _KeySet:
    """
    One key set, split and laid out for OpenSSL: the MAC parameters are
    built once, not per ticket.
    """

    __slots__ = ("name", "aes", "params", "_keep")

    def __init__(self, raw):
        self.name = raw[:16]
        hmac_key = ffi.new("unsigned char[]", raw[16:48])
        self.aes = ffi.new("unsigned char[]", raw[48:80])
        digest_key, digest_name = ffi.new("char[]", b"digest"), ffi.new("char[]", b"SHA256")
        key_key = ffi.new("char[]", b"key")
        params = ffi.new("unsigned char[]", _PARAM_SIZE * 3)
        buffer = ffi.buffer(params)
        packed = struct.pack(_PARAM, _address(digest_key), _UTF8_STRING, _address(digest_name), 6, _UNMODIFIED)
        packed += struct.pack(_PARAM, _address(key_key), _OCTET_STRING, _address(hmac_key), 32, _UNMODIFIED)
        packed += bytes(_PARAM_SIZE)
        buffer[:] = packed
        self.params = params
        self._keep = (hmac_key, digest_key, digest_name, key_key)


class TicketKeyRing:
    """
    The ticket keys of one C{[tls:NAME]} section in one process, installed
    in each of its server contexts; L{set_keys} changes them for all those
    contexts at once.

    @ivar issued: tickets encrypted; @ivar resumed: tickets decrypted with
        the current keys; @ivar renewed: with the previous keys (a new
        ticket was sent); @ivar unknown: tickets of no key set held.
    """

    def __init__(self, calls):
        """
        @param calls: the L{gatelayer.tls.native.NativeCalls}.
        """
        self._calls = calls
        self._cipher = calls.EVP_aes_256_cbc()
        self._keys = ()
        self.issued = self.resumed = self.renewed = self.unknown = 0
        self._callback = ffi.callback(_CALLBACK, self._ticket, error=0)

    @property
    def names(self):
        """
        The names of the key sets held, current first (for tests and status;
        the names are sent in the clear in every ticket anyway).
        """
        return tuple(key.name for key in self._keys)

    def set_keys(self, key_sets):
        """
        Use C{key_sets} (80-byte strings, the current first, then the ones
        still accepted) from the next handshake on.

        @raise ValueError: a key set is not 80 bytes, or none is given.
        """
        key_sets = list(key_sets)
        if not key_sets or any(len(raw) != KEY_SET_SIZE for raw in key_sets):
            raise ValueError(f"ticket keys must be one or more sets of {KEY_SET_SIZE} bytes")
        self._keys = tuple(_KeySet(raw) for raw in key_sets)

    def install(self, context):
        """
        Make the L{SSL.Context} C{context} ask this ring for ticket keys.
        """
        if not self._calls.SSL_CTX_set_tlsext_ticket_key_evp_cb(context._context, self._callback):
            raise SSL.Error("SSL_CTX_set_tlsext_ticket_key_evp_cb failed")

    def _ticket(self, ssl, key_name, iv, cipher_ctx, mac_ctx, encrypt):
        calls = self._calls
        if encrypt:
            if not self._keys:
                return 0
            key = self._keys[0]
            ffi.memmove(key_name, key.name, 16)
            ffi.memmove(iv, os.urandom(16), 16)
            if not calls.EVP_EncryptInit_ex(cipher_ctx, self._cipher, ffi.NULL, key.aes, iv):
                return -1
            if not calls.EVP_MAC_CTX_set_params(mac_ctx, key.params):
                return -1
            self.issued += 1
            return 1
        name = ffi.buffer(key_name, 16)[:]
        for position, key in enumerate(self._keys):
            if key.name == name:
                break
        else:
            self.unknown += 1
            return 0
        if not calls.EVP_MAC_CTX_set_params(mac_ctx, key.params):
            return -1
        if not calls.EVP_DecryptInit_ex(cipher_ctx, self._cipher, ffi.NULL, key.aes, iv):
            return -1
        if position == 0:
            self.resumed += 1
            return 1
        self.renewed += 1
        return 2


class SharedTickets:
    """
    Whether this process can share ticket keys: C{available}, and when not,
    C{reason}; C{make_ring()} gives a new L{TicketKeyRing}.
    """

    def __init__(self, calls=None, reason=None):
        self._calls = calls
        self.available = calls is not None
        self.reason = reason

    def make_ring(self):
        """
        A new L{TicketKeyRing}, or L{None} when tickets cannot be shared.
        """
        return TicketKeyRing(self._calls) if self.available else None


@functools.lru_cache(maxsize=None)
def shared_tickets():
    """
    The process's L{SharedTickets}: found and proved once (a handshake in
    memory and resumptions across a key rotation); the outcome is logged.
    """
    calls = native.load()
    if isinstance(calls, native.NativeUnavailable):
        return _unavailable(str(calls))
    from .ticket_proof import prove
    try:
        problem = prove(lambda: TicketKeyRing(calls))
    except Exception as e:
        # Anything at all (cffi refused an executable callback, OpenSSL
        # misbehaved): the gateway must serve without shared tickets rather
        # than not start.
        problem = f"the self-test failed: {type(e).__name__}: {e}"
    if problem is not None:
        return _unavailable(problem)
    log.info("session tickets shared across workers ({version})", version=calls.version)
    return SharedTickets(calls)


def _unavailable(reason):
    log.warn("session tickets stay per worker: {reason}", reason=reason)
    return SharedTickets(None, reason)
