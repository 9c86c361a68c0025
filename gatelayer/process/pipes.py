"""
A transport over one pipe of a child process, for running AMP on it.
"""

from zope.interface import implementer
from twisted.internet.interfaces import ITransport
from twisted.internet.address import UNIXAddress


@implementer(ITransport)
class PipeTransport:
    """
    Writes go to child fd C{fd} of a process transport; closing it closes
    that fd (the worker sees end of file and exits).
    """

    disconnecting = False

    def __init__(self, process, fd):
        self._process = process
        self._fd = fd

    def write(self, data):
        """
        Write to the child's pipe.
        """
        if not self.disconnecting:
            self._process.writeToChild(self._fd, data)

    def writeSequence(self, data):
        """
        Write several strings.
        """
        self.write(b"".join(data))

    def loseConnection(self):
        """
        Close the pipe.
        """
        if not self.disconnecting:
            self.disconnecting = True
            try:
                self._process.closeChildFD(self._fd)
            except Exception:
                pass

    def getPeer(self):
        """
        A placeholder address: the peer is the worker process.
        """
        return UNIXAddress(None)

    def getHost(self):
        """
        A placeholder address.
        """
        return UNIXAddress(None)
