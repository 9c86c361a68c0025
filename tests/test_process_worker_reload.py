"""
Tests for a worker taking a new configuration while it serves
(gatelayer.process.worker_reload and gatelayer.process.reconfigure): the
upstreams carried over, the switch of new requests, the retirement of the
old gateway once its last request ended, and the control commands over an
in-memory AMP connection.
"""

import os
import socket

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.config import parse_config_text
from gatelayer.process.control import ControlProtocol
from gatelayer.process.reconfigure import CHUNK, ConfigReceiver, push_config
from gatelayer.process.worker import Worker, build_upstreams
from gatelayer.process.worker_reload import carry_upstreams
from tests.test_worker import FakeControl, PortReactor

CONFIG = """
[gateway]
workers = 1
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80, 10.0.0.2:80
[upstream:other]
servers = 10.0.0.9:80
[route:hello]
path = /
respond = 200 {answer}
"""


def config(answer="old", text=CONFIG):
    """
    The configuration with route C{hello} answering C{answer}.
    """
    return parse_config_text(text.format(answer=answer), "/etc/gate.ini")


class CarryUpstreamsTests(SynchronousTestCase):
    """
    carry_upstreams keeps what a reload does not change.
    """

    def setUp(self):
        """
        The terminals of the base configuration, with server 10.0.0.1
        marked unhealthy.
        """
        self.reactor = MemoryReactorClock()
        self.old = build_upstreams(config(), self.reactor)
        self.old["app"].state.set_healthy("10.0.0.1:80", False)

    def test_unchanged_upstream_kept_whole(self):
        """
        An upstream whose spec is the same keeps its terminal (pool,
        balancer and health); nothing is left to close.
        """
        terminals, unused = carry_upstreams(self.old, config().upstreams, self.reactor)
        self.assertIs(terminals["app"], self.old["app"])
        self.assertIs(terminals["other"], self.old["other"])
        self.assertEqual(unused, [])

    def test_changed_servers(self):
        """
        A changed upstream gets a new state keeping the verdicts of the
        servers that stay, and keeps its pool (same pool settings); a
        removed upstream's pool is to be closed.
        """
        text = CONFIG.replace("10.0.0.2:80", "10.0.0.3:80 weight=3").replace(
            "[upstream:other]\nservers = 10.0.0.9:80\n", "")
        terminals, unused = carry_upstreams(self.old, config(text=text).upstreams, self.reactor)
        new = terminals["app"]
        self.assertIsNot(new, self.old["app"])
        self.assertIs(new.pool, self.old["app"].pool)
        rows = {row["address"]: row["healthy"] for row in new.state.snapshot()}
        self.assertEqual(rows, {"10.0.0.1:80": False, "10.0.0.3:80": True})
        self.assertEqual(unused, [self.old["other"].pool])

    def test_new_pool_settings(self):
        """
        Other pool settings (a new keepalive) make a new pool; the old one
        is to be closed.
        """
        text = CONFIG.replace("[upstream:other]", "keepalive = 4\n[upstream:other]")
        built = []

        def build(spec):
            built.append(spec.name)
            return object()
        terminals, unused = carry_upstreams(self.old, config(text=text).upstreams, self.reactor, build=build)
        self.assertEqual(built, ["app"])
        self.assertEqual(unused, [self.old["app"].pool])


class WorkerReloadTests(SynchronousTestCase):
    """
    A started worker prepares and commits a new configuration.
    """

    def setUp(self):
        """
        A started worker on a memory reactor answering "old" on /.
        """
        self.reactor = PortReactor()
        self.config = config()
        read, write = os.pipe()
        os.close(write)
        self.worker = Worker(self.reactor, self.config, 0, [(self.config.listeners[0], read, socket.AF_INET)],
                             master=FakeControl())
        self.worker.start()
        self.reloads = self.worker.reloads

    def connect(self):
        """
        A client connection on the worker's port: C{(channel, transport)}.
        """
        factory = self.worker.factories[0]
        channel = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=None)
        channel.makeConnection(transport)
        return channel, transport

    def text(self, answer):
        """
        The configuration text answering C{answer}.
        """
        return CONFIG.format(answer=answer)

    def test_in_flight_request_finishes_on_old_config(self):
        """
        A request whose head arrived before the switch is answered by the
        route it was routed to; a request after it by the new route; the
        old gateway is stopped once its last request ended.
        """
        old = self.worker.gateway
        stopped = []
        self.patch(old, "stop", lambda: stopped.append(old))
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(old.active, 1)
        self.assertEqual(self.reloads.prepare(self.text("new")), [])
        self.assertIs(self.worker.gateway, old)
        self.reloads.commit()
        new = self.worker.gateway
        self.assertIsNot(new, old)
        self.assertIs(self.worker.factories[0].gateway, new)
        self.assertEqual(stopped, [])
        self.assertEqual(self.reloads.active(), 1)
        channel.dataReceived(b"cd")
        self.assertIn(b"\r\n\r\nold", transport.value())
        self.assertEqual(stopped, [old])
        self.assertEqual(self.reloads.retiring, [])
        other, other_transport = self.connect()
        other.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"\r\n\r\nnew", other_transport.value())
        self.assertEqual(new.requests, 2)
        self.assertEqual(new.connections, 2)

    def test_switch_keeps_metrics_and_tells_l4_listeners(self):
        """
        The new gateway counts into the worker's one metrics object (so a
        reload never restarts a counter), and the layer 4 listeners are
        handed the new configuration and its upstream states.
        """
        old = self.worker.gateway
        calls = []
        self.patch(self.worker.ports_service, "reconfigure_l4",
                   lambda config, states: calls.append((config, states)))
        self.assertEqual(self.reloads.prepare(self.text("new")), [])
        self.reloads.commit()
        new = self.worker.gateway
        self.assertIsNotNone(old.metrics)
        self.assertIs(new.metrics, old.metrics)
        self.assertEqual(len(calls), 1)
        config, states = calls[0]
        self.assertIs(config, self.worker.config)
        self.assertEqual(states, self.worker.upstream_states())

    def test_bad_text_keeps_running(self):
        """
        A text the worker cannot use is answered with its problems and
        nothing changes.
        """
        old = self.worker.gateway
        problems = self.reloads.prepare(self.text("new").replace("respond =", "respnd ="))
        self.assertTrue(any("respnd" in p for p in problems), problems)
        self.assertIsNone(self.reloads.pending)
        self.assertIs(self.worker.gateway, old)

    def test_listener_change_refused(self):
        """
        A worker never takes other listeners (its sockets are adopted).
        """
        problems = self.reloads.prepare(self.text("new").replace("8080", "8081"))
        self.assertEqual(problems, ["the listeners changed: they are bound at start only"])

    def test_shared_state_goes_to_prepared_gateway(self):
        """
        Between prepare and commit, the master's health verdicts reach
        the prepared upstream states; after commit, the running ones.
        """
        self.assertEqual(self.reloads.prepare(self.text("new").replace("10.0.0.2:80", "10.0.0.3:80")), [])
        states = self.reloads.incoming_states()
        self.assertIsNot(states["app"], self.worker.upstreams["app"].state)
        states["app"].set_healthy("10.0.0.3:80", False)
        self.reloads.commit()
        self.assertIs(self.reloads.incoming_states()["app"], self.worker.upstreams["app"].state)
        rows = {r["address"]: r["healthy"] for r in self.worker.upstreams["app"].state.snapshot()}
        self.assertEqual(rows, {"10.0.0.1:80": True, "10.0.0.3:80": False})

    def test_draining_refuses(self):
        """
        A draining worker takes no new configuration.
        """
        self.worker.drain(0)
        self.assertEqual(self.reloads.prepare(self.text("new")), ["the worker is draining"])


class ReconfigureCommandTests(SynchronousTestCase):
    """
    push_config and ConfigReceiver over an in-memory AMP connection.
    """

    def setUp(self):
        """
        A master and a worker end joined; the worker's prepare and commit
        are recorded.
        """
        self.master, worker, self.pump = connectedServerAndClient(ControlProtocol, ControlProtocol)
        self.prepared = []
        self.committed = []
        self.problems = []
        self.receiver = ConfigReceiver(self.prepare, lambda: self.committed.append(True)).register(worker)

    def prepare(self, text):
        """
        Record the text; answer C{self.problems}.
        """
        self.prepared.append(text)
        return self.problems

    def push(self, text, sync=()):
        """
        Push C{text} and deliver everything; the push's result.
        """
        d = push_config(self.master, 2, text, sync)
        for _ in range(20):
            self.pump.flush()
        return self.successResultOf(d)

    def test_large_text_in_chunks(self):
        """
        A text larger than one AMP value arrives whole; the worker
        switches after the shared state was sent.
        """
        text = "[gateway]\n" + "; é comment\n" * (CHUNK // 5)
        synced = []
        self.assertEqual(self.push(text, [lambda control: synced.append(control)]), [])
        self.assertEqual(self.prepared, [text])
        self.assertEqual(synced, [self.master])
        self.assertEqual(self.committed, [True])

    def test_problems_no_commit(self):
        """
        A worker that cannot prepare answers why and does not switch.
        """
        self.problems = ["[route:x]: bad"]
        self.assertEqual(self.push("text"), ["[route:x]: bad"])
        self.assertEqual(self.committed, [])

    def test_incomplete_text(self):
        """
        A text whose digest does not match what arrived is not prepared.
        """
        answer = self.receiver.prepare(3, "0" * 64)
        self.assertEqual(answer, {"problems": ["configuration 3 arrived incomplete"]})
        self.assertEqual(self.prepared, [])

    def test_commit_unprepared(self):
        """
        A commit of a generation that was not prepared is refused.
        """
        self.assertRaises(RuntimeError, self.receiver.commit, 9)
        self.assertEqual(self.committed, [])
