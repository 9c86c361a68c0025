"""
Integration tests for request ids and logs: a real master with two
workers, a real upstream process, real clients; the access log read from
its file (or the master's standard output), the master's log from its
file.
"""

import json
import os
import signal
import socket

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from gatelayer.observe.accesslog import JSON_FIELDS
from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import fetch
from gatelayer.testing.upstreams import start_upstreams
from gatelayer.testing.waiting import wait_until


def free_port():
    """
    A local port nothing listens on (for an upstream that refuses).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(upstream, access_log, extra=""):
    """
    Two workers, a route to C{upstream}, one to a server that refuses.
    """
    return f"""
[gateway]
workers = 2
access_log = {access_log}
{extra}
[listener:web]
bind = 127.0.0.1:0
[upstream:app]
servers = {upstream}
[upstream:down]
servers = 127.0.0.1:{free_port()}
[route:app]
path = /app/
upstream = app
[route:down]
path = /down/
upstream = down
"""


def read_lines(path):
    """
    The lines of C{path} parsed as JSON (none when it does not exist).
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


class RequestIdLogTests(TestCase):
    """
    The request id from the client to the upstream, the log and back.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        (self.app,) = yield start_upstreams(self, reactor, "app")
        directory = os.path.abspath(self.mktemp())
        self.log_path = os.path.join(directory, "access.log")
        self.gate = yield start_gateway(self, reactor, config(self.app.address, self.log_path),
                                        directory)

    def logged(self, request_id):
        """
        Wait for the access log line of C{request_id}.
        """
        def find():
            return [line for line in read_lines(self.log_path) if line["request_id"] == request_id]
        return wait_until(reactor, find, timeout=10, what="the access log line").addCallback(
            lambda lines: lines[0])

    @inlineCallbacks
    def test_id_returned_sent_upstream_and_logged(self):
        """
        A client's own id is replaced (it is no trusted proxy); the
        gateway's id is returned, reaches the upstream and is in the JSON
        line with every field.
        """
        response = yield fetch(reactor, self.gate.url("web", "/app/x?q=1"),
                               headers={b"X-Request-Id": [b"client-chosen"], b"User-Agent": [b'a "b"\\']})
        self.assertEqual(response.status, 200)
        request_id = response.header(b"x-request-id").decode("ascii")
        self.assertNotEqual(request_id, "client-chosen")
        self.assertEqual(response.json()["headers"]["x-request-id"], [request_id])
        line = yield self.logged(request_id)
        self.assertEqual(list(line), list(JSON_FIELDS))
        self.assertEqual((line["status"], line["route"], line["upstream"], line["upstream_server"],
                          line["path"], line["user_agent"], line["retries"]),
                         (200, "app", "app", self.app.address, "/app/x?q=1", 'a "b"\\', 0))
        for name in ("duration_ms", "upstream_connect_ms", "upstream_first_byte_ms"):
            self.assertGreaterEqual(line[name], 0, name)

    @inlineCallbacks
    def test_errors_carry_the_id(self):
        """
        A 404 and a 502 (the upstream refuses) carry the id in the header,
        the JSON body and the log line; the 502's failure line in the
        master's log names it, once.
        """
        for path, status in (("/nowhere", 404), ("/down/x", 502)):
            response = yield fetch(reactor, self.gate.url("web", path))
            self.assertEqual(response.status, status)
            request_id = response.header(b"x-request-id").decode("ascii")
            self.assertEqual(response.json()["request_id"], request_id)
            line = yield self.logged(request_id)
            self.assertEqual(line["status"], status)

        def failure_lines():
            return [text for text in self.gate.log().splitlines()
                    if "(request %s)" % (request_id,) in text]
        lines = yield wait_until(reactor, failure_lines, timeout=10, what="the failure log line")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("worker ", lines[0])
        self.assertIn("upstream down server", lines[0])
        self.assertIn("could not be connected to", lines[0])


class ReopenUnderLoadTests(TestCase):
    """
    Rotation: rename the access log, SIGUSR1 the master; under load every
    request is in exactly one of the two files, every line whole.
    """

    timeout = 180

    @inlineCallbacks
    def test_rename_and_sigusr1(self):
        """
        Requests keep coming while the file is renamed and the master
        signalled: afterwards each answered request's id is in exactly one
        of the two files, in a valid JSON line with every field.
        """
        (app,) = yield start_upstreams(self, reactor, "app")
        directory = os.path.abspath(self.mktemp())
        path = os.path.join(directory, "access.log")
        gate = yield start_gateway(self, reactor, config(app.address, path), directory)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        ids = []
        state = {"running": True}

        @inlineCallbacks
        def client():
            while state["running"]:
                response = yield fetch(reactor, gate.url("web", "/app/x"), pool=pool)
                ids.append(response.header(b"x-request-id").decode("ascii"))

        clients = DeferredList([client() for _ in range(4)], fireOnOneErrback=True, consumeErrors=True)
        yield wait_until(reactor, lambda: len(read_lines(path)) >= 20, timeout=20,
                         what="lines in the first file")
        os.rename(path, path + ".1")
        gate.signal(signal.SIGUSR1)
        yield wait_until(reactor, lambda: len(read_lines(path)) >= 20, timeout=20,
                         what="lines in the reopened file")
        state["running"] = False
        yield clients

        def complete():
            return len(read_lines(path)) + len(read_lines(path + ".1")) >= len(ids)
        yield wait_until(reactor, complete, timeout=10, what="every line written")
        old, new = read_lines(path + ".1"), read_lines(path)
        self.assertEqual(len(old) + len(new), len(ids))
        old_ids, new_ids = {line["request_id"] for line in old}, {line["request_id"] for line in new}
        self.assertEqual(old_ids | new_ids, set(ids))
        self.assertEqual(old_ids & new_ids, set())
        for line in old + new:
            self.assertEqual(list(line), list(JSON_FIELDS))
            self.assertEqual(line["status"], 200)
        self.assertIn("SIGUSR1: reopening the access logs", gate.log())


class StdoutAccessLogTests(TestCase):
    """
    C{access_log = -}: the workers write to the master's standard output.
    """

    timeout = 120

    @inlineCallbacks
    def test_lines_on_master_stdout_once(self):
        """
        Each request's JSON line appears once on the master's standard
        output (not in its log file), whichever worker served it.
        """
        (app,) = yield start_upstreams(self, reactor, "app")
        directory = os.path.abspath(self.mktemp())
        gate = yield start_gateway(self, reactor, config(app.address, "-"), directory)
        ids = []
        for _ in range(10):
            response = yield fetch(reactor, gate.url("web", "/app/x"))
            ids.append(response.header(b"x-request-id").decode("ascii"))

        def lines():
            out = b"".join(gate.protocol.output).splitlines()
            parsed = [json.loads(line) for line in out if line.startswith(b"{")]
            return parsed if len(parsed) >= len(ids) else None
        parsed = yield wait_until(reactor, lines, timeout=10, what="the lines on stdout")
        self.assertEqual(sorted(line["request_id"] for line in parsed), sorted(ids))
        for request_id in ids:
            self.assertNotIn(request_id, gate.log())
