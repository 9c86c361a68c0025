"""
Tests for the master's side of a configuration reload
(gatelayer.process.reload): what a reload may change, the outcome it
records, and the all-or-nothing decision, with a fake master and a memory
clock.
"""

import os

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import ConfigError, parse_config_text
from gatelayer.process.checking import CheckedConfig
from gatelayer.process.reload import (
    ConfigReloader, ReloadOutcome, describe_changes, generation_changes, listener_changes,
    restart_problems,
)

BASE = """
[gateway]
workers = 2
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80, 10.0.0.2:80
[route:app]
path = /
upstream = app
"""


def config(text=BASE, extra=""):
    """
    A parsed configuration of C{text} plus C{extra}.
    """
    return parse_config_text(text + extra, "/etc/gate.ini")


class RestartProblemsTests(SynchronousTestCase):
    """
    restart_problems names what only a restart can change.
    """

    def test_same_config(self):
        """
        Routes, upstreams and filters may change: no problem.
        """
        new = config(BASE.replace("10.0.0.2:80", "10.0.0.3:80 weight=2"),
                     "[route:new]\npath = /new\nrespond = 200 new\n")
        self.assertEqual(restart_problems(config(), new), [])

    def test_listener_changes(self):
        """
        Listeners are not a restart problem: listener_changes names each
        one added, removed or changed, for a new generation of workers.
        """
        moved = config(BASE.replace("8080", "8081"))
        self.assertEqual(restart_problems(config(), moved), [])
        self.assertEqual(listener_changes(config(), moved), ["listener:web changed"])
        added = config(extra="[listener:other]\nbind = 127.0.0.1:9000\n")
        self.assertEqual(listener_changes(config(), added), ["listener:other added"])
        self.assertEqual(listener_changes(added, config()), ["listener:other removed"])
        self.assertEqual(listener_changes(config(), config()), [])

    def test_start_only_gateway_keys(self):
        """
        [gateway] keys read at start only are named with both values;
        others (drain_timeout) are applied.
        """
        new = config(BASE.replace("workers = 2", "workers = 3\ndrain_timeout = 3s"))
        [problem] = restart_problems(config(), new)
        self.assertIn("[gateway] workers: changed from 2 to 3", problem)

    def test_redis_rate_limit_algorithm(self):
        """
        A rate limit kept in Redis cannot change its algorithm under the
        same name; in the embedded store, or with a new name, it can.
        """
        limit = "[filter:per-ip]\ntype = rate_limit\nrate = 10/minute\nalgorithm = {algorithm}\n{store}"
        def with_limit(algorithm, store="", name="per-ip"):
            return config(extra=limit.format(algorithm=algorithm, store=store).replace("per-ip", name))
        redis = "store = redis://127.0.0.1:6379/0\n"
        [problem] = restart_problems(with_limit("gcra", redis), with_limit("sliding_window", redis))
        self.assertIn("[filter:per-ip] algorithm: changed from gcra to sliding_window", problem)
        self.assertEqual(restart_problems(with_limit("gcra"), with_limit("sliding_window")), [])
        self.assertEqual(restart_problems(with_limit("gcra", redis),
                                          with_limit("sliding_window", redis, name="per-ip-2")), [])

    def test_tls_settings(self):
        """
        A [tls:NAME] section's settings changing is no restart problem: it
        rolls a new generation of workers.
        """
        certs = os.path.abspath(self.mktemp())
        os.makedirs(certs)
        old = config(extra=f"[tls:main]\ncertificates = {certs}\n")
        new = config(extra=f"[tls:main]\ncertificates = {certs}\nmin_version = TLSv1.3\n")
        self.assertEqual(restart_problems(old, new), [])
        self.assertEqual(generation_changes(old, new), ["tls:main changed"])


class DescribeChangesTests(SynchronousTestCase):
    """
    describe_changes lists the sections a reload adds, removes or changes.
    """

    def test_changes(self):
        """
        One line per section, in kind then name order.
        """
        new = config(BASE.replace("10.0.0.2:80", "10.0.0.3:80"),
                     "[route:new]\npath = /new\nrespond = 200 new\n")
        self.assertEqual(describe_changes(config(), new), ["upstream:app changed", "route:new added"])
        self.assertEqual(describe_changes(new, config()), ["upstream:app changed", "route:new removed"])
        self.assertEqual(describe_changes(config(), config()), [])

    def test_reordered_routes(self):
        """
        Routes in another order (they are tried in order) are a change.
        """
        one = config(extra="[route:a]\npath = /a\nrespond = 200 a\n[route:b]\npath = /b\nrespond = 200 b\n")
        two = config(extra="[route:b]\npath = /b\nrespond = 200 b\n[route:a]\npath = /a\nrespond = 200 a\n")
        self.assertEqual(describe_changes(one, two), ["routes reordered"])


class FakeControl:
    """
    A worker's control channel, connected or not.
    """

    def __init__(self, connected):
        self.connected = connected


class FakeRecord:
    """
    A worker slot's record.
    """

    def __init__(self, control):
        self.control = control


class FakeSupervisor:
    """
    The master's workers service as the reloader sees it: records pushes.
    """

    def __init__(self):
        self.pushed = []
        self.answer = succeed([])
        self.retired = []
        self.workers = {}

    def push_config(self, generation, text):
        """
        Record the push; fire with C{self.answer}.
        """
        self.pushed.append((generation, text))
        return self.answer


class FakePart:
    """
    A master part recording reloads.
    """

    def __init__(self, name):
        self.name = name
        self.reloads = 0

    def reload(self):
        """
        Count.
        """
        self.reloads += 1


class FakeMaster:
    """
    What ConfigReloader uses of the master.
    """

    running = True

    def __init__(self, current):
        self.config = current
        self.supervisor = FakeSupervisor()
        self.taken = []
        self.reconfigured = []
        self.part = FakePart("tls")
        self.added = []

    def take_config(self, checked):
        """
        Record the switch.
        """
        self.taken.append(checked)
        self.config = checked.config

    def reconfigure(self, new):
        """
        Record the walk.
        """
        self.reconfigured.append(new)
        return succeed(None)

    def parts(self):
        """
        One part.
        """
        return [self.part] + self.added

    def child_names(self):
        """
        The part names.
        """
        return [p.name for p in self.parts()]

    def add_parts(self, parts):
        """
        Record added parts.
        """
        self.added.extend(parts)


class ConfigReloaderTests(SynchronousTestCase):
    """
    A reload is checked whole and applied all or nothing; its outcome is
    recorded and logged.
    """

    def setUp(self):
        """
        A reloader of a fake master whose file check is scripted.
        """
        self.clock = Clock()
        self.clock.advance(1000)
        self.master = FakeMaster(config())
        self.result = None
        self.reloader = ConfigReloader(self.master, self.clock, check=self.check, digest="aaaa")
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def check(self, path, workers):
        """
        The scripted check: raise or return C{self.result}.
        """
        self.checked_path = path
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def logged(self, text):
        """
        Formatted log lines containing C{text}.
        """
        return [formatEvent(e) for e in self.events if text in formatEvent(e)]

    def test_bad_file_changes_nothing(self):
        """
        Every problem of the check is in the outcome and in the log; the
        master, the parts and the workers are not touched.
        """
        self.result = ConfigError(["/etc/gate.ini [route:x] pth: is not a known key",
                                   "/etc/gate.ini [route:x]: needs a path"])
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertEqual(self.checked_path, "/etc/gate.ini")
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.problems, tuple(self.result.problems))
        self.assertEqual((outcome.generation, outcome.digest, outcome.at), (1, "aaaa", 1000))
        self.assertEqual((self.master.taken, self.master.supervisor.pushed, self.master.part.reloads),
                         ([], [], 0))
        for problem in self.result.problems:
            self.assertEqual(len(self.logged(problem)), 1)
        self.assertEqual(self.reloader.status()["last"], outcome.as_dict())

    def test_restart_needed_changes_nothing(self):
        """
        A good file that changes the number of workers is refused as a
        whole.
        """
        self.result = CheckedConfig(config(BASE.replace("workers = 2", "workers = 4")), "text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertFalse(outcome.ok)
        self.assertIn("[gateway] workers: changed from 2 to 4", outcome.problems[0])
        self.assertEqual(self.master.taken, [])

    def test_listeners_while_draining(self):
        """
        A listener change while the previous generation still drains is
        refused, saying so; nothing is bound.
        """
        self.master.supervisor.retired = ["old worker"]
        self.result = CheckedConfig(config(BASE.replace("8080", "9090")), "text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertFalse(outcome.ok)
        self.assertIn("still draining (1 left", outcome.problems[0])
        self.assertEqual(self.master.taken, [])

    def test_good_file_applied(self):
        """
        A good file is taken by the master, its tree, its parts (which
        re-read their files) and the workers, as generation 2.
        """
        new = config(extra="[route:new]\npath = /new\nrespond = 200 new\n")
        self.result = CheckedConfig(new, "new text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("POST /reload"))
        self.assertTrue(outcome.ok)
        self.assertEqual((outcome.generation, outcome.digest, outcome.problems), (2, "bbbb", ()))
        self.assertEqual(outcome.changes, ("route:new added",))
        self.assertEqual(self.master.taken, [self.result])
        self.assertEqual(self.master.reconfigured, [new])
        self.assertEqual(self.master.part.reloads, 1)
        self.assertEqual(self.master.supervisor.pushed, [(2, "new text")])
        self.assertEqual(self.reloader.status()["generation"], 2)
        self.assertEqual(len(self.logged("POST /reload: configuration reloaded, generation 2")), 1)

    def test_new_parts_added(self):
        """
        Parts a new configuration needs that are not running are added
        and started; those running are not built twice.
        """
        class Started(FakePart):
            started = False

            def startService(self):
                self.started = True
            def register(self, control, record):
                self.registered.append((control, record))
        extra = Started("ratelimit")
        extra.registered = []
        asked = []
        self.reloader.parts_for = lambda new, present: (asked.append(present), [FakePart("tls"), extra])[1]
        connected = FakeRecord(FakeControl(True))
        self.master.supervisor.workers = {0: connected, 1: FakeRecord(FakeControl(False)), 2: FakeRecord(None)}
        self.result = CheckedConfig(config(), "text", "bbbb")
        self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertEqual(asked, [frozenset(["tls"])])
        self.assertEqual(self.master.added, [extra])
        self.assertTrue(extra.started)
        self.assertEqual(extra.registered, [(connected.control, connected)])

    def test_worker_problems_reported(self):
        """
        A worker that could not take the configuration is reported in the
        outcome, which is still ok (it is replaced by one running it).
        """
        self.master.supervisor.answer = succeed(["worker 0 (pid 7) could not take configuration 2"])
        self.result = CheckedConfig(config(), "text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertTrue(outcome.ok)
        self.assertEqual(outcome.problems, ("worker 0 (pid 7) could not take configuration 2",))

    def test_one_at_a_time(self):
        """
        POST /reload while a reload is being applied is refused (busy) and
        does not replace the last outcome; the next one after it runs.
        """
        pending = Deferred()
        self.master.supervisor.answer = pending
        self.result = CheckedConfig(config(), "text", "bbbb")
        first = self.reloader.reload("SIGHUP")
        self.assertNoResult(first)
        busy = self.successResultOf(self.reloader.reload("POST /reload"))
        self.assertTrue(busy.busy)
        self.assertFalse(busy.ok)
        self.assertIn("already being applied", busy.problems[0])
        self.assertIsNone(self.reloader.last)
        pending.callback([])
        self.assertTrue(self.successResultOf(first).ok)
        self.master.supervisor.answer = succeed([])
        self.assertEqual(self.successResultOf(self.reloader.reload("SIGHUP")).generation, 3)

    def test_signals_queued(self):
        """
        SIGHUPs arriving while a reload is applied make one more reload
        once it is done; each fires with that reload's outcome.
        """
        pending = Deferred()
        self.master.supervisor.answer = pending
        self.result = CheckedConfig(config(), "text", "bbbb")
        first = self.reloader.reload("SIGHUP")
        second = self.reloader.reload("SIGHUP")
        third = self.reloader.reload("SIGHUP")
        self.assertNoResult(second)
        self.master.supervisor.answer = succeed([])
        pending.callback([])
        self.assertEqual(self.successResultOf(first).generation, 2)
        again = self.successResultOf(second)
        self.assertEqual(again.generation, 3)
        self.assertIs(self.successResultOf(third), again)
        self.assertEqual(len(self.master.supervisor.pushed), 2)

    def test_outcome_as_dict(self):
        """
        The outcome is JSON-ready.
        """
        outcome = ReloadOutcome(5.0, "SIGHUP", True, ("p",), 2, "d", ("route:a added",))
        self.assertEqual(outcome.as_dict(), {
            "at": 5.0, "trigger": "SIGHUP", "ok": True, "problems": ["p"], "generation": 2,
            "digest": "d", "changes": ["route:a added"], "busy": False})
