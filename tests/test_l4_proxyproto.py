"""
Tests for L{gatelayer.l4.proxyproto}: the PROXY protocol parser against
valid and hostile headers (whole and byte by byte), and the writer.
"""

import struct

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.l4.proxyproto import (
    MAX_V2, V2_SIGNATURE, ProxyHeaderError, ProxyHeaderReader, encode_local, encode_v1, encode_v2,
)


def _v2(command=0x21, family=0x11, body=None, length=None):
    if body is None:
        body = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 4000, 443)
    if length is None:
        length = len(body)
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", length) + body


VALID = [
    ("v1 tcp4", b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     (1, (("192.168.0.1", 56324), ("192.168.0.11", 443)))),
    ("v1 tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
     (1, (("2001:db8::1", 1), ("2001:db8::2", 65535)))),
    ("v1 port zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 0 80\r\n", (1, (("1.2.3.4", 0), ("5.6.7.8", 80)))),
    ("v1 unknown", b"PROXY UNKNOWN\r\n", (1, None)),
    ("v1 unknown with addresses", b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", (1, None)),
    ("v2 tcp4", _v2(), (2, (("10.0.0.1", 4000), ("10.0.0.2", 443)))),
    ("v2 tcp6", _v2(family=0x21, body=bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 5, 6)),
     (2, (("::1", 5), ("::2", 6)))),
    ("v2 tcp4 with TLVs", _v2(body=bytes([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]) + b"\x04\x00\x03abc"),
     (2, (("1.2.3.4", 1), ("5.6.7.8", 2)))),
    ("v2 local", encode_local(), (2, None)),
    ("v2 local with an address block", _v2(command=0x20), (2, None)),
    ("v2 proxy unspec", _v2(family=0x00, body=b""), (2, None)),
]

HOSTILE = [
    ("not a header", b"GET / HTTP/1.1\r\n\r\n"),
    ("lower-case proxy", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 bad protocol", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 missing port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
    ("v1 extra field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
    ("v1 double space", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 port too big", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
    ("v1 port leading zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"),
    ("v1 negative port", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
    ("v1 port not a number", b"PROXY TCP4 1.2.3.4 5.6.7.8 http 2\r\n"),
    ("v1 address out of range", b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"),
    ("v1 address with leading zeros", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 ipv6 as tcp4", b"PROXY TCP4 ::1 ::2 1 2\r\n"),
    ("v1 ipv4 as tcp6", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 host name", b"PROXY TCP4 example.com 5.6.7.8 1 2\r\n"),
    ("v1 bare LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
    ("v1 no CRLF within 107 bytes", b"PROXY UNKNOWN " + b"x" * 120),
    ("v2 bad signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12)),
    ("v2 version 1", _v2(command=0x11)),
    ("v2 version 3", _v2(command=0x31)),
    ("v2 unknown command", _v2(command=0x22)),
    ("v2 unknown family", _v2(family=0x41)),
    ("v2 udp", _v2(family=0x12)),
    ("v2 unix", _v2(family=0x31, body=bytes(216))),
    ("v2 length too short for tcp4", _v2(body=bytes(8))),
    ("v2 length too short for tcp6", _v2(family=0x21, body=bytes(12))),
    ("v2 oversized", _v2(body=bytes(MAX_V2))),
]


class ProxyHeaderReaderTests(SynchronousTestCase):
    """
    L{ProxyHeaderReader} reads valid headers, however they are split, and
    refuses hostile ones.
    """

    def read(self, data, byte_by_byte=False, rest=b"client bytes"):
        reader = ProxyHeaderReader()
        if not byte_by_byte:
            return reader.feed(data + rest)
        for i in range(len(data) - 1):
            self.assertIsNone(reader.feed(data[i:i + 1]), f"complete after {i + 1} bytes")
        return reader.feed(data[-1:] + rest)

    def test_valid_headers(self):
        """
        Every valid header gives its version and addresses, and the bytes
        after it are handed back untouched.
        """
        for name, data, (version, addresses) in VALID:
            header, rest = self.read(data)
            self.assertEqual((header.version, header.addresses, header.length),
                             (version, addresses, len(data)), name)
            self.assertEqual(rest, b"client bytes", name)

    def test_valid_headers_byte_by_byte(self):
        """
        A header delivered one byte per read is complete exactly at its
        last byte.
        """
        for name, data, (version, addresses) in VALID:
            header, rest = self.read(data, byte_by_byte=True)
            self.assertEqual((header.version, header.addresses), (version, addresses), name)
            self.assertEqual(rest, b"client bytes", name)

    def test_hostile_headers(self):
        """
        Every hostile header raises L{ProxyHeaderError}, whole or byte by
        byte (at the latest at its last byte).
        """
        for name, data in HOSTILE:
            self.assertRaises(ProxyHeaderError, ProxyHeaderReader().feed, data + b"\r\n" + bytes(40))
            reader = ProxyHeaderReader()
            with self.assertRaises(ProxyHeaderError, msg=name):
                for i in range(len(data)):
                    reader.feed(data[i:i + 1])
                reader.feed(b"\r\n" + bytes(40))

    def test_other_protocol_refused_at_first_byte(self):
        """
        A connection that starts with something else (a TLS ClientHello, an
        HTTP request) is refused at its first byte, not after a timeout.
        """
        for first in (b"\x16", b"G", b"\x00"):
            self.assertRaises(ProxyHeaderError, ProxyHeaderReader().feed, first)

    def test_truncated_waits(self):
        """
        A header cut short is not complete yet: the reader asks for more
        (the listener's header timeout ends the wait).
        """
        for name, data, _ in VALID:
            self.assertIsNone(ProxyHeaderReader().feed(data[:-1]), name)

    def test_source(self):
        """
        C{source} is the original client's address, L{None} for LOCAL.
        """
        header, _ = ProxyHeaderReader().feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        self.assertEqual(header.source, ("1.2.3.4", 1))
        header, _ = ProxyHeaderReader().feed(encode_local())
        self.assertIsNone(header.source)


class EncodeTests(SynchronousTestCase):
    """
    The headers the gateway sends upstream.
    """

    def test_v1_ipv4(self):
        """
        v1 for IPv4 addresses is the text line of the specification.
        """
        self.assertEqual(encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)),
                         b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")

    def test_v1_ipv6(self):
        """
        v1 for IPv6 addresses says TCP6.
        """
        self.assertEqual(encode_v1(("::1", 1), ("::2", 2)), b"PROXY TCP6 ::1 ::2 1 2\r\n")

    def test_v1_mixed_families(self):
        """
        A mapped IPv4 address is written as IPv4 beside an IPv4 one; truly
        mixed families (or a non-address) give C{PROXY UNKNOWN}.
        """
        self.assertEqual(encode_v1(("::ffff:1.2.3.4", 1), ("5.6.7.8", 2)),
                         b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        self.assertEqual(encode_v1(("::1", 1), ("5.6.7.8", 2)), b"PROXY UNKNOWN\r\n")
        self.assertEqual(encode_v1(("unix", 0), ("5.6.7.8", 2)), b"PROXY UNKNOWN\r\n")

    def test_v2_ipv4_bytes(self):
        """
        v2 for IPv4: signature, version 2 PROXY, TCP over IPv4, 12 address
        bytes.
        """
        self.assertEqual(
            encode_v2(("1.2.3.4", 258), ("5.6.7.8", 443)),
            V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([1, 2, 3, 4, 5, 6, 7, 8]) + b"\x01\x02\x01\xbb")

    def test_round_trips(self):
        """
        What the writer produces, the reader reads back to the same
        addresses.
        """
        for source, destination in ((("10.1.2.3", 5555), ("10.0.0.1", 80)),
                                    (("2001:db8::7", 1234), ("2001:db8::1", 443))):
            for encode, version in ((encode_v1, 1), (encode_v2, 2)):
                header, rest = ProxyHeaderReader().feed(encode(source, destination) + b"x")
                self.assertEqual((header.version, header.addresses, rest),
                                 (version, (source, destination), b"x"))

    def test_local(self):
        """
        The LOCAL header (health checks) reads back as LOCAL; v1's is
        C{PROXY UNKNOWN}.
        """
        self.assertEqual(encode_local(1), b"PROXY UNKNOWN\r\n")
        header, rest = ProxyHeaderReader().feed(encode_local(2))
        self.assertEqual((header.version, header.addresses, rest), (2, None, b""))
