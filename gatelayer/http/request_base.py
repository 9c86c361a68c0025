"""
What the server channels' request objects share (the HTTP/1.1 channel's
L{gatelayer.http.lean_request.LeanRequest} and HTTP/2's
L{gatelayer.http2.stream.H2Request}): the request side of
L{gatelayer.http.contract.IGatewayRequest} and how a request ends when its
client goes away.
"""

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

__all__ = ["ServerRequest"]


class ServerRequest:
    """
    A base for a channel's request. The subclass keeps C{_disconnected},
    C{_completed}, C{_received}, C{_on_lost}, C{_notify}, C{producer},
    C{finished}, C{routing}, C{client}, C{channel}, C{transport},
    C{requestHeaders} and C{responseHeaders}.
    """

    @property
    def disconnected(self):
        """
        Whether the client went away before the response finished.
        """
        return self._disconnected

    def body_length(self):
        """
        The number of body bytes received.
        """
        return self._received

    def getHost(self):
        """
        The address of the gateway's end of the connection.
        """
        return self.transport.getHost()

    def getClientAddress(self):
        """
        The address of the client's end of the connection.
        """
        return self.client

    def isSecure(self):
        """
        Whether the request came over TLS.
        """
        return self.channel.factory.scheme == "https"

    def getHeader(self, name):
        """
        The last value of request header C{name}, or L{None}.
        """
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def on_lost(self, callback):
        """
        Call C{callback()} if the client goes away before the response is
        finished (one callback; cheaper than a Deferred per request).
        """
        self._on_lost = callback

    def notifyFinish(self):
        """
        A L{Deferred} that fires when the response is finished, or fails
        when the client goes away first (prefer L{on_lost} on the hot path).
        """
        d = Deferred()
        if self.finished:
            d.callback(None)
        elif self._disconnected:
            d.errback(Failure(ConnectionLost()))
        else:
            if self._notify is None:
                self._notify = []
            self._notify.append(d)
        return d

    def setHeader(self, name, value):
        """
        Set response header C{name} to the single value C{value}.
        """
        self.responseHeaders.setRawHeaders(name, [value])

    def _end_lost(self):
        """
        The end of a request whose client went away: the terminal's lost
        callback, the response's producer stopped, the gateway told, and
        every L{notifyFinish} failed.
        """
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()
        producer = self.producer
        if producer is not None:
            self.producer = None
            producer.stopProducing()
        self._done()
        notify, self._notify = self._notify, None
        if notify:
            for d in notify:
                d.errback(Failure(ConnectionLost()))

    def _done(self):
        if not self._completed:
            self._completed = True
            routing = self.routing
            if routing is not None:
                routing.gateway.request_finished(self)
