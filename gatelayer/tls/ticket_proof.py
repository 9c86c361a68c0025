"""
Handshakes in memory that prove shared session tickets work in this
process before a gateway relies on them, and that tests use to check
resumption across key rotations.

No socket, no reactor: two pyOpenSSL connections on memory BIOs, the bytes
passed by hand until both sides are done.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL._util import lib as _lib

from .tickets import new_key_set

__all__ = ["proof_certificate", "memory_handshake", "prove"]


def proof_certificate():
    """
    A throwaway self-signed P-256 certificate and key (cryptography
    objects), valid for an hour around now.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatelayer ticket proof")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256()))
    return certificate, key


def _pump(client, server):
    for _ in range(50):
        for side in (client, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        moved = False
        for source, target in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                target.bio_write(data)
                moved = True
        if not moved:
            return


def memory_handshake(server_context, client_context, session=None):
    """
    One full exchange between a new server connection on C{server_context}
    and a client on C{client_context} (offering C{session} to resume), with
    one application byte each way so TLS 1.3 tickets arrive.

    @return: C{(session, reused)}: the client's session afterwards and
        whether the handshake resumed.
    @raise SSL.Error: the handshake failed.
    """
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    _pump(client, server)
    client.send(b"?")
    _pump(client, server)
    server.recv(1)
    server.send(b"!")
    _pump(client, server)
    client.recv(1)
    # Both sides end as after close_notify: a session freed without it is
    # thrown away by OpenSSL.
    for side in (client, server):
        side.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
    return client.get_session(), bool(_lib.SSL_session_reused(client._ssl))


def _contexts(make_ring, version):
    certificate, key = proof_certificate()
    server = SSL.Context(SSL.TLS_SERVER_METHOD)
    server.use_certificate(certificate)
    server.use_privatekey(key)
    server.set_session_id(b"gatelayer ticket proof")
    server.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ring = make_ring()
    ring.install(server)
    client = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client.set_min_proto_version(version)
    client.set_max_proto_version(version)
    return server, client, ring


def prove(make_ring):
    """
    Check, for TLS 1.2 and 1.3, that a ticket of a ring made by
    C{make_ring} resumes, still resumes once the keys rotated (and is then
    renewed), and after a second rotation is refused with a full handshake.
    The server's session cache is off, so only a ticket can resume.

    @return: L{None} when all of it holds, else what went wrong.
    """
    for version, label in ((SSL.TLS1_2_VERSION, "TLS 1.2"), (SSL.TLS1_3_VERSION, "TLS 1.3")):
        server, client, ring = _contexts(make_ring, version)
        first, second, third = new_key_set(), new_key_set(), new_key_set()
        ring.set_keys([first])
        session, reused = memory_handshake(server, client)
        if reused or not ring.issued:
            return f"{label}: no ticket was issued"
        if not memory_handshake(server, client, session)[1]:
            return f"{label}: a ticket did not resume"
        ring.set_keys([second, first])
        if not memory_handshake(server, client, session)[1] or not ring.renewed:
            return f"{label}: a ticket of the previous keys did not resume"
        ring.set_keys([third, second])
        if memory_handshake(server, client, session)[1]:
            return f"{label}: a ticket of retired keys resumed"
    return None
