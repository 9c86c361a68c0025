"""
Tests for the resource terminal (L{gatelayer.http.resource}): a
twisted.web resource tree and a Klein app mounted on routes of a worker's
HTTP side in memory, with both server channels.
"""

import gzip
import json
import os

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.static import File
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.chain import IBodyFilter, ITerminal, Reply
from gatelayer.http.resource import ResourceTerminal
from gatelayer.http.resource_producers import PullAsPush, StopOnce
from gatelayer.testing.server import InMemoryGateway, error_document, parse_response, set_filters
from gatelayer.testing.transports import FillingTransport

CONFIG = """
[gateway]
http_server = {server}
trusted_proxies = 127.0.0.1
[listener:web]
bind = 127.0.0.1:8080
[route:app]
path = /app/
resource = gatelayer.testing.resources:tree
[route:top]
path = /
resource = gatelayer.testing.resources:tree
[route:klein]
path = /api
resource = gatelayer.testing.klein_app:app.resource
[filter:gz]
type = compress
encodings = gzip
[route:gz]
path = /gz/
resource = gatelayer.testing.resources:tree
filters = gz
"""


# Request targets on a resource route that the canonical request refuses
# or normalizes before the resource sees them.
HOSTILE_TARGETS = [
    b"/app/../echo/x",
    b"/app/echo/../../../etc/passwd",
    b"/app/%2e%2e/echo",
    b"/app/%2E%2E/%2e%2e/echo",
    b"/app/echo/.%2e/x",
    b"/app/./echo/./x",
    b"/app//echo///x",
    b"/app/echo/a%2fb",
    b"/app/echo/a%2Fb/..%2f..%2fx",
    b"/app/echo/a%5cb",
    b"/app/echo/..%5c..%5cx",
    b"/app/echo/a%00b",
    b"/app/echo/%c0%ae%c0%ae/x",
    b"/app/echo/%ff",
    b"/app/echo/\xc0\xae",
    b"/app/echo/a\\b",
    b"/app/echo/%252e%252e/x",
    b"/app/echo?x=%00&y=../../",
]


def request(method, target, headers=(), body=None):
    """
    The bytes of one HTTP/1.1 request to host C{ex.com}.
    """
    data = method + b" " + target + b" HTTP/1.1\r\nHost: ex.com\r\n"
    for name, value in headers:
        data += name + b": " + value + b"\r\n"
    if body is not None:
        data += b"Content-Length: %d\r\n" % (len(body),)
    return data + b"\r\n" + (body or b"")


@implementer(IBodyFilter)
class MarkingFilter:
    """
    A filter that adds a response header, records the status it saw, and
    upper-cases the body (keeping its length); with C{answer}, it answers
    the request itself.
    """

    name = "marking"
    preserves_length = True

    def __init__(self, answer=None):
        self.answer = answer
        self.statuses = []

    def on_request(self, exchange):
        """
        Answer with C{answer}, or let the request through.
        """
        return self.answer

    def on_response(self, exchange):
        """
        Record the status, add a header.
        """
        self.statuses.append(exchange.status)
        exchange.response_headers.append((b"x-filtered", b"yes"))

    def on_response_body(self, exchange, data):
        """
        Upper-case the chunk.
        """
        return data.upper()

    def on_response_end(self, exchange):
        """
        Nothing held back.
        """
        return b""


class ResourceTerminalTests(SynchronousTestCase):
    """
    The resource terminal with twisted.web's channel.
    """

    http_server = "twisted"

    def setUp(self):
        self.gate = InMemoryGateway(CONFIG.format(server=self.http_server), metrics=True)

    def route(self, path=b"/app/", method="GET"):
        """
        The built route C{path} is matched to.
        """
        return self.gate.gateway.table.match("ex.com", path, method).route

    def tree(self, path=b"/app/"):
        """
        The resource tree mounted on the route of C{path}.
        """
        return self.route(path).terminal.resource

    def get(self, method, target, headers=(), body=None):
        """
        One request on a new connection: C{(status, headers, body)}.
        """
        return parse_response(self.gate.exchange(request(method, target, headers, body)))

    def echo(self, method, target, headers=(), body=None):
        """
        The echo resource's report of one request, after checking it
        answered 200.
        """
        status, _, answer = self.get(method, target, headers, body)
        self.assertEqual(status, 200, answer)
        return json.loads(answer)

    # -- the request the resource sees -------------------------------------

    def test_terminal(self):
        """
        The terminal provides L{ITerminal}, holds the resource the factory
        made (one per route) and knows how many segments the route's path
        has.
        """
        terminal = self.route().terminal
        verifyObject(ITerminal, terminal)
        self.assertIsInstance(terminal, ResourceTerminal)
        self.assertEqual(terminal.prefix_length, 1)
        self.assertEqual(self.route(b"/elsewhere").terminal.prefix_length, 0)
        self.assertIsNot(terminal.resource, self.tree(b"/elsewhere"))

    def test_prepath_postpath(self):
        """
        The route's prefix is in C{prepath}, with the segments the tree
        consumed; the rest is in C{postpath}; C{uri} and C{path} are the
        canonical target.
        """
        seen = self.echo(b"GET", b"/app/echo/x/y%20z?a=1")
        self.assertEqual(seen["prepath"], ["app", "echo"])
        self.assertEqual(seen["postpath"], ["x", "y z"])
        self.assertEqual(seen["path"], "/app/echo/x/y%20z")
        self.assertEqual(seen["uri"], "/app/echo/x/y%20z?a=1")
        self.assertEqual(seen["prepath_url"], "http://ex.com:8080/app/echo")

    def test_root_route(self):
        """
        On a route at C{/} nothing is in C{prepath} but what the tree
        consumed.
        """
        seen = self.echo(b"GET", b"/echo/a")
        self.assertEqual((seen["prepath"], seen["postpath"]), (["echo"], ["a"]))

    def test_canonical_path(self):
        """
        The resource sees the normalized path the route was matched on,
        never the client's spelling.
        """
        seen = self.echo(b"GET", b"/app/x/../echo//b")
        self.assertEqual((seen["prepath"], seen["postpath"]), (["app", "echo"], ["b"]))

    def test_hostile_paths(self):
        """
        A hostile target never reaches the resource as written: the
        gateway refuses it, or the resource sees its canonical form, with
        no dot segment, no separator inside a segment and nothing outside
        the route's prefix.
        """
        for target in HOSTILE_TARGETS:
            with self.subTest(target=target):
                status, _, body = self.get(b"GET", target)
                if status != 200:
                    self.assertIn(status, (400, 404))
                    continue
                try:
                    seen = json.loads(body)
                except ValueError:
                    self.assertEqual(body, b"root of the tree")
                    continue
                segments = seen["prepath"] + seen["postpath"]
                self.assertNotIn("..", segments)
                self.assertNotIn(".", segments)
                self.assertFalse([s for s in segments if "/" in s or "\\" in s or "\x00" in s], segments)
                self.assertTrue(seen["path"].startswith(("/app/", "/echo")), seen["path"])

    def test_one_resource_per_route(self):
        """
        The resource is made once when the gateway is built, not per
        request: two requests reach the same object.
        """
        for _ in range(2):
            channel, _ = self.gate.connect()
            channel.dataReceived(request(b"GET", b"/app/later"))
        self.assertEqual(len(self.tree().later.pending), 2)

    def test_index(self):
        """
        The route's path with its slash renders the tree's root.
        """
        self.assertEqual(self.get(b"GET", b"/app/")[::2], (200, b"root of the tree"))

    def test_query_args(self):
        """
        Query arguments are parsed as twisted.web parses them: repeated
        names kept in order, blank values kept.
        """
        seen = self.echo(b"GET", b"/app/echo?a=1&b=&a=2&c=x%20y")
        self.assertEqual(seen["args"], {"a": ["1", "2"], "b": [""], "c": ["x y"]})

    def test_form_body(self):
        """
        A urlencoded POST body joins the query's arguments, and the body is
        still readable from the start.
        """
        seen = self.echo(b"POST", b"/app/echo?q=1", [(b"Content-Type", b"application/x-www-form-urlencoded")],
                         b"b=3&c=4")
        self.assertEqual(seen["args"], {"b": ["3"], "c": ["4"], "q": ["1"]})
        self.assertEqual(seen["body"], "b=3&c=4")

    def test_other_body(self):
        """
        A body that is not a form is the resource's to read, whole; it adds
        no arguments.
        """
        body = json.dumps({"x": [1, 2, 3]}).encode("ascii")
        seen = self.echo(b"PUT", b"/app/echo", [(b"Content-Type", b"application/json")], body)
        self.assertEqual((seen["method"], seen["body"], seen["args"]), ("PUT", body.decode("ascii"), {}))

    def test_malformed_multipart(self):
        """
        A multipart form body that cannot be parsed is refused with the
        gateway's 400; the resource is not rendered.
        """
        status, headers, body = self.get(
            b"POST", b"/app/echo", [(b"Content-Type", b"multipart/form-data; boundary=xyz")], b"not multipart")
        self.assertEqual(status, 400)
        self.assertEqual(error_document(body, headers)["status"], 400)

    def test_request_headers_and_cookies(self):
        """
        Request headers and cookies are read with C{getHeader} and
        C{getCookie}; the Host the request came with is the hostname.
        """
        seen = self.echo(b"GET", b"/app/echo", [(b"X-Test", b"hi"), (b"Cookie", b"a=1; flavour=mint")])
        self.assertEqual((seen["header"], seen["cookie"], seen["hostname"]), ("hi", "mint", "ex.com"))

    def test_response_headers_and_cookies(self):
        """
        The resource's headers and cookies reach the client, with the
        length of the body it returned and the request's id.
        """
        status, headers, body = self.get(b"GET", b"/app/echo")
        self.assertEqual(headers[b"x-resource"], [b"echo"])
        self.assertEqual(headers[b"set-cookie"], [b"seen=yes; Path=/"])
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"content-length"], [b"%d" % (len(body),)])
        self.assertIn(b"x-request-id", headers)

    def test_hop_by_hop_dropped(self):
        """
        Framing and hop-by-hop headers a resource sets are the gateway's
        business: they are dropped, and the response is framed by its
        length.
        """
        data = self.gate.exchange(request(b"GET", b"/app/echo?hop=1"))
        status, headers, body = parse_response(data)
        self.assertEqual(status, 200)
        for name in (b"connection", b"keep-alive", b"transfer-encoding"):
            self.assertNotIn(name, headers)
        self.assertEqual(headers[b"x-resource"], [b"echo"])
        self.assertEqual(json.loads(body)["method"], "GET")

    def test_addresses(self):
        """
        C{getClientAddress} is the client as resolved through the trusted
        proxies (with the connection's port); C{getHost} is the listener's
        end; the request is not secure on a plain listener.
        """
        seen = self.echo(b"GET", b"/app/echo", [(b"X-Forwarded-For", b"203.0.113.9")])
        self.assertEqual(seen["client"], ["203.0.113.9", 40000])
        self.assertEqual((seen["host_port"], seen["secure"]), (8080, False))
        seen = self.echo(b"GET", b"/app/echo", [(b"X-Forwarded-For", b"2001:db8::7")])
        self.assertEqual(seen["client"], ["2001:db8::7", 40000])
        self.assertEqual(self.echo(b"GET", b"/app/echo")["client"], ["127.0.0.1", 40000])

    # -- rendering ---------------------------------------------------------

    def test_head(self):
        """
        HEAD is answered with the head GET would have (its length
        included) and no body, as twisted.web does.
        """
        _, get_headers, get_body = self.get(b"GET", b"/app/echo")
        data = self.gate.exchange(request(b"HEAD", b"/app/echo"))
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertEqual(rest, b"")
        self.assertIn(b"HTTP/1.1 200 ", head)
        lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        self.assertEqual(lengths, [b"Content-Length: %d" % (len(get_body) + len(b"HEAD") - len(b"GET"),)])

    def test_unsupported_method(self):
        """
        A method the resource lacks is twisted.web's 405 with C{Allow}
        (or 501 for a method twisted.web does not know).
        """
        status, headers, _ = self.get(b"POST", b"/app/", body=b"")
        self.assertEqual(status, 405)
        self.assertIn(b"GET", headers[b"allow"][0])
        self.assertEqual(self.get(b"DELETE", b"/app/")[0], 501)

    def test_not_found(self):
        """
        A child the tree does not have is twisted.web's 404 page.
        """
        self.assertEqual(self.get(b"GET", b"/app/nothing/here")[0], 404)

    def test_redirect(self):
        """
        C{request.redirect} answers 302 with the Location it was given.
        """
        status, headers, _ = self.get(b"GET", b"/app/moved")
        self.assertEqual(status, 302)
        self.assertEqual(headers[b"location"], [b"http://ex.com:8080/app/echo"])

    def test_deferred_render(self):
        """
        A resource answering C{NOT_DONE_YET} answers when it likes: nothing
        is written before, the whole response after.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/later"))
        self.assertEqual(transport.value(), b"")
        held = self.tree().later.pending.pop()
        finished = held.notifyFinish()
        held.setResponseCode(202)
        held.write(b"late ")
        held.write(b"answer")
        self.assertNoResult(finished)
        held.finish()
        self.assertIsNone(self.successResultOf(finished))
        self.assertEqual(parse_response(transport.value())[::2], (202, b"late answer"))
        self.assertEqual(self.gate.gateway.active, 0)
        held.write(b"after the end")
        held.finish()
        self.assertEqual(parse_response(transport.value())[2], b"late answer")

    def test_raises(self):
        """
        A resource that raises gets the gateway's 500 JSON error (no
        traceback, no detail) and the failure is logged.
        """
        status, headers, body = self.get(b"GET", b"/app/boom")
        self.assertEqual(status, 500)
        self.assertEqual(error_document(body, headers)["status"], 500)
        self.assertNotIn(b"secret", body)
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_fails_after_head(self):
        """
        A failure reported once the head is out cuts the connection (the
        client sees a truncated response, not a wrong one).
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/later"))
        held = self.tree().later.pending.pop()
        held.write(b"partial")
        held.processingFailed(Failure(ValueError("late failure")))
        self.assertTrue(transport.disconnecting or getattr(transport, "disconnected", False))
        self.assertIn(b"partial", transport.value())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_short_body_closes(self):
        """
        A resource finishing before it wrote the Content-Length it
        announced gets its connection closed after what it wrote: never a
        finished response the client would wait on or misread.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/later"))
        held = self.tree().later.pending.pop()
        held.setHeader(b"content-length", b"10")
        held.write(b"1234")
        held.finish()
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.value().endswith(b"\r\n\r\n1234"))
        self.assertIn(b"Content-Length: 10\r\n", transport.value())

    def test_long_body_cut(self):
        """
        Bytes past the announced Content-Length are not sent: the
        response ends where it said, and the connection serves the next
        request.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/later"))
        held = self.tree().later.pending.pop()
        held.setHeader(b"content-length", b"6")
        held.write(b"123")
        held.write(b"456789")
        held.write(b"more")
        held.finish()
        self.assertEqual(parse_response(transport.value())[::2], (200, b"123456"))
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(request(b"GET", b"/app/"))
        self.assertTrue(transport.value().endswith(b"root of the tree"))

    def test_client_gone(self):
        """
        When the client goes away, C{notifyFinish} fails with
        L{ConnectionDone}, and what the resource writes afterwards is
        dropped without error.
        """
        channel, transport = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/watched"))
        watched = self.tree().watched
        held = watched.pending.pop()
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(watched.outcomes, ["ConnectionDone"])
        self.failureResultOf(held.notifyFinish(), ConnectionDone)
        held.write(b"nobody listens")
        held.finish()
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.gate.gateway.active, 0)

    def test_finished_notification(self):
        """
        C{notifyFinish} fires when the resource finishes, and at once for
        a request already finished.
        """
        channel, _ = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/watched"))
        watched = self.tree().watched
        held = watched.pending.pop()
        held.finish()
        self.assertEqual(watched.outcomes, ["finished"])
        self.assertIsNone(self.successResultOf(held.notifyFinish()))

    def test_sessions_refused(self):
        """
        C{getSession} says why sessions are not available.
        """
        channel, _ = self.gate.connect()
        channel.dataReceived(request(b"GET", b"/app/later"))
        held = self.tree().later.pending.pop()
        error = self.assertRaises(NotImplementedError, held.getSession)
        self.assertIn("sessions", str(error))

    # -- streaming ---------------------------------------------------------

    def test_push_producer_back_pressure(self):
        """
        A resource's push producer is paused while the client's buffer is
        full and resumed as it drains; the whole body arrives, chunked.
        """
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=16384)
        channel.makeConnection(transport)
        channel.dataReceived(request(b"GET", b"/app/stream?chunks=40&size=4096"))
        producer = self.tree().stream.producers[-1]
        self.assertTrue(transport.paused)
        self.assertLess(producer.sent, 40)
        rounds = 0
        while transport.paused:
            self.assertLessEqual(len(transport.value()) - transport.drained, 16384 + 4096 + 1024)
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 100)
        self.assertGreaterEqual(producer.pauses, 5)
        status, headers, body = parse_response(transport.value())
        self.assertEqual(status, 200)
        self.assertEqual(body, b"".join(bytes([97 + i % 26]) * 4096 for i in range(40)))
        self.assertNotIn(b"content-length", headers)

    def test_push_producer_client_gone(self):
        """
        A client that goes away mid-stream stops the resource's producer,
        which wrote no more than the buffer let it.
        """
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=8192)
        channel.makeConnection(transport)
        channel.dataReceived(request(b"GET", b"/app/stream?chunks=100&size=4096"))
        producer = self.tree().stream.producers[-1]
        sent = producer.sent
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(producer.stopped)
        self.assertLess(sent, 10)
        self.assertEqual(producer.sent, sent)
        self.assertEqual(self.gate.gateway.active, 0)

    def test_pull_producer(self):
        """
        twisted.web's L{File} (a pull producer) streams a large file with
        back-pressure: it is asked for more only as the client drains.
        """
        root = self.mktemp()
        os.makedirs(root)
        data = os.urandom(300000)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(data)
        self.route().terminal.resource = File(root)
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=65536)
        channel.makeConnection(transport)
        channel.dataReceived(request(b"GET", b"/app/big.bin"))
        rounds = 0
        while transport.paused:
            self.assertLessEqual(len(transport.value()) - transport.drained, 65536 + 65536 + 1024)
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 100)
        self.assertGreaterEqual(rounds, 3)
        status, headers, body = parse_response(transport.value())
        self.assertEqual((status, headers[b"content-length"], body), (200, [b"300000"], data))
        self.assertEqual(self.gate.gateway.active, 0)

    # -- the route's filters ----------------------------------------------

    def test_filters_see_the_response(self):
        """
        The route's filters run around the resource: their response-head
        phase sees its status, their body hook its body.
        """
        marking = MarkingFilter()
        set_filters(self.gate.gateway, self.route(), [marking])
        status, headers, body = self.get(b"GET", b"/app/")
        self.assertEqual((status, body), (200, b"ROOT OF THE TREE"))
        self.assertEqual(headers[b"x-filtered"], [b"yes"])
        self.assertEqual(marking.statuses, [200])

    def test_compressed_by_the_route(self):
        """
        A compress filter on the route compresses the resource's answer,
        streamed ones included, as it does any terminal's.
        """
        status, headers, body = self.get(b"GET", b"/gz/echo", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual((status, headers[b"content-encoding"]), (200, [b"gzip"]))
        self.assertEqual(json.loads(gzip.decompress(body))["prepath"], ["gz", "echo"])
        status, headers, body = self.get(b"GET", b"/gz/stream?chunks=8&size=1000", [(b"Accept-Encoding", b"gzip")])
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(gzip.decompress(body), b"".join(bytes([97 + i]) * 1000 for i in range(8)))

    def test_counted(self):
        """
        The log phase counts the resource's answers under the route, with
        the bytes sent.
        """
        self.get(b"GET", b"/app/echo")
        self.get(b"GET", b"/app/nothing")
        snapshot = self.gate.metrics.snapshot()
        counts = {tuple(labels): value for labels, value in snapshot["gatelayer_requests_total"]}
        self.assertEqual(counts, {("app", "-", "GET", "2xx"): 1, ("app", "-", "GET", "4xx"): 1})
        sent = {tuple(labels): value for labels, value in snapshot["gatelayer_sent_bytes_total"]}
        self.assertGreater(sent[("app",)], 200)

    def test_filter_refuses(self):
        """
        A filter answering at once keeps the request from the resource.
        """
        set_filters(self.gate.gateway, self.route(), [MarkingFilter(Reply(401, b"no", ()))])
        status, _, body = self.get(b"GET", b"/app/later")
        self.assertEqual((status, body), (401, b"NO"))
        self.assertEqual(self.tree().later.pending, [])

    # -- Klein -------------------------------------------------------------

    def test_klein_variables(self):
        """
        A Klein app's routes with variables answer JSON under the route's
        prefix, Klein's prepath including the prefix.
        """
        status, headers, body = self.get(b"GET", b"/api/items/2")
        self.assertEqual((status, headers[b"content-type"]), (200, [b"application/json"]))
        self.assertEqual(json.loads(body), {"id": 2, "name": "rope", "prepath": ["api", "items", "2"],
                                            "url": "http://ex.com:8080/api/items/2"})
        status, _, body = self.get(b"GET", b"/api/items/9")
        self.assertEqual((status, json.loads(body)["error"]), (404, "no such item"))
        self.assertEqual(self.get(b"GET", b"/api/users/ann/greeting?p=.")[::2], (200, b"hello ann."))

    def test_klein_body(self):
        """
        A Klein handler reads the request body and sets its status.
        """
        status, _, body = self.get(b"POST", b"/api/items", [(b"Content-Type", b"application/json")],
                                   b'{"name": "bucket"}')
        self.assertEqual((status, json.loads(body)), (201, {"created": {"name": "bucket"}}))

    def test_klein_stream(self):
        """
        A Klein handler streaming with a push producer and returning its
        Deferred: the whole body arrives, paced by the client.
        """
        channel = self.gate.factory.buildProtocol(None)
        transport = FillingTransport(limit=8192)
        channel.makeConnection(transport)
        channel.dataReceived(request(b"GET", b"/api/stream/12"))
        rounds = 0
        while transport.paused:
            transport.drain()
            rounds += 1
            self.assertLess(rounds, 100)
        self.assertGreaterEqual(rounds, 2)
        status, _, body = parse_response(transport.value())
        self.assertEqual((status, len(body)), (200, 12 * 4096))

    def test_klein_failure(self):
        """
        A Klein handler that raises gets the gateway's 500, not Klein's
        page, and the failure is logged; an unknown path is Klein's 404.
        """
        status, headers, body = self.get(b"GET", b"/api/fail")
        self.assertEqual(status, 500)
        self.assertEqual(error_document(body, headers)["status"], 500)
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.get(b"GET", b"/api/nowhere")[0], 404)


class LeanResourceTerminalTests(ResourceTerminalTests):
    """
    The resource terminal with gatelayer's own channel.
    """

    http_server = "gatelayer"


class RecordingPull:
    """
    A pull producer recording its calls; C{on_resume} is what a pull does.
    """

    def __init__(self):
        self.resumes = 0
        self.stops = 0
        self.on_resume = None

    def resumeProducing(self):
        """
        Count the pull and do what the test asked.
        """
        self.resumes += 1
        if self.on_resume is not None:
            self.on_resume()

    def stopProducing(self):
        """
        Count the stop.
        """
        self.stops += 1


class ProducerAdapterTests(SynchronousTestCase):
    """
    The producer adapters the resource request hands the connection
    (L{gatelayer.http.resource_producers}).
    """

    def test_pull_until_paused(self):
        """
        A pull producer writing in each pull is pulled until the
        connection pauses it, and again when resumed.
        """
        pull = RecordingPull()
        push = PullAsPush(pull)
        verifyObject(IPushProducer, push)

        def write():
            push.wrote()
            if pull.resumes == 3:
                push.pauseProducing()
        pull.on_resume = write
        push.resumeProducing()
        self.assertEqual(pull.resumes, 3)
        # Resumed: pull 4 writes, pull 5 does not (it will answer later).
        pull.on_resume = lambda: push.wrote() if pull.resumes < 5 else None
        push.resumeProducing()
        self.assertEqual(pull.resumes, 5)

    def test_pull_answering_later(self):
        """
        A pull producer that writes outside the pull is not spun on: it is
        pulled again when its write arrives.
        """
        pull = RecordingPull()
        push = PullAsPush(pull)
        push.resumeProducing()
        self.assertEqual(pull.resumes, 1)
        push.wrote()
        self.assertEqual(pull.resumes, 2)
        push.pauseProducing()
        push.wrote()
        self.assertEqual(pull.resumes, 2)

    def test_stopped_once(self):
        """
        Stopping reaches the producer once, however many times it is
        asked; a stopped producer is neither pulled nor resumed.
        """
        pull = RecordingPull()
        push = PullAsPush(pull)
        push.stopProducing()
        push.stopProducing()
        push.resumeProducing()
        self.assertEqual((pull.stops, pull.resumes), (1, 0))
        inner = RecordingPull()
        inner.pauseProducing = lambda: None
        once = StopOnce(inner)
        verifyObject(IPushProducer, once)
        once.resumeProducing()
        once.stopProducing()
        once.stopProducing()
        once.resumeProducing()
        self.assertEqual((inner.stops, inner.resumes), (1, 1))
