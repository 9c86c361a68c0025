"""
A real redis-server for integration tests: started on a free loopback port in
a temporary directory, and killable, freezable (SIGSTOP), thawable (SIGCONT)
and restartable on the same port, to test how the gateway behaves when Redis
dies or hangs.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

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


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """
    One redis-server process owned by a test.

    Persistence is off: a restart starts empty, like a Redis that lost its
    memory. Starting blocks (up to C{start_timeout} seconds) until the server
    answers PING, which is acceptable in integration tests only.

    @ivar port: the TCP port, fixed at the first start and kept on restart.
    @ivar socket_path: the Unix socket it also listens on.
    """

    def __init__(self, executable=None, start_timeout=10.0):
        self.executable = executable or redis_server_path()
        if self.executable is None:
            raise RuntimeError("redis-server is not installed")
        self.start_timeout = start_timeout
        self.directory = tempfile.mkdtemp(prefix="gatelayer-redis-")
        self.socket_path = os.path.join(self.directory, "redis.sock")
        self.port = None
        self.process = None
        self.frozen = False

    @property
    def url(self):
        """
        C{redis://127.0.0.1:PORT/0}.
        """
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
            port = self.port or _free_port()
            self.process = subprocess.Popen(
                [self.executable, "--port", str(port), "--bind", "127.0.0.1",
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
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
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
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(request)
            return s.recv(65536)

    def stop(self):
        """
        Kill the server and remove its directory. Safe to call twice.
        """
        self._reap()
        shutil.rmtree(self.directory, ignore_errors=True)
