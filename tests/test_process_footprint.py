"""
Tests for L{gatelayer.process.footprint} and for what a worker imports: a
worker of the shipped configuration loads neither TLS nor the master's
modules nor the libraries of filters it does not use.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.process.footprint import leave_out_tls, needs_tls, reload_problem, tls_left_out
from gatelayer.process.wiring import SharedStateResponders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "etc", "gate.ini")
EXAMPLES = os.path.join(ROOT, "etc", "examples")

# What a worker does before it serves (gatelayer.process.main): leave TLS out
# when the configuration has none, import the reactor, build the worker and
# its gateway, register its control responders. Prints the modules loaded.
WORKER_START = """
import json, sys
from gatelayer.process.footprint import leave_out_tls, needs_tls
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
if not needs_tls(text):
    leave_out_tls()
from twisted.internet import reactor
import gatelayer.process.main
from gatelayer.config import parse_config_text
from gatelayer.process.control import ControlProtocol
from gatelayer.process.wiring import register_worker, worker_tls
from gatelayer.process.worker import Worker
config = parse_config_text(text, path)
control = ControlProtocol()
wrapper, creator_for = worker_tls(config, control, reactor)
worker = Worker(reactor, config, 0, [], master=control, tls_wrapper=wrapper, tls_creator_for=creator_for)
worker.prepare()
register_worker(config, control, worker)
print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
"""

# Modules a worker of the shipped configuration must not load: TLS (about
# 12 MB), the JWT library and its cryptography, twisted.web's server and
# Perspective Broker (the cache's purge responder), the master's own
# modules, the Redis client, config-only and optional libraries.
NOT_IN_A_PLAIN_WORKER = [
    "OpenSSL", "cryptography", "service_identity", "jwt", "twisted.internet.ssl",
    "twisted.web.server", "twisted.spread.pb", "twisted.web.client",
    "gatelayer.process.master", "gatelayer.process.supervision", "gatelayer.process.spawner",
    "gatelayer.process.admin", "gatelayer.process.dashboard", "gatelayer.process.generations",
    "gatelayer.tls.parts", "gatelayer.tls.store", "gatelayer.cache.control", "gatelayer.auth.jwks",
    "gatelayer.ratelimit.redis_store", "txredisapi", "jsonschema", "yaml", "opentelemetry",
]


TLS_UPSTREAM = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = 127.0.0.1:9
tls = yes
[route:app]
path = /
upstream = app
"""


def worker_modules(config_path):
    """
    The modules a worker of C{config_path} has loaded once it is ready to
    serve, from a fresh interpreter.
    """
    out = subprocess.run([sys.executable, "-c", WORKER_START, config_path], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, check=False)
    if out.returncode != 0:
        raise AssertionError(f"the worker start failed: {out.stderr}")
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


class NeedsTlsTests(SynchronousTestCase):
    """
    L{needs_tls}: a configuration's text mentioning TLS in any form.
    """

    def test_table(self):
        """
        Any mention of a TLS word outside comment lines needs TLS, in any
        case, and so does a filter type that is not built in or a mounted
        resource; comment lines and plain configurations do not.
        """
        cases = [
            ("[listener:web]\nbind = 127.0.0.1:80\n", False),
            ("[listener:web]\nbind = :443\ntls = site\n", True),
            ("[upstream:app]\nservers = a:1\nTLS = yes\n", True),
            ("[filter:j]\ntype = jwt\njwks_url = HTTPS://idp/keys\n", True),
            ("[filter:r]\ntype = rate_limit\nrate = 1/s\nstore = redis://h:6379/0\n", True),
            ("[tls:site]\ncertificates = a.pem\n", True),
            ("[plugin:x]\nmodule = m\n", True),
            ("; a comment about tls and https\n[route:a]\npath = /\n", False),
            ("  # ssl someday\n[route:a]\npath = /\n", False),
            ("[route:a]\npath = /\nrespond = 200 ok ; no tls here\n", True),
            ("[filter:h]\ntype = hmac_signature\nsecret_file = s\n", True),
            ("[gateway]\naccess_log = /var/log/gate-accesslog.json\n", False),
            ("[tls:a]\nmin_version = TLSv1.3\n", True),
            ("[filter:r]\ntype = rate_limit\nstore = rediss://h/0\n", True),
            ("[filter:r]\ntype = rate_limit\nstore = redis+sentinel://h:1/m\n", True),
            ("[filter:l]\ntype = rate_limit ; built in\nrate = 1/s\n", False),
            ("[filter:c]\ntype = cors\n", False),
            ("[route:k]\npath = /\nresource = app.site:root\n", True),
        ]
        for text, expected in cases:
            with self.subTest(text):
                self.assertEqual(needs_tls(text), expected, text)

    def test_shipped_and_examples(self):
        """
        The shipped configuration uses no TLS; the TLS example does.
        """
        with open(SHIPPED, encoding="utf-8") as f:
            self.assertFalse(needs_tls(f.read()))
        with open(os.path.join(EXAMPLES, "tls.ini"), encoding="utf-8") as f:
            self.assertTrue(needs_tls(f.read()))


class LeaveOutTests(SynchronousTestCase):
    """
    L{leave_out_tls}, L{tls_left_out} and L{reload_problem} on a module
    table of the test's own.
    """

    def test_leave_out(self):
        """
        Leaving TLS out marks OpenSSL as not importable, once; a reload to
        a configuration with TLS is then refused, one without is not.
        """
        modules = {}
        self.assertFalse(tls_left_out(modules))
        self.assertIsNone(reload_problem("[upstream:a]\ntls = yes\n", modules))
        leave_out_tls(modules)
        self.assertEqual(modules, {"OpenSSL": None})
        self.assertTrue(tls_left_out(modules))
        self.assertIn("without TLS", reload_problem("[upstream:a]\ntls = yes\n", modules))
        self.assertIsNone(reload_problem("[route:a]\npath = /\n", modules))

    def test_loaded_already(self):
        """
        Once OpenSSL is loaded it is never hidden.
        """
        marker = object()
        modules = {"OpenSSL": marker}
        leave_out_tls(modules)
        self.assertIs(modules["OpenSSL"], marker)
        self.assertFalse(tls_left_out(modules))


class WorkerImportsTests(SynchronousTestCase):
    """
    What a worker loads, checked in a fresh interpreter.
    """

    def test_shipped_config(self):
        """
        A worker of the shipped configuration loads none of
        L{NOT_IN_A_PLAIN_WORKER}, but does load what it serves with.
        """
        modules = worker_modules(SHIPPED)
        loaded = sorted(m for m in NOT_IN_A_PLAIN_WORKER if m in modules)
        self.assertEqual(loaded, [])
        for needed in ("twisted.internet.epollreactor", "gatelayer.http.gateway", "gatelayer.process.worker"):
            self.assertIn(needed, modules)

    def test_tls_config_loads_tls(self):
        """
        A worker whose configuration uses TLS (here an upstream) loads it.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(TLS_UPSTREAM)
        modules = worker_modules(path)
        self.assertIn("OpenSSL", modules)
        self.assertIn("gatelayer.tls.parts", modules)


class _Recording:
    """
    A control channel that records the commands responders are registered
    for.
    """

    def __init__(self):
        self.names = []

    def register(self, command, responder):
        self.names.append(command.commandName)


def _config(*types):
    return SimpleNamespace(filters={f"f{i}": SimpleNamespace(type=t) for i, t in enumerate(types)})


class SharedStateRespondersTests(SynchronousTestCase):
    """
    L{SharedStateResponders}: a worker answers the shared state of the
    filter types its configuration has, registered once each.
    """

    def setUp(self):
        self.control = _Recording()
        worker = SimpleNamespace(gateway=None, reloads=SimpleNamespace(incoming=lambda: None))
        self.shared = SharedStateResponders(self.control, worker)

    def test_none_without_such_filters(self):
        """
        A configuration without cache, IP-list or JWT filters registers
        nothing.
        """
        self.shared.register_for(_config("rate_limit", "cors"))
        self.assertEqual((self.control.names, self.shared.registered), ([], set()))

    def test_each_type_once(self):
        """
        Each filter type's responders are registered when a configuration
        first has it (at start or on a reload), and never twice.
        """
        self.shared.register_for(_config("jwt"))
        after_jwt = list(self.control.names)
        self.assertTrue(after_jwt)
        self.shared.register_for(_config("jwt", "cache", "ip_filter"))
        self.assertEqual(self.shared.registered, {"jwt", "cache", "ip_filter"})
        self.assertEqual(self.control.names[:len(after_jwt)], after_jwt)
        self.assertEqual(len(self.control.names), len(set(self.control.names)))
        count = len(self.control.names)
        self.shared.register_for(_config("cache", "jwt", "ip_filter"))
        self.assertEqual(len(self.control.names), count)
