"""
Tests for the master's supervision logic (gatelayer.process.master) with a
fake spawner: no processes, no sockets.
"""

import errno
import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatelayer.config import parse_config_text
from gatelayer.process import master as master_module
from gatelayer.process.control import ControlProtocol, Heartbeat, heartbeat_interval
from gatelayer.process.master import MasterService
from gatelayer.process.sockets import BoundSocket, SocketSet
from gatelayer.process.spawner import ISpawner
from gatelayer.testing.spawner import FakeSpawner

CONFIG = """
[gateway]
workers = 2
drain_timeout = 5s
[listener:web]
bind = 127.0.0.1:8080
[listener:alt]
bind = 127.0.0.1:8081
[route:hello]
path = /
respond = 200 hi
"""


class FakeSocket:
    def __init__(self, fd):
        self.fd = fd
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        self.closed = True


def fake_bind(listeners, slots):
    result = SocketSet()
    fd = 100
    for listener in listeners:
        for host, port in listener.binds:
            for slot in range(slots):
                fd += 1
                result.sockets.append(BoundSocket(listener, host, port, 2, slot, FakeSocket(fd)))
    return result


class MasterTests(SynchronousTestCase):
    """
    Spawning, respawning with backoff, draining.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.spawner = FakeSpawner()
        verifyObject(ISpawner, self.spawner)
        self.config = parse_config_text(CONFIG, "/etc/gate.ini")
        self.ready = os.path.abspath(self.mktemp())
        self.master = MasterService(self.config, CONFIG, self.reactor, self.spawner, bind=fake_bind,
                                    ready_file=self.ready)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_spawn(self):
        """
        One worker per slot, each given the config on stdin, control pipes
        on fds 3/4 and its own sockets from fd 5 on.
        """
        self.master.startService()
        self.assertEqual(len(self.spawner.processes), 2)
        first = self.spawner.processes[0]
        self.assertEqual(first.child_fds[3], "w")
        self.assertEqual(first.child_fds[4], "r")
        self.assertEqual({first.child_fds[5], first.child_fds[6]}, {101, 103})
        self.assertIn("--socket", first.args)
        self.assertIn("web:5:inet", first.args)
        self.assertEqual(b"".join(first.written[0]), CONFIG.encode())
        self.assertIn(0, first.closed)
        second = self.spawner.processes[1]
        self.assertEqual({second.child_fds[5], second.child_fds[6]}, {102, 104})

    def test_ready_file(self):
        """
        The ready file is written once every worker sent a heartbeat.
        """
        self.master.startService()
        for record in self.master.workers.values():
            heartbeat = record.control.lookupFunction(Heartbeat.commandName)
            self.assertFalse(os.path.exists(self.ready))
            heartbeat(amp.AmpBox(pid=b"1", connections=b"0", requests=b"5", active=b"0"))
        with open(self.ready) as f:
            self.assertEqual(json.load(f)["listeners"]["web"], [["127.0.0.1", 8080]])
        status = self.successResultOf(self.master.status())
        self.assertEqual([w["requests"] for w in status["workers"]], [5, 5])

    def test_respawn_backoff(self):
        """
        A worker that dies is respawned after a delay that doubles while it
        keeps dying young, and a crash loop is logged.
        """
        self.master.startService()
        delays = []
        for _ in range(6):
            process = self.spawner.processes[-2] if len(delays) == 0 else self.spawner.processes[-1]
            count = len(self.spawner.processes)
            process.exit(1)
            call = self.master.workers[0].respawn_call
            delays.append(call.getTime() - self.reactor.seconds())
            self.reactor.advance(delays[-1])
            self.assertEqual(len(self.spawner.processes), count + 1)
        self.assertEqual([round(d, 6) for d in delays], [0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
        self.assertTrue(any("crash-looping" in e.get("log_format", "") for e in self.events))
        self.assertEqual(self.master.workers[0].restarts, 6)

    def test_stable_worker_resets_backoff(self):
        """
        A worker that lived long enough is respawned after the short delay.
        """
        self.master.startService()
        self.spawner.processes[0].exit(1)
        self.reactor.advance(0.1)
        self.reactor.advance(master_module.STABLE_AFTER + 1)
        self.spawner.processes[-1].exit(1)
        call = self.master.workers[0].respawn_call
        self.assertAlmostEqual(call.getTime() - self.reactor.seconds(), 0.1)

    def test_drain(self):
        """
        stopService asks each worker to drain and fires once all exited;
        no respawn happens while stopping.
        """
        self.master.startService()
        for process in self.spawner.processes:
            process.protocol.control.connected = True
        d = self.master.stopService()
        for process in self.spawner.processes:
            self.assertIn(b"drain", b"".join(process.written.get(3, [])).lower())
        self.assertNoResult(d)
        self.spawner.processes[0].exit(0)
        self.assertNoResult(d)
        self.spawner.processes[1].exit(0)
        self.successResultOf(d)
        self.assertEqual(len(self.spawner.processes), 2)
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_drain_deadline(self):
        """
        A worker still running after drain_timeout plus a grace is killed.
        """
        self.master.startService()
        d = self.master.stopService()
        self.reactor.advance(5 + master_module.KILL_GRACE)
        for process in self.spawner.processes:
            self.assertIn("KILL", process.signals)
            process.exit(signal=9)
        self.successResultOf(d)


class ControlProtocolTests(SynchronousTestCase):
    """
    Registered responders answer AMP commands.
    """

    def test_register(self):
        """
        A responder registered at run time answers its command.
        """
        from twisted.test.iosim import connectedServerAndClient
        seen = []

        def heartbeat(**kw):
            seen.append(kw)
            return {}
        server_proto = ControlProtocol()
        server_proto.register(Heartbeat, heartbeat)
        client, server, pump = connectedServerAndClient(lambda: server_proto, ControlProtocol)
        client.callRemote(Heartbeat, pid=1, connections=2, requests=3, active=4)
        pump.flush()
        self.assertEqual(seen, [{"pid": 1, "connections": 2, "requests": 3, "active": 4,
                                 "open_files": None, "paused": None, "refused_full": None,
                                 "refused_per_ip": None, "accept_errors": None, "unanswered": None,
                                 "l4": None}])


def heartbeat(record, **counters):
    """
    Deliver one Heartbeat from C{record}'s worker to the master.
    """
    box = {"pid": b"1", "connections": b"0", "requests": b"0", "active": b"0"}
    box.update({k: str(v).encode() for k, v in counters.items()})
    record.control.lookupFunction(Heartbeat.commandName)(amp.AmpBox(**box))


def master_for(test, config_text, **kwargs):
    """
    A master on a MemoryReactorClock with a fake spawner and fake sockets;
    its log events are collected in C{test.events}.
    """
    test.reactor = MemoryReactorClock()
    test.spawner = FakeSpawner()
    test.config = parse_config_text(config_text, "/etc/gate.ini")
    kwargs.setdefault("bind", fake_bind)
    test.master = MasterService(test.config, config_text, test.reactor, test.spawner, **kwargs)
    test.events = []
    globalLogPublisher.addObserver(test.events.append)
    test.addCleanup(globalLogPublisher.removeObserver, test.events.append)
    return test.master


def logged(events, text):
    """
    The formatted log lines of C{events} containing C{text}.
    """
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events if text in formatEvent(e)]


class SpawnFailureTests(SynchronousTestCase):
    """
    A worker that cannot be spawned is retried with the doubling backoff
    until it runs; meanwhile the slot is empty and /healthz says so.
    """

    def setUp(self):
        """
        A one-worker master.
        """
        master_for(self, CONFIG.replace("workers = 2", "workers = 1"))

    def test_retried_with_backoff(self):
        """
        fork failing with EAGAIN, ENOMEM, then pipe creation with EMFILE:
        each is logged naming the slot and the error, and the next attempt
        comes after a doubled delay, until the spawn works.
        """
        self.spawner.failures = [OSError(errno.EAGAIN, "Resource temporarily unavailable"),
                                 OSError(errno.ENOMEM, "Cannot allocate memory"),
                                 OSError(errno.EMFILE, "Too many open files")]
        self.master.startService()
        record = self.master.workers[0]
        self.assertIsNone(record.process)
        self.assertEqual(record.state(), "spawn failed")
        self.assertEqual(record.spawn_error, "EAGAIN: Resource temporarily unavailable")
        delays = []
        while record.process is None:
            call = record.respawn_call
            delays.append(round(call.getTime() - self.reactor.seconds(), 6))
            self.reactor.advance(call.getTime() - self.reactor.seconds())
        self.assertEqual(delays, [0.1, 0.2, 0.4])
        self.assertEqual(self.spawner.attempts, 4)
        self.assertIsNone(record.spawn_error)
        self.assertEqual(record.spawn_failures, 3)
        lines = logged(self.events, "could not be started")
        self.assertEqual(len(lines), 3)
        self.assertIn("worker 0 could not be started (EAGAIN: Resource temporarily unavailable); "
                      "retrying in 0.1s", lines[0])
        self.assertIn("EMFILE", lines[2])

    def test_never_gives_up(self):
        """
        Spawning failing for minutes: attempts continue every 30s at most.
        """
        self.spawner.failures = [OSError(errno.EAGAIN, "Resource temporarily unavailable")] * 50
        self.master.startService()
        self.reactor.pump([1.0] * 600)
        record = self.master.workers[0]
        self.assertEqual(record.backoff, master_module.BACKOFF_MAX)
        self.assertGreater(record.spawn_failures, 20)
        self.assertIsNotNone(record.respawn_call)

    def test_unexpected_error_retried(self):
        """
        A spawner raising something other than OSError is logged with its
        traceback and retried all the same.
        """
        self.spawner.failures = [RuntimeError("spawner bug")]
        self.master.startService()
        self.assertEqual(self.master.workers[0].spawn_error, "RuntimeError: spawner bug")
        self.reactor.advance(0.1)
        self.assertIsNotNone(self.master.workers[0].process)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_no_retry_while_stopping(self):
        """
        A retry pending when the master stops is cancelled; the stop does
        not wait for the empty slot.
        """
        self.spawner.failures = [OSError(errno.EAGAIN, "Resource temporarily unavailable")]
        self.master.startService()
        d = self.master.stopService()
        self.successResultOf(d)
        self.reactor.advance(master_module.BACKOFF_MAX)
        self.assertEqual(self.spawner.attempts, 1)
        self.assertEqual(self.spawner.processes, [])

    def test_status_names_the_error(self):
        """
        /status shows the empty slot's state and the spawn error.
        """
        master_for(self, CONFIG)
        self.spawner.failures = [OSError(errno.EAGAIN, "Resource temporarily unavailable")]
        self.master.startService()
        workers = self.successResultOf(self.master.status())["workers"]
        self.assertEqual(workers[0]["state"], "spawn failed")
        self.assertEqual(workers[0]["spawn_error"], "EAGAIN: Resource temporarily unavailable")
        self.assertFalse(workers[0]["alive"])
        self.assertEqual(workers[1]["state"], "starting")


WATCHED = CONFIG.replace("drain_timeout = 5s", "drain_timeout = 5s\nheartbeat_timeout = 2500ms")


class WatchdogTests(SynchronousTestCase):
    """
    A worker silent for longer than heartbeat_timeout is killed and
    respawned.
    """

    def setUp(self):
        """
        A started two-worker master with heartbeat_timeout = 2.5s.
        """
        master_for(self, WATCHED)
        self.master.startService()
        self.first = self.spawner.processes[0]
        self.record = self.master.workers[0]

    def beat_all(self):
        """
        One heartbeat from every worker.
        """
        for record in self.master.workers.values():
            if record.control is not None:
                heartbeat(record)

    def test_silent_worker_killed(self):
        """
        Heartbeats every 0.5s keep a worker alive; once they stop, it is
        SIGKILLed at the first check past heartbeat_timeout, with an error
        naming the slot and the pid, and respawned when it exits.
        """
        for _ in range(20):
            self.beat_all()
            self.reactor.advance(0.5)
        self.assertEqual(self.first.signals, [])
        heartbeat(self.master.workers[1])
        self.reactor.pump([0.5] * 4)
        self.assertEqual(self.first.signals, [])
        self.reactor.advance(0.5)
        self.assertEqual(self.first.signals, ["KILL"])
        self.assertEqual(self.spawner.processes[1].signals, [])
        lines = logged(self.events, "sent no heartbeat")
        self.assertEqual(lines, ["worker 0 (pid 1001) sent no heartbeat for 3.0s (heartbeat_timeout 2.5s): "
                                 "killing it with SIGKILL"])
        self.assertEqual(self.record.state(), "unresponsive")
        self.first.exit(signal=9)
        self.reactor.advance(self.record.respawn_call.getTime() - self.reactor.seconds())
        self.assertEqual(self.spawner.processes[-1].protocol.record, self.record)
        self.assertEqual(self.record.state(), "starting")
        self.assertEqual(self.record.watchdog_kills, 1)

    def test_killed_once(self):
        """
        The kill is sent once; only a worker still there a whole timeout
        later gets it again.
        """
        self.reactor.pump([0.5] * 20)
        self.assertEqual(self.first.signals, [])
        self.reactor.advance(0.5)
        self.assertEqual(self.first.signals, ["KILL"])
        self.reactor.pump([0.5] * 4)
        self.assertEqual(self.first.signals, ["KILL"])
        self.reactor.advance(0.5)
        self.assertEqual(self.first.signals, ["KILL", "KILL"])
        self.assertEqual(len(logged(self.events, "worker 0 (pid 1001) still running after SIGKILL")), 1)

    def test_master_stall(self):
        """
        A check that runs late (the master was suspended, or the clock
        jumped) kills nobody: the heartbeats waiting in the pipes are read
        first; a worker still silent at the next check is killed.
        """
        self.beat_all()
        self.reactor.pump([0.5] * 2)
        self.reactor.advance(60)
        self.assertEqual([p.signals for p in self.spawner.processes], [[], []])
        self.assertEqual(len(logged(self.events, "the master was not running")), 1)
        heartbeat(self.master.workers[1])
        self.reactor.advance(0.5)
        self.assertEqual([p.signals for p in self.spawner.processes], [["KILL"], []])

    def test_startup_grace(self):
        """
        A worker that has not sent its first heartbeat yet gets the longer
        start-up grace.
        """
        self.reactor.pump([0.5] * 19)
        self.assertEqual(self.first.signals, [])
        heartbeat(self.record)
        self.reactor.pump([0.5] * 5)
        self.assertEqual(self.first.signals, [])
        self.reactor.advance(0.5)
        self.assertEqual(self.first.signals, ["KILL"])

    def test_stopping_master_does_not_watch(self):
        """
        While draining, silence is expected: the drain deadline (7s
        here) decides, not the watchdog.
        """
        self.beat_all()
        self.master.stopService()
        self.assertFalse(self.master.supervisor._watchdog.running)
        self.reactor.pump([0.5] * 8)
        self.assertEqual(self.first.signals, [])

    def test_off(self):
        """
        heartbeat_timeout = 0 turns the watchdog off.
        """
        master_for(self, CONFIG.replace("drain_timeout = 5s", "heartbeat_timeout = 0s"))
        self.master.startService()
        self.reactor.pump([5.0] * 20)
        self.assertEqual([p.signals for p in self.spawner.processes], [[], []])
        self.assertIsNone(self.master.supervisor._watchdog)

    def test_worker_interval_below_timeout(self):
        """
        Workers beat at least five times per timeout, at most once a second.
        """
        self.assertEqual(heartbeat_interval(30.0), 1.0)
        self.assertEqual(heartbeat_interval(2.0), 0.4)
        self.assertEqual(heartbeat_interval(0), 1.0)


class FakeLimit:
    """
    What raise_open_files_limit returns, canned.
    """

    def __init__(self, soft, hard, previous, error=None):
        from gatelayer.process.rlimits import OpenFilesLimit
        self.result = OpenFilesLimit(soft, hard, previous, error)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.result


class OpenFilesTests(SynchronousTestCase):
    """
    The master raises its open-file limit when it prepares and shows it
    and each worker's in /status.
    """

    def test_raised_and_shown(self):
        """
        prepare() raises the limit once; /status shows the master's soft
        and hard limits and each worker's soft limit from its heartbeat.
        """
        limit = FakeLimit(65536, 65536, 1024)
        master = master_for(self, CONFIG, raise_open_files=limit)
        master.prepare()
        master.startService()
        self.assertEqual(limit.calls, 1)
        self.assertEqual(len(logged(self.events, "open-file limit raised from 1024 to 65536")), 1)
        heartbeat(master.workers[0], open_files=65536, paused=True, refused_full=3, refused_per_ip=4)
        status = self.successResultOf(master.status())
        self.assertEqual(status["master"]["open_files"], {"soft": 65536, "hard": 65536})
        self.assertEqual(status["workers"][0]["open_files"], 65536)
        self.assertFalse(status["workers"][0]["accepting"])
        self.assertEqual(status["workers"][0]["refused"],
                         {"max_connections": 3, "max_connections_per_ip": 4})
        self.assertIsNone(status["workers"][1]["open_files"])
        self.assertEqual(status["limits"]["max_connections"], 10000)

    def test_too_low_for_max_connections(self):
        """
        A limit below max_connections is warned about, naming both.
        """
        master = master_for(self, CONFIG, raise_open_files=FakeLimit(4096, 4096, 1024))
        master.prepare()
        lines = logged(self.events, "max_connections (10000) is above the open-file limit (4096)")
        self.assertEqual(len(lines), 1)

    def test_cannot_raise(self):
        """
        A limit that cannot be raised is a warning, not a failure.
        """
        master = master_for(self, CONFIG, raise_open_files=FakeLimit(1024, None, 1024, "setrlimit failed"))
        master.prepare()
        self.assertEqual(len(logged(self.events, "open-file limit stays at 1024 (setrlimit failed)")), 1)


class AdminSocketTests(SynchronousTestCase):
    """
    The admin socket is bound with the listeners and adopted at start.
    """

    def test_adopted(self):
        """
        startService adopts the admin socket with the admin site and closes
        the master's copy.
        """
        bound = []

        def bind_admin(host, port):
            sock = FakeSocket(99)
            sock.family = 2
            bound.append((host, port, sock))
            return sock
        sites = []
        master = master_for(self, CONFIG.replace("[listener:web]", "admin = 127.0.0.1:9901\n[listener:web]"),
                            bind_admin=bind_admin, admin_factory=lambda m: sites.append(m) or "site")
        master.startService()
        self.assertEqual(bound[0][:2], ("127.0.0.1", 9901))
        self.assertEqual(self.reactor.adoptedPorts, [(99, 2, "site")])
        self.assertTrue(bound[0][2].closed)
        self.assertEqual(sites, [master])

    def test_admin_bind_failure_closes_listeners(self):
        """
        An admin address in use fails prepare() with the BindError and
        leaves no listener bound.
        """
        from gatelayer.process.sockets import BindError
        sockets = []

        def bind(listeners, slots):
            result = fake_bind(listeners, slots)
            sockets.extend(s.sock for s in result.sockets)
            return result

        def bind_admin(host, port):
            raise BindError("[gateway] admin", host, port, OSError(errno.EADDRINUSE, "Address already in use"))
        master = master_for(self, CONFIG.replace("[listener:web]", "admin = 127.0.0.1:9901\n[listener:web]"),
                            bind=bind, bind_admin=bind_admin, admin_factory=lambda m: None)
        error = self.assertRaises(BindError, master.prepare)
        self.assertEqual(str(error), "[gateway] admin cannot bind 127.0.0.1:9901: address already in use")
        self.assertTrue(all(s.closed for s in sockets))
        self.assertIsNone(master.sockets)


class BindErrorTests(SynchronousTestCase):
    """
    Bind errors are one line naming the listener and the address.
    """

    def test_text(self):
        """
        The strerror is lower-cased after the address; IPv6 in brackets.
        """
        from gatelayer.process.sockets import BindError
        cases = [
            (("[listener:web]", "127.0.0.1", 8080, OSError(errno.EADDRINUSE, "Address already in use")),
             "[listener:web] cannot bind 127.0.0.1:8080: address already in use"),
            (("[listener:v6]", "::1", 443, OSError(errno.EACCES, "Permission denied")),
             "[listener:v6] cannot bind [::1]:443: permission denied"),
            (("[gateway] admin", "10.9.9.9", 9901, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")),
             "[gateway] admin cannot bind 10.9.9.9:9901: cannot assign requested address"),
        ]
        for args, text in cases:
            error = BindError(*args)
            self.assertEqual(str(error), text)
            self.assertIsInstance(error, OSError)
            self.assertEqual(error.errno, args[3].errno)


TREE = """
[gateway]
workers = 2
drain_timeout = 5s
admin = 127.0.0.1:9901
[listener:web]
bind = 127.0.0.1:8080
[listener:secure]
bind = 127.0.0.1:8443
tls = main
[tls:main]
certificates = {certificates}
[upstream:app]
servers = 10.0.0.1:80
health_check = /healthz
[route:api]
path = /
upstream = app
filters = rl
[filter:rl]
type = rate_limit
rate = 10/s
"""


class ServiceTreeTests(SynchronousTestCase):
    """
    The master is a tree of named services: listeners, its parts, admin
    and workers, started in that order and stopped in the reverse one.
    """

    def setUp(self):
        """
        A two-worker master with TLS, a health-checked upstream, a
        rate-limit filter and an admin endpoint, its parts from
        L{master_parts}.
        """
        import time

        from gatelayer.process.wiring import master_parts
        from gatelayer.testing.certs import CertificateAuthority

        certificates = os.path.abspath(self.mktemp())
        CertificateAuthority().issue(["www.example.com"]).write(os.path.join(certificates, "www.pem"))
        self.admin_socket = FakeSocket(99)
        self.admin_socket.family = 2
        master = master_for(self, TREE.format(certificates=certificates),
                            bind_admin=lambda host, port: self.admin_socket,
                            admin_factory=lambda m: "site")
        self.reactor.advance(time.time())
        master.add_parts(master_parts(self.config, self.reactor, master.controls))

    def test_named_children(self):
        """
        The children, in start order, each provide IMasterPart.
        """
        from gatelayer.service import IMasterPart
        self.assertEqual(self.master.child_names(),
                         ["listeners", "tls", "tickets", "health", "ratelimit", "metrics", "admin", "workers"])
        for child in self.master:
            verifyObject(IMasterPart, child)
        self.assertIs(self.master.getServiceNamed("workers"), self.master.supervisor)

    def test_start_order(self):
        """
        Starting binds the listeners, starts the parts and the admin
        endpoint, and spawns the workers last; each new worker is synced
        by every part.
        """
        started = []
        for child in self.master:
            self.patch(child, "startService", lambda child=child, start=child.startService: (
                started.append(child.name), start()))
        self.master.startService()
        self.assertEqual(started, ["listeners", "tls", "tickets", "health", "ratelimit", "metrics", "admin", "workers"])
        self.assertEqual(self.reactor.adoptedPorts, [(99, 2, "site")])
        self.assertEqual(len(self.spawner.processes), 2)
        self.assertTrue(self.master.getServiceNamed("health").monitor._running)

    def test_stop_order(self):
        """
        Stopping drains the workers first: the parts and the admin endpoint
        keep serving until every worker exited; then the rest stop in
        reverse order, the listeners last, and no timer is left.
        """
        self.master.startService()
        stopped = []
        for child in self.master:
            self.patch(child, "stopService", lambda child=child, stop=child.stopService: (
                stopped.append(child.name), stop())[1])
        d = self.master.stopService()
        self.assertEqual(stopped, ["workers"])
        self.assertTrue(self.master.getServiceNamed("health").running)
        for process in self.spawner.processes:
            process.exit(0)
        self.successResultOf(d)
        self.assertEqual(stopped, ["workers", "admin", "metrics", "ratelimit", "health", "tickets", "tls", "listeners"])
        self.assertEqual(self.master.sockets.sockets, [])
        self.assertFalse(self.master.getServiceNamed("health").monitor._running)
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_reconfigure_reaches_each_child(self):
        """
        reconfigure walks the tree in start order with the new config.
        """
        reached = []
        for child in self.master:
            self.patch(child, "reconfigure", lambda config, child=child: reached.append((child.name, config)))
        new = object()
        self.successResultOf(self.master.reconfigure(new))
        self.assertEqual(reached, [(name, new) for name in
                                   ["listeners", "tls", "tickets", "health", "ratelimit", "metrics", "admin", "workers"]])

    def test_health_reconfigure(self):
        """
        The health part hands a new config's upstreams to its monitor.
        """
        health = self.master.getServiceNamed("health")
        new = parse_config_text(CONFIG + "[upstream:other]\nservers = 10.0.0.2:80\nhealth_check = /\n",
                                "/etc/gate.ini")
        self.successResultOf(self.master.reconfigure(new))
        self.assertEqual(list(health.monitor.states()), ["other"])
        self.assertIs(health.config, new)

    def test_parts_reload_and_status(self):
        """
        SIGHUP re-reads the configuration file and, as it is good, every
        part reloads (the certificates); /status has each part's section
        and the reload's outcome. (No worker runs: none is asked.)
        """
        import attrs
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(self.master.config_text)
        self.master.config = attrs.evolve(self.master.config, path=path)
        tls = self.master.getServiceNamed("tls").part.reloader
        tls.last_reload = None
        outcome = self.successResultOf(self.master.reload())
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(outcome.generation, 2)
        self.assertTrue(tls.status()["last_reload"]["ok"])
        status = self.successResultOf(self.master.status())
        for key in ("master", "limits", "listeners", "tls", "upstreams", "ratelimit", "workers", "reload"):
            self.assertIn(key, status)
        self.assertEqual(status["reload"]["last"], outcome.as_dict())

    def test_reload_of_unreadable_file(self):
        """
        A configuration file that cannot be read fails the reload naming
        it; no part reloads.
        """
        tls = self.master.getServiceNamed("tls").part.reloader
        tls.last_reload = None
        outcome = self.successResultOf(self.master.reload())
        self.assertFalse(outcome.ok)
        self.assertEqual(len(outcome.problems), 1)
        self.assertIn("/etc/gate.ini: cannot read the configuration", outcome.problems[0])
        self.assertIsNone(tls.last_reload)
