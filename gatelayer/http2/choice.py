"""
The protocol of a TLS connection, chosen once its handshake is done: HTTP/2
when ALPN settled on C{h2}, else the listener's HTTP/1.1 channel (ALPN
C{http/1.1}, or no ALPN at all).
"""

from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from gatelayer.http2.connection import H2Channel

__all__ = ["ProtocolChoice"]


@implementer(IHandshakeListener)
class ProtocolChoice(Protocol):
    """
    Stands in for the connection's protocol until the TLS handshake
    completes, then builds the chosen one and passes everything on to it.

    Until then it keeps a deadline of its own: a client that connects and
    never completes its handshake is cut after C{handshake_timeout}.

    @ivar chosen: the protocol chosen, or L{None} before the handshake.
    """

    chosen = None
    _deadline = None

    def __init__(self, factory, http1, clock, handshake_timeout):
        """
        @param factory: the listener's
            L{gatelayer.http.factory.GatewayHTTPFactory}.
        @param http1: builds the listener's HTTP/1.1 channel.
        @param clock: the reactor.
        @param handshake_timeout: seconds the handshake may take.
        """
        self.factory = factory
        self._http1 = http1
        self._clock = clock
        self._handshake_timeout = handshake_timeout

    def connectionMade(self):
        """
        Start the handshake deadline.
        """
        self._deadline = self._clock.callLater(self._handshake_timeout, self._too_slow)

    def _too_slow(self):
        self._deadline = None
        self.transport.abortConnection()

    def handshakeCompleted(self):
        """
        Build the protocol ALPN chose and connect it to the transport.
        """
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        if self.chosen is not None:
            return
        factory = self.factory
        if self.transport.negotiatedProtocol == b"h2":
            listener = factory.listener
            chosen = H2Channel(factory, listener.h2, self._clock, factory.timeOut)
        else:
            chosen = self._http1()
        self.chosen = chosen
        chosen.makeConnection(self.transport)

    def dataReceived(self, data):
        """
        Bytes after the handshake go to the chosen protocol.
        """
        chosen = self.chosen
        if chosen is not None:
            chosen.dataReceived(data)

    def connectionLost(self, reason):
        """
        Tell the chosen protocol, if any; drop the deadline.
        """
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        chosen = self.chosen
        if chosen is not None:
            chosen.connectionLost(reason)
