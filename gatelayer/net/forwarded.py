"""
Resolving the real client address through trusted proxies.
"""

import ipaddress


def resolve_client_ip(peer_ip, forwarded_for, trusted):
    """
    The client address for C{peer_ip} given the X-Forwarded-For header values
    C{forwarded_for} (a list of byte strings, possibly empty) and the
    C{trusted} networks (a tuple of L{ipaddress} networks).

    Read right to left: while the current hop is trusted, step to the address
    it says it received from. The first untrusted hop is the client. A client
    cannot choose its own address by sending X-Forwarded-For, because its
    own hop (the TCP peer) is not trusted and the header is then ignored.
    """
    if not trusted or not forwarded_for:
        return peer_ip
    hops = []
    for value in forwarded_for:
        hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    current = peer_ip
    while True:
        if not is_trusted(current, trusted):
            return current
        while hops and not hops[-1]:
            hops.pop()
        if not hops:
            return current
        candidate = hops.pop()
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return current
        current = candidate


def is_trusted(address, trusted):
    """
    Whether C{address} (text) is in one of the C{trusted} networks (an
    IPv4-mapped IPv6 address counts as its IPv4 address).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted if network.version == ip.version)
