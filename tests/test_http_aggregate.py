"""
Tests for the aggregate terminal (gatelayer.http.aggregate) in memory: a
gateway whose upstream pools connect through a MemoryReactorClock, each
part's upstream connection completed by hand, time moved by the clock.
"""

import json
import os

from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gatelayer.chain import IFilter
from gatelayer.http.aggregate import Aggregation
from gatelayer.upstream.call import BufferedCall
from gatelayer.observe.accesslog import AccessLog
from gatelayer.testing.server import InMemoryGateway, accept_upstream, parse_response, set_filters, with_server

UPSTREAMS = """
[gateway]
[listener:web]
bind = 127.0.0.1:8080
[upstream:users]
servers = 10.0.0.1:80
[upstream:orders]
servers = 10.0.0.2:80
[upstream:recs]
servers = 10.0.0.3:80
[upstream:pair]
servers = 10.0.1.1:80, 10.0.1.2:80
retry_on = connect_error, timeout, 503
"""

DASHBOARD = """
[route:dash]
path = /dash
aggregate = user: users GET /users/$query.id
            orders: orders GET /orders?user=$part.user.id&limit=5
            recs: recs GET /recs/$query.id optional
part_timeout = 800ms
deadline = 1500ms
on_part_error = {mode}
part_max_size = {max_size}
"""

JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


def json_response(document, status=b"200 OK", content_type=b"application/json"):
    """
    An upstream's response carrying C{document} as JSON.
    """
    body = json.dumps(document).encode("utf-8")
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % (len(body),) + body)


@implementer(IFilter)
class IdentityFilter:
    """
    A filter vouching for an identity as the key and JWT filters do: it
    sets X-Consumer and the JWT claims of the exchange.
    """

    name = "identity"

    def __init__(self, claims):
        self.claims = claims

    def on_request(self, exchange):
        """
        Set the consumer header and claims.
        """
        exchange.headers.setRawHeaders(b"x-consumer", [b"alice"])
        exchange.context["consumer"] = "alice"
        exchange.context["jwt.claims"] = self.claims

    def on_response(self, exchange):
        """
        Mark the answer, to show the response phase ran.
        """
        exchange.response_headers.append((b"x-filtered", b"yes"))


class AggregateCase(SynchronousTestCase):
    """
    Helpers: a gateway with the dashboard route in a given mode.
    """

    http_server = "gatelayer"

    def gateway(self, mode="null", max_size="1MB", routes=None):
        """
        Build the gateway; C{routes} replaces the dashboard route.
        """
        text = UPSTREAMS + (routes if routes is not None else DASHBOARD.format(mode=mode, max_size=max_size))
        self.gate = InMemoryGateway(with_server(text, self.http_server), with_upstreams=True)
        self.reactor = self.gate.reactor
        return self.gate

    def send(self, request=b"GET /dash?id=7 HTTP/1.1\r\nHost: app.test\r\n\r\n"):
        """
        Send C{request} on a new client connection; returns the client
        transport and channel.
        """
        channel, client = self.gate.connect(peer="192.0.2.9")
        channel.dataReceived(request)
        return client, channel

    def filter_route(self, path, *filters):
        """
        Give the route serving C{path} the C{filters}.
        """
        route = self.gate.gateway.table.match("", path, "GET").route
        set_filters(self.gate.gateway, route, filters)

    def own_calls(self):
        """
        The delayed calls of the aggregation and its calls still pending
        (part timers, the deadline), not those of the pool's connections.
        """
        return [call for call in self.reactor.getDelayedCalls()
                if isinstance(getattr(call.func, "__self__", None), (Aggregation, BufferedCall))]

    def targets(self):
        """
        The addresses the pools opened connections to, in order.
        """
        return ["%s:%d" % (host, port) for host, port, _, _, _ in self.reactor.tcpClients]

    def answer(self, client):
        """
        The client's response as C{(status, headers, body)}.
        """
        return parse_response(client.value())

    def document(self, client):
        """
        The client's response: status and the body parsed as JSON.
        """
        status, headers, body = self.answer(client)
        return status, json.loads(body)

    def state(self, upstream):
        """
        The upstream's balancing state in this worker.
        """
        return self.gate.gateway.upstreams[upstream].state


class AggregateTerminalTests(AggregateCase):
    """
    Parts fan out, depend on each other, and merge into one document.
    """

    def test_parts_merged_in_configured_order(self):
        """
        The independent parts go out at once, the dependent one when the
        part it reads answered; the answer is one JSON object with each
        part under its name, in configured order, 200 with Content-Length.
        """
        self.gateway()
        client, _ = self.send()
        self.assertEqual(self.targets(), ["10.0.0.1:80", "10.0.0.3:80"])
        user, user_server = accept_upstream(self.reactor, 0)
        recs, recs_server = accept_upstream(self.reactor, 1)
        self.assertTrue(user.value().startswith(b"GET /users/7 HTTP/1.1\r\n"), user.value())
        self.assertTrue(recs.value().startswith(b"GET /recs/7 HTTP/1.1\r\n"), recs.value())
        recs_server.dataReceived(json_response(["r1"]))
        self.assertEqual(len(self.reactor.tcpClients), 2, "orders waits for user only")
        user_server.dataReceived(json_response({"id": "u/1", "name": "Ann"}))
        self.assertEqual(self.targets()[2], "10.0.0.2:80")
        orders, orders_server = accept_upstream(self.reactor, 2)
        self.assertTrue(orders.value().startswith(b"GET /orders?user=u%2F1&limit=5 HTTP/1.1\r\n"),
                        orders.value())
        self.assertEqual(client.value(), b"")
        orders_server.dataReceived(json_response([{"n": 1}]))
        status, headers, body = self.answer(client)
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
        self.assertEqual(list(json.loads(body)), ["user", "orders", "recs"])
        self.assertEqual(json.loads(body), {
            "user": {"id": "u/1", "name": "Ann"}, "orders": [{"n": 1}], "recs": ["r1"]})
        self.assertEqual(self.own_calls(), [], "the deadline and part timers are cancelled")

    def test_headers_to_parts(self):
        """
        Every part gets the headers after the route's filters (X-Consumer
        and the request id), the forwarding headers, the server's address as
        Host and Accept: application/json; never the client's Accept,
        Accept-Encoding, validators, Range or body headers, nor a spoofed
        X-Consumer.
        """
        gate = self.gateway()
        self.filter_route(b"/dash", IdentityFilter({"sub": "s"}))
        client, _ = self.send(
            b"GET /dash?id=7 HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: req-1\r\nX-Consumer: mallory\r\n"
            b"Accept: text/html\r\nAccept-Encoding: gzip\r\nIf-None-Match: \"e\"\r\nRange: bytes=0-1\r\n"
            b"Content-Type: text/plain\r\nX-Custom: 1\r\n\r\n")
        for index in (0, 1):
            sent, _ = accept_upstream(self.reactor, index)
            head = sent.value().lower()
            self.assertIn(b"host: 10.0.0.", head)
            # The client is no trusted proxy: the gateway's own id goes.
            self.assertIn(b"x-request-id: %s-1\r\n" % (gate.gateway.request_ids.prefix,), head)
            self.assertNotIn(b"req-1", head)
            self.assertIn(b"x-consumer: alice\r\n", head)
            self.assertNotIn(b"mallory", head)
            self.assertIn(b"x-custom: 1\r\n", head)
            self.assertIn(b"x-forwarded-for: 192.0.2.9\r\n", head)
            self.assertIn(b"x-forwarded-host: app.test\r\n", head)
            self.assertIn(b"accept: application/json\r\n", head)
            for absent in (b"text/html", b"accept-encoding", b"if-none-match", b"range", b"content-type"):
                self.assertNotIn(absent, head)

    def test_jwt_claim_in_target_and_response_phase(self):
        """
        C{$jwt.sub} reads the claims the route's filters found; the answer
        goes through the filters' response phase.
        """
        gate = self.gateway(routes="[route:me]\npath = /me\naggregate = me: users GET /users/$jwt.sub\n")
        self.filter_route(b"/me", IdentityFilter({"sub": "../admin?x=1#y"}))
        client, _ = self.send(b"GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
        sent, server = accept_upstream(self.reactor, 0)
        self.assertTrue(sent.value().startswith(b"GET /users/..%2Fadmin%3Fx%3D1%23y HTTP/1.1\r\n"), sent.value())
        server.dataReceived(json_response({"id": 1}))
        status, headers, body = self.answer(client)
        self.assertEqual((status, json.loads(body)), (200, {"me": {"id": 1}}))
        self.assertEqual(headers[b"x-filtered"], [b"yes"])

    def test_head_gets_headers_only(self):
        """
        HEAD fans out as GET would and answers with the same head and no
        body.
        """
        self.gateway(routes="[route:me]\npath = /me\naggregate = me: users GET /users/1\n")
        client, _ = self.send(b"HEAD /me HTTP/1.1\r\nHost: x\r\n\r\n")
        sent, server = accept_upstream(self.reactor, 0)
        self.assertTrue(sent.value().startswith(b"GET /users/1 "))
        server.dataReceived(json_response({"id": 1}))
        head, _, body = client.value().partition(b"\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", head)
        self.assertIn(b"Content-Length: 15", head)
        self.assertEqual(body, b"")

    def test_other_methods_405(self):
        """
        An aggregate route answers GET and HEAD only: POST gets 405 with
        Allow, and no part is sent.
        """
        self.gateway()
        client, _ = self.send(b"POST /dash HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        status, headers, _ = self.answer(client)
        self.assertEqual(status, 405)
        self.assertEqual(sorted(headers[b"allow"][0].split(b", ")), [b"GET", b"HEAD"])
        self.assertEqual(self.reactor.tcpClients, [])

    def test_method_let_through_by_a_filter(self):
        """
        A request of another method that reaches the terminal anyway (an
        OPTIONS without Origin on a route with a cors filter, routed as a
        preflight) gets 405 problem+json, and no part is sent.
        """
        self.gateway(routes="[filter:c]\ntype = cors\norigins = https://app.test\n"
                     "[route:me]\npath = /me\nfilters = c\naggregate = me: users GET /users/1\n")
        client, _ = self.send(b"OPTIONS /me HTTP/1.1\r\nHost: x\r\nAccess-Control-Request-Method: GET\r\n\r\n")
        status, headers, body = self.answer(client)
        self.assertEqual((status, headers[b"content-type"], headers[b"allow"]),
                         (405, [b"application/problem+json"], [b"GET, HEAD"]))
        self.assertEqual(json.loads(body)["status"], 405)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.own_calls(), [])

    def test_access_log_records_parts(self):
        """
        The client request's one access log line ends with the parts'
        outcomes and durations; other routes' lines are unchanged.
        """
        routes = DASHBOARD.format(mode="null", max_size="1MB") + "[route:hello]\npath = /hello\nrespond = 200 hi\n"
        self.gateway(routes=routes)
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, self.reactor, format="combined")
        self.gate.gateway.access_log = log
        client, _ = self.send()
        _, user = accept_upstream(self.reactor, 0)
        accept_upstream(self.reactor, 1)
        self.reactor.advance(0.012)
        user.dataReceived(json_response({"id": 5}))
        _, orders = accept_upstream(self.reactor, 2)
        orders.dataReceived(json_response({"status": "gone"}, status=b"404 Not Found"))
        self.reactor.advance(0.8)
        self.assertEqual(self.answer(client)[0], 200)
        self.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        log.close()
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], rb'" request_id=[a-z2-7]+-1 parts=user:200:12ms,orders:404:0ms,recs:timeout:812ms\Z')
        self.assertRegex(lines[1], rb'"-" request_id=[a-z2-7]+-2\Z')


class PartFailureTests(AggregateCase):
    """
    Failed parts: what each mode answers, the reasons, timeouts and
    cancellation.
    """

    def test_hostile_answers(self):
        """
        Each unusable answer is a part error with a short reason, the key
        null, and the server's connection still counts as answered.
        """
        big = b"x" * 40
        cases = [
            (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
             "status 503"),
            (b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", "status 302"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\n<a/>", "not JSON"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "not JSON"),
            (JSON_HEAD % 3 + b"{x}", "not JSON"),
            (JSON_HEAD % 3 + b"NaN", "not JSON"),
            (JSON_HEAD % 5 + b"\xef\xbb\xbf{}", "not JSON"),
            (JSON_HEAD % 0, "not JSON"),
            (JSON_HEAD % 3 + b"{}x", "not JSON"),
            (JSON_HEAD % 4 + b"\xff\xfe{}", "not JSON"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Type: text/html\r\n"
             b"Content-Length: 2\r\n\r\n{}", "not JSON"),
            (JSON_HEAD % len(big) + big, "too large"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"14\r\n" + b"[" + b"1," * 9 + b"1" + b"\r\n14\r\n" + b"," + b"1," * 9 + b"1" + b"\r\n", "too large"),
            (b"HTTP/1.1 200 OK\r\nContent-Type: application/problem+json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n",
             None),
            (JSON_HEAD % 14 + b'{"a":"\\ud800"}', "surrogate"),
            (JSON_HEAD % 10 + b'{"a":"\xc3\xa9"}', "utf-8"),
        ]
        for response, reason in cases:
            self.gateway(routes="[route:me]\npath = /me\npart_max_size = 32\n"
                         "aggregate = me: users GET /users/1\n")
            client, _ = self.send(b"GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
            _, server = accept_upstream(self.reactor, 0)
            server.dataReceived(response)
            status, document = self.document(client)
            self.assertEqual(status, 200, response)
            if reason == "surrogate":
                self.assertEqual(document, {"me": {"a": "\ud800"}}, response)
            elif reason == "utf-8":
                self.assertEqual(document, {"me": {"a": "\u00e9"}}, response)
            elif reason is None:
                self.assertEqual(document, {"me": {"a": 1}}, response)
            else:
                self.assertEqual(document, {"me": None, "errors": {"me": reason}}, response)
            self.assertEqual(self.state("users").active(self.gate.config.upstreams["users"].servers[0]), 0)

    def test_modes(self):
        """
        A required part failing: C{null} keeps its key as null and reports
        it in C{errors}; C{omit} drops the key and still reports it;
        C{fail} answers 502 problem+json naming the part and reason, and
        cancels the parts still running.
        """
        expected = {
            "null": {"user": None, "orders": None, "recs": ["r"],
                     "errors": {"user": "status 500", "orders": "user failed"}},
            "omit": {"recs": ["r"], "errors": {"user": "status 500", "orders": "user failed"}},
        }
        for mode, document in expected.items():
            self.gateway(mode)
            client, _ = self.send()
            _, user = accept_upstream(self.reactor, 0)
            _, recs = accept_upstream(self.reactor, 1)
            recs.dataReceived(json_response(["r"]))
            user.dataReceived(json_response({"e": 1}, status=b"500 Internal Server Error"))
            self.assertEqual(len(self.reactor.tcpClients), 2, "orders is never sent")
            self.assertEqual(self.document(client), (200, document), mode)

        self.gateway("fail")
        client, _ = self.send()
        _, user = accept_upstream(self.reactor, 0)
        recs_transport, _ = accept_upstream(self.reactor, 1)
        user.dataReceived(json_response({"e": 1}, status=b"500 Internal Server Error"))
        status, headers, body = self.answer(client)
        self.assertEqual(status, 502)
        self.assertEqual(headers[b"content-type"], [b"application/problem+json"])
        self.assertEqual(json.loads(body), {
            "type": "about:blank", "title": "Bad Gateway", "status": 502,
            "detail": "the part user failed: status 500", "part": "user", "reason": "status 500"})
        self.assertTrue(recs_transport.disconnecting, "the optional part still running is cancelled")
        self.assertEqual(self.own_calls(), [], "no part timer or deadline left")

    def test_optional_never_fails_the_whole(self):
        """
        With C{fail}, an optional part's failure is a null with its error,
        not a 502.
        """
        self.gateway("fail")
        client, _ = self.send()
        _, user = accept_upstream(self.reactor, 0)
        _, recs = accept_upstream(self.reactor, 1)
        recs.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno")
        user.dataReceived(json_response({"id": 1}))
        _, orders = accept_upstream(self.reactor, 2)
        orders.dataReceived(json_response([]))
        self.assertEqual(self.document(client), (200, {
            "user": {"id": 1}, "orders": [], "recs": None, "errors": {"recs": "not JSON"}}))

    def test_part_timeout(self):
        """
        A part not answered within part_timeout is null with C{"timeout"};
        its upstream connection is closed; the others are unaffected; the
        answer comes at that moment, not at the deadline.
        """
        self.gateway()
        client, _ = self.send()
        _, user = accept_upstream(self.reactor, 0)
        recs_transport, _ = accept_upstream(self.reactor, 1)
        user.dataReceived(json_response({"id": 1}))
        _, orders = accept_upstream(self.reactor, 2)
        orders.dataReceived(json_response([]))
        self.reactor.advance(0.799)
        self.assertEqual(client.value(), b"")
        self.reactor.advance(0.001)
        self.assertEqual(self.document(client), (200, {
            "user": {"id": 1}, "orders": [], "recs": None, "errors": {"recs": "timeout"}}))
        self.assertTrue(recs_transport.disconnecting)
        recs_server = self.gate.config.upstreams["recs"].servers[0]
        self.assertEqual(self.state("recs").active(recs_server), 0)
        self.assertEqual(self.state("recs").snapshot()[0]["failures"], 0, "a cancelled call is not held against it")

    def test_deadline(self):
        """
        The deadline answers with what is there: a part sent late (after
        the one it reads) and still pending is a timeout at the deadline,
        even though its own part_timeout has not passed.
        """
        self.gateway()
        client, _ = self.send()
        _, user = accept_upstream(self.reactor, 0)
        _, recs = accept_upstream(self.reactor, 1)
        recs.dataReceived(json_response([]))
        self.reactor.advance(0.75)
        user.dataReceived(json_response({"id": 1}))
        orders_transport, _ = accept_upstream(self.reactor, 2)
        self.reactor.advance(0.749)
        self.assertEqual(client.value(), b"")
        self.reactor.advance(0.001)
        self.assertEqual(self.document(client), (200, {
            "user": {"id": 1}, "orders": None, "recs": [], "errors": {"orders": "timeout"}}))
        self.assertTrue(orders_transport.disconnecting)
        self.assertEqual(self.own_calls(), [])

    def test_deadline_in_fail_mode(self):
        """
        With C{fail}, a required part still pending at the deadline is a
        502 naming it with the reason C{timeout}.
        """
        self.gateway("fail", routes=DASHBOARD.format(mode="fail", max_size="1MB").replace(
            "part_timeout = 800ms", "part_timeout = 1500ms"))
        client, _ = self.send()
        accept_upstream(self.reactor, 0)
        _, recs = accept_upstream(self.reactor, 1)
        recs.dataReceived(json_response([]))
        self.reactor.advance(1.5)
        status, body = self.document(client)
        self.assertEqual((status, body["part"], body["reason"]), (502, "user", "timeout"))

    def test_client_gone_cancels_parts(self):
        """
        A client that goes away cancels every part in flight: connections
        closed, timers gone, nothing written, the servers' in-flight counts
        back to zero, and the access log still gets the parts.
        """
        self.gateway()
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, self.reactor, format="combined")
        self.gate.gateway.access_log = log
        client, channel = self.send()
        users_transport, _ = accept_upstream(self.reactor, 0)
        recs_transport, _ = accept_upstream(self.reactor, 1)
        self.reactor.advance(0.1)
        channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(users_transport.disconnecting)
        self.assertTrue(recs_transport.disconnecting)
        for name in ("users", "recs"):
            self.assertEqual(self.state(name).snapshot()[0]["active"], 0, name)
        self.assertEqual(self.own_calls(), [])
        self.reactor.advance(5)
        self.assertEqual(client.value(), b"")
        log.close()
        with open(path, "rb") as f:
            self.assertTrue(f.read().endswith(b" parts=user:cancelled:100ms,orders:cancelled:0ms,"
                                              b"recs:cancelled:100ms\n"))

    def test_retry_and_passive_health(self):
        """
        A part goes through its upstream's retries: a 503 that retry_on
        lists is discarded and the other server asked; the first one's
        failure counts for passive health.
        """
        self.gateway(routes="[route:me]\npath = /me\naggregate = me: pair GET /users/1\n")
        client, _ = self.send(b"GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
        _, first = accept_upstream(self.reactor, 0)
        first.dataReceived(json_response({"busy": 1}, status=b"503 Service Unavailable"))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        _, second = accept_upstream(self.reactor, 1)
        second.dataReceived(json_response({"id": 1}))
        self.assertEqual(self.document(client), (200, {"me": {"id": 1}}))
        rows = {row["address"]: row for row in self.state("pair").snapshot()}
        first_address = "%s:%d" % self.reactor.tcpClients[0][:2]
        self.assertEqual(rows[first_address]["failures"], 1)
        self.assertEqual(sum(row["requests"] for row in rows.values()), 2)

    def test_unreachable(self):
        """
        A part whose servers all refuse the connection is C{"unreachable"}
        once the retries are spent.
        """
        self.gateway(routes="[route:me]\npath = /me\naggregate = me: pair GET /users/1\n")
        client, _ = self.send(b"GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
        for index in (0, 1):
            host, port, factory, _, _ = self.reactor.tcpClients[index]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(self.document(client), (200, {"me": None, "errors": {"me": "unreachable"}}))


class PartTargetTests(AggregateCase):
    """
    Values from the client are data inside the target, never structure.
    """

    def test_hostile_query_values(self):
        """
        Values that would climb, add a query or a fragment are
        percent-encoded into one segment; one that would still be a dot
        segment is refused (C{"unsafe path"}) and a missing or empty one
        is C{"missing $query.id"}, both without calling the upstream.
        """
        cases = [
            (b"id=..%2Fadmin", b"/users/..%2Fadmin"),
            (b"id=a%3Fb%3D1", b"/users/a%3Fb%3D1"),
            (b"id=%252e%252e", b"/users/%252e%252e"),
            (b"id=x%23frag", b"/users/x%23frag"),
            (b"id=a%2Fb%2F..%2F..", b"/users/a%2Fb%2F..%2F.."),
            (b"id=%C3%A9", b"/users/%C3%A9"),
            (b"id=a+b", b"/users/a%20b"),
            (b"id=%00", None),
            (b"id=..", None),
            (b"id=.", None),
            (b"id=%2e%2e", None),
            (b"id=", "missing"),
            (b"other=1", "missing"),
        ]
        for query, expected in cases:
            self.gateway(routes="[route:me]\npath = /me\naggregate = me: users GET /users/$query.id\n")
            client, _ = self.send(b"GET /me?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            if isinstance(expected, bytes):
                sent, _ = accept_upstream(self.reactor, 0)
                self.assertTrue(sent.value().startswith(b"GET " + expected + b" HTTP/1.1\r\n"),
                                (query, sent.value()))
                continue
            self.assertEqual(self.reactor.tcpClients, [], query)
            reason = "missing $query.id" if expected == "missing" else "unsafe path"
            self.assertEqual(self.document(client), (200, {"me": None, "errors": {"me": reason}}), query)

    def test_variables(self):
        """
        Each variable of the template language renders its value from the
        exchange after the filters, encoded; without a value the part is
        C{"missing $NAME"}.
        """
        routes = ("[route:me]\npath = /me\naggregate = me: users GET "
                  "/v/$header.x-tenant/$consumer/$remote_addr/${host}?rid=$request_id&sub=$jwt.sub&n=$jwt.n\n")
        self.gateway(routes=routes)
        self.filter_route(b"/me", IdentityFilter({"sub": "a b", "n": 3}))
        self.send(b"GET /me HTTP/1.1\r\nHost: App.Test:8080\r\nX-Tenant: t/1\r\nX-Request-Id: r=1\r\n\r\n")
        sent, _ = accept_upstream(self.reactor, 0)
        # The client is no trusted proxy: its id is replaced by the gateway's.
        rid = self.gate.gateway.request_ids.prefix + b"-1"
        self.assertTrue(sent.value().startswith(
            b"GET /v/t%2F1/alice/192.0.2.9/app.test?rid=" + rid + b"&sub=a%20b&n=3 HTTP/1.1\r\n"),
            sent.value())
        for request, claims, missing in [
            (b"GET /me HTTP/1.1\r\nHost: x\r\nX-Request-Id: r\r\n\r\n", {"sub": "s", "n": 1}, "$header.x-tenant"),
            (b"GET /me HTTP/1.1\r\nHost: x\r\nX-Tenant: t\r\nX-Request-Id: r\r\n\r\n", {"n": 1}, "$jwt.sub"),
            (b"GET /me HTTP/1.1\r\nHost: x\r\nX-Tenant: t\r\nX-Request-Id: r\r\n\r\n",
             {"sub": ["a"], "n": 1}, "$jwt.sub"),
            (b"GET /me HTTP/1.1\r\nHost: x\r\nX-Tenant: t\r\nX-Request-Id: r\r\n\r\n",
             {"sub": "s", "n": None}, "$jwt.n"),
        ]:
            self.gateway(routes=routes)
            self.filter_route(b"/me", IdentityFilter(claims))
            client, _ = self.send(request)
            self.assertEqual(self.reactor.tcpClients, [], missing)
            self.assertEqual(self.document(client), (200, {"me": None, "errors": {"me": "missing " + missing}}))

    def test_hostile_part_values(self):
        """
        A value read from an earlier part is used only when it is a scalar
        (string, number, boolean); null, objects, lists and absent paths
        make the dependent part fail with C{"missing $part..."}; list
        indexes work; strings are encoded into the query value.
        """
        routes = ("[route:me]\npath = /me\naggregate = a: users GET /a\n"
                  "            b: orders GET /b?v=$part.a.x.0\n")
        cases = [
            ({"x": ["q&r=1"]}, b"/b?v=q%26r%3D1"),
            ({"x": [12]}, b"/b?v=12"),
            ({"x": [True]}, b"/b?v=true"),
            ({"x": [1.5]}, b"/b?v=1.5"),
            ({"x": [None]}, None),
            ({"x": [{"y": 1}]}, None),
            ({"x": [[1]]}, None),
            ({"x": []}, None),
            ({"x": {"0": "k"}}, b"/b?v=k"),
            ({"x": "abc"}, None),
            ([], None),
        ]
        for document, expected in cases:
            self.gateway(routes=routes)
            client, _ = self.send(b"GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
            _, a = accept_upstream(self.reactor, 0)
            a.dataReceived(json_response(document))
            if expected is None:
                self.assertEqual(len(self.reactor.tcpClients), 1, document)
                self.assertEqual(self.document(client), (200, {
                    "a": document, "b": None, "errors": {"b": "missing $part.a.x.0"}}), document)
                continue
            sent, _ = accept_upstream(self.reactor, 1)
            self.assertTrue(sent.value().startswith(b"GET " + expected + b" HTTP/1.1\r\n"), (document, sent.value()))


class LegacyServerAggregateTests(AggregateTerminalTests):
    """
    The same through twisted.web's server channel.
    """

    http_server = "twisted"
