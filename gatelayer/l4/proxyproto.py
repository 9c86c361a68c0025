"""
The PROXY protocol (HAProxy's C{proxy-protocol.txt}, versions 1 and 2),
sans I/O: L{ProxyHeaderReader} reads the header a trusted load balancer puts
in front of a connection, L{encode_v1}, L{encode_v2} and L{encode_local}
write the one sent to an upstream.

Parsing is strict: a header that is not exactly what the specification
allows (wrong signature, bad lengths, an address that does not parse, a port
with a leading zero, an unsupported family) raises L{ProxyHeaderError} and the
caller closes the connection. Only TCP over IPv4 and IPv6 is carried;
C{UNKNOWN} (v1), C{UNSPEC} and C{LOCAL} (v2) mean "use the connection's own
addresses" (L{ProxyHeader.addresses} is then L{None}).
"""

import ipaddress
import struct

from attrs import frozen

__all__ = [
    "MAX_V1", "MAX_V2", "V2_SIGNATURE", "ProxyHeader", "ProxyHeaderError", "ProxyHeaderReader",
    "encode_local", "encode_v1", "encode_v2",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The twelve bytes every version 2 header starts with."""

_V1_PREFIX = b"PROXY "
MAX_V1 = 107
"""The longest v1 header the specification allows, CRLF included."""
MAX_V2 = 16 + 1024
"""The longest v2 header accepted: the fixed part and 1 KB of addresses and TLVs."""

_FAMILIES = {0x11: (4, 12), 0x21: (6, 36)}
_UNSUPPORTED = {0x12: "UDP over IPv4", 0x22: "UDP over IPv6", 0x31: "unix stream", 0x32: "unix datagram"}


class ProxyHeaderError(ValueError):
    """
    What was read is not a valid PROXY protocol header; C{str()} says why.
    """


@frozen
class ProxyHeader:
    """
    A parsed PROXY header.

    @ivar version: C{1} or C{2}.
    @ivar addresses: C{((source host, port), (destination host, port))}, or
        L{None} for C{LOCAL}/C{UNKNOWN}/C{UNSPEC} (use the connection's own).
    @ivar length: how many bytes the header took; what follows is the
        client's own data.
    """

    version: int
    addresses: tuple = None
    length: int = 0

    @property
    def source(self):
        """
        The original client's C{(host, port)}, or L{None}.
        """
        return self.addresses[0] if self.addresses else None


def _v1_address(text, version):
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 address {text!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ProxyHeaderError(f"v1 address {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text):
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyHeaderError(f"v1 port {text!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"v1 port {text!r} is above 65535")
    return port


def _parse_v1(line):
    words = line.split(b" ")
    if len(words) < 2 or words[0] != b"PROXY":
        raise ProxyHeaderError("v1 header does not start with 'PROXY '")
    if words[1] == b"UNKNOWN":
        return None
    if words[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"v1 protocol {words[1][:16]!r} is not TCP4, TCP6 or UNKNOWN")
    if len(words) != 6:
        raise ProxyHeaderError("v1 header does not have exactly two addresses and two ports")
    version = 4 if words[1] == b"TCP4" else 6
    return ((_v1_address(words[2], version), _v1_port(words[4])),
            (_v1_address(words[3], version), _v1_port(words[5])))


def _parse_v2(data):
    """
    C{(addresses or None, header length)} for a complete v2 header at the
    start of C{data}, or L{None} when more bytes are needed.
    """
    if len(data) < 16:
        return None
    version_command, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"v2 version {version_command >> 4} is not 2")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyHeaderError(f"v2 command {command} is neither LOCAL nor PROXY")
    if 16 + length > MAX_V2:
        raise ProxyHeaderError(f"v2 header of {16 + length} bytes is over the {MAX_V2}-byte limit")
    if command == 1 and family not in _FAMILIES and family != 0x00:
        what = _UNSUPPORTED.get(family)
        if what is not None:
            raise ProxyHeaderError(f"v2 family {what} is not supported (TCP only)")
        raise ProxyHeaderError(f"v2 family 0x{family:02x} is unknown")
    if command == 1 and family in _FAMILIES and length < _FAMILIES[family][1]:
        raise ProxyHeaderError(
            f"v2 length {length} is too short for the addresses of family 0x{family:02x}")
    if len(data) < 16 + length:
        return None
    if command == 0 or family == 0x00:
        return None, 16 + length
    version, size = _FAMILIES[family]
    body = data[16:16 + size]
    if version == 4:
        source, destination = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
    else:
        source, destination = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
    source_port, destination_port = struct.unpack("!HH", body[size - 4:size])
    return ((str(source), source_port), (str(destination), destination_port)), 16 + length


class ProxyHeaderReader:
    """
    Reads a v1 or v2 PROXY header from the first bytes of a connection, fed
    as they arrive (one byte at a time works as well as all at once).

    L{feed} returns L{None} while the header is incomplete, and
    C{(ProxyHeader, rest)} once it is complete (C{rest}: the bytes after
    it). It raises L{ProxyHeaderError} as soon as the bytes cannot be a
    valid header (so a connection that is not a PROXY one is closed after
    its first bytes, not after a timeout).
    """

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        """
        Add C{data}; see the class docstring.
        """
        buffer = self._buffer = self._buffer + data
        head = buffer[:12]
        if V2_SIGNATURE.startswith(head):
            if len(buffer) < 12:
                return None
            parsed = _parse_v2(buffer)
            if parsed is None:
                return None
            addresses, length = parsed
            self._buffer = b""
            return ProxyHeader(version=2, addresses=addresses, length=length), buffer[length:]
        if not _V1_PREFIX.startswith(buffer[:6]):
            raise ProxyHeaderError("the connection does not start with a PROXY header")
        end = buffer.find(b"\r\n", 0, MAX_V1)
        if end < 0:
            if len(buffer) >= MAX_V1:
                raise ProxyHeaderError(f"v1 header has no CRLF within {MAX_V1} bytes")
            if b"\n" in buffer or b"\r" in buffer[:-1]:
                raise ProxyHeaderError("v1 header has a bare CR or LF")
            return None
        line = buffer[:end]
        if b"\r" in line or b"\n" in line:
            raise ProxyHeaderError("v1 header has a bare CR or LF")
        addresses = _parse_v1(line)
        self._buffer = b""
        return ProxyHeader(version=1, addresses=addresses, length=end + 2), buffer[end + 2:]


def _family(host):
    return ipaddress.ip_address(host)


def encode_v1(source, destination):
    """
    The v1 header for a TCP connection from C{source} to C{destination}
    (each C{(host, port)}); C{PROXY UNKNOWN} when they are not both of one IP
    version.
    """
    try:
        src, dst = _family(source[0]), _family(destination[0])
    except ValueError:
        return b"PROXY UNKNOWN\r\n"
    if src.version != dst.version:
        if src.version == 6 and src.ipv4_mapped is not None:
            src = src.ipv4_mapped
        elif dst.version == 6 and dst.ipv4_mapped is not None:
            dst = dst.ipv4_mapped
        if src.version != dst.version:
            return b"PROXY UNKNOWN\r\n"
    protocol = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {protocol} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source, destination):
    """
    The v2 header (PROXY command, TCP over IPv4 or IPv6) for a connection
    from C{source} to C{destination}; a C{LOCAL} one when the addresses are
    not both of one IP version.
    """
    try:
        src, dst = _family(source[0]), _family(destination[0])
    except ValueError:
        return encode_local()
    if src.version != dst.version:
        return encode_local()
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body


def encode_local(version=2):
    """
    A C{LOCAL} header (v2) or C{PROXY UNKNOWN} (v1): a connection the
    gateway makes on its own behalf, such as a health check.
    """
    if version == 1:
        return b"PROXY UNKNOWN\r\n"
    return V2_SIGNATURE + b"\x20\x00\x00\x00"
