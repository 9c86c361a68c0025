"""
The interfaces between the upstream client, its pool and the proxy terminal.
"""

from zope.interface import Attribute, Interface

__all__ = ["IResponseSink", "IConnectionOwner", "IStreamedBody"]


class IResponseSink(Interface):
    """
    Where one upstream exchange reports: implemented by the proxy terminal.

    Exactly one of C{connect_failed}, C{response_end} or C{response_failed}
    ends an exchange (none after the handle was cancelled). The sink is never
    called from within L{UpstreamPool.request}, so the caller holds the
    handle before any callback arrives.
    """

    def connect_failed(kind, detail):
        """
        No connection could be had, nothing was sent: safe to retry on another
        server. C{kind} is C{"connect_error"} (refused, unreachable, TLS
        handshake failed), C{"timeout"} (connect_timeout passed) or
        C{"overloaded"} (max_connections reached and the max_pending queue
        full, or the wait in it exceeded connect_timeout). C{detail} is a
        short text for logs.
        """

    def response_head(status, reason, headers):
        """
        The final response head: C{status} (int), C{reason} (bytes) and
        C{headers}, a list of C{(name, value)} byte pairs exactly as received
        (hop-by-hop ones included; filter them before relaying). Interim 1xx
        responses are not reported.
        """

    def response_body(data):
        """
        Some response body bytes (de-chunked), passed on as they arrive.
        """

    def response_trailers(fields):
        """
        The trailer fields of a chunked response, C{(name, value)} byte
        pairs as received (well-formed, within the response limits, none
        filtered out), once, just before C{response_end}; not called for a
        response without trailers.
        """

    def response_end():
        """
        The response body is complete.
        """

    def response_failed(kind, detail):
        """
        The exchange failed after the request was sent: C{kind} is
        C{"timeout"} (no response head within read_timeout, or the body
        stalled that long), C{"bad_response"} (unparseable or conflicting
        framing) or C{"connection_lost"} (closed before the head or in the
        middle of the body). It may come after C{response_head}.
        """


class IConnectionOwner(Interface):
    """
    What an L{HTTP11UpstreamConnection} reports to: the pool's bookkeeping
    for one server.
    """

    def release(connection):
        """
        C{connection} finished a response cleanly and may carry another
        request: give it a queued one, keep it idle, or close it.
        """

    def lost(connection):
        """
        C{connection} is no longer usable (closing, closed, or never
        connected); called once per connection.
        """

    def retry(connection, request):
        """
        C{connection}, a reused one, turned out closed before any response
        byte: it is no longer usable (as with C{lost}) and C{request} must be
        sent again on a fresh connection.
        """

    def closed(connection):
        """
        C{connection}'s transport is gone (or its connection attempt ended);
        called once per connection, after C{lost} or C{retry}.
        """

    def finished(request):
        """
        C{request} reached its end (completed, failed or cancelled); called
        once per request.
        """


class IStreamedBody(Interface):
    """
    A request body that arrives while the request is sent (an HTTP/2
    stream's, L{gatelayer.http2.upload.StreamedBody}): given to
    L{UpstreamPool.request} in place of bytes or a file. It is never resent
    (the request is not idempotent for the pool).

    The connection writes the head (with C{length}, or chunked), registers
    the body as its transport's push producer and calls C{stream_to}; the
    body then writes on C{connection.transport}, calls
    C{connection.body_progress()} after each write and
    C{connection.body_sent()} once complete (the last chunk and trailer
    fields included). C{stopProducing} means the connection gave up.
    """

    length = Attribute("The body's length (int) when known and sent as Content-Length, else L{None}.")
    chunked = Attribute("Whether the body goes chunked (C{length} is then not sent).")
    started = Attribute("Whether C{stream_to} was called (part of the request reached a server).")

    def stream_to(connection):
        """
        The request head is written on C{connection}: write the body there
        as it arrives.
        """
