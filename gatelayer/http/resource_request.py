"""
The request a twisted.web resource mounted on a route sees: a
L{twisted.web.server.Request} built over the route's exchange rather than
a connection.

twisted.web's own logic stays in charge of what a resource relies on:
query and form arguments (C{requestReceived}), cookies, C{render} (HEAD,
C{NOT_DONE_YET}, 405 and 501 for methods a resource lacks), redirects,
URL helpers and C{notifyFinish}. What the connection did is replaced: the
response head and body go through the exchange (C{respond}, then its body
sink), so the route's filters, the access log and the metrics see the
response as they see any terminal's, and the client's going away reaches
the resource as C{notifyFinish}'s errback and its producer's
C{stopProducing}.
"""

from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import getChildForRequest
from twisted.web.server import Request

from gatelayer.http.resource_producers import PullAsPush, StopOnce

__all__ = ["ResourceRequest"]

# Framing is the gateway's: a resource's own hop-by-hop headers are dropped.
_HOP_BY_HOP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
    b"upgrade",
])
_NO_CONTENT_TYPE = (204, 304)


class _Channel:
    """
    What L{twisted.web.http.Request} asks of its channel: the addresses,
    the transport, whether it is secure, how to refuse a malformed form
    body and how to drop the connection.
    """

    site = None

    def __init__(self, request, exchange):
        self._request = request
        self._exchange = exchange
        gateway_request = exchange.request
        self.transport = gateway_request.transport
        self._host = gateway_request.getHost()
        peer = gateway_request.client
        self._peer = _client_address(peer, exchange.client_ip)

    def getPeer(self):
        """
        The client's address: the one resolved through the gateway's
        C{trusted_proxies} (with the connection's port), as the access log
        shows it.
        """
        return self._peer

    def getHost(self):
        """
        The gateway's end of the client connection.
        """
        return self._host

    def isSecure(self):
        """
        Whether the client came over TLS.
        """
        return self._exchange.scheme == "https"

    def _respondToBadRequestAndDisconnect(self):
        # twisted.web's name for a multipart body it cannot parse.
        self._request.refuse_form()

    def loseConnection(self):
        """
        Close the client connection once what was written is sent.
        """
        self._exchange.abort(flush=True)


def _client_address(peer, client_ip):
    """
    The address object of C{client_ip} (text), keeping C{peer}'s port; the
    peer itself when they agree.
    """
    if peer is not None and getattr(peer, "host", None) == client_ip:
        return peer
    port = getattr(peer, "port", 0)
    kind = IPv6Address if ":" in client_ip else IPv4Address
    return kind("TCP", client_ip, port)


class ResourceRequest(Request):
    """
    A L{twisted.web.server.Request} answering through an exchange (see
    the module's docstring).

    @ivar exchange: the request's L{gatelayer.chain.Exchange}.
    @ivar route: the name of the route the resource is mounted on.
    """

    _log = Logger(namespace="gatelayer.resource")

    def __init__(self, exchange, root, prefix_length, route):
        """
        @param exchange: the exchange to read the request from and answer
            through.
        @param root: the route's resource.
        @param prefix_length: how many path segments the route's C{path}
            has: they go into C{prepath}, the rest into C{postpath}.
        @param route: the route's name, for the log.
        """
        Request.__init__(self, _Channel(self, exchange), parsePOSTFormSubmission=True)
        self.exchange = exchange
        self.route = route
        self._root = root
        self._prefix_length = prefix_length
        self._sink = None
        self._push = None
        self._announced = None
        self.requestHeaders = exchange.headers
        self.sitepath = []

    def start(self):
        """
        Read the request as twisted.web's channel would hand it over
        (arguments from the query and a form body, cookies), then find the
        resource and render it.
        """
        exchange = self.exchange
        exchange.on_client_lost(self._client_lost)
        content = exchange.body
        if content is None:
            content = BytesIO()
        self.content = content
        # requestReceived takes the body's length from the file's position.
        content.seek(0, 2)
        self.parseCookies()
        uri = exchange.path + b"?" + exchange.query if exchange.query else exchange.path
        try:
            self.requestReceived(exchange.method, uri, exchange.request.clientproto)
        except Exception:
            # Reading the body's arguments failed before the resource ran.
            self.processingFailed(Failure())

    def process(self):
        """
        Split the path into C{prepath} (the route's own segments) and
        C{postpath}, each segment percent-decoded as twisted.web does, then
        render the resource C{getChildForRequest} finds.
        """
        segments = [unquote_to_bytes(segment) for segment in self.path[1:].split(b"/")]
        self.prepath = segments[:self._prefix_length]
        self.postpath = segments[self._prefix_length:]
        try:
            self.render(getChildForRequest(self._root, self))
        except Exception:
            self.processingFailed(Failure())

    def processingFailed(self, reason):
        """
        The resource raised (while rendering, or later through a Deferred
        that reports it here, as Klein does): log it with the traceback and
        answer the gateway's 500 (no traceback to the client), or cut the
        connection when the head is already out.
        """
        self._log.failure(
            "the resource of route {route} failed on {path} (request {request_id})",
            failure=reason, route=self.route, path=self.path,
            request_id=self.exchange.request_id.decode("ascii", "replace"))
        if self.finished or self._disconnected:
            return reason
        self.finished = 1
        self._forget_producer()
        if self._sink is None:
            self.exchange.reply_error(500, "internal error in the route's resource")
            self._notify(None)
        else:
            self.exchange.abort()
            self._notify(reason)
        return reason

    def refuse_form(self):
        """
        A multipart form body that cannot be parsed: 400, the resource is
        not rendered.
        """
        self.finished = 1
        self.exchange.reply_error(400, "the request's form body is malformed")
        self._notify(None)

    def getSession(self, sessionInterface=None, forceNotSecure=False):
        """
        Not available: a route's resource runs in every worker, and
        twisted.web's sessions live in one process's memory.
        """
        raise NotImplementedError(
            "twisted.web sessions are not available to a gateway route's resource: keep the state "
            "in a signed cookie or a shared store")

    # -- the response ------------------------------------------------------

    def write(self, data):
        """
        Send body bytes through the exchange; the first write sends the
        head (status, headers, cookies). Dropped once the response is over
        or the client went away; a HEAD response's body is dropped here.
        """
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            if self.code not in _NO_CONTENT_TYPE and self.defaultContentType is not None \
                    and not self.responseHeaders.hasHeader(b"content-type") \
                    and self.responseHeaders.getRawHeaders(b"content-length") != [b"0"]:
                self.responseHeaders.setRawHeaders(b"content-type", [self.defaultContentType])
            if self._inFakeHead:
                return
            self._start()
        push = self._push
        if push is not None and push.__class__ is PullAsPush:
            push.wrote()
        if data and self.method != b"HEAD" and not self._inFakeHead:
            announced = self._announced
            if announced is not None and self.sentLength + len(data) > announced:
                # Bytes past the announced length would be read as the
                # start of the connection's next response.
                self._log.warn("the resource of route {route} wrote more than the {length} bytes it "
                               "announced on {path}: cut", route=self.route, length=announced, path=self.path)
                data = data[:announced - self.sentLength]
                if not data:
                    return
            self.sentLength += len(data)
            self._sink.write(data)

    def finish(self):
        """
        End the response (the head first, if nothing was written). Ignored
        once it is over or the client went away.
        """
        if self.finished or self._disconnected:
            return
        if not self.startedWriting:
            self._start()
        self.finished = 1
        self._forget_producer()
        announced = self._announced
        if announced is not None and self.sentLength < announced:
            # Finishing would leave the client waiting for the missing
            # bytes, or reading the next response as them: close instead.
            self._log.warn("the resource of route {route} announced {length} bytes on {path} but wrote "
                           "{sent}: connection closed", route=self.route, length=announced, path=self.path,
                           sent=self.sentLength)
            self.exchange.abort(flush=True)
        else:
            self._sink.finish()
        self._notify(None)

    def registerProducer(self, producer, streaming):
        """
        Register the producer of the response body: a push producer is
        handed to the connection (paused and resumed as the client reads);
        a pull producer is pulled chunk by chunk the same way.
        """
        if self.producer is not None:
            raise ValueError(
                f"registering producer {producer!r} before the previous one ({self.producer!r}) "
                "was unregistered")
        self.producer = producer
        self.streamingProducer = streaming
        push = self._push = StopOnce(producer) if streaming else PullAsPush(producer)
        if self._disconnected:
            push.stopProducing()
            return
        if self._sink is not None:
            self._sink.register_producer(push)
        if not streaming:
            push.resumeProducing()

    def unregisterProducer(self):
        """
        Forget the registered producer.
        """
        self._forget_producer()

    def notifyFinish(self):
        """
        A L{Deferred} firing when the response is finished, or failing
        when the client went away first (at once when that already
        happened).
        """
        if self._disconnected:
            return fail(Failure(ConnectionDone("the client went away")))
        if self.finished:
            return succeed(None)
        return Request.notifyFinish(self)

    def _start(self):
        """
        Send the head through the exchange: the resource's status and
        headers (its Content-Length as the length, its hop-by-hop headers
        dropped) and its cookies; then the producer, if one waits.
        """
        self.startedWriting = 1
        headers = []
        length = None
        for name, values in self.responseHeaders.getAllRawHeaders():
            lower = name.lower()
            if lower == b"content-length":
                if values[-1].isdigit():
                    length = int(values[-1])
                continue
            if lower not in _HOP_BY_HOP:
                headers.extend((name, value) for value in values)
        headers.extend((b"Set-Cookie", cookie) for cookie in self.cookies)
        if self.code < 200:
            # An interim status would end the exchange without an answer.
            self._log.error("the resource of route {route} answered {code} on {path}: sent as 502",
                            route=self.route, code=self.code, path=self.path)
            self.code = 502
        if self.method != b"HEAD" and self.code not in _NO_CONTENT_TYPE:
            self._announced = length
        self._sink = self.exchange.respond(self.code, headers, length)
        if self._push is not None and not self._sink.closed:
            self._sink.register_producer(self._push)

    def _forget_producer(self):
        push = self._push
        if push is None:
            return
        self._push = self.producer = None
        # Unregistered: nothing stops it any more.
        push.stopped = True
        if self._sink is not None:
            self._sink.unregister_producer()

    def _client_lost(self):
        """
        The client went away: stop the producer, fail C{notifyFinish}.
        """
        if self.finished or self._disconnected:
            return
        self._disconnected = True
        push, self._push = self._push, None
        self.producer = None
        if push is not None:
            push.stopProducing()
        self._notify(Failure(ConnectionDone("the client went away")))

    def _notify(self, result):
        notifications, self.notifications = self.notifications, []
        for d in notifications:
            if result is None:
                d.callback(None)
            else:
                d.errback(result)
