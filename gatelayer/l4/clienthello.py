"""
Reading the server name (SNI) of a TLS ClientHello without terminating TLS,
sans I/O: L{ClientHelloReader} is fed a connection's first bytes and says
which name the client asked for, so a pass-through listener can choose an
upstream and relay the connection, from its first byte, untouched.

It reads TLS records (the ClientHello may be split over several records and
over any number of reads), joins their handshake fragments, and parses the
ClientHello far enough to find the C{server_name} extension (RFC 6066). It
never decrypts anything: a ClientHello is plaintext. Whatever is not a
well-formed TLS handshake (another protocol, an SSLv2-style hello, bad
lengths, a hello over the size cap, several host names) raises
L{ClientHelloError}; the caller closes the connection without connecting
upstream.
"""

import struct

__all__ = ["ClientHelloError", "ClientHelloReader", "MAX_CLIENT_HELLO", "SniTable"]

MAX_CLIENT_HELLO = 16384
"""The default cap on the bytes read before the ClientHello is complete."""

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-.")


class ClientHelloError(ValueError):
    """
    The bytes are not a TLS ClientHello this gateway accepts; C{str()} says
    why.
    """


class ClientHelloReader:
    """
    Feed a connection's first bytes with L{feed}: it returns L{None} while
    the ClientHello is incomplete, then C{(server_name, buffered)}:
    the lower-case name (L{None} when the client sent none) and every byte
    fed so far, to be relayed as it is.

    @param limit: the most bytes read before the ClientHello is complete.
    """

    def __init__(self, limit=MAX_CLIENT_HELLO):
        self.limit = limit
        self._buffer = b""
        self._offset = 0
        self._handshake = b""

    def feed(self, data):
        """
        Add C{data}; see the class docstring.
        """
        self._buffer += data
        buffer = self._buffer
        while len(buffer) - self._offset >= 5:
            start = self._offset
            content_type, major, minor, length = struct.unpack("!BBBH", buffer[start:start + 5])
            if content_type != _HANDSHAKE:
                raise ClientHelloError(f"first record has content type {content_type}, not handshake (22)")
            if major != 3 or minor > 4:
                raise ClientHelloError(f"record version {major}.{minor} is not a TLS one")
            if length == 0 or length > 16384:
                raise ClientHelloError(f"record length {length} is out of range")
            if len(buffer) - start - 5 < length:
                # Check the handshake header as soon as it is in: an
                # oversized hello is refused before it is read.
                self._check_header(self._handshake + buffer[start + 5:])
                break
            self._handshake += buffer[start + 5:start + 5 + length]
            self._offset = start + 5 + length
            name = self._try_parse()
            if name is not _INCOMPLETE:
                return name, buffer
        if self._buffer[:1] not in (b"", bytes([_HANDSHAKE])):
            raise ClientHelloError("the connection does not start with a TLS handshake record")
        if len(buffer) > self.limit:
            raise ClientHelloError(f"no complete ClientHello within {self.limit} bytes")
        return None

    def _check_header(self, handshake):
        """
        The ClientHello's length once its 4-byte header is in C{handshake},
        else L{None}; raises for another message or one over the cap.
        """
        if not handshake:
            return None
        if handshake[0] != _CLIENT_HELLO:
            raise ClientHelloError(f"first handshake message has type {handshake[0]}, not ClientHello")
        if len(handshake) < 4:
            return None
        length = int.from_bytes(handshake[1:4], "big")
        if 4 + length > self.limit:
            raise ClientHelloError(f"ClientHello of {length} bytes is over the {self.limit}-byte limit")
        return length

    def _try_parse(self):
        handshake = self._handshake
        length = self._check_header(handshake)
        if length is None or len(handshake) < 4 + length:
            return _INCOMPLETE
        return parse_client_hello(handshake[4:4 + length])


_INCOMPLETE = object()


class _Cursor:
    __slots__ = ("data", "at")

    def __init__(self, data):
        self.data = data
        self.at = 0

    def take(self, size, what):
        end = self.at + size
        if end > len(self.data):
            raise ClientHelloError(f"ClientHello is truncated in its {what}")
        chunk = self.data[self.at:end]
        self.at = end
        return chunk

    def vector(self, width, what):
        return self.take(int.from_bytes(self.take(width, what), "big"), what)


def parse_client_hello(body):
    """
    The server name of the ClientHello C{body} (the handshake message
    without its 4-byte header), lower-case, or L{None} when it has none.

    @raise ClientHelloError: when the body is malformed.
    """
    cursor = _Cursor(body)
    version = cursor.take(2, "version")
    if version[0] != 3:
        raise ClientHelloError(f"ClientHello version {version[0]}.{version[1]} is not a TLS one")
    cursor.take(32, "random")
    if len(cursor.vector(1, "session id")) > 32:
        raise ClientHelloError("ClientHello session id is longer than 32 bytes")
    suites = cursor.vector(2, "cipher suites")
    if not suites or len(suites) % 2:
        raise ClientHelloError("ClientHello cipher suites have a bad length")
    if not cursor.vector(1, "compression methods"):
        raise ClientHelloError("ClientHello offers no compression method")
    if cursor.at == len(body):
        return None
    extensions = _Cursor(cursor.vector(2, "extensions"))
    if cursor.at != len(body):
        raise ClientHelloError("ClientHello has bytes after its extensions")
    name = None
    seen = set()
    while extensions.at < len(extensions.data):
        kind = int.from_bytes(extensions.take(2, "extensions"), "big")
        data = extensions.vector(2, "extensions")
        if kind in seen:
            raise ClientHelloError(f"ClientHello repeats extension {kind}")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _server_name(data)
    return name


def _server_name(data):
    outer = _Cursor(data)
    names = _Cursor(outer.vector(2, "server_name extension"))
    if outer.at != len(data) or not names.data:
        raise ClientHelloError("server_name extension has a bad length")
    found = None
    while names.at < len(names.data):
        kind = names.take(1, "server_name extension")[0]
        name = names.vector(2, "server_name extension")
        if kind != _HOST_NAME:
            continue
        if found is not None:
            raise ClientHelloError("server_name extension has more than one host name")
        found = name
    if found is None:
        return None
    name = found.lower()
    if name.endswith(b"."):
        name = name[:-1]
    if not name or len(name) > 253 or not set(name) <= _NAME_CHARS or b".." in name \
            or name.startswith(b".") or any(label.startswith(b"-") for label in name.split(b".")):
        raise ClientHelloError(f"server name {found[:64]!r} is not a host name")
    return name.decode("ascii")


class SniTable:
    """
    Which upstream a server name goes to: exact names first, then
    C{*.domain} wildcards (one label: C{*.example.com} matches
    C{a.example.com}, not C{example.com} nor C{a.b.example.com}), then the
    default (for no name, or a name nothing else matches).

    @param routes: C{(pattern, upstream)} pairs; the pattern C{*} is the
        default.
    """

    def __init__(self, routes):
        self.exact = {}
        self.wildcards = {}
        self.default = None
        for pattern, upstream in routes:
            if pattern == "*":
                self.default = upstream
            elif pattern.startswith("*."):
                self.wildcards[pattern[2:]] = upstream
            else:
                self.exact[pattern] = upstream

    def lookup(self, name):
        """
        The upstream for server name C{name} (or L{None} for no name); L{None}
        when nothing matches and there is no default.
        """
        if name is not None:
            upstream = self.exact.get(name)
            if upstream is not None:
                return upstream
            _, dot, parent = name.partition(".")
            if dot:
                upstream = self.wildcards.get(parent)
                if upstream is not None:
                    return upstream
        return self.default
