"""
Integration tests of the two server channels: the gateway core's
integration tests (which run with the default, the lean channel) again with
twisted.web's channel, and raw client bytes (pipelining, a chunked upload, a
smuggling attempt) over real sockets to the lean channel.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import TestCase

from gatelayer.testing.gateway import GatewayProcess
from gatelayer.testing.server import parse_response
from gatelayer.testing.upstreams import UpstreamServer
from tests.integration import test_gateway


def with_server(config_text, http_server):
    """
    C{config_text} with C{[gateway] http_server} set.
    """
    return config_text.replace("[gateway]\n", "[gateway]\nhttp_server = %s\n" % (http_server,), 1)


class TwistedChannelIntegrationTests(test_gateway.GatewayIntegrationTests):
    """
    The master, its workers and the proxy, for real, with twisted.web's
    channel (C{http_server = twisted}).
    """

    def start(self, config_text):
        """
        Start the gateway with C{http_server = twisted}.
        """
        return super().start(with_server(config_text, "twisted"))


class _RawClient(Protocol):
    """
    Sends fixed bytes and collects everything until the server closes.
    """

    def __init__(self, data):
        self.data = data
        self.received = []
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.received))


class _RawClientFactory(ClientFactory):
    def __init__(self, protocol):
        self.protocol_instance = protocol

    def buildProtocol(self, addr):
        return self.protocol_instance

    def clientConnectionFailed(self, connector, reason):
        self.protocol_instance.done.errback(reason)


def split_responses(data):
    """
    Split concatenated Content-Length framed responses.
    """
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        responses.append(parse_response(head + b"\r\n\r\n" + rest[:length]))
        data = rest[length:]
    return responses


class LeanRawSocketTests(TestCase):
    """
    Raw HTTP/1.1 over a real socket to a gateway with the lean channel.
    """

    timeout = 60

    @inlineCallbacks
    def start_gateway(self):
        """
        One worker with the lean channel, proxying to one upstream server.
        """
        upstream = UpstreamServer(reactor, "a")
        upstream.start()
        self.addCleanup(upstream.stop)
        self.gate = GatewayProcess(reactor, os.path.abspath(self.mktemp()),
                                   with_server(test_gateway.gate_config([upstream], workers=1), "gatelayer"))
        self.addCleanup(self.gate.stop)
        yield self.gate.start()

    def send(self, data):
        """
        Send raw bytes on a new connection; fires with all that came back.
        """
        host, port = self.gate.address("web")
        client = _RawClient(data)
        reactor.connectTCP(host, port, _RawClientFactory(client))
        return client.done

    @inlineCallbacks
    def test_pipelined_and_chunked_upload(self):
        """
        Pipelined requests (a direct answer, a proxied chunked upload, a
        proxied GET) are answered in order on one connection, the last one
        closing it.
        """
        yield self.start_gateway()
        data = yield self.send(
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses = split_responses(data)
        self.assertEqual([r[0] for r in responses], [200, 200, 200])
        self.assertEqual(responses[0][2], b"hello")
        upload = json.loads(responses[1][2])
        self.assertEqual((upload["method"], upload["uri"], upload["body_length"]), ("POST", "/up", 11))
        self.assertEqual(json.loads(responses[2][2])["uri"], "/last")
        self.assertEqual(responses[2][1][b"connection"], [b"close"])

    @inlineCallbacks
    def test_smuggling_refused(self):
        """
        Content-Length with Transfer-Encoding: 400 and the connection
        closes; the request hidden in the body never reaches the upstream.
        """
        yield self.start_gateway()
        data = yield self.send(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = parse_response(data)
        self.assertEqual(status, 400)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1)
