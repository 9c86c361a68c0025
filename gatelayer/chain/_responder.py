"""
The exchange's responder: how a terminal answers (or the gateway answers
for a filter) without knowing the filters.

L{Responder.respond} sets the response head and runs the response-head
phase of the filters whose request phase ran, once, in reverse order; the
exchange is then the L{IBodySink} the body goes through, chunk by chunk,
via the response-body hooks of the filters that have them (none, usually:
then a chunk costs one attribute test on its way to the connection).
"""

import json

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gatelayer.chain._interfaces import IBodyFilter, IBodySink
from gatelayer.chain._routechain import NO_FILTERS, RouteChain, stored_headers

__all__ = ["FILTER_FAILED", "NO_FILTERS", "PROBLEM_JSON", "Responder", "RouteChain", "error_body"]

_JSON = [b"application/json"]
PROBLEM_JSON = b"application/problem+json"
"""The media type of RFC 9457 problem details."""
FILTER_FAILED = {"type": "about:blank", "title": "Internal Server Error", "status": 500,
                 "detail": "a filter failed"}
"""The problem document of a request a filter failed (raised, errbacked,
timed out): the filter's name and the traceback go to the gateway log, never
to the client, who gets the request id to quote."""
_PROBLEM_HEADERS = ((b"content-type", PROBLEM_JSON),)
_log = Logger(namespace="gatelayer.chain")


def error_body(status, message, request_id=None):
    """
    The JSON body of an error the gateway produces itself (never a
    traceback): C{{"error": message, "status": status}}, with
    C{"request_id"} when the request has one (bytes or text).
    """
    return error_document({"error": message, "status": status}, request_id)


def error_document(data, request_id=None):
    """
    The JSON body of the gateway's error document C{data} (a dict), with
    C{"request_id"} added when the request has one (bytes or text).
    """
    if request_id:
        data = dict(data, request_id=(request_id.decode("ascii", "replace")
                                      if isinstance(request_id, bytes) else request_id))
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def _edit(raw, edits):
    for name, new_name in edits:
        values = raw.getRawHeaders(name)
        if values is None:
            continue
        raw.removeHeader(name)
        if new_name is not None:
            for value in values:
                raw.addRawHeader(new_name, value)


@implementer(IBodySink)
class Responder:
    """
    The responding half of L{gatelayer.chain.Exchange} (a mixin: the
    exchange holds C{request}, C{chain}, C{ran}, C{status},
    C{response_headers}, C{response_header_edits}, C{body_filters},
    C{body_declined}, C{lost_callback} and C{request_id}).

    C{request} provides the gateway's request contract
    (L{gatelayer.http.contract.IGatewayRequest}): C{setResponseCode},
    C{responseHeaders}, C{write}, C{finish}, push producers,
    C{disconnected}, C{finished}, C{on_lost}, C{body_length}, C{content}.
    """

    __slots__ = ()

    # -- answering ---------------------------------------------------------

    def respond(self, status, headers=(), length=None):
        """
        Set the response head: C{status}, C{headers} (C{(name, value)} byte
        pairs, or a L{Headers} whose values the terminal checked: taken as
        the response's headers without a copy, as the proxy relays an
        upstream's), then what the filters that ran add (their C{on_response},
        reverse order, once), the C{Server} header, and a Content-Length of
        C{length} when given (the response-head phase sees it; set again
        last: no filter changes it, unless a body filter changes the
        body's length, which drops it).

        @return: the L{IBodySink} to write the body to (the exchange itself:
            no allocation per response).
        """
        if self._head(status, headers, length):
            return self._filter_failed()
        raw = self.request.responseHeaders
        server = self.chain.server_header
        if server is not None:
            raw.setRawHeaders(b"server", [server])
        if length is not None and (not self.body_filters or not self._drops_length):
            raw.setRawHeaders(b"content-length", [b"%d" % (length,)])
        return self

    def send(self, status, headers, body):
        """
        Answer with a complete body in one call (a direct response, a
        filter's reply, a small file): as C{respond(status, headers,
        len(body))}, then the body is written and the response finished.
        """
        if self._head(status, headers, len(body)):
            self._filter_failed()
            return
        request = self.request
        raw = request.responseHeaders
        server = self.chain.server_header
        if server is not None:
            raw.setRawHeaders(b"server", [server])
        if self.body_filters:
            if not self._drops_length:
                raw.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
            self.write(body)
            self.finish()
            return
        raw.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()

    def reply(self, reply):
        """
        Answer with a complete L{gatelayer.chain.Reply} (a filter's answer).
        An error the gateway made (C{reply.payload}) gets the request's id
        in its document, as the gateway's other errors do.
        """
        body = reply.body
        if reply.payload is not None and self.request_id:
            body = error_document(reply.payload, self.request_id)
        self.send(reply.status, reply.headers, body)

    def reply_error(self, status, message, headers=(), problem=None):
        """
        Answer with the gateway's own short JSON error (nothing happens once
        the client is gone or the response is over). C{headers} are added
        first; the filters' response-head phase runs as for any answer. As
        before the responder existed, the gateway's errors carry no
        C{Server} header.

        @param problem: a problem document (dict) sent as
            C{application/problem+json} in place of C{message}'s error (a
            filter's failure: L{FILTER_FAILED}).
        """
        request = self.request
        if request.disconnected or request.finished:
            return
        if problem is None:
            body, content_type = error_body(status, message, self.request_id), _JSON
        else:
            body, content_type = error_document(problem, self.request_id), [PROBLEM_JSON]
        if self._head(status, headers, len(body)):
            self._filter_failed()
            return
        raw = request.responseHeaders
        raw.setRawHeaders(b"content-type", content_type)
        if not self.body_filters or not self._drops_length:
            raw.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        self.write(body)
        self.finish()

    def switch(self, headers, relay):
        """
        Answer C{101 Switching Protocols} with C{headers} (after the
        filters' response-head phase, as for any answer) and hand the
        client connection to C{relay} (a L{gatelayer.http.upgrade.Relay}):
        from now on its bytes are the new protocol's, not HTTP.
        """
        if self._head(101, headers):
            self._filter_failed()
            return
        server = self.chain.server_header
        if server is not None:
            self.request.responseHeaders.setRawHeaders(b"server", [server])
        self.request.switch_protocols(relay)

    def answer_instead(self, status, headers, body):
        """
        Answer with a complete response in place of the terminal's, from a
        response-body hook that has held back every byte so far (so the
        head is not out): a body transformation that finds the body too
        large or unusable answers with its own error. The head is replaced
        (C{headers}, then what filters added to C{response_headers}, and
        the body's length); the body-phase hooks are not run on it. The
        terminal is stopped as if the client had gone away (its
        C{on_client_lost} callback runs), and what it still writes is
        dropped.

        @return: whether it answered (not once the head is out, the
            response finished or the client gone).
        """
        request = self.request
        if request.startedWriting or request.finished or request.disconnected:
            return False
        stop, self.lost_callback = self.lost_callback, None
        self.body_filters = (_DROP,)
        if request.producer is not None:
            request.unregisterProducer()
        self.status = status
        request.setResponseCode(status)
        raw = request.responseHeaders
        for name, _ in list(raw.getAllRawHeaders()):
            raw.removeHeader(name)
        for name, value in headers:
            raw.addRawHeader(name, value)
        for name, value in self.response_headers:
            raw.addRawHeader(name, value)
        if self.request_id:
            raw.setRawHeaders(self.chain.request_id_header, [self.request_id])
        raw.setRawHeaders(b"content-length", [b"%d" % (len(body),)])
        request.write(body)
        request.finish()
        if stop is not None:
            stop()
        return True

    def _filter_failed(self):
        # A response-head hook raised: the response it was to shape (maybe
        # missing a header the filter must add or remove) is not sent; the
        # client gets the 500 problem instead, and the terminal is stopped.
        self.answer_instead(500, _PROBLEM_HEADERS, error_document(FILTER_FAILED, self.request_id))
        return self

    def _head(self, status, headers, length=None):
        # Returns whether a filter's response-head hook raised.
        failed = False
        self.status = status
        request = self.request
        request.setResponseCode(status)
        raw = request.responseHeaders
        if isinstance(headers, Headers):
            if stored_headers(raw):
                for name, values in headers.getAllRawHeaders():
                    for value in values:
                        raw.addRawHeader(name, value)
            else:
                request.responseHeaders = raw = headers
        else:
            for name, value in headers:
                raw.addRawHeader(name, value)
        ran = self.ran
        if ran:
            chain = self.chain
            filters = chain.filters
            if length is not None:
                # What the response-head phase sees; set again (or
                # dropped) once it ran.
                raw.setRawHeaders(b"content-length", [b"%d" % (length,)])
            for index in range(ran - 1, -1, -1):
                try:
                    filters[index].on_response(self)
                except Exception:
                    _log.failure("response phase of filter {filter} failed (request {request_id})",
                                 filter=filters[index].name, request_id=self.request_id.decode("ascii", "replace"))
                    failed = True
            if chain.body_hooks:
                declined = self.body_declined
                self.body_filters = tuple(
                    filters[i] for i in reversed(chain.body_hooks) if i < ran and filters[i] not in declined)
                if self._drops_length:
                    raw.removeHeader(b"content-length")
            if self.response_header_edits:
                _edit(raw, self.response_header_edits)
        for name, value in self.response_headers:
            raw.addRawHeader(name, value)
        if self.request_id:
            # The gateway's own id (sane: visible ASCII), set as
            # setRawHeaders would, without its name and value checks.
            stored = stored_headers(raw)
            if stored is None:  # pragma: no cover - other Twisted versions
                raw.setRawHeaders(self.chain.request_id_header, [self.request_id])
            else:
                stored[self.chain.request_id_key] = [self.request_id]
        return failed

    @property
    def _drops_length(self):
        for flt in self.body_filters:
            if not flt.preserves_length:
                return True
        return False

    # -- IBodySink ---------------------------------------------------------

    @property
    def closed(self):
        """
        Whether the response finished or the client went away.
        """
        request = self.request
        return request.finished or request.disconnected

    def write(self, data):
        """
        Pass body bytes through the response-body hooks to the client.
        """
        if self.body_filters:
            data = self._through_body(data)
            if data is None:
                return
        self.request.write(data)

    def write_trailers(self, fields):
        """
        Send the trailer fields C{fields} (C{(name, value)} byte pairs the
        terminal already checked) after the body, before C{finish}. Not
        when a response-body hook is active: trailers describe the body as
        the terminal sent it (a checksum, a count), which a hook that
        compresses or rewrites it makes wrong, so they are dropped then.
        The channel sends them only on a chunked response.
        """
        if not self.body_filters:
            self.request.set_trailers(fields)

    def finish(self):
        """
        Flush what body filters hold back and end the response.
        """
        request = self.request
        if request.finished or request.disconnected:
            return
        if self.body_filters:
            tail = self._end_body()
            if tail is None:
                return
            if tail:
                request.write(tail)
        if request.producer is not None:
            request.unregisterProducer()
        request.finish()

    def register_producer(self, producer):
        """
        Register the body's push producer with the client connection
        (ignored once the response is over: answered in the terminal's
        place, or the client gone).
        """
        request = self.request
        if request.finished or request.disconnected:
            return
        request.registerProducer(producer, True)

    def unregister_producer(self):
        """
        Forget the body's producer, if one is registered.
        """
        request = self.request
        if request.producer is not None:
            request.unregisterProducer()

    def abort(self, flush=False):
        """
        Cut the client connection: the client sees a truncated response.
        While a body filter holds back the whole response (nothing of it
        went out), the client gets the gateway's 502 instead: the
        connection stays in step.
        """
        request = self.request
        if self.body_filters and not request.startedWriting and not request.finished \
                and not request.disconnected and self.body_filters[0] is not _DROP:
            self.answer_instead(502, ((b"content-type", _JSON[0]),),
                                error_body(502, "response broken off before it was sent"))
            return
        if request.producer is not None:
            request.unregisterProducer()
        transport = request.channel.transport
        if flush:
            transport.loseConnection()
        else:
            transport.abortConnection()

    # -- the response-body phase ------------------------------------------

    def _through_body(self, data):
        for flt in self.body_filters:
            try:
                data = flt.on_response_body(self, data)
            except Exception:
                self._body_failed(flt)
                return None
            if data is None:
                return None
        return data

    def _end_body(self):
        data = b""
        filters = self.body_filters
        for flt in filters:
            try:
                if data:
                    # None: held back; its end hook returns what is left.
                    data = flt.on_response_body(self, data) or b""
                if self.body_filters is not filters:
                    # A hook answered in the terminal's place.
                    return None
                tail = flt.on_response_end(self)
            except Exception:
                self._body_failed(flt)
                return None
            if tail is None or self.body_filters is not filters:
                return None
            data += tail
        return data

    def _body_failed(self, flt):
        # Before the head is out the client gets the 500 problem; after it,
        # a broken body filter can only cut the response (passing on bytes
        # it may have half-transformed would corrupt the body silently).
        # What the terminal still writes is dropped.
        _log.failure("response body phase of filter {filter} failed (request {request_id})",
                     filter=flt.name, request_id=self.request_id.decode("ascii", "replace"))
        if self.answer_instead(500, _PROBLEM_HEADERS, error_document(FILTER_FAILED, self.request_id)):
            return
        self.body_filters = (_DROP,)
        self.abort()


@implementer(IBodyFilter)
class _Dropping:
    """
    The body filter standing in for a failed one: every byte is dropped.
    """

    name = "(failed body filter)"
    preserves_length = True

    def on_request(self, exchange):
        """
        Never in a chain's request phase.
        """

    def on_response(self, exchange):
        """
        Never in a chain's response phase.
        """

    def on_response_body(self, exchange, data):
        """
        Drop C{data}.
        """
        return None

    def on_response_end(self, exchange):
        """
        Nothing held back.
        """
        return None


_DROP = _Dropping()
