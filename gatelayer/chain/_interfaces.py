"""
The seams of the chain: filters, the optional response-body hook of a
filter, terminals, and the body sink a terminal writes a response to.
"""

from zope.interface import Attribute, Interface


class IFilter(Interface):
    """
    One step of a route's filter chain, built once per worker from a
    C{[filter:NAME]} section and shared by every request of every route that
    lists it.
    """

    name = Attribute("The filter's section name, e.g. C{per-client} for [filter:per-client].")

    def on_request(exchange):
        """
        Inspect or change the request in C{exchange} (an L{Exchange}).

        @return: L{None} to go on to the next filter; a L{Reply} to answer at
            once (the remaining filters and the terminal are skipped); a
            L{Deferred} firing with either; or a coroutine (C{async def}),
            run as one. Synchronous results are preferred on the hot path:
            they cost no Deferred and no timer. An asynchronous result is
            waited for at most the filter's C{timeout}; raising, failing or
            timing out answers the request with the gateway's 500 problem.
        """

    def on_response(exchange):
        """
        Called on the way back (reverse order) for every filter whose
        C{on_request} ran, before the response head is written: add to
        C{exchange.response_headers}. Must not block; returns nothing.
        Raising replaces the response with the gateway's 500 problem (the
        response it was to shape is not sent).
        """


class IBodyFilter(IFilter):
    """
    A filter that also sees the response body: the hook compression, cache
    store and response transformation use.

    Optional: whether a filter provides it is checked once, when a route's
    chain is built (L{gatelayer.chain.RouteChain.build}), never per chunk;
    a filter that only provides L{IFilter} costs the body path nothing. The
    hooks of the filters whose C{on_request} ran are called in reverse
    order (the filter nearest the terminal first), synchronously for each
    chunk, so back-pressure from the client still reaches the terminal's
    producer unchanged.
    """

    preserves_length = Attribute(
        "True when C{on_response_body} never changes how many bytes go out (a filter that only "
        "observes, or rewrites bytes one for one); False makes the responder drop the response's "
        "Content-Length, so the body is framed by chunked encoding (or by closing the connection "
        "for an HTTP/1.0 client).")

    def on_response_body(exchange, data):
        """
        Transform or observe one chunk of the response body.

        @param data: the chunk (bytes) as produced by the terminal and the
            filters nearer to it.
        @return: the bytes to pass on (may be empty, to hold data back);
            L{None} holds it back without sending the response head, so a
            filter holding the whole body may still change the head at the
            end, or answer in the terminal's place
            (L{gatelayer.chain.Exchange.answer_instead}).
        """

    def on_response_end(exchange):
        """
        The body is complete: return any bytes still held back (or C{b""});
        L{None} once the filter answered in the terminal's place.
        """


class ILogFilter(IFilter):
    """
    A filter that also has a log phase: called once per request whose
    request phase it ran, when the request is over (the response finished
    or the client went away), after the access log line; for counting,
    auditing or releasing what the request held.

    Optional, like L{IBodyFilter}: checked once when a route's chain is
    built. The hooks run in reverse order; one that raises is logged with
    its filter's name and the others still run (the response is gone: there
    is nothing left to answer).
    """

    def on_log(exchange):
        """
        The request of C{exchange} is over; C{exchange.status} is the status
        sent (0 when the client went away first). Returns nothing.
        """


class IExchange(Interface):
    """
    What a filter may read and change of a request and its response: the
    stable part of L{gatelayer.chain.Exchange} (its other attributes serve
    the gateway and may change between versions).
    """

    method = Attribute("The request method, bytes (C{b\"GET\"}).")
    path = Attribute("The normalized request path without the query, bytes.")
    query = Attribute("The query string without C{?}, bytes (may be empty).")
    headers = Attribute(
        "The request headers (a L{twisted.web.http_headers.Headers}); what a filter sets or removes is "
        "what goes upstream.")
    client_ip = Attribute("The client address, resolved through the gateway's trusted proxies (text).")
    peer_ip = Attribute("The address of the TCP peer (text).")
    scheme = Attribute("C{\"http\"} or C{\"https\"}.")
    host = Attribute("The requested host, lower case, without port (text; may be empty).")
    route = Attribute("The name of the matched route.")
    request_id = Attribute("The request's id (bytes), as returned to the client and logged.")
    context = Attribute("A dict of facts filters pass to later filters (C{\"consumer\"}, ...).")
    response_headers = Attribute(
        "A list of C{(name, value)} byte pairs added to the response; a filter appends to it in any phase "
        "before the head is sent.")
    status = Attribute("The response status once known (response, body and log phases), else 0.")
    body = Attribute("The request body: a file object positioned at its start.")
    trailers = Attribute("The trailer fields of a chunked request body, C{(name, value)} byte pairs.")

    def body_length():
        """
        How many request body bytes there are.
        """

    def replace_body(data):
        """
        Send C{data} (bytes) upstream instead of the client's request body.
        """


class IBodySink(Interface):
    """
    Where a terminal writes a response body once L{Exchange.respond} has
    set its head: the bytes pass through the response-body phase to the
    client connection.
    """

    closed = Attribute(
        "True once the response finished or the client went away; writes are then ignored.")

    def write(data):
        """
        Send body bytes (the response head goes out with the first).
        """

    def finish():
        """
        End the response (nothing happens if the client is gone or the
        response already ended).
        """

    def register_producer(producer):
        """
        Register the push producer (an L{twisted.internet.interfaces.IPushProducer})
        of the body: the connection pauses and resumes it as the client reads.
        """

    def unregister_producer():
        """
        Forget the registered producer, if any.
        """

    def abort(flush=False):
        """
        Cut the client connection without finishing the response, so the
        client sees a truncated body rather than a desynchronized connection
        (a server's response broken off mid-body, a file that shrank).

        @param flush: send what was already written first (close) rather
            than dropping it (abort).
        """


class ITerminal(Interface):
    """
    The end of a route: proxy, direct response, static files. It answers
    through the exchange (L{Exchange.respond}, L{Exchange.send},
    L{Exchange.reply_error})
    and knows nothing of filters.
    """

    def serve(exchange):
        """
        Answer the request C{exchange} describes.
        """
