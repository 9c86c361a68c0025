"""
Following the master of a Redis service through its Sentinels, for the
Redis stores (rate limits and the cache's shared store).

A store's connection pool reconnects through a L{SentinelMasterEndpoint}:
each connection attempt first asks the Sentinels, one at a time in the
order the URL names them (starting with the one that answered last),
C{SENTINEL get-master-addr-by-name SERVICE}, then connects to the address
the first answering Sentinel gives. The connection is handed to the pool
only once C{ROLE} says the server is a master (L{MasterRoleProtocol}), so a
Sentinel that has not heard of a failover yet costs one refused attempt,
never writes to a replica.

After a failover the old master's connections close (the process died, or
the Sentinels killed its clients when they made it a replica), the pool
reconnects with its back-off (at most L{RECONNECT_MAX_DELAY} between
attempts) and the next attempt finds the promoted replica. A
connection that outlived a demotion gets C{READONLY} errors; the stores
drop their connections on one (L{is_readonly}), which sends them through
the Sentinels again.

With C{rediss+sentinel://} every connection, to a Sentinel or to a server,
is TLS (L{tcp_or_tls}).

txredisapi ships a C{Sentinel} class too; it is not used because it asks
every Sentinel for every master at once and, when none reports a healthy
master (the seconds of a failover), waits ten seconds on the global
reactor before failing, which would hold limits off that long after the
new master is up.
"""

import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "RECONNECT_MAX_DELAY", "MasterLocator", "MasterNotFound", "MasterRoleProtocol", "SentinelMasterEndpoint",
    "SentinelReplyError", "is_readonly", "master_role_protocol", "parse_reply", "sentinel_command", "tcp_or_tls"]

_MAX_REPLY = 4096

RECONNECT_MAX_DELAY = 0.5
"""The longest wait (seconds) between two connection attempts of a Sentinel
store's connections: an attempt is one question to a Sentinel and one
connection on the local network, and a short wait is what lets the store
find a promoted replica soon after the Sentinels have."""


class MasterNotFound(Exception):
    """
    No Sentinel named a master for the service; the message says what each
    one answered.
    """


class SentinelReplyError(Exception):
    """
    A Sentinel answered something that is not a master's address.
    """


def sentinel_command(service):
    """
    The bytes of C{SENTINEL get-master-addr-by-name SERVICE} in RESP.
    """
    words = [b"SENTINEL", b"get-master-addr-by-name", service.encode("ascii")]
    return b"*%d\r\n" % (len(words),) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def parse_reply(data):
    """
    Read one RESP reply from the start of C{data}.

    @return: C{(value, used)}, where C{value} is bytes (a bulk or simple
        string), an int, L{None} (a null), a list, or a
        L{SentinelReplyError} (an error reply); or L{None} while C{data}
        holds less than a whole reply.
    @raise SentinelReplyError: C{data} is not RESP.
    """
    end = data.find(b"\r\n")
    if end < 0:
        return None
    kind, line, used = data[:1], data[1:end], end + 2
    if kind == b"+":
        return bytes(line), used
    if kind == b"-":
        return SentinelReplyError(bytes(line).decode("utf-8", "replace")), used
    try:
        number = int(line)
    except ValueError:
        raise SentinelReplyError(f"not a Redis reply: {bytes(data[:40])!r}") from None
    if kind == b":":
        return number, used
    if kind == b"$":
        if number < 0:
            return None, used
        if len(data) < used + number + 2:
            return None
        if data[used + number:used + number + 2] != b"\r\n":
            raise SentinelReplyError("a bulk string without its CRLF")
        return bytes(data[used:used + number]), used + number + 2
    if kind == b"*":
        if number < 0:
            return None, used
        items = []
        for _ in range(number):
            item = parse_reply(data[used:])
            if item is None:
                return None
            items.append(item[0])
            used += item[1]
        return items, used
    raise SentinelReplyError(f"not a Redis reply: {bytes(data[:40])!r}")


def _master_address(reply):
    """
    The C{(host, port)} of a C{get-master-addr-by-name} reply, or L{None}
    when the Sentinel does not know the service.

    @raise SentinelReplyError: an error or a malformed reply.
    """
    if isinstance(reply, SentinelReplyError):
        raise reply
    if reply is None:
        return None
    if (not isinstance(reply, list) or len(reply) != 2
            or not all(isinstance(item, bytes) for item in reply)):
        raise SentinelReplyError(f"not a host and port: {reply!r:.80}")
    host, port = reply
    try:
        host, port = host.decode("ascii"), int(port)
    except (UnicodeError, ValueError):
        raise SentinelReplyError(f"not a host and port: {reply!r:.80}") from None
    if not host or not 1 <= port <= 65535:
        raise SentinelReplyError(f"not a host and port: {reply!r:.80}")
    return host, port


class _SentinelQuery(Protocol):
    """
    One question to one Sentinel on a connection of its own, closed once
    answered. C{answer} fires with the parsed reply.
    """

    def __init__(self, service):
        self._service = service
        self._buffer = b""
        self.answer = Deferred(self._cancel)

    def connectionMade(self):
        self.transport.write(sentinel_command(self._service))

    def dataReceived(self, data):
        self._buffer += data
        try:
            parsed = parse_reply(self._buffer)
            if parsed is None and len(self._buffer) > _MAX_REPLY:
                raise SentinelReplyError("a reply longer than any address")
        except SentinelReplyError as e:
            self._finish(e)
            return
        if parsed is not None:
            self._finish(parsed[0])

    def _finish(self, value):
        self.transport.loseConnection()
        if not self.answer.called:
            if isinstance(value, SentinelReplyError):
                self.answer.errback(value)
            else:
                self.answer.callback(value)

    def connectionLost(self, reason):
        if not self.answer.called:
            self.answer.errback(SentinelReplyError("closed the connection without answering"))

    def _cancel(self, answer):
        if self.transport is not None:
            self.transport.abortConnection()


class MasterLocator:
    """
    Asks the Sentinels of C{service} where its master is.

    @ivar sentinels: C{(host, port)} pairs in the order they are asked.
    """

    def __init__(self, reactor, sentinels, service, timeout, connect_to=None):
        """
        @param timeout: seconds one Sentinel may take to connect and answer
            before the next one is asked.
        @param connect_to: makes the client endpoint of C{(host, port)};
            a L{HostnameEndpoint} on C{reactor} by default.
        """
        self.sentinels = tuple(sentinels)
        self.service = service
        self._reactor = reactor
        self._timeout = timeout
        self._connect_to = connect_to or (
            lambda host, port: HostnameEndpoint(reactor, host, port, timeout=timeout))
        self._first = 0

    def locate(self):
        """
        Ask the Sentinels in turn, starting with the one that answered
        last; fires with the first master address given, or fails with
        L{MasterNotFound} saying what each Sentinel answered.
        """
        count = len(self.sentinels)
        order = [(self._first + i) % count for i in range(count)]
        problems = []
        asking = []
        given_up = []

        def cancel(result):
            # the connection attempt was given up on (the store closed)
            given_up.append(True)
            while asking:
                asking.pop().cancel()
        result = Deferred(cancel)

        def ask(position):
            if position == count:
                result.errback(MasterNotFound(
                    f"no Sentinel named a master for {self.service!r}: " + "; ".join(problems)))
                return
            index = order[position]
            d = self._ask(self.sentinels[index])
            asking.append(d)
            d.addCallbacks(answered, failed, callbackArgs=(position, index), errbackArgs=(position, index))

        def answered(address, position, index):
            del asking[:]
            if given_up:
                return
            if address is None:
                problems.append(f"{self._name(index)} does not know it")
                ask(position + 1)
                return
            self._first = index
            result.callback(address)

        def failed(failure, position, index):
            del asking[:]
            if given_up:
                return
            problems.append(f"{self._name(index)}: {failure.getErrorMessage() or failure.type.__name__}")
            ask(position + 1)

        ask(0)
        return result

    def _name(self, index):
        host, port = self.sentinels[index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _ask(self, sentinel):
        query = _SentinelQuery(self.service)
        d = connectProtocol(self._connect_to(*sentinel), query)
        d.addCallback(lambda _: query.answer)
        d.addCallback(_master_address)
        return d.addTimeout(self._timeout, self._reactor)


@implementer(IStreamClientEndpoint)
class SentinelMasterEndpoint:
    """
    A client endpoint that connects to wherever the Sentinels say the
    service's master is, asking them again for every connection.

    @ivar master: the last address found, or L{None}.
    """

    log = Logger()

    def __init__(self, reactor, address, connect_timeout, locator=None, connect_to=None):
        """
        @param address: a C{redis+sentinel} or C{rediss+sentinel}
            L{gatelayer.net.redisurl.RedisAddress}.
        @param locator: a L{MasterLocator} (made from C{address} by default).
        @param connect_to: makes the endpoint of a master's C{(host, port)};
            by default L{tcp_or_tls}'s for C{address}.
        """
        self._address = address
        if locator is None or connect_to is None:
            default = tcp_or_tls(reactor, address, connect_timeout)
        self.locator = locator or MasterLocator(
            reactor, address.sentinels, address.service, connect_timeout, connect_to=default)
        self._connect_to = connect_to or default
        self.master = None

    def connect(self, protocolFactory):
        """
        Find the master, then connect C{protocolFactory}'s protocol to it.
        """
        d = self.locator.locate()
        d.addErrback(self._not_found)
        d.addCallback(self._found)
        return d.addCallback(lambda master: self._connect_to(*master).connect(protocolFactory))

    def _not_found(self, failure):
        failure.trap(MasterNotFound)
        self.log.warn("Redis {store}: {problem}", store=self._address.display(),
                      problem=failure.getErrorMessage())
        return failure

    def _found(self, master):
        if master != self.master:
            self.log.info("Redis {store}: the master of {service} is {host}:{port}",
                          store=self._address.display(), service=self._address.service,
                          host=master[0], port=master[1])
            self.master = master
        return master


class MasterRoleProtocol(txredisapi.RedisProtocol):
    """
    A txredisapi connection that asks C{ROLE} before anything else and
    closes itself unless the server is a master, so that a pool never
    writes to a replica a slow Sentinel still called the master.

    A server that refuses C{ROLE} (an ACL without it) is taken as it is: a
    store then learns it is a replica from C{READONLY} errors.
    """

    log = Logger()

    clock = None
    """An C{IReactorTime} for the C{ROLE} answer's deadline (set by
    L{master_role_protocol})."""

    role_timeout = 1.0
    """Seconds C{ROLE} may take before the connection is dropped."""

    def connectionMade(self):
        """
        Authenticate if needed, ask C{ROLE}, and go on as a usual
        connection only if the server is a master.
        """
        timer = self.clock.callLater(self.role_timeout, self._role_timed_out)
        d = self.auth(self.password, self.username) if self.password is not None else succeed(None)
        d.addCallback(lambda _: self.role())

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result
        d.addBoth(stop_timer)
        d.addCallbacks(self._role, self._role_refused)
        return d

    def _role_timed_out(self):
        self.log.warn("Redis at {peer} did not answer ROLE in {timeout}s: dropping the connection",
                      peer=_peer(self.transport), timeout=self.role_timeout)
        self.transport.abortConnection()

    def _role(self, reply):
        role = reply[0] if isinstance(reply, list) and reply else reply
        if isinstance(role, bytes):
            role = role.decode("ascii", "replace")
        if role != "master":
            self.log.info("Redis at {peer} is a {role}, not the master: dropping the connection",
                          peer=_peer(self.transport), role=role)
            self.transport.loseConnection()
            return None
        return txredisapi.RedisProtocol.connectionMade(self)

    def _role_refused(self, failure):
        if failure.check(txredisapi.ResponseError) and self.connected:
            # refused, not lost: the usual start reports a bad password
            return txredisapi.RedisProtocol.connectionMade(self)
        self.transport.loseConnection()
        return None


def tcp_or_tls(reactor, address, timeout):
    """
    What makes the client endpoint of a C{(host, port)} for C{address}'s
    Sentinels and servers: TCP, wrapped in TLS for C{rediss+sentinel}, the
    certificate checked against the host (a name, or the IP address a
    Sentinel reports) and the address's C{ca} file or the system's trust
    store. Reads the C{ca} file now, once.
    """
    trust = None
    if address.tls and address.ca is not None:
        with open(address.ca, "rb") as f:
            trust = Certificate.loadPEM(f.read())

    def endpoint(host, port):
        tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
        if not address.tls:
            return tcp
        return wrapClientTLS(optionsForClientTLS(host, trustRoot=trust), tcp)
    return endpoint


def _peer(transport):
    try:
        peer = transport.getPeer()
        return f"{peer.host}:{peer.port}"
    except Exception:
        return "?"


def master_role_protocol(clock, role_timeout):
    """
    The C{protocol} a txredisapi C{RedisFactory} builds for a Sentinel
    store: L{MasterRoleProtocol} with its clock and deadline. A class, not
    a callable, because txredisapi's connection handler looks its commands
    up on it.
    """
    # callLater: txredisapi's reply parser resumes after a bulk string on the
    # next turn of the global reactor unless told which clock to use
    return type("MasterRoleProtocol", (MasterRoleProtocol,),
                {"clock": clock, "role_timeout": role_timeout, "callLater": clock.callLater})


def is_readonly(failure):
    """
    Whether C{failure} (a L{Failure} or an exception) is Redis refusing a
    write because the server is a replica (a connection that outlived the
    master's demotion).
    """
    error = getattr(failure, "value", failure)
    return isinstance(error, txredisapi.ResponseError) and str(error).startswith("READONLY")
