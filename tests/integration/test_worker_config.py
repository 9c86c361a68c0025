"""
A worker respawned after its filters' key material went bad on disk: it
reports a config problem and exits; no traceback, and the master carries on
with the workers it has.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.waiting import wait_until

CONFIG = """
[gateway]
workers = 2
admin = 127.0.0.1:0
[listener:web]
bind = 127.0.0.1:0
[filter:jwt]
type = jwt
secret_file = secret.key
algorithms = HS256
[route:hello]
path = /hello
respond = 200 hello
[route:private]
path = /private
respond = 200 private
filters = jwt
"""


class BadKeyOnRespawnTests(TestCase):
    """
    The master validated the key files at start; a respawned worker finds
    one changed.
    """

    timeout = 60

    @inlineCallbacks
    def test_respawn_with_bad_key_file(self):
        """
        The respawned worker logs "worker cannot use the config" naming the
        file and exits; the master goes on, with the slot shown as empty.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        secret = os.path.join(directory, "secret.key")
        with open(secret, "w") as f:
            f.write("a-secret-of-at-least-thirty-two-bytes!!")
        gate = yield start_gateway(self, reactor, CONFIG, directory)
        status = (yield fetch(reactor, gate.admin_url("/status"))).json()
        victim = status["workers"][0]["pid"]
        with open(secret, "w") as f:
            f.write("short")
        os.kill(victim, signal.SIGKILL)
        yield wait_until(reactor, lambda: "worker cannot use the config" in gate.log(), timeout=20,
                         what="the respawned worker's config problem in the log")
        log = gate.log()
        self.assertIn(secret, log.split("worker cannot use the config", 1)[1].splitlines()[0])
        self.assertNotIn("Traceback", log)
        # The master goes on (it keeps retrying the slot) and says so: the
        # slot is empty, the other worker still reports. (A request through
        # the listener could land on the empty slot's socket and wait there,
        # which is why /healthz answers 503 while a slot is empty.)
        health = yield fetch(reactor, gate.admin_url("/healthz"))
        self.assertEqual(health.status, 503)
        self.assertEqual(health.json()["empty_slots"], [status["workers"][0]["slot"]])
        self.assertEqual(health.json()["serving"], 1)
