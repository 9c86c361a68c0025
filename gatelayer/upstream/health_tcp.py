"""
The C{health_check = tcp} probe: a server passes when a TCP connection to it
opens within C{health_timeout}. Nothing else is asked of it, which suits
the servers behind C{mode = tcp} listeners (databases, caches, game servers)
that speak no HTTP. An upstream with C{send_proxy} gets a PROXY C{LOCAL}
header first (the connection is the gateway's own, not a client's), so a
server that requires the header does not log a protocol error per check.
"""

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from gatelayer.l4.proxyproto import encode_local

__all__ = ["CONNECTED", "local_header", "probe_connect"]

CONNECTED = "connected"
"""What a successful L{probe_connect} fires with."""


def local_header(upstream):
    """
    The bytes a check of C{upstream} (an L{gatelayer.config.model.UpstreamSpec})
    sends first: a PROXY C{LOCAL} header when it has C{send_proxy}, else none.
    """
    if upstream.send_proxy is None:
        return b""
    return encode_local(1 if upstream.send_proxy == "v1" else 2)


class _ConnectProbe(Protocol):
    def __init__(self, hello):
        self._hello = hello

    def connectionMade(self):
        if self._hello:
            self.transport.write(self._hello)
        self.transport.loseConnection()


def probe_connect(clock, endpoint, timeout, hello=b""):
    """
    Connect through C{endpoint}, write C{hello}, close. The Deferred fires
    with L{CONNECTED}, or fails with the connection error (a timeout after
    C{timeout} seconds included); cancelling it drops the attempt.
    """
    factory = Factory.forProtocol(lambda: _ConnectProbe(hello))
    factory.noisy = False
    connecting = endpoint.connect(factory)
    result = Deferred(lambda _: connecting.cancel())

    def timed_out():
        if not connecting.called:
            connecting.cancel()
    timer = clock.callLater(timeout, timed_out)

    def connected(_):
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(CONNECTED)

    def failed(failure):
        if timer.active():
            timer.cancel()
        if not result.called:
            result.errback(failure)
    connecting.addCallbacks(connected, failed)
    return result
