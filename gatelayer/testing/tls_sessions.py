"""
TLS session resumption as a real client sees it: Python's C{ssl} module
against a running gateway, and which worker process accepted each
connection (read from C{/proc}, Linux only).

The calls block (with a timeout); the gateway runs in other processes, so a
test may make them from its reactor thread.
"""

import os
import select
import socket
import ssl

from OpenSSL import SSL
from OpenSSL._util import lib as _lib

__all__ = ["client_context", "SessionVisit", "visit", "tls_exchange", "offer", "socket_owner"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def client_context(version, ca_file=None):
    """
    A client C{ssl.SSLContext} speaking only C{version} (C{"TLSv1.2"} or
    C{"TLSv1.3"}), trusting C{ca_file} (or nothing is verified without it).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = _VERSIONS[version]
    if ca_file is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(ca_file)
    return context


class SessionVisit:
    """
    The outcome of one L{visit}.

    @ivar status: the response's status line (bytes).
    @ivar headers: C{{lower-case name: value}} of the response head.
    @ivar session: the C{ssl.SSLSession} to offer next time.
    @ivar reused: whether this connection resumed the offered session.
    @ivar version: the negotiated TLS version.
    @ivar worker: the pid (of C{pids}) that accepted the connection, or
        L{None}.
    """

    def __init__(self, status, headers, session, reused, version, worker):
        self.status = status
        self.headers = headers
        self.session = session
        self.reused = reused
        self.version = version
        self.worker = worker


def _read_response(tls):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], headers


def visit(address, context, server_name, session=None, path="/", close_notify=False, pids=(), timeout=10.0):
    """
    Connect to C{address}, offering C{session}; send one keep-alive GET for
    C{path}; read the response; then close: with a close_notify alert when
    C{close_notify}, else by closing the socket as a crashing or impatient
    client does.

    @return: a L{SessionVisit}.
    """
    raw = socket.create_connection(address, timeout=timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=server_name, session=session)
        request = f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode("ascii")
        tls.sendall(request)
        status, headers = _read_response(tls)
        worker = socket_owner(tls.getsockname(), tls.getpeername(), pids) if pids else None
        result = SessionVisit(status, headers, tls.session, tls.session_reused, tls.version(), worker)
        if close_notify:
            tls.unwrap()
        return result
    finally:
        raw.close()


def tls_exchange(address, data, server_name, timeout=10.0):
    """
    Send C{data} (raw bytes, a request or garbage) over a new TLS
    connection to C{address} and read one response head.

    @return: C{(status code, {lower-case name: [values]})}; C{(None, {})}
        when the connection closed with no response.
    """
    context = client_context("TLSv1.3")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(address, timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(data)
            received = b""
            while b"\r\n\r\n" not in received:
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLError, ConnectionError):
                    break
                if not chunk:
                    break
                received += chunk
    head = received.partition(b"\r\n\r\n")[0]
    if not head:
        return None, {}
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers


def offer(address, server_name, version=None, ciphers=None, groups=None, timeout=10.0):
    """
    One handshake in which the client offers only what is given: a TLS
    C{version} (pyOpenSSL's constant, both floor and ceiling), a TLS 1.2
    C{ciphers} string in the client's order of preference, key exchange
    C{groups} (OpenSSL names joined by C{:}). What a scanner does, one
    question at a time.

    @return: C{(True, negotiated cipher name)} or C{(False, the error)}.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if version is not None:
        context.set_min_proto_version(version)
        context.set_max_proto_version(version)
    if ciphers is not None:
        context.set_cipher_list(ciphers.encode("ascii"))
    if groups is not None and _lib.SSL_CTX_set1_curves_list(context._context, groups.encode("ascii")) != 1:
        raise ValueError(f"this OpenSSL cannot offer the groups {groups!r}")
    with socket.create_connection(address, timeout=timeout) as raw:
        connection = SSL.Connection(context, raw)
        connection.set_tlsext_host_name(server_name.encode("ascii"))
        connection.set_connect_state()
        while True:
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                # The socket has a timeout, so it is non-blocking underneath.
                if not select.select([raw], [], [], timeout)[0]:
                    return False, TimeoutError("no answer to the handshake")
                continue
            except (SSL.Error, OSError) as e:
                return False, e
            return True, connection.get_cipher_name()


def _proc_address(text):
    host, port = text.split(":")
    packed = bytes.fromhex(host)[::-1]
    return socket.inet_ntoa(packed), int(port, 16)


def socket_owner(client, server, pids):
    """
    Which process of C{pids} holds the server end of the IPv4 TCP
    connection from C{client} to C{server} (both C{(host, port)}), or
    L{None}.
    """
    inode = None
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if _proc_address(fields[1]) == tuple(server) and _proc_address(fields[2]) == tuple(client):
                inode = fields[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
