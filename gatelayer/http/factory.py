"""
The HTTP factory of one listener in a worker.
"""

from twisted.web import http

from gatelayer.http.channel import GatewayChannel
from gatelayer.http.date import HTTPDate
from gatelayer.http.lean import LeanChannel
from gatelayer.http.request import GatewayRequest
from gatelayer.http2 import ProtocolChoice


#: Seconds a draining worker leaves an idle keep-alive connection open: a
#: client that sent its next request as the drain began (it could not know)
#: is answered, with C{Connection: close}, instead of seeing the connection
#: close under it.
DRAIN_IDLE_GRACE = 1.0


class GatewayHTTPFactory(http.HTTPFactory):
    """
    Builds L{GatewayChannel}s (or L{LeanChannel}s) for one listener and keeps the set of open
    channels, so a draining worker can close idle connections and wait for
    busy ones.

    @ivar gateway: the worker's L{gatelayer.http.gateway.Gateway}.
    @ivar listener: the L{gatelayer.config.model.ListenerSpec}.
    @ivar scheme: C{"https"} when the listener terminates TLS.
    @ivar extra_headers: C{(name, value)} pairs added to every response of
        this listener (e.g. Strict-Transport-Security).
    @ivar date: the L{HTTPDate} every response of this listener carries.
    """

    protocol = GatewayChannel
    noisy = False

    def __init__(self, gateway, listener, reactor, scheme="http", extra_headers=(), limits=None):
        super().__init__(timeout=gateway.config.gateway.idle_timeout, reactor=reactor)
        self.gateway = gateway
        self.listener = listener
        self.scheme = scheme
        self.extra_headers = tuple(extra_headers)
        self.date = HTTPDate(self.reactor)
        self.channels = set()
        self.draining = False
        self.limits = limits
        self._idle_close = None

    def buildProtocol(self, addr):
        """
        A channel with the gateway's limits: twisted.web's parser, or the
        lean one when C{[gateway] http_server = gatelayer}; on a listener
        with C{http2}, the choice between it and HTTP/2 once the TLS
        handshake is done (L{gatelayer.http2.ProtocolChoice}).
        """
        if self.listener.http2:
            return ProtocolChoice(self, self._http1_channel, self.reactor,
                                  self.gateway.config.gateway.header_timeout)
        return self._http1_channel()

    def _http1_channel(self):
        if self.gateway.config.gateway.http_server == "gatelayer":
            channel = LeanChannel()
            channel.factory = self
            channel.callLater = self.reactor.callLater
            channel.seconds = self.reactor.seconds
            channel.idle_timeout = self.timeOut
            channel.header_timeout = self.gateway.config.gateway.header_timeout
            channel.body_timeout = self.gateway.config.gateway.body_timeout
            return channel
        channel = GatewayChannel()
        channel.factory = self
        channel.requestFactory = GatewayRequest
        channel.callLater = self.reactor.callLater
        channel.seconds = self.reactor.seconds
        # The channel runs its own timer (see GatewayChannel); twisted.web's
        # per-request one stays off.
        channel.timeOut = None
        channel.idle_timeout = self.timeOut
        channel.header_timeout = self.gateway.config.gateway.header_timeout
        channel.body_timeout = self.gateway.config.gateway.body_timeout
        return channel

    def startFactory(self):
        """
        No log file and no per-second date timer: the gateway's access log is
        its own (see L{gatelayer.observe}).
        """

    def stopFactory(self):
        """
        Nothing to release.
        """

    def log(self, request):
        """
        Access logging is done by the gateway when a request ends.
        """

    def channel_opened(self, channel):
        """
        Track an open connection.
        """
        self.channels.add(channel)
        self.gateway.connections += 1
        if self.limits is not None:
            self.limits.opened(channel)
        if self.draining:
            channel.persistent = False

    def channel_closed(self, channel):
        """
        Forget a closed connection.
        """
        if channel in self.channels:
            self.channels.discard(channel)
            self.gateway.connections -= 1
            if self.limits is not None:
                self.limits.closed(channel)
            self.gateway.connection_closed()
            if not self.channels and self._idle_close is not None and self._idle_close.active():
                self._idle_close.cancel()

    def request_done(self, channel):
        """
        A response on C{channel} ended; when draining, close it now if idle.
        """
        if self.draining and not channel.busy:
            channel.loseConnection()

    def drain(self):
        """
        Stop keeping connections alive: busy ones close after their current
        response (which says C{Connection: close}); idle ones the same if a
        request arrives within L{DRAIN_IDLE_GRACE} seconds, else then.
        """
        self.draining = True
        for channel in self.channels:
            channel.persistent = False
        if self.channels and self._idle_close is None:
            self._idle_close = self.reactor.callLater(DRAIN_IDLE_GRACE, self._close_idle)

    def _close_idle(self):
        for channel in list(self.channels):
            if not channel.busy:
                channel.loseConnection()
