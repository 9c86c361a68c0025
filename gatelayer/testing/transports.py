"""
In-memory transports with the behaviour of real ones that
L{twisted.internet.testing.StringTransport} lacks.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

__all__ = ["FillingTransport", "HalfCloseTransport"]


class FillingTransport(StringTransport):
    """
    A transport whose buffer holds C{limit} bytes: past that it pauses its
    producer, as a real one does for a slow reader, until L{drain}.
    """

    def __init__(self, limit):
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                         hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        self.limit = limit
        self.drained = 0
        self.paused = False

    def write(self, data):
        """
        Buffer C{data}; pause the producer once C{limit} bytes wait.
        """
        super().write(data)
        if len(self.value()) - self.drained >= self.limit and not self.paused and self.producer:
            self.paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data):
        """
        Buffer the pieces of C{data} as one write (chunked bodies are
        written this way), pausing as L{write} does.
        """
        self.write(b"".join(data))

    def drain(self):
        """
        The client read everything: resume the producer.
        """
        self.drained = len(self.value())
        self.paused = False
        self.producer.resumeProducing()


class HalfCloseTransport(StringTransport):
    """
    A TCP-like transport for relays: it can shut down writing alone
    (C{loseWriteConnection}, recorded in C{write_closed}), unregistering
    its producer is allowed when none is registered (as on a real TCP
    transport), and an abort is recorded in C{aborted}.
    """

    write_closed = False
    aborted = False
    no_delay = False

    def setTcpNoDelay(self, enabled):
        """
        Record the C{TCP_NODELAY} setting.
        """
        self.no_delay = enabled

    def loseWriteConnection(self):
        """
        Record a FIN sent.
        """
        self.write_closed = True

    def unregisterProducer(self):
        """
        Forget the producer, if any.
        """
        self.producer = None
        self.streaming = None

    def abortConnection(self):
        """
        Record the abort, then close as C{loseConnection} does.
        """
        self.aborted = True
        super().abortConnection()
