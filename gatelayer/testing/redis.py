"""
A real redis-server for integration tests: started on a free loopback port in
a temporary directory, and killable, freezable (SIGSTOP), thawable (SIGCONT)
and restartable on the same port, to test how the gateway behaves when Redis
dies or hangs; and a Sentinel-watched pair of them (L{SentinelCluster}: a
master, a replica and three Sentinels) to test a failover.
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

__all__ = ["RedisServer", "SentinelCluster", "ask_redis", "redis_server_path", "resp_command", "write_certificates"]

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

    def __init__(self, executable=None, start_timeout=10.0, tls=False, extra_args=(), certificates=None):
        """
        @param extra_args: more redis-server arguments (C{("--replicaof",
            "127.0.0.1", "6380")}, say).
        @param certificates: with C{tls}, a directory already holding
            C{ca.pem}, C{server.pem} and C{server.key} (several servers
            sharing one CA); by default the server makes its own.
        """
        self.extra_args = tuple(extra_args)
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
        self.certificates = certificates or self.directory
        self.ca_path = os.path.join(self.certificates, "ca.pem")
        if tls and certificates is None:
            write_certificates(self.directory)

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
                         "--tls-cert-file", os.path.join(self.certificates, "server.pem"),
                         "--tls-key-file", os.path.join(self.certificates, "server.key"),
                         "--tls-ca-cert-file", self.ca_path, "--tls-auth-clients", "no"]
            else:
                ports = ["--port", str(port)]
            self.process = subprocess.Popen(
                [self.executable, *ports, "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", self.directory, "--unixsocket", self.socket_path,
                 "--unixsocketperm", "700", "--logfile", os.path.join(self.directory, "redis.log"),
                 *self.extra_args],
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
        with self._connect(self.port, 5) as s:
            s.sendall(resp_command(*words))
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


def resp_command(*words):
    """
    The RESP bytes of the command C{words} (text).
    """
    return b"".join(
        [f"*{len(words)}\r\n".encode()]
        + [f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words])


def ask_redis(port, *words, timeout=2.0, ca=None):
    """
    Send one command to the server on C{port} of 127.0.0.1 (over TLS
    trusting C{ca}, if given) and return its parsed reply (see
    L{gatelayer.ratelimit.sentinel.parse_reply}); L{None} when it cannot be
    reached or does not answer in time.
    """
    from gatelayer.ratelimit.sentinel import parse_reply
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ca is not None:
            sock = ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname="127.0.0.1")
        with sock as s:
            s.sendall(resp_command(*words))
            data = b""
            while True:
                parsed = parse_reply(data)
                if parsed is not None:
                    return parsed[0]
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None


class SentinelCluster:
    """
    A Redis service C{SERVICE} watched by three Sentinels, all on free
    loopback ports: a master, one replica of it and three
    C{redis-server --sentinel} processes agreeing (quorum 2) that the master
    is down after C{down_after} seconds without an answer, so that killing
    the master promotes the replica within a few seconds.

    Starting blocks (bounded) until the replica is in sync and every
    Sentinel knows the replica and the two other Sentinels: a failover
    started earlier could not be agreed on. Stopping kills only the
    processes this object started.

    With C{tls}, every process (servers, replication, Sentinels) speaks
    TLS only, with certificates for C{localhost} and C{127.0.0.1} from one
    CA (L{ca_path}).

    @ivar master: the L{RedisServer} started as the master.
    @ivar replica: the L{RedisServer} started as its replica.
    @ivar sentinel_ports: the Sentinels' ports.
    """

    SERVICE = "gatemaster"

    def __init__(self, down_after=0.8, failover_timeout=4.0, start_timeout=30.0, tls=False):
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.start_timeout = start_timeout
        self.tls = tls
        self.directory = tempfile.mkdtemp(prefix="gatelayer-sentinel-")
        self.ca_path = os.path.join(self.directory, "ca.pem")
        if tls:
            write_certificates(self.directory)
        self._certificates = self.directory if tls else None
        self.master = RedisServer(tls=tls, certificates=self._certificates)
        self.replica = None
        self.sentinel_ports = []
        self._sentinels = []

    @property
    def url(self):
        """
        C{redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/SERVICE/0},
        or with TLS C{rediss+sentinel://.../SERVICE/0?ca=...}.
        """
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls:
            return f"rediss+sentinel://{hosts}/{self.SERVICE}/0?ca={self.ca_path}"
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def ask(self, port, *words):
        """
        L{ask_redis} of a process of this cluster (over TLS if it uses it).
        """
        return ask_redis(port, *words, ca=self.ca_path if self.tls else None)

    def start(self):
        """
        Start the master, the replica and the Sentinels and wait until they
        are ready for a failover.
        """
        self.master.start()
        replication = ("--replicaof", "127.0.0.1", str(self.master.port))
        if self.tls:
            replication += ("--tls-replication", "yes")
        self.replica = RedisServer(tls=self.tls, extra_args=replication, certificates=self._certificates)
        self.replica.start()
        self._wait(lambda: b"master_link_status:up" in self.replica.command("INFO", "replication"),
                   "the replica's link to the master")
        for index in range(3):
            self._start_sentinel(index)
        self._wait(self._sentinels_agree, "three Sentinels knowing the master, the replica and each other")
        return self

    def _start_sentinel(self, index):
        for attempt in range(3):
            port = free_port()
            path = os.path.join(self.directory, f"sentinel-{index}.conf")
            if self.tls:
                d = self.directory
                ports = (f"port 0\ntls-port {port}\ntls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\n"
                         f"tls-ca-cert-file {d}/ca.pem\ntls-auth-clients no\ntls-replication yes\n")
            else:
                ports = f"port {port}\n"
            with open(path, "w") as f:
                f.write(f"{ports}bind 127.0.0.1\ndaemonize no\n"
                        f"dir {self.directory}\nlogfile {self.directory}/sentinel-{index}.log\n"
                        f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                        f"sentinel down-after-milliseconds {self.SERVICE} {int(self.down_after * 1000)}\n"
                        f"sentinel failover-timeout {self.SERVICE} {int(self.failover_timeout * 1000)}\n"
                        f"sentinel parallel-syncs {self.SERVICE} 1\n")
            process = subprocess.Popen(
                [self.master.executable, path, "--sentinel"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process.poll() is None:
                if self.ask(port, "PING") == b"PONG":
                    self._sentinels.append(process)
                    self.sentinel_ports.append(port)
                    return
                time.sleep(0.02)
            _kill(process)
        raise RuntimeError(f"redis-server --sentinel did not start; see {self.directory}")

    def _sentinels_agree(self):
        for port in self.sentinel_ports:
            state = self.sentinel_state(port)
            if state is None or int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def sentinel_state(self, port):
        """
        What the Sentinel on C{port} says of the master (C{SENTINEL master
        SERVICE} as a dict of text), or L{None}.
        """
        reply = self.ask(port, "SENTINEL", "master", self.SERVICE)
        if not isinstance(reply, list):
            return None
        return {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply) - 1, 2)}

    def master_port(self):
        """
        The port the first Sentinel that answers names as the master's, or
        L{None}.
        """
        for port in self.sentinel_ports:
            reply = self.ask(port, "SENTINEL", "get-master-addr-by-name", self.SERVICE)
            if isinstance(reply, list) and len(reply) == 2:
                return int(reply[1])
        return None

    def role(self, server):
        """
        C{"master"} or C{"slave"}: what C{server} (a L{RedisServer}) says it
        is, or L{None} when it does not answer.
        """
        reply = self.ask(server.port, "ROLE")
        return reply[0].decode() if isinstance(reply, list) and reply else None

    def _wait(self, condition, what):
        deadline = time.monotonic() + self.start_timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not happen in {self.start_timeout:g}s; see {self.directory}")
            time.sleep(0.05)

    def stop(self):
        """
        Kill every process this cluster started and remove its files. Safe
        to call twice.
        """
        for process in self._sentinels:
            _kill(process)
        self._sentinels = []
        for server in (self.master, self.replica):
            if server is not None:
                server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _kill(process):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def write_certificates(directory):
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
