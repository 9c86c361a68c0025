"""
Tests for the admin endpoint (gatelayer.process.admin): the Host check
against DNS rebinding, the bearer token, /healthz while slots are empty, the
route table in /status.
In memory: a real master with a fake spawner, the admin site fed through
StringTransports.
"""

import errno
import json
import os

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.process import admin as admin_module
from gatelayer.process.admin import AdminTokenError, admin_site, host_name, load_admin_token
from gatelayer.process.control import Heartbeat
from gatelayer.process.master import MasterService
from gatelayer.process.sockets import BoundSocket, SocketSet
from gatelayer.testing.server import parse_response
from gatelayer.testing.spawner import FakeSpawner

CONFIG = """
[gateway]
workers = 2
admin = {admin}
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /
respond = 200 hi
"""

TOKEN = b"s3cret-Token_0123456789"


class _Socket:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        """
        The fake descriptor.
        """
        return self.fd

    def close(self):
        """
        Nothing to close.
        """
        pass


def _bind(listeners, slots):
    result = SocketSet()
    for listener in listeners:
        for host, port in listener.binds:
            for slot in range(slots):
                result.sockets.append(BoundSocket(listener, host, port, 2, slot, _Socket(100 + slot)))
    return result


class AdminHarness:
    """
    A master (fake spawner, fake sockets) and its admin site in memory.
    """

    def __init__(self, admin="127.0.0.1:9901", token=None, sections=""):
        """
        @param sections: more of gate.ini, after the shared CONFIG.
        """
        self.reactor = MemoryReactorClock()
        self.spawner = FakeSpawner()
        text = CONFIG.format(admin=admin) + sections
        self.master = MasterService(parse_config_text(text, "/etc/gate.ini"), text, self.reactor,
                                    self.spawner, bind=_bind)
        self.site = admin_site(self.master, token=token)

    def start(self, beat=True):
        """
        Start the master; with C{beat}, every worker reports once.
        """
        self.master.startService()
        if beat:
            for record in self.master.workers.values():
                if record.control is not None:
                    self.beat(record)

    def beat(self, record):
        """
        One heartbeat from C{record}'s worker.
        """
        record.control.lookupFunction(Heartbeat.commandName)(
            amp.AmpBox(pid=b"1", connections=b"0", requests=b"0", active=b"0"))

    def ask(self, raw, local=("127.0.0.1", 9901)):
        """
        Send C{raw} on a new connection arriving on C{local}; returns
        C{(status, headers, body)}.
        """
        protocol = self.site.buildProtocol(None)
        address = IPv6Address if ":" in local[0] else IPv4Address
        transport = StringTransport(hostAddress=address("TCP", *local),
                                    peerAddress=address("TCP", local[0], 50000))
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        self.last_raw = transport.value()
        return parse_response(self.last_raw)

    def get(self, path=b"/healthz", host=b"127.0.0.1:9901", headers=(), local=("127.0.0.1", 9901)):
        """
        C{GET path} with a Host header (unless C{host} is L{None}).
        """
        lines = [b"GET " + path + b" HTTP/1.1"]
        if host is not None:
            lines.append(b"Host: " + host)
        lines.extend(headers)
        lines.append(b"Connection: close")
        return self.ask(b"\r\n".join(lines) + b"\r\n\r\n", local)


class HostTests(SynchronousTestCase):
    """
    Only names of the admin endpoint itself are accepted as Host; anything
    else is 421 with a JSON error.
    """

    def test_accepted(self):
        """
        Loopback names, the admin address and the connection's local
        address, each with or without a port (an SSH tunnel or a container
        port map changes the port, not the name), in any letter case.
        """
        gate = AdminHarness(admin="10.1.2.3:9901")
        gate.start()
        cases = [b"localhost", b"localhost:9901", b"LocalHost:8000", b"127.0.0.1", b"127.0.0.1:9901",
                 b"[::1]", b"[::1]:9901", b"10.1.2.3", b"10.1.2.3:9901"]
        for host in cases:
            status, _, body = gate.get(host=host)
            self.assertEqual(status, 200, (host, body))
        status, _, _ = gate.get(host=b"192.168.7.7:9901", local=("192.168.7.7", 9901))
        self.assertEqual(status, 200)
        status, _, _ = gate.get(host=b"[fd00::7]:9901", local=("fd00::7", 9901))
        self.assertEqual(status, 200)

    def test_refused(self):
        """
        Another name (a rebinding attacker's), a look-alike, a malformed
        value, a wildcard address, a missing or doubled Host: 421, the
        refused value named, nothing of the page served.
        """
        gate = AdminHarness(admin="0.0.0.0:9901")
        gate.start()
        cases = [b"evil.example", b"evil.example:9901", b"localhost.evil.example", b"localhost.",
                 b"127.0.0.1.nip.io", b"127.0.0.2", b"0.0.0.0", b"0.0.0.0:9901", b"[::]:9901",
                 b"localhost:", b"localhost:x", b"localhost:99999999", b"[::1", b"::1",
                 b"user@localhost", b"localhost/x", b"l\xc3\xb6calhost", b""]
        for host in cases:
            status, headers, body = gate.get(host=host)
            self.assertEqual(status, 421, host)
            self.assertEqual(headers[b"content-type"], [b"application/json"])
            document = json.loads(body)
            self.assertEqual(document["status"], 421)
            self.assertNotIn("workers", document)
            if host and host.isascii():
                self.assertIn(repr(host.decode()), document["error"])
            self.assertTrue(gate.last_raw.startswith(b"HTTP/1.1 421 Misdirected Request\r\n"), gate.last_raw)
        status, _, body = gate.get(host=None)
        self.assertEqual((status, json.loads(body)["error"]),
                         (421, "the admin endpoint needs exactly one Host header"))
        status, _, _ = gate.get(host=b"localhost", headers=[b"Host: evil.example"])
        self.assertEqual(status, 421)

    def test_every_path_checked(self):
        """
        /status, unknown paths and the root are refused alike.
        """
        gate = AdminHarness()
        gate.start()
        for path in (b"/status", b"/nope", b"/", b"/healthz/../status"):
            status, _, _ = gate.get(path=path, host=b"evil.example")
            self.assertEqual(status, 421, path)

    def test_headers(self):
        """
        Admin answers are never cached and name no server version.
        """
        gate = AdminHarness()
        gate.start()
        for host in (b"localhost", b"evil.example"):
            _, headers, _ = gate.get(host=host)
            self.assertEqual(headers[b"cache-control"], [b"no-store"])
            self.assertNotIn(b"server", headers)

    def test_host_name(self):
        """
        host_name splits the port off and keeps IPv6 brackets.
        """
        cases = [(b"LOCALHOST:80", "localhost"), (b"[::1]:1", "[::1]"), (b"a.b", "a.b"),
                 (b"a.b:", None), (b"[::1]x", None), (b"a b", None), (b"\xff", None)]
        for value, name in cases:
            self.assertEqual(host_name(value), name, value)


class TokenTests(SynchronousTestCase):
    """
    With admin_token_file, every request needs Authorization: Bearer.
    """

    def setUp(self):
        """
        A started gateway whose admin endpoint needs TOKEN.
        """
        self.gate = AdminHarness(token=TOKEN)
        self.gate.start()

    def test_missing(self):
        """
        No Authorization: 401, WWW-Authenticate: Bearer, JSON error.
        """
        for path in (b"/healthz", b"/status", b"/nope"):
            status, headers, body = self.gate.get(path=path)
            self.assertEqual(status, 401)
            self.assertEqual(headers[b"www-authenticate"], [b'Bearer realm="gatelayer admin"'])
            self.assertEqual(json.loads(body)["error"],
                             "the admin endpoint needs Authorization: Bearer <token>")

    def test_wrong(self):
        """
        A wrong, truncated, extended or differently cased token: 401 with
        error="invalid_token".
        """
        for given in (b"nope", TOKEN[:-1], TOKEN + b"x", TOKEN.upper(), b"x" * 1000):
            status, headers, body = self.gate.get(headers=[b"Authorization: Bearer " + given])
            self.assertEqual(status, 401, given)
            self.assertEqual(headers[b"www-authenticate"],
                             [b'Bearer realm="gatelayer admin", error="invalid_token"'])
            self.assertEqual(json.loads(body)["error"], "the bearer token is not valid for the admin endpoint")

    def test_malformed(self):
        """
        Another scheme, no credentials, two Authorization headers: 401 with
        error="invalid_request".
        """
        cases = [[b"Authorization: Basic " + TOKEN], [b"Authorization: Bearer"],
                 [b"Authorization: Bearer "], [b"Authorization: " + TOKEN],
                 [b"Authorization: Bearer " + TOKEN, b"Authorization: Bearer " + TOKEN]]
        for headers in cases:
            status, response_headers, _ = self.gate.get(headers=headers)
            self.assertEqual(status, 401, headers)
            self.assertIn(b'error="invalid_request"', response_headers[b"www-authenticate"][0])

    def test_right(self):
        """
        The token (scheme in any case) opens every page.
        """
        for scheme in (b"Bearer", b"bearer", b"BEARER"):
            status, _, body = self.gate.get(path=b"/status", headers=[b"Authorization: " + scheme + b" " + TOKEN])
            self.assertEqual(status, 200, scheme)
            self.assertEqual(len(json.loads(body)["workers"]), 2)

    def test_constant_time(self):
        """
        The token is compared with hmac.compare_digest.
        """
        calls = []
        real = admin_module.hmac.compare_digest

        def recording(a, b):
            calls.append((a, b))
            return real(a, b)
        self.patch(admin_module.hmac, "compare_digest", recording)
        self.gate.get(headers=[b"Authorization: Bearer nope"])
        self.assertEqual(calls, [(b"nope", TOKEN)])

    def test_host_checked_first(self):
        """
        A foreign Host is 421 even with the right token.
        """
        status, _, _ = self.gate.get(host=b"evil.example", headers=[b"Authorization: Bearer " + TOKEN])
        self.assertEqual(status, 421)


class ReloadTests(SynchronousTestCase):
    """
    POST /reload does what SIGHUP does and answers with the outcome; it
    needs the admin token.
    """

    def post(self, gate, headers=()):
        """
        C{POST /reload} to C{gate}'s admin site.
        """
        lines = [b"POST /reload HTTP/1.1", b"Host: 127.0.0.1:9901", b"Content-Length: 0",
                 b"Connection: close", *headers]
        return gate.ask(b"\r\n".join(lines) + b"\r\n\r\n")

    def test_needs_token_file(self):
        """
        Without admin_token_file, POST /reload is refused (403) and no
        reload happens; GET is not allowed.
        """
        gate = AdminHarness()
        self.patch(gate.master, "reload", lambda trigger: self.fail("reloaded"))
        status, _, body = self.post(gate)
        self.assertEqual(status, 403)
        self.assertIn("admin_token_file", json.loads(body)["error"])
        status, _, _ = gate.get(path=b"/reload")
        self.assertEqual(status, 405)

    def test_token_checked(self):
        """
        With a token file, a request without the token is 401 and does
        not reload.
        """
        gate = AdminHarness(token=TOKEN)
        self.patch(gate.master, "reload", lambda trigger: self.fail("reloaded"))
        status, _, _ = self.post(gate)
        self.assertEqual(status, 401)

    def test_outcomes(self):
        """
        200 with the outcome when applied, 422 with the problems when the
        file was refused, 409 when another reload was being applied.
        """
        from twisted.internet.defer import succeed

        from gatelayer.process.reload import ReloadOutcome
        gate = AdminHarness(token=TOKEN)
        auth = [b"Authorization: Bearer " + TOKEN]
        cases = [
            (ReloadOutcome(1.0, "POST /reload", True, (), 2, "d", ("route:a added",)), 200),
            (ReloadOutcome(1.0, "POST /reload", False, ("/etc/gate.ini [route:a] pth: is not a known key",),
                           1, "d"), 422),
            (ReloadOutcome(1.0, "POST /reload", False, ("a reload is already being applied",), 1, "d",
                           busy=True), 409),
        ]
        triggers = []
        for outcome, expected in cases:
            self.patch(gate.master, "reload", lambda trigger, o=outcome: (triggers.append(trigger), succeed(o))[1])
            status, _, body = self.post(gate, auth)
            self.assertEqual(status, expected)
            self.assertEqual(json.loads(body), outcome.as_dict())
        self.assertEqual(triggers, ["POST /reload"] * 3)

    def test_real_reload_of_missing_file(self):
        """
        Through the master: its file cannot be read, so 422 names it.
        """
        gate = AdminHarness(token=TOKEN)
        status, _, body = self.post(gate, [b"Authorization: Bearer " + TOKEN])
        self.assertEqual(status, 422)
        document = json.loads(body)
        self.assertFalse(document["ok"])
        self.assertIn("/etc/gate.ini: cannot read the configuration", document["problems"][0])
        self.assertEqual(document["trigger"], "POST /reload")


class TokenFileTests(SynchronousTestCase):
    """
    load_admin_token reads the token once, stripped, and names the file
    when it cannot be used.
    """

    def write(self, data):
        """
        A file holding C{data}; returns its path.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_stripped(self):
        """
        Surrounding whitespace and the final newline are not part of it.
        """
        self.assertEqual(load_admin_token(self.write(b"  " + TOKEN + b"\r\n\n")), TOKEN)

    def test_unusable(self):
        """
        Empty, blank, two tokens, non-ASCII, a missing file, a directory:
        an error naming the file and what is wrong.
        """
        cases = [(b"", "is empty"), (b" \n\t\n", "is empty"), (b"one\ntwo\n", "other than visible ASCII"),
                 (b"t\xc3\xb6ken", "other than visible ASCII"), (b"a b", "other than visible ASCII")]
        for data, problem in cases:
            path = self.write(data)
            error = self.assertRaises(AdminTokenError, load_admin_token, path)
            self.assertIn(path, str(error))
            self.assertIn(problem, str(error))
        missing = os.path.abspath(self.mktemp())
        error = self.assertRaises(AdminTokenError, load_admin_token, missing)
        self.assertEqual(str(error), f"{missing} cannot be read: no such file or directory")
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        error = self.assertRaises(AdminTokenError, load_admin_token, directory)
        self.assertEqual(str(error), f"{directory} cannot be read: is a directory")

    def test_config_error(self):
        """
        Through the command line, an empty token file is a configuration
        error naming the section, key and file.
        """
        from gatelayer.process.checking import admin_token as _admin_token
        from gatelayer.config import ConfigError
        path = self.write(b"\n")
        text = CONFIG.format(admin="127.0.0.1:9901").replace(
            "admin = 127.0.0.1:9901", f"admin = 127.0.0.1:9901\nadmin_token_file = {path}")
        config = parse_config_text(text, "/etc/gate.ini")
        error = self.assertRaises(ConfigError, _admin_token, config)
        self.assertEqual(error.problems, [
            f"/etc/gate.ini [gateway] admin_token_file: {path} is empty (it must hold the admin bearer token)"])


class HealthTests(SynchronousTestCase):
    """
    /healthz is 200 only while every slot serves; an empty slot makes the
    gateway 503 "degraded", naming the slot.
    """

    def test_ok(self):
        """
        Every worker reported: 200 ok.
        """
        gate = AdminHarness()
        gate.start()
        status, _, body = gate.get()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"status": "ok", "workers": 2, "serving": 2, "empty_slots": []})

    def test_starting(self):
        """
        Before the first heartbeats nothing serves: 503 unavailable.
        """
        gate = AdminHarness()
        gate.start(beat=False)
        status, _, body = gate.get()
        self.assertEqual(status, 503)
        document = json.loads(body)
        self.assertEqual(document["status"], "unavailable")
        self.assertEqual(document["slots"], {"0": "starting", "1": "starting"})

    def test_spawn_failing(self):
        """
        A slot whose worker cannot be spawned: 503 degraded, naming the
        slot and the error, until the retry runs a worker that reports.
        """
        gate = AdminHarness()
        gate.spawner.failures = [OSError(errno.EAGAIN, "Resource temporarily unavailable")]
        gate.start()
        status, _, body = gate.get()
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body), {
            "status": "degraded", "workers": 2, "serving": 1, "empty_slots": [0],
            "slots": {"0": "spawn failed (EAGAIN: Resource temporarily unavailable)"}})
        gate.reactor.advance(0.1)
        status, _, body = gate.get()
        self.assertEqual(json.loads(body)["slots"], {"0": "starting"})
        gate.beat(gate.master.workers[0])
        status, _, _ = gate.get()
        self.assertEqual(status, 200)

    def test_worker_exited(self):
        """
        A worker that exited, waiting for its respawn: 503 degraded.
        """
        gate = AdminHarness()
        gate.start()
        gate.spawner.processes[1].exit(1)
        status, _, body = gate.get()
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body)["slots"], {"1": "respawning"})

    def test_stopping(self):
        """
        A draining master: 503 stopping.
        """
        gate = AdminHarness()
        gate.start()
        gate.master.stopService()
        status, _, body = gate.get()
        self.assertEqual((status, json.loads(body)["status"]), (503, "stopping"))


ROUTES = """
[upstream:v1]
servers = 127.0.0.1:9001
[upstream:v2]
servers = 127.0.0.1:9002
[route:api-v1]
path = /api
upstream = v1
[route:api-v2]
path = /api
methods = GET, POST
match_header = X-Api-Version: 2
match_query = !legacy
upstream = v2
[route:api-beta]
path = /api
match_cookie = beta=~1|yes
upstream = v2
[route:admin-api]
host = admin.example.com
path = /api/
upstream = v1
[route:tenants]
host = *.example.com
path = /
respond = 204
"""


class RouteStatusTests(SynchronousTestCase):
    """
    /status shows the compiled route table: host groups in precedence
    order, each group's routes in the order they are tried.
    """

    def test_routes(self):
        """
        The exact host, the wildcard, then the catch-all; within a group
        the longest prefix, then more conditions, then file order; each
        route with its host, path, methods, conditions, terminal and
        filters.
        """
        gate = AdminHarness(sections=ROUTES)
        gate.start()
        status, _, body = gate.get(path=b"/status")
        self.assertEqual(status, 200)
        routes = json.loads(body)["routes"]
        self.assertEqual([(g["kind"], g["host"], [r["name"] for r in g["routes"]]) for g in routes], [
            ("exact", "admin.example.com", ["admin-api"]),
            ("wildcard", "*.example.com", ["tenants"]),
            ("any", None, ["api-v2", "api-beta", "api-v1", "hello"]),
        ])
        self.assertEqual(routes[2]["routes"][0], {
            "name": "api-v2", "host": None, "path": "/api", "methods": ["GET", "POST"],
            "conditions": {"header": ["x-api-version: 2"], "query": ["!legacy"], "cookie": []},
            "terminal": {"type": "upstream", "upstreams": ["v2"]}, "filters": [],
        })
        self.assertEqual(routes[2]["routes"][1]["conditions"]["cookie"], ["beta=~1|yes"])
        self.assertEqual(routes[1]["routes"][0]["terminal"], {"type": "respond", "status": 204})

    def test_same_as_the_worker_table(self):
        """
        The master's view and a worker's route table (built from the same
        configuration) list the same routes in the same order.
        """
        from gatelayer.http.gateway import Gateway
        gate = AdminHarness(sections=ROUTES)
        gate.start()
        _, _, body = gate.get(path=b"/status")
        shown = [[r["name"] for r in group["routes"]] for group in json.loads(body)["routes"]]
        table = Gateway(gate.master.config, gate.reactor, upstreams={
            "v1": _Terminals(), "v2": _Terminals()}).table
        tried = [[item[2].spec.name for item in group] for group in (
            table._exact["admin.example.com"], table._wildcard[".example.com"], table._any)]
        self.assertEqual(shown, tried)


class _Terminals:
    def for_route(self, spec):
        """
        No terminal: the table is only looked at.
        """
        return None
