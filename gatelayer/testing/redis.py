"""
A real redis-server for integration tests: started on a free loopback port in
a temporary directory, and killable, freezable (SIGSTOP), thawable (SIGCONT)
and restartable on the same port, to test how the gateway behaves when Redis
dies or hangs.
"""

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from gatelayer.testing.waiting import free_port

__all__ = ["RedisServer", "redis_server_path"]

_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def redis_server_path():
    """
    Where the redis-server executable is, or L{None}.
    """
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("redis-server")


class RedisServer:
    """
    One redis-server process owned by a test.

    Persistence is off: a restart starts empty, like a Redis that lost its
    memory. Starting blocks (up to C{start_timeout} seconds) until the server
    answers PING, which is acceptable in integration tests only.

    @ivar port: the TCP port, fixed at the first start and kept on restart.
    @ivar socket_path: the Unix socket it also listens on.
    @ivar tls: whether the TCP port speaks TLS only (C{rediss://}); the
        server's certificate is for C{localhost} and C{127.0.0.1}, issued by
        the CA in L{ca_path}.
    """

    def __init__(self, executable=None, start_timeout=10.0, tls=False):
        self.executable = executable or redis_server_path()
        if self.executable is None:
            raise RuntimeError("redis-server is not installed")
        self.start_timeout = start_timeout
        self.directory = tempfile.mkdtemp(prefix="gatelayer-redis-")
        self.socket_path = os.path.join(self.directory, "redis.sock")
        self.port = None
        self.process = None
        self.frozen = False
        self.tls = tls
        self.ca_path = os.path.join(self.directory, "ca.pem")
        if tls:
            _write_certificates(self.directory)

    @property
    def url(self):
        """
        C{redis://127.0.0.1:PORT/0}, or with TLS
        C{rediss://localhost:PORT/0?ca=...}.
        """
        if self.tls:
            return f"rediss://localhost:{self.port}/0?ca={self.ca_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self):
        """
        C{unix:///.../redis.sock}.
        """
        return f"unix://{self.socket_path}"

    @property
    def pid(self):
        """
        The server's process id while it runs, else L{None}.
        """
        return self.process.pid if self.running else None

    @property
    def running(self):
        """
        Whether the process is alive (possibly frozen).
        """
        return self.process is not None and self.process.poll() is None

    def start(self):
        """
        Start the server (on a new free port the first time, on the same
        port afterwards) and wait until it answers.
        """
        if self.running:
            raise RuntimeError("redis-server is already running")
        attempts = 3 if self.port is None else 1
        for attempt in range(attempts):
            port = self.port or free_port()
            if self.tls:
                ports = ["--port", "0", "--tls-port", str(port),
                         "--tls-cert-file", os.path.join(self.directory, "server.pem"),
                         "--tls-key-file", os.path.join(self.directory, "server.key"),
                         "--tls-ca-cert-file", self.ca_path, "--tls-auth-clients", "no"]
            else:
                ports = ["--port", str(port)]
            self.process = subprocess.Popen(
                [self.executable, *ports, "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", self.directory, "--unixsocket", self.socket_path,
                 "--unixsocketperm", "700", "--logfile", os.path.join(self.directory, "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.frozen = False
            if self._wait_ready(port):
                self.port = port
                return self
            self._reap()
        raise RuntimeError(f"redis-server did not start; see {self.directory}/redis.log")

    def _wait_ready(self, port):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with self._connect(port, 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _reap(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.frozen = False

    def kill(self):
        """
        Kill the server with SIGKILL, as a crash would; its data is lost.
        """
        self._reap()

    def freeze(self):
        """
        Stop the server with SIGSTOP: connections stay open but nothing is
        answered, as with a Redis stuck in a long command or swapping.
        """
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        """
        Resume a frozen server with SIGCONT.
        """
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def restart(self):
        """
        Kill the server if it runs and start an empty one on the same port.
        """
        self._reap()
        return self.start()

    def command(self, *words):
        """
        Send one command over a fresh blocking connection and return the raw
        reply bytes (enough for FLUSHALL, SCRIPT FLUSH, DBSIZE in tests).
        """
        request = b"".join(
            [f"*{len(words)}\r\n".encode()]
            + [f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words])
        with self._connect(self.port, 5) as s:
            s.sendall(request)
            return s.recv(65536)

    def _connect(self, port, timeout):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=self.ca_path)
        return context.wrap_socket(sock, server_hostname="localhost")

    def stop(self):
        """
        Kill the server and remove its directory. Safe to call twice.
        """
        self._reap()
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_certificates(directory):
    """
    Write a throw-away CA (C{ca.pem}) and a server certificate for
    localhost/127.0.0.1 it issued (C{server.pem}, C{server.key}).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatelayer test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
