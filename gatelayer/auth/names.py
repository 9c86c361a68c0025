"""
Names shared by the authentication settings and the authentication filters:
the signature algorithms a token may use and the headers the gateway writes.

Pure data and string handling, no key material and no imports of the running
system, so L{gatelayer.config} (which checks the names an operator writes)
and L{gatelayer.filters} (which acts on them) can both depend on it.
"""

__all__ = [
    "ALGORITHMS", "CONSUMER_HEADER", "EC_ALGORITHMS", "HMAC_ALGORITHMS", "OKP_ALGORITHMS",
    "RESERVED_HEADERS", "RSA_ALGORITHMS", "split_algorithm",
]

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
OKP_ALGORITHMS = ("EdDSA",)
ALGORITHMS = HMAC_ALGORITHMS + RSA_ALGORITHMS + EC_ALGORITHMS + OKP_ALGORITHMS
"""Every algorithm a token may be signed with, in the order documented."""

CONSUMER_HEADER = b"x-consumer"
"""Where the identity goes upstream (the client's own is always removed)."""

RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-authorization", "proxy-authenticate", "authorization", "cookie",
    CONSUMER_HEADER.decode("ascii"),
})
"""Headers a forwarded claim may not be written to."""


def split_algorithm(item):
    """
    Split a C{keys}/C{secret_file} list item into C{(path, algorithm)}: an
    item may end with the algorithm its key is pinned to
    (C{etc/keys/idp.pem RS384}).
    """
    path, sep, last = item.rpartition(" ")
    if sep and last in ALGORITHMS:
        return path.strip(), last
    return item, None
