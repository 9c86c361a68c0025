"""
An upstream test server in a process of its own, so integration tests can
crash it (SIGKILL), hang it (SIGSTOP) and start it again on the same port.

Run as C{python -m gatelayer.testing.upstream_process NAME [PORT]}: it serves
an L{gatelayer.testing.upstreams.UpstreamServer} named NAME on 127.0.0.1:PORT
(0 or omitted: any free port), writes C{listening PORT} on stdout once it
accepts connections, and then reads commands, one a line, on stdin:
C{healthy} and C{unhealthy} switch what its C{/healthz} answers (each is
acknowledged with C{ok COMMAND}). It exits when stdin closes, so it never
outlives the test that started it. L{gatelayer.testing.upstreams.UpstreamProcess}
is the test-side handle.
"""

import sys

from twisted.internet import stdio
from twisted.protocols.basic import LineReceiver

from gatelayer.testing.upstreams import UpstreamServer

__all__ = ["main"]


class _Commands(LineReceiver):
    """
    The stdin/stdout side: announces the port, obeys health switches, stops
    the reactor when the parent closes stdin.
    """

    delimiter = b"\n"

    def __init__(self, reactor, upstream, port):
        self._reactor = reactor
        self._upstream = upstream
        self._port = port

    def connectionMade(self):
        self.sendLine(b"listening %d" % (self._port,))

    def lineReceived(self, line):
        command = line.strip()
        if command == b"healthy":
            self._upstream.healthy = True
        elif command == b"unhealthy":
            self._upstream.healthy = False
        else:
            self.sendLine(b"error unknown command " + command)
            return
        self.sendLine(b"ok " + command)

    def connectionLost(self, reason):
        if self._reactor.running:
            self._reactor.stop()


def main(argv, reactor):
    """
    Serve on C{reactor} until stdin closes. C{argv} is C{[NAME]} or
    C{[NAME, PORT]}. The process entry point is this package's C{__main__}.
    """
    if not 1 <= len(argv) <= 2:
        sys.stderr.write("usage: python -m gatelayer.testing.upstream_process NAME [PORT]\n")
        return 2
    name = argv[0]
    upstream = UpstreamServer(reactor, name)
    port = upstream.start(int(argv[1]) if len(argv) == 2 else 0)
    stdio.StandardIO(_Commands(reactor, upstream, port), reactor=reactor)
    reactor.run()
    return 0
