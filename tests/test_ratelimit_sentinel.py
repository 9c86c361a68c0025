"""
Unit tests for L{gatelayer.ratelimit.sentinel} without Redis or Sentinel
processes: reading Sentinel replies (hostile ones included), asking the
Sentinels in turn, the endpoint that connects to the master they name, the
ROLE check of a new connection, and how the stores' connection pools are
set up for a C{redis+sentinel://} URL. A real failover is in
tests/integration/test_ratelimit_sentinel.py.
"""

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatelayer.cache.redis_store import connect as cache_connect
from gatelayer.net.redisurl import parse_store_url
from gatelayer.ratelimit.redis_store import RedisStore, redis_endpoint, redis_pool
from gatelayer.ratelimit.sentinel import (
    RECONNECT_MAX_DELAY, MasterLocator, MasterNotFound, MasterRoleProtocol, SentinelMasterEndpoint,
    SentinelReplyError, is_readonly, master_role_protocol, parse_reply, sentinel_command, tcp_or_tls)

URL = "redis+sentinel://:pw@s1:26379,s2:26380,s3:26381/mymaster/2"
SENTINELS = (("s1", 26379), ("s2", 26380), ("s3", 26381))

MASTER_REPLY = b"*2\r\n$8\r\n10.0.0.7\r\n$4\r\n6380\r\n"

# Replies a Sentinel (or something posing as one) might send, and what
# asking it comes to: an address, None (does not know the service), or the
# exception raised.
REPLIES = [
    (b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n", ("127.0.0.1", 6380)),
    (b"*2\r\n$3\r\n::1\r\n$5\r\n65535\r\n", ("::1", 65535)),
    (b"*-1\r\n", None),
    (b"$-1\r\n", None),
    (b"-ERR Unknown sentinel subcommand\r\n", SentinelReplyError),
    (b"-NOAUTH Authentication required.\r\n", SentinelReplyError),
    (b"+OK\r\n", SentinelReplyError),
    (b":12\r\n", SentinelReplyError),
    (b"*1\r\n$9\r\n127.0.0.1\r\n", SentinelReplyError),
    (b"*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n2\r\n", SentinelReplyError),
    (b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n", SentinelReplyError),
    (b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", SentinelReplyError),
    (b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n70000\r\n", SentinelReplyError),
    (b"*2\r\n$0\r\n\r\n$4\r\n6380\r\n", SentinelReplyError),
    (b"*2\r\n$2\r\n\xff\xfe\r\n$4\r\n6380\r\n", SentinelReplyError),
    (b"*2\r\n*0\r\n$4\r\n6380\r\n", SentinelReplyError),
    (b"*2\r\n$9\r\n127.0.0.1XX$4\r\n6380\r\n", SentinelReplyError),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", SentinelReplyError),
    (b"*x\r\n", SentinelReplyError),
    (b"$9999999\r\n" + b"a" * 5000, SentinelReplyError),
    (b"*99999\r\n" + b"$1\r\na\r\n" * 700, SentinelReplyError),
]


class ParseReplyTests(SynchronousTestCase):
    """
    L{parse_reply} and L{sentinel_command}.
    """

    def test_kinds(self):
        """
        Simple strings, errors, integers, bulk strings, nulls and nested
        arrays are read with how many bytes they took.
        """
        self.assertEqual(parse_reply(b"+PONG\r\nrest"), (b"PONG", 7))
        self.assertEqual(parse_reply(b":-3\r\n"), (-3, 5))
        self.assertEqual(parse_reply(b"$3\r\na\r\n\r\n"), (b"a\r\n", 9))
        self.assertEqual(parse_reply(b"$-1\r\n"), (None, 5))
        self.assertEqual(parse_reply(b"*-1\r\n"), (None, 5))
        self.assertEqual(parse_reply(b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"), ([[1], b""], 18))
        error, used = parse_reply(b"-ERR no\r\n")
        self.assertIsInstance(error, SentinelReplyError)
        self.assertEqual((str(error), used), ("ERR no", 9))

    def test_incomplete(self):
        """
        Every proper prefix of a reply is incomplete (L{None}), never an
        error: replies arrive in pieces.
        """
        for end in range(len(MASTER_REPLY)):
            self.assertIsNone(parse_reply(MASTER_REPLY[:end]), MASTER_REPLY[:end])
        self.assertEqual(parse_reply(MASTER_REPLY), ([b"10.0.0.7", b"6380"], len(MASTER_REPLY)))

    def test_not_resp(self):
        """
        Bytes that are not RESP raise L{SentinelReplyError}.
        """
        for data in [b"HTTP/1.1 200 OK\r\n", b"$x\r\n", b"*\r\n", b"$1\r\nab\r\n", b"?\r\n"]:
            self.assertRaises(SentinelReplyError, parse_reply, data)

    def test_command(self):
        """
        The question is one RESP array of three bulk strings.
        """
        self.assertEqual(sentinel_command("mymaster"),
                         b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n")


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects a protocol to a L{StringTransport} at once, or fails with
    C{error}, or never answers while C{hang}.

    @ivar protocols: the protocols connected, in order.
    """

    def __init__(self, error=None, hang=False):
        self.error = error
        self.hang = hang
        self.protocols = []
        self.pending = []

    def connect(self, factory):
        """
        Build the protocol and connect it (see the class docstring).
        """
        if self.error is not None:
            return fail(self.error)
        if self.hang:
            d = Deferred()
            self.pending.append(d)
            return d
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.protocols.append(protocol)
        return succeed(protocol)


class Endpoints:
    """
    A L{FakeEndpoint} per C{(host, port)}, made on first use; the
    C{connect_to} argument of the classes under test.
    """

    def __init__(self, **kinds):
        self.kinds = kinds
        self.made = {}
        self.asked = []

    def __call__(self, host, port):
        self.asked.append((host, port))
        endpoint = self.made.get((host, port))
        if endpoint is None:
            endpoint = self.made[(host, port)] = FakeEndpoint(**self.kinds.get(host, {}))
        return endpoint

    def answer(self, host, data):
        """
        Feed the last connection to C{host}'s endpoint C{data}.
        """
        port = dict(SENTINELS)[host]
        self.made[(host, port)].protocols[-1].dataReceived(data)


class MasterLocatorTests(SynchronousTestCase):
    """
    L{MasterLocator}: the Sentinels asked in turn.
    """

    def setUp(self):
        self.clock = Clock()

    def locator(self, **kinds):
        """
        A locator of C{mymaster} on SENTINELS over fake endpoints.
        """
        self.endpoints = Endpoints(**kinds)
        return MasterLocator(self.clock, SENTINELS, "mymaster", 1.0, connect_to=self.endpoints)

    def test_first_answer(self):
        """
        The first Sentinel is asked the question; its answer is the master
        and its connection is closed; nothing else is asked or left
        scheduled.
        """
        locator = self.locator()
        d = locator.locate()
        query = self.endpoints.made[("s1", 26379)].protocols[0]
        self.assertEqual(query.transport.value(), sentinel_command("mymaster"))
        self.assertNoResult(d)
        query.dataReceived(MASTER_REPLY[:7])
        self.assertNoResult(d)
        query.dataReceived(MASTER_REPLY[7:])
        self.assertEqual(self.successResultOf(d), ("10.0.0.7", 6380))
        self.assertTrue(query.transport.disconnecting)
        self.assertEqual(self.endpoints.asked, [("s1", 26379)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hostile_replies(self):
        """
        Every reply of the table comes to the address, to asking the next
        Sentinel (a Sentinel that does not know the service or answers
        nonsense), never to anything else.
        """
        for data, expected in REPLIES:
            locator = self.locator(s2={"error": ConnectionRefusedError()}, s3={"error": ConnectionRefusedError()})
            d = locator.locate()
            self.endpoints.answer("s1", data)
            if isinstance(expected, tuple):
                self.assertEqual(self.successResultOf(d), expected, data)
                continue
            failure = self.failureResultOf(d, MasterNotFound)
            message = failure.getErrorMessage()
            self.assertIn("s1:26379", message, data)
            if expected is None:
                self.assertIn("s1:26379 does not know it", message)
            self.assertEqual(self.clock.getDelayedCalls(), [], data)

    def test_next_sentinel_and_rotation(self):
        """
        A Sentinel that refuses or says nothing useful is skipped; the one
        that answered is asked first next time.
        """
        locator = self.locator(s1={"error": ConnectionRefusedError()})
        d = locator.locate()
        self.endpoints.answer("s2", b"*-1\r\n")
        self.endpoints.answer("s3", MASTER_REPLY)
        self.assertEqual(self.successResultOf(d), ("10.0.0.7", 6380))
        self.assertEqual(self.endpoints.asked, [("s1", 26379), ("s2", 26380), ("s3", 26381)])
        del self.endpoints.asked[:]
        d = locator.locate()
        self.endpoints.answer("s3", MASTER_REPLY)
        self.successResultOf(d)
        self.assertEqual(self.endpoints.asked, [("s3", 26381)])

    def test_silent_sentinel_times_out(self):
        """
        A Sentinel that accepts the connection and never answers, or never
        accepts it, is given up on after the timeout and its connection
        aborted; the next one is asked.
        """
        locator = self.locator(s2={"hang": True})
        d = locator.locate()
        query = self.endpoints.made[("s1", 26379)].protocols[0]
        self.clock.advance(0.999)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.assertTrue(query.transport.disconnecting)
        self.clock.advance(1.0)
        # the connection attempt was given up on (cancelled)
        self.assertTrue(self.endpoints.made[("s2", 26380)].pending[0].called)
        self.assertNoResult(d)
        self.clock.advance(1.0)
        failure = self.failureResultOf(d, MasterNotFound)
        for name in ("s1:26379", "s2:26380", "s3:26381"):
            self.assertIn(name, failure.getErrorMessage())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self):
        """
        Cancelling a search (the store closing) aborts the question in
        flight and asks no other Sentinel.
        """
        locator = self.locator()
        d = locator.locate()
        query = self.endpoints.made[("s1", 26379)].protocols[0]
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(query.transport.disconnected)
        self.assertEqual(self.endpoints.asked, [("s1", 26379)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closed_without_answer(self):
        """
        A Sentinel that closes the connection without a reply counts as
        not answering.
        """
        locator = self.locator(s2={"error": ConnectionRefusedError()}, s3={"error": ConnectionRefusedError()})
        d = locator.locate()
        query = self.endpoints.made[("s1", 26379)].protocols[0]
        query.connectionLost(None)
        self.assertIn("without answering", self.failureResultOf(d, MasterNotFound).getErrorMessage())


class FakeLocator:
    """
    Answers L{locate} with each of C{answers} in turn (an address or an
    exception).
    """

    def __init__(self, *answers):
        self.answers = list(answers)

    def locate(self):
        """
        The next answer.
        """
        answer = self.answers.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


class SentinelMasterEndpointTests(SynchronousTestCase):
    """
    L{SentinelMasterEndpoint}.
    """

    def test_connects_to_each_master_found(self):
        """
        Every connection goes to the master found for it; a change of
        master is logged once.
        """
        endpoints = Endpoints()
        endpoint = SentinelMasterEndpoint(
            Clock(), parse_store_url(URL), 1.0,
            locator=FakeLocator(("10.0.0.7", 6380), ("10.0.0.7", 6380), ("10.0.0.8", 6381)),
            connect_to=endpoints)
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        factory = txredisapi.RedisFactory("x", None, 1, isLazy=True)
        with capturedLogs() as events:
            for _ in range(3):
                self.successResultOf(endpoint.connect(factory))
        self.assertEqual(endpoints.asked, [("10.0.0.7", 6380), ("10.0.0.7", 6380), ("10.0.0.8", 6381)])
        self.assertEqual(endpoint.master, ("10.0.0.8", 6381))
        changes = [e for e in events if "the master of" in e.get("log_format", "")]
        self.assertEqual([(e["host"], e["port"]) for e in changes], [("10.0.0.7", 6380), ("10.0.0.8", 6381)])
        self.assertNotIn("pw", repr([e.get("store") for e in changes]))

    def test_no_master(self):
        """
        When no Sentinel names a master the attempt fails (the pool tries
        again later) and says why, without the password.
        """
        endpoint = SentinelMasterEndpoint(
            Clock(), parse_store_url(URL), 1.0, locator=FakeLocator(MasterNotFound("s1:26379 does not know it")),
            connect_to=Endpoints())
        with capturedLogs() as events:
            self.failureResultOf(endpoint.connect(txredisapi.RedisFactory("x", None, 1)), MasterNotFound)
        warnings = [e for e in events if e.get("problem")]
        self.assertEqual(len(warnings), 1)
        self.assertIn("***@s1:26379", warnings[0]["store"])


class FakeFactory:
    """
    What a txredisapi protocol asks of its factory on a failed start.
    """

    def __init__(self):
        self.errors = []
        self.stopped = False
        self.isLazy = True

    def stopTrying(self):
        """
        Stop reconnecting.
        """
        self.stopped = True

    def connectionError(self, why):
        """
        Record C{why}.
        """
        self.errors.append(why)


class MasterRoleProtocolTests(SynchronousTestCase):
    """
    L{MasterRoleProtocol}: a connection is used only if it is to a master.
    """

    def receive(self, protocol, data):
        """
        Feed C{protocol} C{data} and let the clock turn (the reply parser
        resumes on the next turn after a bulk string).
        """
        protocol.dataReceived(data)
        self.clock.advance(0)

    def connect(self, password=None, dbid=None, charset="utf-8"):
        """
        A connected protocol, its transport and its C{whenConnected}.
        """
        self.clock = Clock()
        cls = master_role_protocol(self.clock, 1.0)
        self.assertTrue(issubclass(cls, MasterRoleProtocol))
        protocol = cls(charset, password=password, dbid=dbid)
        protocol.factory = FakeFactory()
        ready = protocol.whenConnected()
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport, ready

    def test_master(self):
        """
        ROLE goes first; a master's connection then starts as usual
        (SELECT) and becomes usable; no timer is left.
        """
        protocol, transport, ready = self.connect(dbid=2)
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")
        transport.clear()
        self.receive(protocol, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
        self.assertIn(b"SELECT", transport.value())
        self.assertNoResult(ready)
        self.receive(protocol, b"+OK\r\n")
        self.assertIs(self.successResultOf(ready), protocol)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_master_bytes(self):
        """
        Without a charset (the cache's connections) the role comes as
        bytes and is read all the same.
        """
        protocol, transport, ready = self.connect(charset=None)
        self.receive(protocol, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
        self.successResultOf(ready)

    def test_password_first(self):
        """
        With a password, AUTH is sent before ROLE.
        """
        protocol, transport, ready = self.connect(password="pw")
        self.assertEqual(transport.value(), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
        transport.clear()
        self.receive(protocol, b"+OK\r\n")
        self.assertEqual(transport.value(), b"*1\r\n$4\r\nROLE\r\n")

    def test_replica_dropped(self):
        """
        A replica's connection is closed and never becomes usable.
        """
        protocol, transport, ready = self.connect()
        with capturedLogs() as events:
            self.receive(protocol, b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:1\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(ready)
        self.assertEqual([e["role"] for e in events if "role" in e], ["slave"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent_server_aborted(self):
        """
        A server that does not answer ROLE in time has its connection
        aborted.
        """
        protocol, transport, ready = self.connect()
        self.clock.advance(1.0)
        self.assertTrue(transport.disconnected)
        self.assertNoResult(ready)

    def test_role_refused(self):
        """
        A server that refuses ROLE (an ACL without it) is used as it is.
        """
        protocol, transport, ready = self.connect()
        self.receive(protocol, b"-NOPERM this user has no permissions to run the 'role' command\r\n")
        self.successResultOf(ready)
        self.assertFalse(transport.disconnecting)


class ReadonlyTests(SynchronousTestCase):
    """
    L{is_readonly}.
    """

    def test_readonly(self):
        """
        Only a READONLY error reply is a replica's refusal.
        """
        self.assertTrue(is_readonly(txredisapi.ResponseError("READONLY You can't write against a read only replica.")))
        self.assertTrue(is_readonly(Failure(txredisapi.ResponseError("READONLY x"))))
        for error in [txredisapi.ResponseError("ERR x"), txredisapi.ConnectionError("READONLY"),
                      ValueError("READONLY")]:
            self.assertFalse(is_readonly(error), error)


class PoolTests(SynchronousTestCase):
    """
    How the stores' pools are made for a Sentinel URL.
    """

    def test_sentinel_pool(self):
        """
        A Sentinel address gets a L{SentinelMasterEndpoint}, connections
        that check ROLE, the database and password of the URL, and a
        short reconnection back-off; other addresses keep theirs.
        """
        reactor = MemoryReactorClock()
        address = parse_store_url(URL)
        self.assertIsInstance(redis_endpoint(reactor, address, 1.0), SentinelMasterEndpoint)
        factory = redis_pool(reactor, address, reconnect_max_delay=2.0)
        self.addCleanup(factory.disconnect)
        self.assertTrue(issubclass(factory.protocol, MasterRoleProtocol))
        self.assertEqual((factory.dbid, factory.password, factory.maxDelay), (2, "pw", RECONNECT_MAX_DELAY))
        plain = redis_pool(reactor, parse_store_url("redis://h:1/0"), reconnect_max_delay=2.0)
        self.addCleanup(plain.disconnect)
        self.assertIs(plain.protocol, txredisapi.RedisProtocol)
        self.assertEqual(plain.maxDelay, 2.0)

    def test_tls_endpoints(self):
        """
        rediss+sentinel:// wraps every connection, to the Sentinels and to
        the master, in TLS; redis+sentinel:// is plain TCP. (That the
        certificate is checked against the IP a Sentinel reports is shown
        by the integration test.)
        """
        reactor = MemoryReactorClock()
        plain = tcp_or_tls(reactor, parse_store_url(URL), 1.0)("10.0.0.7", 6380)
        self.assertIsInstance(plain, HostnameEndpoint)
        tls = tcp_or_tls(reactor, parse_store_url("rediss+sentinel://s1/m/0"), 1.0)("10.0.0.7", 6380)
        self.assertNotIsInstance(tls, HostnameEndpoint)
        self.assertIsInstance(tls._wrappedEndpoint, HostnameEndpoint)
        endpoint = SentinelMasterEndpoint(reactor, parse_store_url("rediss+sentinel://s1/m/0"), 1.0)
        self.assertNotIsInstance(endpoint.locator._connect_to("s1", 26379), HostnameEndpoint)
        self.assertNotIsInstance(endpoint._connect_to("10.0.0.7", 6380), HostnameEndpoint)

    def test_stores_accept_sentinel_urls(self):
        """
        The rate-limit store and the cache's store both connect through
        the Sentinels for a Sentinel URL.
        """
        reactor = MemoryReactorClock()
        store = RedisStore(reactor, URL)
        self.addCleanup(store.close)
        self.assertTrue(issubclass(store._factory.protocol, MasterRoleProtocol))
        cache = cache_connect(reactor, parse_store_url(URL))
        self.addCleanup(cache.disconnect)
        self.assertTrue(issubclass(cache.protocol, MasterRoleProtocol))
        self.assertIsNone(cache.charset)
