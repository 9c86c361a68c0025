"""
Address lists for the C{ip_filter} filter: CIDR networks and bare addresses,
IPv4 and IPv6, parsed once and compiled into sorted integer ranges so a
lookup is one binary search per family, however long the list.

IPv4-mapped IPv6 addresses (C{::ffff:192.0.2.7}) are IPv4 addresses: an
entry or a client address written that way is compared as IPv4, so a
dual-stack listener cannot be used to walk around an IPv4 rule.
"""

import ipaddress
from bisect import bisect_right

__all__ = ["AddressSet", "CidrError", "load_cidr_file", "parse_cidr", "parse_cidr_lines", "parse_client_address"]

MAX_FILE_SIZE = 64 * 1024 * 1024
"""A list file larger than this is refused (a list, not a data dump)."""

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class CidrError(ValueError):
    """
    An entry, or a file of entries, that is not an address list.
    """


def parse_cidr(text):
    """
    Parse one entry: an address (C{192.0.2.7}, C{2001:db8::1}) or a network
    in CIDR notation (C{10.0.0.0/8}, C{2001:db8::/32}); an IPv4-mapped IPv6
    entry becomes the IPv4 one.

    @return: an L{ipaddress.IPv4Network} or L{ipaddress.IPv6Network}.
    @raise CidrError: with a message saying what is wrong (the caller puts
        the entry and where it is in front).
    """
    entry = text.strip()
    if not entry:
        raise CidrError("is empty")
    try:
        network = ipaddress.ip_network(entry, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            loose = ipaddress.ip_network(entry, strict=False)
            raise CidrError(f"has host bits set (the network is {loose})") from None
        raise CidrError("is not an address or CIDR network") from None
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.IPv4Network((int(mapped), network.prefixlen - 96))
    return network


def parse_cidr_lines(lines, source):
    """
    Parse a list file's lines: one entry per line, C{#} starts a comment
    (on its own line or after an entry), blank lines are skipped.

    @param source: how messages name the file (its path).
    @return: a tuple of networks.
    @raise CidrError: naming C{source} and the line number of each bad line
        (at most ten are listed).
    """
    networks, problems = [], []
    for number, line in enumerate(lines, 1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            networks.append(parse_cidr(entry))
        except CidrError as e:
            problems.append(f"{source} line {number}: {entry!r} {e}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CidrError("; ".join(problems[:10]) + more)
    return tuple(networks)


def load_cidr_file(path):
    """
    Read and parse the list file at C{path} (UTF-8).

    @raise CidrError: naming the file (and the line) of what is wrong.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError as e:
        raise CidrError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_SIZE:
        raise CidrError(f"{path}: is larger than {MAX_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CidrError(f"{path}: is not UTF-8 (byte {e.start})") from None
    return parse_cidr_lines(text.splitlines(), path)


def parse_client_address(text):
    """
    The C{(version, integer)} of a client address (an IPv4-mapped IPv6
    address as IPv4; an IPv6 zone is dropped), or L{None} when C{text} is
    not an IP address (a UNIX socket peer, an empty string).
    """
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return 4, int(mapped)
    return address.version, int(address)


class AddressSet:
    """
    A set of networks compiled for lookup: per family, the networks as
    integer ranges, overlapping and adjacent ones merged, sorted by start.
    Immutable once built.

    @ivar networks: the networks it was built from, in their order.
    """

    __slots__ = ("networks", "_ranges")

    def __init__(self, networks=()):
        self.networks = tuple(networks)
        ranges = {4: [], 6: []}
        for network in self.networks:
            ranges[network.version].append(
                (int(network.network_address), int(network.broadcast_address)))
        self._ranges = {version: _merged(items) for version, items in ranges.items()}

    def __bool__(self):
        return bool(self.networks)

    def __len__(self):
        return len(self.networks)

    def __repr__(self):
        return f"<AddressSet of {len(self.networks)} network(s)>"

    def contains(self, address):
        """
        Whether C{address}, a C{(version, integer)} pair from
        L{parse_client_address}, is in one of the networks.
        """
        starts, ends = self._ranges[address[0]]
        index = bisect_right(starts, address[1]) - 1
        return index >= 0 and address[1] <= ends[index]

    def __contains__(self, text):
        """
        Whether the address C{text} is in the set (L{False} for what is not
        an address).
        """
        address = parse_client_address(text)
        return address is not None and self.contains(address)


def _merged(ranges):
    """
    C{(starts, ends)}: the ranges sorted and merged where they overlap or
    touch.
    """
    starts, ends = [], []
    for start, end in sorted(ranges):
        if ends and start <= ends[-1] + 1:
            if end > ends[-1]:
                ends[-1] = end
            continue
        starts.append(start)
        ends.append(end)
    return starts, ends
