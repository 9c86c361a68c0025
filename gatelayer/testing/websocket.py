"""
WebSocket helpers for integration tests: the test-side handle of the
WebSocket server process (L{gatelayer.testing.websocket_server}) and the
C{websockets} library's blocking client run in a thread, so a test on the
reactor can wait for it.
"""

from twisted.internet.threads import deferToThreadPool

from gatelayer.testing.upstreams import UpstreamProcess

__all__ = ["WebSocketServerProcess", "in_thread", "ws_url"]


class WebSocketServerProcess(UpstreamProcess):
    """
    A real WebSocket echo server in a process of its own (see
    L{gatelayer.testing.websocket_server}), started, killed and stopped as
    an L{UpstreamProcess}.
    """

    program = "gatelayer.testing.websocket_server"

    @property
    def handshakes(self):
        """
        The paths of the handshakes the server accepted so far.
        """
        if self.protocol is None:
            return []
        return [line[len("connected "):] for line in self.protocol.lines
                if line.startswith("connected ")]


def ws_url(address, path="/"):
    """
    The C{ws://} URL of C{path} at C{address} (host, port).
    """
    return "ws://%s:%d%s" % (address[0], address[1], path)


def in_thread(reactor, function, *args, **kwargs):
    """
    Run C{function} (blocking client code: the C{websockets} sync client)
    in a thread of C{reactor}'s pool; a Deferred firing with its result.
    """
    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args, **kwargs)
