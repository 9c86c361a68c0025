"""
Tests for L{gatelayer.tls.native}, L{gatelayer.tls.tickets} and
L{gatelayer.tls.ticket_proof}: OpenSSL's ticket key callback reached
through the symbol table, key rings shared by contexts, resumption across
rotations, and sessions that survive a client leaving without close_notify.
"""

import os

import attrs
from OpenSSL import SSL
from OpenSSL._util import lib
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.config.model import TlsSpec
from gatelayer.testing.certs import CertificateAuthority, memory_tls_connection
from gatelayer.tls import native
from gatelayer.tls.sni import SNIServerCreator, wrap_server_factory
from gatelayer.tls.store import load_certificate_set
from gatelayer.tls.ticket_proof import memory_handshake, proof_certificate, prove
from gatelayer.tls.tickets import KEY_SET_SIZE, SharedTickets, TicketKeyRing, new_key_set, shared_tickets


def _calls(case):
    calls = native.load()
    case.assertIsInstance(calls, native.NativeCalls, str(calls))
    return calls


def _server(ring, certificate=None):
    certificate, key = certificate or proof_certificate()
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(certificate)
    context.use_privatekey(key)
    context.set_session_id(b"test")
    # Only a ticket can resume: no session cache to fall back on.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if ring is not None:
        ring.install(context)
    return context


def _client(version):
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    return context


VERSIONS = ((SSL.TLS1_2_VERSION, "TLS 1.2"), (SSL.TLS1_3_VERSION, "TLS 1.3"))


class NativeTests(SynchronousTestCase):
    """
    The OpenSSL functions pyOpenSSL lacks are found, checked, or refused
    with a reason.
    """

    def test_found_and_checked(self):
        """
        On this platform the calls resolve, and the OpenSSL they reach
        answers with pyOpenSSL's own version string.
        """
        calls = _calls(self)
        self.assertEqual(calls.version, SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode())
        self.assertIn(int(calls.version.split()[1].split(".")[0]), native.SUPPORTED_MAJORS)

    def test_not_elf(self):
        """
        Files that are not 64-bit little-endian ELF are refused with a
        reason, whatever their bytes.
        """
        cases = [b"", b"MZ\x90\x00", b"\x7fELF\x01\x01", b"\x7fELF\x02\x02" + bytes(60), b"#!/bin/sh\n"]
        for content in cases:
            path = self.mktemp()
            with open(path, "wb") as f:
                f.write(content)
            error = self.assertRaises(native.NativeUnavailable, native.elf_symbols, path, ["x"])
            self.assertIn("is not a 64-bit little-endian ELF file", str(error), content)

    def test_load_falls_back(self):
        """
        L{native.load} returns (never raises) the reason when the module is
        not what it expects: a missing file, a non-ELF file.
        """
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not a shared object")
        for path in (garbage, self.mktemp()):
            self.patch(native, "_module_path", lambda path=path: path)
            result = native.load()
            self.assertIsInstance(result, native.NativeUnavailable)
            self.assertTrue(str(result))

    def test_missing_symbols(self):
        """
        A symbol table without the functions (this interpreter's own ELF
        file, say) is refused, naming the missing functions.
        """
        target = os.path.realpath("/proc/self/exe")
        self.patch(native, "_module_path", lambda: target)
        result = native.load()
        self.assertIsInstance(result, native.NativeUnavailable)
        self.assertTrue("not found" in str(result) or "no symbol table" in str(result), str(result))


class RingTests(SynchronousTestCase):
    """
    A L{TicketKeyRing} encrypts tickets with its current keys and accepts
    the previous ones.
    """

    def setUp(self):
        self.calls = _calls(self)
        self.certificate = proof_certificate()

    def test_bad_keys(self):
        """
        Key sets of the wrong size, or none, are refused; the ring keeps
        what it had.
        """
        ring = TicketKeyRing(self.calls)
        good = new_key_set()
        ring.set_keys([good])
        for keys in ([], [b""], [good[:-1]], [good + b"x"], [good, b"\0" * 79]):
            self.assertRaises(ValueError, ring.set_keys, keys)
        self.assertEqual(ring.names, (good[:16],))

    def test_resumes_across_one_rotation(self):
        """
        A ticket resumes with the current keys; after one rotation it still
        resumes (and is renewed); after a second it is not decrypted and the
        client gets a full handshake, not a failure.
        """
        for version, label in VERSIONS:
            ring = TicketKeyRing(self.calls)
            server, client = _server(ring, self.certificate), _client(version)
            first, second, third = new_key_set(), new_key_set(), new_key_set()
            ring.set_keys([first])
            session, reused = memory_handshake(server, client)
            self.assertFalse(reused, label)
            self.assertTrue(memory_handshake(server, client, session)[1], label)
            self.assertEqual(ring.resumed, 1, label)
            ring.set_keys([second, first])
            self.assertTrue(memory_handshake(server, client, session)[1], label)
            self.assertEqual(ring.renewed, 1, label)
            ring.set_keys([third, second])
            renewed, reused = memory_handshake(server, client, session)
            self.assertFalse(reused, label)
            self.assertEqual(ring.unknown, 1, label)
            self.assertTrue(memory_handshake(server, client, renewed)[1], f"{label}: the new ticket resumes")

    def test_shared_between_processes(self):
        """
        Two rings given the same keys (two workers) resume each other's
        tickets; a ring with other keys (OpenSSL's per-process keys, in
        effect) does not.
        """
        keys = [new_key_set()]
        for version, label in VERSIONS:
            one, two, stranger = (TicketKeyRing(self.calls) for _ in range(3))
            one.set_keys(keys)
            two.set_keys(keys)
            stranger.set_keys([new_key_set()])
            client = _client(version)
            session, _ = memory_handshake(_server(one, self.certificate), client)
            self.assertTrue(memory_handshake(_server(two, self.certificate), client, session)[1], label)
            self.assertFalse(memory_handshake(_server(stranger, self.certificate), client, session)[1], label)

    def test_without_keys(self):
        """
        A ring that has no keys yet issues no ticket; handshakes still
        complete.
        """
        ring = TicketKeyRing(self.calls)
        server = _server(ring, self.certificate)
        for version, label in VERSIONS:
            session, reused = memory_handshake(server, _client(version))
            self.assertFalse(reused, label)
        self.assertEqual(ring.issued, 0)

    def test_proof(self):
        """
        The start-up proof passes with working rings, and says what failed
        with a ring that never resumes.
        """
        self.assertIsNone(prove(lambda: TicketKeyRing(self.calls)))

        class Forgetful(TicketKeyRing):
            def set_keys(self, key_sets):
                super().set_keys([new_key_set()])
        self.assertEqual(prove(lambda: Forgetful(self.calls)), "TLS 1.2: a ticket of the previous keys did not resume")

    def test_shared_tickets(self):
        """
        This process can share tickets; an unavailable L{SharedTickets}
        makes no ring and keeps its reason.
        """
        shared = shared_tickets()
        self.assertTrue(shared.available, shared.reason)
        self.assertIsInstance(shared.make_ring(), TicketKeyRing)
        missing = SharedTickets(None, "no symbols")
        self.assertFalse(missing.available)
        self.assertIsNone(missing.make_ring())
        self.assertEqual(missing.reason, "no symbols")
        self.assertEqual(KEY_SET_SIZE, 80)


@implementer(IOpenSSLClientConnectionCreator)
class _Client:
    """
    A client creator that offers its last session.
    """

    def __init__(self, version=None):
        self.context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if version is not None:
            self.context.set_max_proto_version(version)
        self.session = None

    def clientConnectionForTLS(self, tlsProtocol):
        connection = SSL.Connection(self.context, None)
        connection.set_tlsext_host_name(b"www.example.com")
        if self.session is not None:
            connection.set_session(self.session)
        return connection


class CreatorTests(SynchronousTestCase):
    """
    The SNI creators of the worker use the shared ring, and keep sessions
    of clients that leave without close_notify.
    """

    def setUp(self):
        directory = self.mktemp()
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(directory, "www.pem"))
        self.spec = TlsSpec(name="main", certificates=(directory,))
        self.calls = _calls(self)

    def connect(self, creator, client, wrapper=wrap_server_factory):
        connection = memory_tls_connection(creator, client, server_wrapper=wrapper)
        self.assertTrue(connection.handshake_done())
        connection.send(client_data=b"GET", server_data=b"200")
        handle = connection.client_tls.getHandle()
        return connection, handle.get_session(), bool(lib.SSL_session_reused(handle._ssl))

    def test_ticket_resumes_on_another_worker(self):
        """
        Two creators (two workers) whose rings hold the master's keys
        resume each other's tickets, TLS 1.2 and 1.3, through the SNI
        switch to the certificate's context.
        """
        keys = [new_key_set()]
        workers = []
        for _ in range(2):
            ring = TicketKeyRing(self.calls)
            ring.set_keys(keys)
            workers.append(SNIServerCreator(self.spec, load_certificate_set(self.spec), tickets=ring))
        for version in (SSL.TLS1_2_VERSION, None):
            client = _Client(version)
            _, client.session, reused = self.connect(workers[0], client)
            self.assertFalse(reused)
            _, _, reused = self.connect(workers[1], client)
            self.assertTrue(reused, version)
        self.assertEqual(workers[1].tickets.resumed, 2)

    def test_reload_keeps_ring(self):
        """
        Contexts built for new certificates take their keys from the same
        ring: a ticket issued before a certificate swap resumes after it.
        """
        ring = TicketKeyRing(self.calls)
        ring.set_keys([new_key_set()])
        creator = SNIServerCreator(self.spec, load_certificate_set(self.spec), tickets=ring)
        client = _Client()
        _, client.session, _ = self.connect(creator, client)
        directory = self.spec.certificates[0]
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(directory, "www.pem"))
        creator.swap(load_certificate_set(self.spec))
        _, _, reused = self.connect(creator, client)
        self.assertTrue(reused)

    def test_session_survives_missing_close_notify(self):
        """
        With tickets off (TLS 1.2 session ids), a client that drops the
        connection without close_notify still resumes next time on the
        listener's TLS transport; a plain Twisted TLS transport, which
        leaves OpenSSL to throw the session away, does not: the control.
        """
        spec = attrs.evolve(self.spec, session_tickets=False)
        for wrapper, expected in ((wrap_server_factory, True), (None, False)):
            creator = SNIServerCreator(spec, load_certificate_set(spec))
            client = _Client(SSL.TLS1_2_VERSION)
            connection, client.session, _ = self.connect(creator, client, wrapper)
            # The client's socket closes: no alert, just the end of the
            # stream. The client keeps its session, as browsers and Python's
            # ssl do (OpenSSL would otherwise spoil it on the client's side).
            connection.client_tls.getHandle().set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
            connection.client_tls.transport.loseConnection()
            connection.pump.flush()
            self.assertIsNotNone(connection.server.lost)
            _, _, reused = self.connect(creator, client, wrapper)
            self.assertEqual(reused, expected, wrapper)


class FallbackTests(SynchronousTestCase):
    """
    When the proof fails, or raises, the process keeps per-worker tickets
    and says why.
    """

    def test_proof_raises(self):
        """
        An exception in the proof becomes the reason; nothing propagates.
        """
        from gatelayer.tls import ticket_proof, tickets

        def broken(make_ring):
            raise MemoryError("no executable memory for callbacks")
        self.patch(ticket_proof, "prove", broken)
        shared = tickets.shared_tickets.__wrapped__()
        self.assertFalse(shared.available)
        self.assertIn("MemoryError: no executable memory for callbacks", shared.reason)
        self.assertIsNone(shared.make_ring())

    def test_unreadable_symbols(self):
        """
        Without the native calls the reason names what is missing.
        """
        from gatelayer.tls import tickets
        self.patch(native, "_module_path", lambda: "/nonexistent/module.so")
        shared = tickets.shared_tickets.__wrapped__()
        self.assertFalse(shared.available)
        self.assertIn("could not be read", shared.reason)
