"""
Tests for how the chain contains a broken filter: one that raises in any
phase, whose Deferred fails or never fires, or whose coroutine does, gets
its request the gateway's 500 problem (or, once the response is out, a cut
connection or only a log line), is logged with its name, and leaves the
worker serving; synchronous filters cost no Deferred and no timer.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.chain import (
    FilterResultError, FilterTimeout, IFilter, ILogFilter, Reply, RouteChain, json_reply, run_request_phase,
)
from gatelayer.testing.exchange import request_exchange
from gatelayer.testing.server import InMemoryGateway, error_document, parse_response, set_filters

CONFIG = """
[listener:web]
bind = 127.0.0.1:8080
[route:hello]
path = /hello
respond = 200 hello
"""

GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
PROBLEM = {"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "a filter failed"}


@implementer(IFilter)
class Scripted:
    """
    A filter whose request phase does what C{answer} says: a value to
    return, or a function of the exchange to call.

    @ivar seen: how many request phases it ran.
    """

    def __init__(self, name, answer=None, on_response=None):
        self.name = name
        self.answer = answer
        self.response = on_response
        self.seen = 0

    def on_request(self, exchange):
        """
        Answer as scripted.
        """
        self.seen += 1
        if callable(self.answer):
            return self.answer(exchange)
        return self.answer

    def on_response(self, exchange):
        """
        Run the scripted response-head hook, if any.
        """
        if self.response is not None:
            self.response(exchange)


@implementer(ILogFilter)
class Logging(Scripted):
    """
    A filter with a log phase that records the status it saw, or raises.
    """

    def __init__(self, name, statuses, broken=False):
        super().__init__(name)
        self.statuses = statuses
        self.broken = broken

    def on_log(self, exchange):
        """
        Record the status, or fail.
        """
        if self.broken:
            raise ZeroDivisionError("bug in a log phase")
        self.statuses.append((self.name, exchange.status))


def boom(exchange):
    """
    A request phase with a bug.
    """
    raise ZeroDivisionError("bug in a request phase")


def run(filters, timeouts=(), clock=None):
    """
    Run the request phase of C{filters} on a fresh exchange; returns the
    list C{done} is called with (C{[(reply, ran)]} once finished).
    """
    exchange = request_exchange()
    exchange.chain = RouteChain.build(filters, timeouts=timeouts, clock=clock)
    results = []
    run_request_phase(exchange.chain.filters, exchange, lambda reply, ran: results.append((reply, ran)))
    return results


class RunnerTests(SynchronousTestCase):
    """
    The request phase reports each kind of failure to its caller, naming
    the filter, and waits for asynchronous filters no longer than their
    timeout.
    """

    def setUp(self):
        self.clock = Clock()

    def test_synchronous_costs_no_timer(self):
        """
        Filters answering synchronously run in one go, and a timeout set on
        them schedules nothing.
        """
        first, second = Scripted("a"), Scripted("b")
        self.assertEqual(run([first, second], [5.0, 5.0], self.clock), [(None, 2)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        reply = Reply(403)
        self.assertEqual(run([Scripted("c", reply), second], [5.0, 5.0], self.clock), [(reply, 1)])

    def test_raise_reported(self):
        """
        A filter that raises stops the chain: the exception is reported
        with the count of filters that ran, the later ones never run.
        """
        later = Scripted("later")
        [(error, ran)] = run([Scripted("a"), Scripted("broken", boom), later])
        self.assertIsInstance(error, ZeroDivisionError)
        self.assertEqual((ran, later.seen), (2, 0))

    def test_deferred_errback_reported(self):
        """
        A Deferred that fails is reported as its exception; the chain
        resumes nowhere.
        """
        d = Deferred()
        later = Scripted("later")
        results = run([Scripted("slow", d), later], [5.0, None], self.clock)
        self.assertEqual(results, [])
        d.errback(KeyError("lost"))
        [(error, ran)] = results
        self.assertIsInstance(error, KeyError)
        self.assertEqual((ran, later.seen), (1, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deferred_result_resumes(self):
        """
        A Deferred firing with L{None} resumes the chain at the next filter
        and its timer is cancelled; one firing with a reply answers.
        """
        d = Deferred()
        later = Scripted("later")
        results = run([Scripted("slow", d), later], [5.0, None], self.clock)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d.callback(None)
        self.assertEqual(results, [(None, 2)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        reply = Reply(401)
        d = Deferred()
        results = run([Scripted("slow", d), later], [5.0, None], self.clock)
        d.callback(reply)
        self.assertEqual(results, [(reply, 1)])

    def test_never_firing_deferred_times_out(self):
        """
        A Deferred that never fires is cancelled once the filter's timeout
        passed, and the request is reported as a L{FilterTimeout} naming
        the filter; nothing happens before.
        """
        cancelled = []
        d = Deferred(lambda d: cancelled.append(True))
        results = run([Scripted("stuck", d), Scripted("later")], [2.0, None], self.clock)
        self.clock.advance(1.999)
        self.assertEqual(results, [])
        self.clock.advance(0.001)
        [(error, ran)] = results
        self.assertIsInstance(error, FilterTimeout)
        self.assertEqual((error.name, error.timeout, ran), ("stuck", 2.0, 1))
        self.assertIn("stuck", str(error))
        self.assertEqual(cancelled, [True])
        self.assertTrue(d.called)

    def test_late_result_ignored(self):
        """
        A result arriving after the timeout (the filter's work went on) is
        ignored: the caller hears of the request once.
        """
        d = Deferred()
        results = run([Scripted("late", d)], [1.0], self.clock)
        self.clock.advance(1)
        d.callback(Reply(200))
        self.assertEqual(len(results), 1)
        self.assertIsInstance(results[0][0], FilterTimeout)

    def test_without_timeout_waits(self):
        """
        A filter without a timeout (a built-in type's default) is waited for
        as long as it takes.
        """
        d = Deferred()
        results = run([Scripted("slow", d)], [None], self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        d.callback(None)
        self.assertEqual(results, [(None, 1)])

    def test_coroutine_filters(self):
        """
        An C{async def} request phase is awaited: it may pass, answer,
        raise, or wait on a Deferred, bounded by its timeout.
        """
        reply = Reply(429)

        async def passes(exchange):
            return None

        async def answers(exchange):
            return reply

        async def raises(exchange):
            raise ZeroDivisionError("bug in a coroutine")

        self.assertEqual(run([Scripted("a", passes), Scripted("b", answers)]), [(reply, 2)])
        [(error, ran)] = run([Scripted("c", raises)])
        self.assertIsInstance(error, ZeroDivisionError)
        pending = Deferred()

        async def waits(exchange):
            await pending
            return reply

        results = run([Scripted("d", waits)], [3.0], self.clock)
        self.assertEqual(results, [])
        self.clock.advance(3)
        self.assertIsInstance(results[0][0], FilterTimeout)
        self.assertTrue(pending.called)

    def test_wrong_results_reported(self):
        """
        A request phase returning (or a Deferred firing with) something that
        is neither L{None} nor a L{Reply} is a L{FilterResultError} naming
        the filter.
        """
        table = [b"403", 403, {"status": 403}, [Reply(403)]]
        for value in table:
            [(error, ran)] = run([Scripted("odd", value)])
            self.assertIsInstance(error, FilterResultError)
            self.assertIn("odd", str(error))
            d = Deferred()
            results = run([Scripted("odd", d)])
            d.callback(value)
            self.assertIsInstance(results[0][0], FilterResultError)


class GatewayContainmentTests(SynchronousTestCase):
    """
    Through the gateway: a failing filter gets its request the 500 problem
    with the request's id, its name and traceback go to the log, and the
    next request is served.
    """

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG)
        self.gateway = self.gate.gateway
        self.route = self.gateway.table.match("", b"/hello", "GET").route
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def filters(self, *filters, timeouts=()):
        """
        Put C{filters} on the C{/hello} route, timed by the gateway's clock.
        """
        set_filters(self.gateway, self.route, filters, timeouts, self.gate.reactor)

    def assertProblem(self, data):
        """
        C{data} is the 500 problem answer of a failed filter, with the
        request id; returns the headers.
        """
        status, headers, body = parse_response(data)
        self.assertEqual(status, 500)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(error_document(body, headers), PROBLEM)
        self.assertNotIn(b"Traceback", body)
        return headers

    def logged(self, name):
        """
        The log events naming the filter C{name}.
        """
        return [e for e in self.events if e.get("filter") == name]

    def assertServesNext(self):
        """
        The worker still answers the next request (without the filters).
        """
        self.filters()
        status, _, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body), (200, b"hello"))

    def test_request_phase_raise(self):
        """
        A request phase that raises: 500 problem, the filter's name and the
        request id in the log with the traceback, the worker goes on.
        """
        self.filters(Scripted("ok"), Scripted("broken", boom))
        headers = self.assertProblem(self.gate.exchange(GET_HELLO))
        [event] = self.logged("broken")
        self.assertEqual(event["request_id"].encode("ascii"), headers[b"x-request-id"][0])
        self.assertIsInstance(event["log_failure"].value, ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertServesNext()

    def test_deferred_errback(self):
        """
        A Deferred that fails later gets the request the 500 problem then.
        """
        d = Deferred()
        self.filters(Scripted("remote", d))
        channel, transport = self.gate.connect()
        channel.dataReceived(GET_HELLO)
        self.assertEqual(transport.value(), b"")
        d.errback(ConnectionError("auth server gone"))
        self.assertProblem(transport.value())
        self.assertEqual(len(self.logged("remote")), 1)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertServesNext()

    def test_never_firing_deferred(self):
        """
        A Deferred that never fires gets the request the 500 problem after
        the filter's timeout, logged as a timeout naming the filter; no timer
        is left behind.
        """
        self.filters(Scripted("stuck", Deferred()), timeouts=[0.5])
        channel, transport = self.gate.connect()
        channel.dataReceived(GET_HELLO)
        self.gate.reactor.advance(0.4)
        self.assertEqual(transport.value(), b"")
        self.gate.reactor.advance(0.1)
        self.assertProblem(transport.value())
        [event] = self.logged("stuck")
        self.assertEqual(event["timeout"], 0.5)
        self.assertIn("timed out", event["log_format"])
        self.assertEqual([c for c in self.gate.reactor.getDelayedCalls() if c.func.__name__ == "_expired"], [])
        self.assertServesNext()

    def test_response_phase_raise(self):
        """
        A response-head hook that raises replaces the answer with the 500
        problem (the response it was to shape is not sent); the other
        filters' head hooks ran and their headers stay.
        """
        def adds(exchange):
            exchange.response_headers.append((b"x-added", b"yes"))

        def breaks(exchange):
            raise ZeroDivisionError("bug in a response phase")
        self.filters(Scripted("adds", on_response=adds), Scripted("broken", on_response=breaks))
        data = self.gate.exchange(GET_HELLO)
        headers = self.assertProblem(data)
        self.assertNotIn(b"hello", data)
        self.assertEqual(headers[b"x-added"], [b"yes"])
        self.assertEqual(len(self.logged("broken")), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertServesNext()

    def test_reply_with_broken_response_phase(self):
        """
        A filter's own reply whose response-head phase breaks is replaced
        by the 500 problem too.
        """
        def breaks(exchange):
            raise ZeroDivisionError("bug in a response phase")
        self.filters(Scripted("broken", on_response=breaks),
                     Scripted("refuses", json_reply(403, {"error": "no"})))
        self.assertProblem(self.gate.exchange(GET_HELLO))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_log_phase(self):
        """
        The log phase runs once the response is over, in reverse order, for
        the filters whose request phase ran; one that raises is logged with
        its name and the others still run; the response is untouched.
        """
        statuses = []
        self.filters(Logging("first", statuses), Logging("broken", statuses, broken=True),
                     Logging("last", statuses), Scripted("refuses", Reply(403, b"no")),
                     Logging("never", statuses))
        status, _, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertEqual((status, body), (403, b"no"))
        self.assertEqual(statuses, [("last", 403), ("first", 403)])
        self.assertEqual(len(self.logged("broken")), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertServesNext()

    def test_failure_after_client_left(self):
        """
        A filter failing after its client went away is still logged; nothing
        is written.
        """
        d = Deferred()
        self.filters(Scripted("slow", d))
        channel, transport = self.gate.connect()
        channel.dataReceived(GET_HELLO)
        channel.connectionLost(ConnectionError("gone"))
        d.errback(KeyError("late"))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(self.logged("slow")), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_problem_is_json(self):
        """
        The problem body is one JSON document (no traceback, no filter name).
        """
        self.filters(Scripted("secret-filter-name", boom))
        _, _, body = parse_response(self.gate.exchange(GET_HELLO))
        self.assertNotIn(b"secret-filter-name", body)
        self.assertEqual(json.loads(body)["status"], 500)
        self.flushLoggedErrors(ZeroDivisionError)


PROXY_CONFIG = """
[gateway]
http_server = {server}
[listener:web]
bind = 127.0.0.1:8080
[upstream:app]
servers = 10.0.0.1:80
[route:api]
path = /api/
upstream = app
[route:hello]
path = /hello
respond = 200 hello
"""


class ProxiedContainmentTests(SynchronousTestCase):
    """
    A response-head hook failing on a proxied response: the client gets the
    500 problem instead of the upstream's response, the upstream connection
    is let go, and the client connection serves the next request.
    """

    http_server = "twisted"

    def test_response_phase_raise_on_proxied_response(self):
        """
        The upstream's streamed response never reaches the client; the
        problem does, and the same connection answers the next request.
        """
        from gatelayer.testing.server import accept_upstream
        gate = InMemoryGateway(PROXY_CONFIG.format(server=self.http_server), with_upstreams=True)
        route = gate.gateway.table.match("", b"/api/x", "GET").route

        def breaks(exchange):
            raise ZeroDivisionError("bug in a response phase")
        set_filters(gate.gateway, route, [Scripted("broken", on_response=breaks)])
        channel, client = gate.connect()
        channel.dataReceived(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        upstream, protocol = accept_upstream(gate.reactor)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        protocol.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        status, headers, body = parse_response(client.value())
        self.assertEqual(status, 500)
        self.assertEqual(error_document(body, headers), PROBLEM)
        self.assertNotIn(b"hello", client.value())
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        client.clear()
        channel.dataReceived(GET_HELLO)
        status, _, body = parse_response(client.value())
        self.assertEqual((status, body), (200, b"hello"))


class LeanProxiedContainmentTests(ProxiedContainmentTests):
    """
    The same through gatelayer's own HTTP/1.1 server channel.
    """

    http_server = "gatelayer"
