"""
A TCP echo server in a process of its own, for layer 4 tests that kill a
server under load: C{python -m gatelayer.testing.echo_process NAME [PORT]}
listens on 127.0.0.1:PORT (0 or omitted: any free port), writes C{listening
PORT} on stdout once it accepts connections, answers the stdin command
C{connections} with C{ok connections N} (how many it accepted), and exits
when stdin closes. L{gatelayer.testing.tcp_servers.EchoProcess} is the
test-side handle.
"""

import sys

from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from gatelayer.testing.tcp_servers import EchoServer

__all__ = ["main"]


class _Commands(LineReceiver):
    delimiter = b"\n"

    def __init__(self, reactor, server, port):
        self.reactor = reactor
        self.server = server
        self.port = port

    def connectionMade(self):
        self.sendLine(b"listening %d" % (self.port,))

    def lineReceived(self, line):
        if line.strip() == b"connections":
            self.sendLine(b"ok connections %d" % (len(self.server.connections),))

    def connectionLost(self, reason):
        if self.reactor.running:
            self.reactor.stop()


def main(argv, reactor):
    """
    Serve on C{reactor} until stdin closes; C{argv} is C{[NAME]} or
    C{[NAME, PORT]}.
    """
    if not 1 <= len(argv) <= 2:
        sys.stderr.write("usage: python -m gatelayer.testing.echo_process NAME [PORT]\n")
        return 2
    server = EchoServer(reactor)
    port = server.start(int(argv[1]) if len(argv) == 2 else 0)
    stdio.StandardIO(_Commands(reactor, server, port), reactor=reactor)
    reactor.run()
    return 0
