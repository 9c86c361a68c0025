"""
Integration tests of origin hiding and trailers through a real gatelayer
master and worker: in front of an upstream server running as a process of
its own, an application's redirect to its own C{127.0.0.1:PORT} reaches the
client as a redirect to the gateway's host and port, and the headers a
route hides are gone; in front of a raw upstream that keeps the exact bytes
it receives, a chunked response's trailers reach a raw client that sent
C{TE: trailers} (and not one that did not), and a request's declared
trailers reach the upstream.
"""


from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import start_gateway
from gatelayer.testing.http import send_raw
from gatelayer.testing.server import parse_response, with_server
from gatelayer.testing.upstreams import RecordingUpstream, start_upstreams
from tests.integration.test_balancing_gateway import gate_config

ONE_WORKER = ("workers = 2", "workers = 1")


class OriginHidingGatewayTests(TestCase):
    """
    Location, Content-Location and Refresh rewriting and hide_headers,
    end to end.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, routes, http_server="gatelayer"):
        """
        Start an upstream process and a one-worker gateway with C{routes}
        (C{(path, extra keys)} pairs) on it.
        """
        self.upstream, = yield start_upstreams(self, reactor, "app")
        text = gate_config({"app": f"servers = {self.upstream.address}\n"},
                           [(path, "app", extra) for path, extra in routes])
        self.gate = yield start_gateway(self, reactor, with_server(text.replace(*ONE_WORKER), http_server))

    @inlineCallbacks
    def get(self, path, host=b"gw.example:8443"):
        """
        GET C{path} with Host C{host} on a new connection; the parsed
        response.
        """
        data = yield send_raw(reactor, self.gate.address("web"),
                              b"GET " + path + b" HTTP/1.1\r\nHost: " + host
                              + b"\r\nConnection: close\r\n\r\n")
        return parse_response(data)

    @inlineCallbacks
    def test_internal_redirect_rewritten(self):
        """
        The upstream redirects to its own 127.0.0.1:PORT; the client sees
        the Host it used (with its port), path, query and fragment kept,
        on both server channels, and X-Powered-By hidden.
        """
        for http_server in ("gatelayer", "twisted"):
            yield self.start([("/", "hide_headers = X-Powered-By\n")], http_server)
            status, headers, _ = yield self.get(b"/redirect")
            self.assertEqual(status, 302, http_server)
            self.assertEqual(headers[b"location"], [b"http://gw.example:8443/landing?from=redirect#top"])
            self.assertEqual(headers[b"content-location"], [b"http://gw.example:8443/redirect"])
            self.assertEqual(headers[b"refresh"], [b"0; url=http://gw.example:8443/landing"])
            self.assertNotIn(b"x-powered-by", headers)
            self.assertNotIn(self.upstream.address.encode("ascii"), b"".join(
                value for values in headers.values() for value in values))
            yield self.gate.stop()
            yield self.upstream.stop()

    @inlineCallbacks
    def test_prefix_and_opt_out(self):
        """
        Behind strip_prefix the stripped prefix comes back in front of the
        path; a route with rewrite_location = no relays the upstream's own
        address, and without hide_headers X-Powered-By is relayed.
        """
        yield self.start([("/app/", ""), ("/raw/", "rewrite_location = no\n")])
        status, headers, _ = yield self.get(b"/app/redirect", host=b"gw.example")
        self.assertEqual(status, 302)
        self.assertEqual(headers[b"location"], [b"http://gw.example/app/landing?from=redirect#top"])
        self.assertEqual(headers[b"x-powered-by"], [b"upstream-test/1.0"])
        status, headers, _ = yield self.get(b"/raw/redirect")
        self.assertEqual(headers[b"location"], [
            b"http://%s/landing?from=redirect#top" % (self.upstream.address.encode("ascii"),)])


TRAILED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
           b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nSet-Cookie: evil=1\r\nContent-Length: 99\r\n\r\n")


class TrailersGatewayTests(TestCase):
    """
    Trailer fields both ways through a real worker, on both server
    channels.
    """

    timeout = 60

    @inlineCallbacks
    def start(self, http_server):
        """
        A raw upstream answering every request with a chunked response
        with trailers, and a one-worker gateway on it.
        """
        self.upstream = RecordingUpstream(reactor, TRAILED)
        self.upstream.start()
        self.addCleanup(self.upstream.stop)
        text = gate_config({"app": f"servers = {self.upstream.address}\n"}, [("/", "app", "")])
        self.gate = yield start_gateway(self, reactor, with_server(text.replace(*ONE_WORKER), http_server))

    @inlineCallbacks
    def test_response_trailers(self):
        """
        A client that sent TE: trailers gets X-Checksum after the last
        chunk (Set-Cookie and Content-Length never); one that did not gets
        an empty last chunk. Whole and byte by byte.
        """
        for http_server in ("gatelayer", "twisted"):
            yield self.start(http_server)
            for byte_by_byte in (False, True):
                data = yield send_raw(
                    reactor, self.gate.address("web"),
                    b"GET /t HTTP/1.1\r\nHost: gw\r\nTE: trailers\r\nConnection: TE, close\r\n\r\n",
                    byte_by_byte)
                self.assertTrue(data.endswith(b"\r\n0\r\nX-Checksum: abc\r\n\r\n"), (http_server, data))
                self.assertEqual(parse_response(data)[2], b"hello")
                self.assertIn(b"\r\nTE: trailers\r\n", self.upstream.requests[-1])
                data = yield send_raw(reactor, self.gate.address("web"),
                                      b"GET /t HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
                                      byte_by_byte)
                self.assertTrue(data.endswith(b"hello\r\n0\r\n\r\n"), (http_server, data))
                self.assertNotIn(b"TE:", self.upstream.requests[-1])
            yield self.gate.stop()
            yield self.upstream.stop()

    @inlineCallbacks
    def test_request_trailers(self):
        """
        A chunked upload's declared trailer reaches the upstream after the
        body, the undeclared and forbidden ones do not.
        """
        for http_server in ("gatelayer", "twisted"):
            yield self.start(http_server)
            data = yield send_raw(
                reactor, self.gate.address("web"),
                b"POST /up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
                b"Trailer: X-Sum, Host\r\nConnection: close\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\nHost: evil\r\nX-Other: 1\r\n\r\n")
            self.assertEqual(parse_response(data)[0], 200)
            head, _, body = self.upstream.requests[-1].partition(b"\r\n\r\n")
            self.assertIn(b"\r\nTrailer: x-sum\r\n", head)
            self.assertEqual(body, b"5\r\nabcde\r\n0\r\nX-Sum: 5\r\n\r\n")
            yield self.gate.stop()
            yield self.upstream.stop()
