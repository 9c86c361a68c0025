"""
A worker's HTTP side in memory, for tests: a Gateway and a listener factory
fed through L{StringTransport}s on a L{MemoryReactorClock}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gatelayer.config import parse_config_text
from gatelayer.http.factory import GatewayHTTPFactory
from gatelayer.http.gateway import Gateway
from gatelayer.http1 import RESPONSE, ChunkedDecoder, parse_response_head


class InMemoryGateway:
    """
    A gateway for C{config_text} whose connections are in memory.

    @ivar reactor: the L{MemoryReactorClock} everything runs on (advance it
        to fire timeouts).
    """

    def __init__(self, config_text, path="gate.ini", reactor=None, upstreams=None, master=None,
                 with_upstreams=False, metrics=False, spans=None):
        """
        @param with_upstreams: build the config's upstream pools on the
            memory reactor (their connections show in C{reactor.tcpClients}).
        @param metrics: give the gateway a
            L{gatelayer.observe.metrics.WorkerMetrics} (C{self.metrics}).
        @param spans: the gateway's span recorder (see
            L{gatelayer.observe.otel.SpanRecorder}), or L{None}.
        """
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        self.config = parse_config_text(config_text, path, cpu_count=1)
        if with_upstreams:
            from gatelayer.process.worker import build_upstreams
            upstreams = build_upstreams(self.config, self.reactor)
        self.metrics = None
        if metrics:
            from gatelayer.observe.metrics import WorkerMetrics
            self.metrics = WorkerMetrics(self.reactor.seconds)
        self.gateway = Gateway(self.config, self.reactor, master=master, upstreams=upstreams,
                               metrics=self.metrics, spans=spans)
        listener = self.config.listeners[0]
        self.factory = GatewayHTTPFactory(self.gateway, listener, self.reactor)

    def connect(self, peer="127.0.0.1"):
        """
        Open a connection; returns C{(channel, transport)}.
        """
        channel = self.factory.buildProtocol(None)
        transport = StringTransport(
            peerAddress=IPv4Address("TCP", peer, 40000), hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel.makeConnection(transport)
        return channel, transport

    def exchange(self, data, peer="127.0.0.1"):
        """
        Send C{data} on a new connection; returns what the gateway wrote.
        """
        channel, transport = self.connect(peer)
        channel.dataReceived(data)
        return transport.value()


def accept_upstream(reactor, index=-1):
    """
    Complete the upstream connection attempt C{index} of C{reactor} (a
    L{MemoryReactorClock} an upstream pool connects through) with a
    L{StringTransport}; returns C{(transport, protocol)}: what the gateway
    sent is C{transport.value()}, the server's answer is fed to
    C{protocol.dataReceived}.
    """
    host, port, factory, _, _ = reactor.tcpClients[index]
    protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(transport)
    return transport, protocol


def feed(protocol, data, bytewise=False):
    """
    Give C{data} to C{protocol}: whole, or one byte per C{dataReceived}
    call, as request-smuggling tables are sent both ways. The method is
    looked up for each byte, so bytes after a protocol switch reach the
    new handler.
    """
    if not bytewise:
        protocol.dataReceived(data)
        return
    for i in range(len(data)):
        protocol.dataReceived(data[i:i + 1])


def set_filters(gateway, route, filters, timeouts=(), clock=None):
    """
    Give the built route C{route} of C{gateway} (a
    L{gatelayer.http.gateway.RouteRuntime}) the filters C{filters}: the
    request phase and the exchange's responder both see them.

    @param timeouts: the filters' C{timeout}s (one per filter, L{None} for
        none), timed with C{clock}.
    """
    from gatelayer.chain import RouteChain
    filters = tuple(filters)
    object.__setattr__(route, "filters", filters)
    object.__setattr__(route, "chain", RouteChain.build(
        filters, gateway._server_header, gateway.request_id_header, timeouts, clock))


def with_server(config_text, http_server):
    """
    C{config_text} with C{[gateway] http_server} set (C{"gatelayer"} or
    C{"twisted"}): how a test class runs once per server channel.
    """
    return config_text.replace("[gateway]\n", "[gateway]\nhttp_server = %s\n" % (http_server,), 1)


def parse_response(data):
    """
    Split one HTTP response into C{(status, headers dict of lower-case
    names to lists, body)}; chunked bodies are decoded (as far as they
    go). The head and the chunks are read by the upstream client's strict
    parser (L{gatelayer.http1}), so a test also fails when the gateway
    writes a response its own client would refuse.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    status, _, pairs, _, _, chunked, _, _ = parse_response_head(head)
    headers = {}
    for name, value in pairs:
        headers.setdefault(name.lower(), []).append(value)
    if chunked:
        pieces, _ = ChunkedDecoder(RESPONSE).feed(body)
        body = b"".join(pieces)
    return status, headers, body


def error_document(body, headers):
    """
    The gateway's JSON error C{body} as a dict without its C{request_id},
    after checking that id is the one the response's C{X-Request-Id}
    header (in C{headers}, as L{parse_response} gives them) carries.
    """
    import json

    document = json.loads(body)
    request_id = document.pop("request_id", None)
    if request_id is None or [request_id.encode("ascii")] != headers.get(b"x-request-id"):
        raise AssertionError("error body request id %r, header %r"
                             % (request_id, headers.get(b"x-request-id")))
    return document


def split_responses(data):
    """
    Split the concatenated responses of one connection (pipelined
    requests) into a list of L{parse_response} results, each framed by its
    Content-Length (none: no body) or its chunks, read by the framing
    package as the upstream client reads them.
    """
    responses = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("incomplete response head: %r" % (data[:80],))
        status, _, pairs, _, length, chunked, _, _ = parse_response_head(data[:end])
        headers = {}
        for name, value in pairs:
            headers.setdefault(name.lower(), []).append(value)
        rest = data[end + 4:]
        if chunked:
            pieces, data = ChunkedDecoder(RESPONSE).feed(rest)
            if data is None:
                raise ValueError("incomplete chunked body")
            body = b"".join(pieces)
        else:
            body, data = rest[:length or 0], rest[length or 0:]
        responses.append((status, headers, body))
    return responses
