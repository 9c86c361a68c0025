"""
The request contract: what the gateway, the exchange's responder and the
access log use of a request, whichever server channel made it
(L{gatelayer.http.lean_request.LeanRequest} or
L{gatelayer.http.request.GatewayRequest}), and the routing record the
gateway keeps on it.
"""

from zope.interface import Attribute, Interface

__all__ = ["IGatewayRequest", "RequestRouting"]


class IGatewayRequest(Interface):
    """
    One HTTP request of a worker's server channel, as the gateway sees it:
    the twisted.web names for the request line, headers and response, plus
    the gateway's own public names (C{routing}, C{disconnected},
    C{on_lost}, C{body_length}).
    """

    method = Attribute("The request method (bytes).")
    uri = Attribute("The request target as sent (bytes).")
    path = Attribute("The path: canonical once the request is routed (bytes).")
    query = Attribute("The query string without C{?} (bytes, may be empty).")
    clientproto = Attribute("C{b'HTTP/1.1'} or C{b'HTTP/1.0'}.")
    requestHeaders = Attribute("The request's L{twisted.web.http_headers.Headers}.")
    responseHeaders = Attribute("The response's L{twisted.web.http_headers.Headers}.")
    content = Attribute("The received body: a file object (L{None} before the body is read).")
    client = Attribute("The peer's address, or L{None}.")
    channel = Attribute("The server channel (its C{factory} has C{scheme}, C{listener}, C{gateway}).")
    transport = Attribute("The connection's transport.")
    code = Attribute("The response status.")
    sentLength = Attribute("How many body bytes were written.")
    startedWriting = Attribute("Whether the response head went out.")
    finished = Attribute("Whether the response is finished.")
    producer = Attribute("The registered push producer of the response body, or L{None}.")
    routing = Attribute(
        "The L{RequestRouting} the gateway made when the head arrived, or L{None} (not routed: "
        "refused before routing).")
    disconnected = Attribute("Whether the client went away before the response finished.")
    trailers = Attribute(
        "The trailer fields of a chunked request body, C{(name, value)} byte pairs as received "
        "(well-formed, within the request limits); empty for none.")

    def body_length():
        """
        How many request body bytes were received.
        """

    def on_lost(callback):
        """
        Call C{callback()} if the client goes away before the response is
        finished (one callback; cheaper than a Deferred per request).
        """

    def setResponseCode(code, message=None):
        """
        Set the status; the reason phrase is always the gateway's own.
        """

    def write(data):
        """
        Send body bytes (the head with the first); ignored once the client
        is gone.
        """

    def finish():
        """
        End the response.
        """

    def set_trailers(fields):
        """
        Send the trailer fields C{fields} (C{(name, value)} byte pairs,
        already checked) after the body, if the response turns out chunked
        (an HTTP/1.1 response without Content-Length); else they are
        dropped. Called before C{finish}.
        """

    def registerProducer(producer, streaming):
        """
        Register the push producer of the response body.
        """

    def unregisterProducer():
        """
        Forget the registered producer.
        """

    def switch_protocols(relay):
        """
        Send the response head (a 101) and hand the connection to C{relay}
        (a L{gatelayer.http.upgrade.Relay}): its bytes both ways are the
        relay's from now on, and the request ends when the connection
        closes.
        """


class RequestRouting:
    """
    What the gateway decided when a request's head arrived: kept on the
    request (C{request.routing}) until the body is in and the request is
    handled.

    @ivar match: the L{gatelayer.routing.RouteMatch}.
    @ivar host: the validated host name (lower case, no port) or C{""}.
    @ivar body_limit: the largest request body accepted, in bytes.
    @ivar gateway: the gateway that routed the request; it is told when the
        request is over (a reload may have replaced the channel's gateway
        meanwhile).
    @ivar log_fields: C{(name, text)} pairs a terminal adds to the
        request's access log line (an aggregate route's C{parts}).

    What the log phase (access log, metrics, traces) reads of the request's
    way, all times in the gateway reactor's seconds:

    @ivar started: when the request's head was routed.
    @ivar upstream_server: the address (C{host:port}) of the last upstream
        server tried, or L{None} when no upstream was called.
    @ivar upstream_started: when the first attempt upstream was sent, or
        L{None}.
    @ivar upstream_first_byte: when the relayed response's head arrived
        from upstream, or L{None}.
    @ivar tries: how many upstream attempts were made (retries are
        C{tries - 1}).
    @ivar upstream_connect: how long the last attempt waited for its new
        upstream connection to become usable, in seconds (C{0.0} on a
        reused one), or L{None} when no response came from upstream.
    @ivar upstream: the name of the upstream called, or L{None}.
    @ivar exchange: the request's L{gatelayer.chain.Exchange} while it is
        answered (what the filters found: the consumer, a rate limit's
        outcome), or L{None}; dropped once the request is logged.
    @ivar request_id: the request's id (bytes; see
        L{gatelayer.observe.requestid.RequestIds}): sent upstream, returned
        to the client, logged.

    @ivar trace: the request's
        L{gatelayer.observe.tracecontext.TraceContext} (the trace it is
        part of and the gateway's span id in it), or L{None}.
    """

    # Class-level defaults rather than slots: a request sets only what its
    # routing decided (what it was sent upstream is set later, if at all).
    log_fields = ()
    upstream_server = None
    upstream_started = None
    upstream_first_byte = None
    tries = 0
    upstream_connect = None
    upstream = None
    exchange = None

    def __init__(self, match, host, body_limit, gateway, started=0.0, request_id=b"", trace=None):
        self.match = match
        self.host = host
        self.body_limit = body_limit
        self.gateway = gateway
        self.started = started
        self.request_id = request_id
        self.trace = trace

    def __repr__(self):
        return "<RequestRouting host=%r limit=%d %r>" % (self.host, self.body_limit, self.match)
