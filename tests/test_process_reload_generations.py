"""
Tests for the reload decisions that roll a new generation of workers
(gatelayer.process.reload.generation_changes): TLS sections and the
[gateway] keys only workers read roll, the master's own keys are refused;
and for the master's certificate part taking new TLS sections
(gatelayer.process.wiring.CertificateService), with fakes and a memory
clock.
"""

import os
import time

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.process.checking import CheckedConfig
from gatelayer.process.reload import (
    GENERATION_KEYS, RESTART_KEYS, ConfigReloader, describe_changes, generation_changes, restart_problems,
)
from gatelayer.process.wiring import CertificateService
from gatelayer.testing.certs import CertificateAuthority
from gatelayer.tls.parts import CertificatePart
from tests.test_process_reload import BASE, FakeMaster, FakePart, FakeSupervisor, config

#: A changed value for each key of GENERATION_KEYS and RESTART_KEYS.
CHANGED = {
    "max_connections": "max_connections = 77",
    "max_connections_per_ip": "max_connections_per_ip = 7",
    "idle_timeout": "idle_timeout = 7s",
    "http_server": "http_server = twisted",
    "access_log": "access_log = -",
    "workers": "workers = 3",
    "admin": "admin = 127.0.0.1:9999",
    "heartbeat_timeout": "heartbeat_timeout = 31s",
}


def with_gateway(line):
    """
    The base configuration with C{line} in C{[gateway]}.
    """
    return config(BASE.replace("workers = 2", "workers = 2\n" + line if not line.startswith("workers")
                               else line))


class GenerationChangesTests(SynchronousTestCase):
    """
    What rolls a new generation of workers, and what is still refused.
    """

    def setUp(self):
        self.certs = os.path.abspath(self.mktemp())
        os.makedirs(self.certs)

    def tls(self, name="main", extra=""):
        """
        A [tls:NAME] section on the test's certificate directory.
        """
        return f"[tls:{name}]\ncertificates = {self.certs}\n{extra}"

    def test_tls_sections_roll(self):
        """
        A [tls:NAME] section added, removed or changed rolls a generation
        and is no restart problem.
        """
        plain = config()
        main = config(extra=self.tls())
        strict = config(extra=self.tls(extra="min_version = TLSv1.3\nstrict_sni = yes\n"))
        both = config(extra=self.tls() + self.tls("other"))
        self.assertEqual(generation_changes(plain, main), ["tls:main added"])
        self.assertEqual(generation_changes(main, plain), ["tls:main removed"])
        self.assertEqual(generation_changes(main, strict), ["tls:main changed"])
        self.assertEqual(generation_changes(main, both), ["tls:other added"])
        for old, new in ((plain, main), (main, strict), (both, main)):
            self.assertEqual(restart_problems(old, new), [])
        self.assertIn("tls:main changed", describe_changes(main, strict))

    def test_worker_gateway_keys_roll(self):
        """
        Each [gateway] key only workers read rolls a generation, named,
        and is no restart problem.
        """
        self.assertEqual(set(GENERATION_KEYS) & set(RESTART_KEYS), set())
        for key in GENERATION_KEYS:
            new = with_gateway(CHANGED[key])
            self.assertEqual(generation_changes(config(), new), [f"[gateway] {key} changed"], key)
            self.assertEqual(restart_problems(config(), new), [], key)

    def test_tracing_rolls(self):
        """
        A changed [tracing] section (read by workers at start) rolls a
        generation.
        """
        new = config(extra="[tracing]\nexporter = otlp\nendpoint = http://127.0.0.1:4318/v1/traces\n")
        self.assertEqual(generation_changes(config(), new), ["[tracing] changed"])
        self.assertEqual(restart_problems(config(), new), [])

    def test_master_gateway_keys_refused(self):
        """
        The keys the master reads at start are refused, naming section,
        key and both values, and roll nothing.
        """
        for key in ("workers", "admin", "heartbeat_timeout"):
            new = with_gateway(CHANGED[key])
            [problem] = restart_problems(config(), new)
            self.assertIn(f"/etc/gate.ini [gateway] {key}: changed from ", problem)
            self.assertIn("restart the gateway", problem)
            self.assertEqual(generation_changes(config(), new), [], key)

    def test_other_changes_do_not_roll(self):
        """
        Routes, upstreams and the [gateway] keys applied per request are
        taken by the running workers: nothing rolls.
        """
        new = config(BASE.replace("workers = 2", "workers = 2\ndrain_timeout = 3s\nmax_body_size = 1k")
                     .replace("10.0.0.2:80", "10.0.0.3:80"), "[route:new]\npath = /new\nrespond = 200 n\n")
        self.assertEqual(generation_changes(config(), new), [])
        self.assertEqual(generation_changes(config(), config()), [])


class RollingSupervisor(FakeSupervisor):
    """
    A supervisor that can replace its generation; the new one serves at
    once.
    """

    def __init__(self):
        super().__init__()
        self.replaced = 0
        self.config = config()

    def replace_generation(self):
        """
        Count; there is no old worker to drain.
        """
        self.replaced += 1
        return []

    def when_ready(self):
        """
        Ready at once.
        """
        return succeed(None)


class FakeListeners:
    """
    The master's listening sockets: records rebinds, nothing unused.
    """

    def __init__(self):
        self.rebinds = []

    def rebind(self, listeners, slots):
        """
        Record the rebind.
        """
        self.rebinds.append((listeners, slots))
        return []


class PreparingPart(FakePart):
    """
    A part loading files for the next generation, with scripted problems.
    """

    def __init__(self, name, problems=()):
        super().__init__(name)
        self.problems = list(problems)
        self.prepared = []

    def prepare(self, new_config):
        """
        Record; answer the scripted problems.
        """
        self.prepared.append(new_config)
        return self.problems


class RollingReloadTests(SynchronousTestCase):
    """
    ConfigReloader applies a TLS or worker-key change with a new
    generation of workers, after the parts loaded their files.
    """

    def setUp(self):
        self.certs = os.path.abspath(self.mktemp())
        os.makedirs(self.certs)
        self.master = FakeMaster(config())
        self.master.supervisor = RollingSupervisor()
        self.master.listeners = FakeListeners()
        self.master.part = PreparingPart("tls")
        self.clock = Clock()
        self.result = None
        self.reloader = ConfigReloader(self.master, self.clock, check=lambda path, workers: self.result,
                                       digest="aaaa")

    def test_tls_change_rolls(self):
        """
        A new TLS section is prepared, taken by the master and applied by a
        new generation on the same listeners; nothing is pushed to the
        running workers.
        """
        new = config(extra=f"[tls:main]\ncertificates = {self.certs}\n")
        self.result = CheckedConfig(new, "text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(outcome.changes, ("tls:main added",))
        self.assertEqual(self.master.part.prepared, [new])
        self.assertEqual(self.master.listeners.rebinds, [(new.listeners, 2)])
        self.assertEqual(self.master.supervisor.replaced, 1)
        self.assertEqual(self.master.supervisor.pushed, [])
        self.assertEqual(self.master.reconfigured, [new])

    def test_worker_key_rolls(self):
        """
        A changed idle_timeout is applied by a new generation.
        """
        self.result = CheckedConfig(with_gateway("idle_timeout = 9s"), "text", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(outcome.changes, ("gateway changed",))
        self.assertEqual(self.master.supervisor.replaced, 1)

    def test_prepare_problem_refuses(self):
        """
        A part that cannot load the new generation's files refuses the
        whole reload: nothing is taken, bound or started.
        """
        self.master.part.problems = ["/etc/gate.ini [tls:main]: /x/www.pem: no such file"]
        self.result = CheckedConfig(config(extra=f"[tls:main]\ncertificates = {self.certs}\n"), "t", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertFalse(outcome.ok)
        self.assertEqual(outcome.problems, ("/etc/gate.ini [tls:main]: /x/www.pem: no such file",))
        self.assertEqual((self.master.taken, self.master.listeners.rebinds, self.master.supervisor.replaced),
                         ([], [], 0))
        self.assertEqual(outcome.generation, 1)

    def test_tls_change_while_draining(self):
        """
        A TLS change while the previous generation drains is refused,
        naming the change; a route change meanwhile is not.
        """
        self.master.supervisor.retired = ["old worker"]
        self.result = CheckedConfig(config(extra=f"[tls:main]\ncertificates = {self.certs}\n"), "t", "bbbb")
        outcome = self.successResultOf(self.reloader.reload("SIGHUP"))
        self.assertFalse(outcome.ok)
        self.assertIn("tls:main added", outcome.problems[0])
        self.assertIn("still draining (1 left", outcome.problems[0])
        self.assertEqual(self.master.part.prepared, [])
        self.result = CheckedConfig(config(extra="[route:n]\npath = /n\nrespond = 200 n\n"), "t", "cccc")
        self.assertTrue(self.successResultOf(self.reloader.reload("SIGHUP")).ok)

    def test_new_part_not_reloaded_on_roll(self):
        """
        A part the new configuration needs first (certificates of a first
        TLS section) is built from the files and not reloaded again, so
        nothing reaches the workers of the old generation; the running
        parts still reload.
        """
        built = FakePart("new")
        built.register = lambda control, record: None
        built.startService = lambda: None
        self.reloader.parts_for = lambda new, present: [built]
        self.result = CheckedConfig(config(extra=f"[tls:main]\ncertificates = {self.certs}\n"), "t", "bbbb")
        self.assertTrue(self.successResultOf(self.reloader.reload("SIGHUP")).ok)
        self.assertEqual((built.reloads, self.master.part.reloads), (0, 1))


class CertificateServiceTests(SynchronousTestCase):
    """
    The master's certificate part takes a new configuration's TLS
    sections: prepared all or nothing, served to the new generation, not
    pushed to the old one.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(time.time())
        self.ca = CertificateAuthority()
        self.directory = os.path.abspath(self.mktemp())
        self.www = os.path.join(self.directory, "www")
        self.api = os.path.join(self.directory, "api")
        self.ca.issue(["www.example.com"]).write(os.path.join(self.www, "www.pem"))
        self.ca.issue(["api.example.com"]).write(os.path.join(self.api, "api.pem"))
        self.pushes = 0
        self.service = CertificateService(CertificatePart(self.tls_config(), self.clock, self.controls))

    def controls(self):
        """
        The connected workers' controls: none; counts the pushes.
        """
        self.pushes += 1
        return []

    def tls_config(self, extra=""):
        """
        A configuration with [tls:main] on the www directory, and C{extra}.
        """
        return config(extra=f"[tls:main]\ncertificates = {self.www}\n{extra}")

    def names(self):
        """
        The names each section serves.
        """
        current = self.service.part.reloader.current
        return {name: sorted(n for entry in s.describe() for n in entry["names"]) for name, s in current.items()}

    def test_new_section_served_to_new_generation(self):
        """
        A section added and one changed are loaded by prepare, served after
        reconfigure, and the reload right after pushes nothing; the next
        one pushes again.
        """
        new = self.tls_config(f"min_version = TLSv1.3\n[tls:api]\ncertificates = {self.api}\n")
        self.assertEqual(self.service.prepare(new), [])
        self.assertEqual(self.names(), {"main": ["www.example.com"]})
        self.service.reconfigure(new)
        self.assertEqual(self.names(), {"api": ["api.example.com"], "main": ["www.example.com"]})
        self.assertEqual(self.service.part.reloader.specs, dict(new.tls))
        self.assertEqual(self.successResultOf(self.service.reload()), (True, []))
        self.assertEqual(self.pushes, 0)
        ok, _ = self.successResultOf(self.service.reload())
        self.assertTrue(ok)
        self.assertEqual(self.pushes, 1)

    def test_missing_file_named(self):
        """
        A new section whose file is gone since the check is a problem
        naming file and section; the running certificates stay.
        """
        missing = os.path.join(self.directory, "gone.pem")
        self.ca.issue(["gone.example.com"]).write(missing)
        new = self.tls_config(f"[tls:api]\ncertificates = {missing}\n")
        os.remove(missing)
        [problem] = self.service.prepare(new)
        self.assertIn("/etc/gate.ini [tls:api]: ", problem)
        self.assertIn(missing, problem)
        self.assertEqual(self.names(), {"main": ["www.example.com"]})

    def test_unchanged_sections(self):
        """
        Unchanged sections prepare nothing, and the reload after
        reconfigure re-reads and pushes as before (certificate rotation).
        """
        same = self.tls_config()
        self.assertEqual(self.service.prepare(same), [])
        self.service.reconfigure(same)
        ok, _ = self.successResultOf(self.service.reload())
        self.assertTrue(ok)
        self.assertEqual(self.pushes, 1)

    def test_reconfigure_without_prepare(self):
        """
        Sections that were not prepared are loaded by reconfigure; a bad
        one raises and nothing changes.
        """
        api = self.tls_config(f"[tls:api]\ncertificates = {self.api}\n")
        self.service.reconfigure(api)
        self.assertEqual(sorted(self.names()), ["api", "main"])
        gone = os.path.join(self.directory, "gone.pem")
        self.ca.issue(["gone.example.com"]).write(gone)
        bad = self.tls_config(f"[tls:bad]\ncertificates = {gone}\n")
        os.remove(gone)
        self.assertRaises(Exception, self.service.reconfigure, bad)
        self.assertEqual(sorted(self.names()), ["api", "main"])
