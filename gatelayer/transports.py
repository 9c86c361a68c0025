"""
TCP connections that send at once.

Twisted's TCP transport buffers every C{write} and asks the reactor to watch
the socket for writability; the bytes leave on the next reactor turn, in
C{doWrite}, which then asks the reactor to stop watching. On Linux's epoll
that is two C{epoll_ctl} calls, one more wake-up and the Python of
C{doWrite} for every response and every request sent upstream, although the
socket could almost always have taken the bytes at once.

The transports here try the socket first when nothing is waiting in their
buffer: what the kernel takes is gone without the reactor; only what it
refuses (a full socket buffer, a slow peer) is buffered and written the
usual way, with producers paused and resumed as before. Writes on such a
connection go out as they are made, so C{TCP_NODELAY} is set: coalescing is
the writer's business (a response's head and a small body are one write).

L{adopt_stream_port} and L{connect_tcp} use them on a reactor with Twisted's
POSIX TCP implementation and fall back to the reactor's own methods
elsewhere (a L{twisted.internet.testing.MemoryReactor} in tests).
"""

import socket
from twisted.internet import tcp
from twisted.internet.posixbase import PosixReactorBase

__all__ = ["EagerClient", "EagerServer", "adopt_stream_port", "connect_tcp", "supported"]

class _SendsAtOnce:
    """
    A mixin for L{tcp.Connection} subclasses: C{write} and C{writeSequence}
    send at once when the transport's buffer is empty.
    """

    def _idle(self):
        """
        Whether nothing waits to be written and the connection is open for
        writing: the only state in which bytes may bypass the buffer
        without reordering.
        """
        return (not self._tempDataLen and self.offset == len(self.dataBuffer) and self.connected
                and not self.disconnecting and not self._writeDisconnecting and not self._writeDisconnected)

    def write(self, data):
        if type(data) is bytes and data and self._idle():
            try:
                sent = self.socket.send(data)
            except OSError:
                # A full socket, or an error doWrite finds and reports as
                # it would for any buffered write.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)

    def writeSequence(self, sequence):
        if self._idle():
            parts = [part for part in sequence if part]
            if not all(type(part) is bytes for part in parts):
                super().writeSequence(sequence)
                return
            if not parts:
                return
            try:
                sent = self.socket.sendmsg(parts)
            except OSError:
                sent = 0
            for index, part in enumerate(parts):
                if sent < len(part):
                    rest = [part[sent:]] if sent else [part]
                    super().writeSequence(rest + parts[index + 1:])
                    return
                sent -= len(part)
            return
        super().writeSequence(sequence)


def _no_delay(transport):
    try:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class EagerServer(_SendsAtOnce, tcp.Server):
    """
    An accepted TCP connection that sends at once (see the module).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _no_delay(self)


class EagerClient(_SendsAtOnce, tcp.Client):
    """
    An outgoing TCP connection that sends at once (see the module).
    """

    def _connectDone(self):
        _no_delay(self)
        super()._connectDone()


class _EagerPort(tcp.Port):
    # Its log events (accept failures, EMFILE recovery) are named after this
    # class: gatelayer.process.limits recognises them by that name.
    transport = EagerServer


class _EagerConnector(tcp.Connector):
    def _makeTransport(self):
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)


def supported(reactor):
    """
    Whether C{reactor} makes its TCP connections with Twisted's POSIX TCP
    implementation, which the transports here extend.
    """
    return isinstance(reactor, PosixReactorBase)


def adopt_stream_port(reactor, fd, family, factory):
    """
    C{reactor.adoptStreamPort(fd, family, factory)}, with connections that
    send at once where the reactor allows it (TCP families only).
    """
    if not supported(reactor) or family not in (socket.AF_INET, socket.AF_INET6):
        return reactor.adoptStreamPort(fd, family, factory)
    port = _EagerPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port


def connect_tcp(reactor, host, port, factory, timeout=30, bindAddress=None):
    """
    C{reactor.connectTCP(...)}, with a connection that sends at once where
    the reactor allows it.
    """
    if not supported(reactor):
        return reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=bindAddress)
    connector = _EagerConnector(host, port, factory, timeout, bindAddress, reactor)
    connector.connect()
    return connector
