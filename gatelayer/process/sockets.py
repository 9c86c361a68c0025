"""
The listening sockets the master binds and hands to its workers.
"""

import socket

from attrs import define, field


@define
class BoundSocket:
    """
    One listening socket: which listener and address it serves, and which
    worker slot owns it.
    """

    listener: object
    host: str
    port: int
    family: int
    slot: int
    sock: object

    @property
    def family_name(self):
        """
        C{"inet"} or C{"inet6"}, as passed to a worker.
        """
        return "inet6" if self.family == socket.AF_INET6 else "inet"


@define
class SocketSet:
    """
    Every socket the master bound.
    """

    sockets: list = field(factory=list)

    def for_slot(self, slot):
        """
        The sockets worker C{slot} adopts.
        """
        return [s for s in self.sockets if s.slot == slot]

    def addresses(self):
        """
        C{{listener name: [(host, port), ...]}} as actually bound (a port 0
        in the config becomes the port the kernel chose).
        """
        out = {}
        for s in self.sockets:
            entry = out.setdefault(s.listener.name, [])
            if (s.host, s.port) not in entry:
                entry.append((s.host, s.port))
        return out

    def close(self):
        """
        Close every socket (the workers hold their own copies).
        """
        for s in self.sockets:
            s.sock.close()
        self.sockets = []


def bind_listeners(listeners, slots, backlog=1024):
    """
    Bind every address of every listener once per worker slot with
    SO_REUSEPORT, so the kernel spreads new connections evenly over the
    workers (one shared socket lets one worker take most of them).

    @raise OSError: naming the address that could not be bound; sockets
        bound so far are closed.
    """
    result = SocketSet()
    try:
        for listener in listeners:
            for host, port in listener.binds:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                chosen = port
                for slot in range(slots):
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        sock.bind((host, chosen))
                    except OSError as e:
                        sock.close()
                        raise OSError(e.errno, f"[listener:{listener.name}] bind {host}:{chosen}: {e.strerror}") from None
                    sock.listen(backlog)
                    sock.setblocking(False)
                    chosen = sock.getsockname()[1]
                    result.sockets.append(BoundSocket(listener, host, chosen, family, slot, sock))
    except BaseException:
        result.close()
        raise
    return result
