"""
The listening sockets the master binds and hands to its workers, and the
admin endpoint's socket.
"""

import errno
import socket

from attrs import define, field


class BindError(OSError):
    """
    A listening address could not be bound. Its text is one line naming
    the listener (or the admin endpoint) and the address::

        [listener:web] cannot bind 127.0.0.1:8080: address already in use

    @ivar what: C{"[listener:web]"} or C{"[gateway] admin"}.
    @ivar address: C{"127.0.0.1:8080"} (IPv6 hosts in brackets).
    """

    def __init__(self, what, host, port, error):
        reason = error.strerror or errno.errorcode.get(error.errno, str(error))
        super().__init__(error.errno, reason)
        self.what = what
        self.address = format_address(host, port)

    def __str__(self):
        reason = self.strerror[:1].lower() + self.strerror[1:]
        return f"{self.what} cannot bind {self.address}: {reason}"


def format_address(host, port):
    """
    C{host:port}, with an IPv6 host in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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

    @raise BindError: naming the listener and the address that could not
        be bound; sockets bound so far are closed.
    """
    result = SocketSet()
    try:
        for listener in listeners:
            for host, port in listener.binds:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                chosen = port
                if port:
                    _probe(listener, host, port, family)
                for slot in range(slots):
                    try:
                        sock = socket.socket(family, socket.SOCK_STREAM)
                    except OSError as e:
                        raise BindError(f"[listener:{listener.name}]", host, chosen, e) from None
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    try:
                        sock.bind((host, chosen))
                        sock.listen(backlog)
                    except OSError as e:
                        sock.close()
                        raise BindError(f"[listener:{listener.name}]", host, chosen, e) from None
                    sock.setblocking(False)
                    chosen = sock.getsockname()[1]
                    result.sockets.append(BoundSocket(listener, host, chosen, family, slot, sock))
    except BaseException:
        result.close()
        raise
    return result


def _probe(listener, host, port, family):
    # SO_REUSEPORT lets a second process of the same user bind the same
    # address and silently share its connections (a second gateway started
    # by mistake). A bind without it fails while anyone listens there.
    try:
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise BindError(f"[listener:{listener.name}]", host, port, e) from None
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((host, port))
    except OSError as e:
        raise BindError(f"[listener:{listener.name}]", host, port, e) from None
    finally:
        probe.close()


def bind_admin(host, port, backlog=128):
    """
    Bind the admin endpoint's listening socket (in the master only, no
    SO_REUSEPORT: a second gateway on the same admin address is an error).

    @return: a non-blocking listening L{socket.socket}.
    @raise BindError: naming C{[gateway] admin} and the address.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise BindError("[gateway] admin", host, port, e) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BindError("[gateway] admin", host, port, e) from None
    return sock


__all__ = ["BindError", "BoundSocket", "SocketSet", "bind_admin", "bind_listeners", "format_address"]
