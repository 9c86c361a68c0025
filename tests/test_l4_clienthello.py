"""
Tests for L{gatelayer.l4.clienthello}: server names read from real
ClientHellos (pyOpenSSL and the C{ssl} module, captured in memory), however
they are split, and the refusal of everything else; the SNI table.
"""

import ssl
import struct

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from gatelayer.l4.clienthello import ClientHelloError, ClientHelloReader, SniTable


def openssl_hello(server_name=None):
    """
    The first flight of a pyOpenSSL client (a ClientHello in one record).
    """
    connection = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    if server_name is not None:
        connection.set_tlsext_host_name(server_name.encode("ascii"))
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def stdlib_hello(server_name=None):
    """
    The first flight of a client of Python's C{ssl} module.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def handshake_of(hello):
    """
    The handshake bytes carried by the single record C{hello}.
    """
    return hello[5:5 + struct.unpack("!H", hello[3:5])[0]]


def records(handshake, size):
    """
    C{handshake} split over TLS handshake records of C{size} bytes.
    """
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(handshake[i:i + size])) + handshake[i:i + size]
                    for i in range(0, len(handshake), size))


def synthetic_hello(names=(b"example.com",), extra=b"", sni=None):
    """
    A minimal ClientHello record with a server_name extension listing
    C{names} (or the raw extension C{sni}) and C{extra} extension bytes.
    """
    if sni is None:
        entries = b"".join(b"\x00" + struct.pack("!H", len(n)) + n for n in names)
        sni = struct.pack("!H", len(entries)) + entries
    extensions = struct.pack("!HH", 0, len(sni)) + sni + extra
    body = (b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return records(handshake, 16384)


class ClientHelloReaderTests(SynchronousTestCase):
    """
    L{ClientHelloReader} finds the server name of real ClientHellos and
    refuses what is not one.
    """

    def test_real_client_hellos(self):
        """
        The names pyOpenSSL and C{ssl} clients send are read, lower-case,
        and the whole of what was fed comes back to be relayed.
        """
        for capture in (openssl_hello, stdlib_hello):
            for name in ("api.example.com", "DB.Example.COM", None):
                hello = capture(name)
                found, buffered = ClientHelloReader().feed(hello)
                self.assertEqual(found, name.lower() if name else None, (capture.__name__, name))
                self.assertEqual(buffered, hello)

    def test_byte_by_byte(self):
        """
        A ClientHello arriving one byte per read is complete exactly at
        its last byte.
        """
        hello = stdlib_hello("api.example.com")
        reader = ClientHelloReader()
        for i in range(len(hello) - 1):
            self.assertIsNone(reader.feed(hello[i:i + 1]))
        self.assertEqual(reader.feed(hello[-1:]), ("api.example.com", hello))

    def test_split_over_records(self):
        """
        A ClientHello fragmented over several TLS records (of 1, 7 and 100
        bytes) is joined again.
        """
        hello = openssl_hello("split.example.com")
        for size in (1, 7, 100):
            split = records(handshake_of(hello), size)
            self.assertEqual(ClientHelloReader().feed(split), ("split.example.com", split), size)

    def test_truncated(self):
        """
        A ClientHello cut short is incomplete (the listener's
        C{header_timeout} ends the wait), at every length.
        """
        hello = openssl_hello("api.example.com")
        for end in range(0, len(hello), 37):
            self.assertIsNone(ClientHelloReader().feed(hello[:end]), end)

    def test_trailing_bytes_kept(self):
        """
        Bytes after the ClientHello in the same read are relayed too.
        """
        hello = openssl_hello("api.example.com")
        self.assertEqual(ClientHelloReader().feed(hello + b"more"), ("api.example.com", hello + b"more"))

    def test_hostile(self):
        """
        What is not a well-formed TLS ClientHello raises
        L{ClientHelloError}.
        """
        hello = openssl_hello("api.example.com")
        handshake = handshake_of(hello)
        cases = {
            "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "garbage": b"\x00\x01\x02\x03\x04\x05",
            "sslv2 hello": b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes(37),
            "application data first": b"\x17\x03\x03\x00\x05hello",
            "record version 2": b"\x16\x02\x00\x00\x05" + bytes(5),
            "empty record": b"\x16\x03\x01\x00\x00",
            "record over 16 KB": b"\x16\x03\x01\x40\x01" + bytes(10),
            "server hello": records(b"\x02" + handshake[1:], 16384),
            "body shorter than its length": records(handshake[:4] + handshake[4:40], 16384)
            + b"\x17\x03\x03\x00\x01x",
            "two host names": synthetic_hello(names=(b"a.example.com", b"b.example.com")),
            "name with a space": synthetic_hello(names=(b"a example.com",)),
            "name with NUL": synthetic_hello(names=(b"a.example.com\x00.evil",)),
            "empty name": synthetic_hello(names=(b"",)),
            "empty server_name list": synthetic_hello(sni=b"\x00\x00"),
            "server_name list longer than the extension": synthetic_hello(sni=b"\x00\x09\x00\x00\x02ab"),
            "repeated extension": synthetic_hello(extra=b"\x00\x00\x00\x00"),
            "extension past the end": synthetic_hello(extra=b"\x00\x10\x00\x09ab"),
        }
        for name, data in cases.items():
            self.assertRaises(ClientHelloError, ClientHelloReader().feed, data)

    def test_oversized(self):
        """
        A ClientHello over the cap (a 20 KB padding extension, spread over
        two records) is refused without reading it all.
        """
        big = synthetic_hello(extra=struct.pack("!HH", 21, 20000) + bytes(20000))
        reader = ClientHelloReader()
        self.assertRaises(ClientHelloError, reader.feed, big[:9])
        # A real client's hello, under a cap below its size: OpenSSL builds
        # send from about 300 bytes to over 1,500 (post-quantum key shares).
        hello = openssl_hello("a.b")
        self.assertRaises(ClientHelloError, ClientHelloReader(limit=len(hello) // 2).feed, hello)
        self.assertEqual(ClientHelloReader(limit=len(hello)).feed(hello), ("a.b", hello))

    def test_no_extensions(self):
        """
        A ClientHello without any extension has no server name.
        """
        body = b"\x03\x03" + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"
        data = records(b"\x01" + len(body).to_bytes(3, "big") + body, 16384)
        self.assertEqual(ClientHelloReader().feed(data), (None, data))

    def test_trailing_dot(self):
        """
        A fully-qualified name's trailing dot is dropped.
        """
        data = synthetic_hello(names=(b"api.example.com.",))
        self.assertEqual(ClientHelloReader().feed(data)[0], "api.example.com")


class SniTableTests(SynchronousTestCase):
    """
    L{SniTable} picks the upstream for a server name.
    """

    def test_lookup(self):
        """
        Exact names first, then one-label wildcards, then the default.
        """
        table = SniTable([("api.example.com", "api"), ("*.example.com", "wild"), ("*", "default")])
        cases = {
            "api.example.com": "api",
            "www.example.com": "wild",
            "example.com": "default",
            "a.b.example.com": "default",
            "other.org": "default",
            None: "default",
        }
        for name, upstream in cases.items():
            self.assertEqual(table.lookup(name), upstream, name)

    def test_no_default(self):
        """
        Without C{*}, a name nothing matches (or no name) has no upstream.
        """
        table = SniTable([("api.example.com", "api")])
        self.assertIsNone(table.lookup("www.example.com"))
        self.assertIsNone(table.lookup(None))
