"""
TLS session resumption through a real two-worker gateway, measured with
Python's C{ssl} client sessions: tickets whose keys the master shares
resume on whichever worker accepts the reconnect, after a worker is killed
and respawned, and after a key rotation; session ids (tickets off) resume
on the worker that made them even when the client left without
close_notify.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.certs import CertificateAuthority
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.tls_sessions import client_context, visit
from gatelayer.testing.waiting import wait_until

NAME = "www.example.com"
VERSIONS = ("TLSv1.2", "TLSv1.3")

# The rotation period of the [tls:fast] section: short enough for a test,
# long enough that a reconnect made right after one rotation comes before
# the next on a loaded machine.
FAST_ROTATION = 3.0


def resumption_config():
    """
    Two workers; C{secure} with the default ticket settings, C{fast} with
    keys rotated every L{FAST_ROTATION} seconds, C{ids} with tickets off
    (TLS 1.2 session ids only).
    """
    return f"""
[gateway]
workers = 2
admin = 127.0.0.1:0
drain_timeout = 1s
[listener:secure]
bind = 127.0.0.1:0
tls = main
[listener:fast]
bind = 127.0.0.1:0
tls = fast
[listener:ids]
bind = 127.0.0.1:0
tls = ids
[tls:main]
certificates = certs/
[tls:fast]
certificates = certs/
ticket_key_rotation = {FAST_ROTATION:g}s
[tls:ids]
certificates = certs/
session_tickets = no
[route:hello]
path = /
respond = 200 hello
"""


class ResumptionTests(TestCase):
    """
    Reconnecting clients resume their sessions on a two-worker gateway.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        self.ca = CertificateAuthority()
        self.ca.issue([NAME]).write(os.path.join(directory, "certs", "www.pem"))
        # Python resumes a session only on the context that made it.
        self.contexts = {version: client_context(version) for version in VERSIONS}
        self.gate = yield start_gateway(self, reactor, resumption_config(), directory)

    @inlineCallbacks
    def status(self):
        """
        The admin C{/status} document.
        """
        response = yield fetch(reactor, self.gate.admin_url("/status"))
        return response.json()

    @inlineCallbacks
    def worker_pids(self):
        """
        The pids of the serving workers.
        """
        status = yield self.status()
        return [worker["pid"] for worker in status["workers"] if worker["state"] == "serving"]

    def visit(self, listener, version, session=None, pids=()):
        """
        One HTTPS request on C{listener} over C{version}, offering
        C{session}; the connection ends without close_notify.
        """
        result = visit(self.gate.address(listener), self.contexts[version], NAME, session=session, pids=pids)
        self.assertEqual(result.status, b"HTTP/1.1 200 OK")
        self.assertEqual(result.version, version)
        return result

    @inlineCallbacks
    def test_reconnects_resume_on_any_worker(self):
        """
        Of 100 reconnects offering the first connection's session, at
        least 95 resume, for TLS 1.2 and for TLS 1.3; reconnects accepted
        by the other worker than the one that issued the ticket are among
        them, and resume as well.
        """
        status = yield self.status()
        self.assertTrue(status["tls_tickets"]["shared"], status["tls_tickets"]["reason"])
        pids = yield self.worker_pids()
        self.assertEqual(len(pids), 2)
        for version in VERSIONS:
            first = self.visit("secure", version, pids=pids)
            self.assertFalse(first.reused)
            self.assertIn(first.worker, pids)
            visits = [self.visit("secure", version, first.session, pids) for _ in range(100)]
            resumed = sum(v.reused for v in visits)
            elsewhere = [v for v in visits if v.worker != first.worker]
            self.assertGreaterEqual(resumed, 95, version)
            self.assertTrue(elsewhere, f"{version}: every reconnect went to the first worker")
            self.assertGreaterEqual(sum(v.reused for v in elsewhere), len(elsewhere) * 95 // 100, version)

    @inlineCallbacks
    def test_resumes_after_worker_respawn(self):
        """
        The worker that issued a ticket is killed; once the master has
        respawned it, reconnects (to the new worker or the other one)
        resume, since the new worker got the keys before it served.
        """
        pids = yield self.worker_pids()
        sessions = {version: self.visit("secure", version, pids=pids) for version in VERSIONS}
        victims = {first.worker for first in sessions.values()}
        for pid in victims:
            os.kill(pid, signal.SIGKILL)

        @inlineCallbacks
        def respawned():
            serving = yield self.worker_pids()
            return len(serving) == 2 and not victims & set(serving)
        yield wait_until(reactor, respawned, timeout=20, what="the killed workers respawned")
        pids = yield self.worker_pids()
        for version, first in sessions.items():
            for _ in range(10):
                again = self.visit("secure", version, first.session, pids)
                self.assertTrue(again.reused, version)
                self.assertNotIn(again.worker, victims)

    @inlineCallbacks
    def rotations(self):
        status = yield self.status()
        return status["tls_tickets"]["rotations"]

    @inlineCallbacks
    def wait_rotations(self, count):
        """
        Wait (bounded) until the master has rotated C{count} more times and
        pushed the keys.
        """
        target = (yield self.rotations()) + count

        @inlineCallbacks
        def rotated():
            status = yield self.status()
            tickets = status["tls_tickets"]
            return tickets["rotations"] >= target and tickets["last_push"] is not None
        yield wait_until(reactor, rotated, timeout=FAST_ROTATION * (count + 2), interval=0.05,
                         what=f"{count} key rotation(s)")

    @inlineCallbacks
    def test_resumes_after_rotation(self):
        """
        After one rotation a ticket is still accepted (the previous keys
        are kept); after two more it is not, and the client simply gets a
        full handshake and its response.
        """
        sessions = {version: self.visit("fast", version) for version in VERSIONS}
        yield self.wait_rotations(1)
        for version, first in sessions.items():
            self.assertTrue(self.visit("fast", version, first.session).reused, version)
        yield self.wait_rotations(2)
        for version, first in sessions.items():
            late = self.visit("fast", version, first.session)
            self.assertFalse(late.reused, version)
            self.assertTrue(self.visit("fast", version, late.session).reused, version)

    @inlineCallbacks
    def test_session_ids_survive_abrupt_close(self):
        """
        With tickets off, TLS 1.2 sessions are kept per worker: reconnects
        that reach the worker that made the session resume, although every
        connection before ended without close_notify; those reaching the
        other worker make a full handshake.
        """
        pids = yield self.worker_pids()
        first = self.visit("ids", "TLSv1.2", pids=pids)
        visits = [self.visit("ids", "TLSv1.2", first.session, pids) for _ in range(30)]
        same = [v for v in visits if v.worker == first.worker]
        other = [v for v in visits if v.worker != first.worker]
        self.assertTrue(same, "no reconnect reached the first worker")
        self.assertEqual([v.reused for v in same], [True] * len(same))
        self.assertEqual([v.reused for v in other], [False] * len(other))
