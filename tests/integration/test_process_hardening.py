"""
Integration tests of the master and workers under hostile conditions: a
listening address already taken, a stopped worker, connection limits, a
worker out of file descriptors, the admin endpoint's Host and token checks.
Real processes and sockets on 127.0.0.1, bounded polling.
"""

import os
import resource
import signal
import socket
import sys

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

import gatelayer
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.waiting import scaled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))


def config(gateway="", workers=1, web="127.0.0.1:0", admin="127.0.0.1:0"):
    """
    A config text with one listener and the admin endpoint.
    """
    return f"""
[gateway]
workers = {workers}
admin = {admin}
drain_timeout = 2s
{gateway}
[listener:web]
bind = {web}
[route:hello]
path = /
respond = 200 hello
"""


class RawClient(Protocol):
    """
    A client connection that records what it receives and when it closes.
    """

    def __init__(self):
        self.data = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        """
        Record.
        """
        self.data += data

    def connectionLost(self, reason):
        """
        Fire C{closed} with what was received.
        """
        self.closed.callback(self.data)

    def get(self, path=b"/"):
        """
        Send one keep-alive GET.
        """
        self.transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")


def listening_socket(reuse_port=False):
    """
    A socket listening on a free loopback port, as another program would
    hold it.
    """
    sock = socket.socket()
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def twistd(directory, config_text):
    """
    Run C{twistd -n gatelayer} on C{config_text} to its end; fires with
    C{(stdout, stderr, exit code)}.
    """
    path = os.path.join(directory, "gate.ini")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        f.write(config_text)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    code = "import sys; from twisted.scripts.twistd import run; sys.argv=['twistd']+sys.argv[1:]; run()"
    return getProcessOutputAndValue(
        sys.executable, ["-c", code, "-n", "--pidfile=", "gatelayer", "-c", path],
        env=env, path=directory, reactor=reactor)


def cpu_seconds(pid):
    """
    User plus system CPU time of process C{pid} (Linux /proc).
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid):
    """
    Whether process C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except OSError:
        return False


class StartupErrorTests(TestCase):
    """
    What cannot be bound or read ends the start with one line, exit 1.
    """

    timeout = 60

    @inlineCallbacks
    def test_listener_port_in_use(self):
        """
        A listener address held by another program: one line naming the
        listener and the address, exit status 1, no traceback.
        """
        holder = listening_socket()
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        out, err, code = yield twistd(os.path.abspath(self.mktemp()), config(web=f"127.0.0.1:{port}"))
        self.assertEqual(code, 1)
        self.assertEqual(err.decode(), f"gatelayer: [listener:web] cannot bind 127.0.0.1:{port}: "
                                       "address already in use\n")
        self.assertNotIn(b"Traceback", out + err)

    @inlineCallbacks
    def test_listener_port_shared_by_reuseport(self):
        """
        A holder with SO_REUSEPORT (another gateway started by mistake)
        would silently share the address: refused all the same.
        """
        holder = listening_socket(reuse_port=True)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        out, err, code = yield twistd(os.path.abspath(self.mktemp()), config(web=f"127.0.0.1:{port}"))
        self.assertEqual(code, 1)
        self.assertIn(f"[listener:web] cannot bind 127.0.0.1:{port}: address already in use", err.decode())

    @inlineCallbacks
    def test_admin_port_in_use(self):
        """
        The admin address held by another program: one line naming it.
        """
        holder = listening_socket()
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        out, err, code = yield twistd(os.path.abspath(self.mktemp()), config(admin=f"127.0.0.1:{port}"))
        self.assertEqual(code, 1)
        self.assertEqual(err.decode(), f"gatelayer: [gateway] admin cannot bind 127.0.0.1:{port}: "
                                       "address already in use\n")

    @inlineCallbacks
    def test_empty_token_file(self):
        """
        An empty admin_token_file: a configuration error naming the file.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        token = os.path.join(directory, "admin.token")
        with open(token, "w") as f:
            f.write("\n")
        out, err, code = yield twistd(directory, config(gateway=f"admin_token_file = {token}"))
        self.assertEqual(code, 1)
        self.assertIn(f"[gateway] admin_token_file: {token} is empty", err.decode())
        self.assertNotIn(b"Traceback", out + err)


class GatewayTestCase(TestCase):
    """
    Starts a real gateway per test.
    """

    timeout = 90

    @inlineCallbacks
    def start(self, config_text):
        """
        Start a gateway on C{config_text}, stopped at cleanup.
        """
        self.gate = yield start_gateway(self, reactor, config_text)

    @inlineCallbacks
    def status(self, headers=None):
        """
        The admin /status document.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"), headers=headers)
        return response.json()

    @inlineCallbacks
    def connect(self):
        """
        A raw client connection to the web listener.
        """
        host, port = self.gate.address("web")
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, host, port), RawClient())
        self.addCleanup(client.transport.abortConnection)
        return client

    @inlineCallbacks
    def wait_until(self, check, what, timeout=20.0):
        """
        Poll C{check} (may return a Deferred) every 0.1s until it is true,
        for at most C{timeout} seconds L{scaled} for this interpreter.
        """
        timeout = scaled(timeout)
        deadline = reactor.seconds() + timeout
        while True:
            result = yield check()
            if result:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"{what} not seen in {timeout}s:\n{self.gate.log()[-3000:]}")
            yield task.deferLater(reactor, 0.1, lambda: None)


class WatchdogTests(GatewayTestCase):
    """
    A worker that stops sending heartbeats is killed and replaced.
    """

    @inlineCallbacks
    def test_stopped_worker_replaced(self):
        """
        SIGSTOP of a worker: after heartbeat_timeout the master SIGKILLs it
        (a log line names the slot and pid) and respawns it; both slots
        serve again.
        """
        yield self.start(config(gateway="heartbeat_timeout = 2s", workers=2))
        status = yield self.status()
        victim = status["workers"][0]["pid"]
        os.kill(victim, signal.SIGSTOP)

        def cleanup():
            if alive(victim):
                os.kill(victim, signal.SIGKILL)
        self.addCleanup(cleanup)

        @inlineCallbacks
        def replaced():
            worker = (yield self.status())["workers"][0]
            return worker if worker["pid"] != victim and worker["state"] == "serving" else None
        worker = yield self.wait_until(replaced, "a new worker in slot 0")
        self.assertEqual(worker["watchdog_kills"], 1)
        self.assertEqual(worker["restarts"], 1)
        self.assertIn(f"worker 0 (pid {victim}) sent no heartbeat for", self.gate.log())
        self.assertIn("killing it with SIGKILL", self.gate.log())
        yield self.wait_until(lambda: not alive(victim), "the stopped worker gone")
        health = yield fetch(reactor, self.gate.admin_url("/healthz"))
        self.assertEqual(health.status, 200)
        for _ in range(10):
            response = yield fetch(reactor, self.gate.url("web", "/"))
            self.assertEqual(response.status, 200)


class ConnectionLimitTests(GatewayTestCase):
    """
    max_connections and max_connections_per_ip with a real worker.
    """

    @inlineCallbacks
    def test_max_connections_pauses_accepting(self):
        """
        With max_connections = 2, a third connection waits in the kernel's
        queue (no answer) until one of the two closes, then is served; the
        two keep being served meanwhile.
        """
        yield self.start(config(gateway="max_connections = 2"))
        first = yield self.connect()
        second = yield self.connect()

        @inlineCallbacks
        def paused():
            return not (yield self.status())["workers"][0]["accepting"]
        yield self.wait_until(paused, "the worker paused")
        third = yield self.connect()
        third.get()
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(third.data, b"")
        second.get()
        yield self.wait_until(lambda: b"hello" in second.data, "the second connection served")
        first.transport.loseConnection()
        yield self.wait_until(lambda: b"hello" in third.data, "the waiting connection served")
        self.assertTrue(third.data.startswith(b"HTTP/1.1 200"))
        status = yield self.status()
        self.assertEqual(status["workers"][0]["refused"]["max_connections"], 0)
        self.assertEqual(status["limits"]["max_connections"], 2)
        self.assertIn("max_connections (2) reached: not accepting new connections", self.gate.log())

    @inlineCallbacks
    def test_max_connections_per_ip(self):
        """
        With max_connections_per_ip = 2, a third connection from 127.0.0.1
        is closed at once, unanswered; the first two are served.
        """
        yield self.start(config(gateway="max_connections_per_ip = 2"))
        first = yield self.connect()
        second = yield self.connect()
        third = yield self.connect()
        third.get()
        data = yield third.closed
        self.assertEqual(data, b"")
        for client in (first, second):
            client.get()
        yield self.wait_until(lambda: b"hello" in first.data and b"hello" in second.data,
                              "both connections served")
        first.transport.loseConnection()
        yield first.closed
        fourth = yield self.connect()
        fourth.get()
        yield self.wait_until(lambda: b"hello" in fourth.data, "a connection served after a close")

        @inlineCallbacks
        def counted():
            return (yield self.status())["workers"][0]["refused"]["max_connections_per_ip"] == 1
        yield self.wait_until(counted, "the refusal counted")
        self.assertIn("connection from 127.0.0.1 closed: max_connections_per_ip (2) reached",
                      self.gate.log())


class OpenFilesTests(GatewayTestCase):
    """
    The open-file limit: raised, shown, and running out of it.
    """

    @inlineCallbacks
    def test_limit_shown(self):
        """
        Master and worker run with their soft limit at the hard limit they
        inherited, and /status shows both.
        """
        yield self.start(config())
        status = yield self.status()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = None if hard == resource.RLIM_INFINITY else hard
        if expected is not None:
            self.assertEqual(status["master"]["open_files"], {"soft": expected, "hard": expected})

        @inlineCallbacks
        def reported():
            return (yield self.status())["workers"][0]["open_files"]
        worker_limit = yield self.wait_until(reported, "the worker's limit reported")
        self.assertEqual(worker_limit, status["master"]["open_files"]["soft"])
        pid = status["workers"][0]["pid"]
        with open(f"/proc/{pid}/limits") as f:
            line = [l for l in f if l.startswith("Max open files")][0]
        self.assertEqual(int(line.split()[3]), worker_limit)

    @inlineCallbacks
    def test_out_of_file_descriptors(self):
        """
        A worker whose descriptors run out (EMFILE on accept) neither
        crashes nor spins: connections it cannot take are closed, the ones
        it has are served, and it serves new ones once some close. The log
        gets one warning, not lines per connection; /status counts them.
        """
        yield self.start(config())
        status = yield self.status()
        pid = status["workers"][0]["pid"]
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        limit = in_use + 6
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
        clients = []
        for _ in range(40):
            clients.append((yield self.connect()))
        yield task.deferLater(reactor, 0.5, lambda: None)
        before = cpu_seconds(pid)
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertLess(cpu_seconds(pid) - before, 0.5, "the worker spins on accept")
        closed = [c for c in clients if c.closed.called]
        held = [c for c in clients if not c.closed.called]
        self.assertGreater(len(closed), 0)
        for client in held:
            client.get()
        yield self.wait_until(lambda: all(b"hello" in c.data or c.closed.called for c in held),
                              "the held connections answered")
        served = [c for c in held if b"hello" in c.data]
        self.assertGreater(len(served), 0)
        self.assertLessEqual(len(served), 6)
        unanswered = len([c for c in clients if c.closed.called and c.data == b""])

        @inlineCallbacks
        def counted():
            worker = (yield self.status())["workers"][0]
            return worker if worker["unanswered"] == unanswered else None
        worker = yield self.wait_until(counted, f"{unanswered} unanswered connections counted")
        self.assertGreater(worker["accept_errors"], 0)
        for client in clients:
            client.transport.loseConnection()
        yield task.deferLater(reactor, 0.5, lambda: None)
        for _ in range(5):
            response = yield fetch(reactor, self.gate.url("web", "/"))
            self.assertEqual(response.status, 200)
        worker = (yield self.status())["workers"][0]
        self.assertEqual((worker["pid"], worker["restarts"]), (pid, 0))
        log = self.gate.log()
        self.assertIn("accept failed with EMFILE (the worker's open-file limit is reached): "
                      "closing the connections waiting to be accepted", log)
        self.assertLessEqual(log.count("accept failed with EMFILE"), 3)
        self.assertNotIn("EMFILE recovery: Closed socket", log)


class AdminTests(GatewayTestCase):
    """
    The admin endpoint over a real socket.
    """

    @inlineCallbacks
    def test_host_and_token(self):
        """
        With a token file: the token opens /status; a missing token is
        401 with WWW-Authenticate; a foreign Host is 421, token or not.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        token_path = os.path.join(directory, "admin.token")
        with open(token_path, "w") as f:
            f.write("integration-token-0123456789\n")
        yield self.start(config(gateway=f"admin_token_file = {token_path}"))
        auth = {b"Authorization": [b"Bearer integration-token-0123456789"]}
        status = yield self.status(headers=auth)
        self.assertEqual(len(status["workers"]), 1)
        port = self.gate.info["admin"][1]
        response = yield fetch(reactor, self.gate.admin_url("/status"),
                               headers={**auth, b"Host": [b"localhost:%d" % port]})
        self.assertEqual(response.status, 200)
        response = yield fetch(reactor, self.gate.admin_url("/healthz"))
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header(b"www-authenticate"), b'Bearer realm="gatelayer admin"')
        response = yield fetch(reactor, self.gate.admin_url("/status"),
                               headers={**auth, b"Host": [b"rebind.example:%d" % port]})
        self.assertEqual(response.status, 421)
        self.assertIn("rebind.example", response.json()["error"])
