"""
The TLS policy of the gateway's listeners: protocol versions, ciphers, ALPN
and session settings, applied the same way to every OpenSSL context built
for a C{[tls:NAME]} section.

Older protocols than TLS 1.2 are never offered, whatever the configuration
says; the only choice is whether TLS 1.2 is still accepted.
"""

import functools
import hashlib

from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.logger import Logger

_log = Logger()

__all__ = [
    "PolicyError",
    "MODERN_CIPHERS",
    "ALPN_PROTOCOLS",
    "ALPN_HTTP1",
    "minimum_version",
    "server_context",
    "check_policy",
    "hsts_header",
]

#: TLS 1.2 suites offered by default: forward secret and AEAD only (GCM and
#: ChaCha20-Poly1305). TLS 1.3 suites are all AEAD and keep OpenSSL's list.
MODERN_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
])

#: What the listeners speak over TLS, in the server's order of preference:
#: HTTP/2 where the listener has C{http2} on, else HTTP/1.1.
ALPN_PROTOCOLS = (b"h2", b"http/1.1")

#: What a listener without HTTP/2 offers.
ALPN_HTTP1 = (b"http/1.1",)

_VERSIONS = {
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}

# Options every server context gets: no TLS compression (CRIME), no
# renegotiation (a DoS lever), and fresh ECDH keys per handshake. Whose
# cipher order wins is decided per section (prefer_server_ciphers).
_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_SINGLE_ECDH_USE
_OPTIONS |= getattr(SSL, "OP_NO_RENEGOTIATION", 0)

# TLS 1.2 suites that are AEAD, by the words OpenSSL names them with.
_AEAD_MARKS = ("GCM", "CHACHA20", "CCM")


class PolicyError(ValueError):
    """
    A C{[tls:NAME]} policy setting OpenSSL cannot apply (an unknown version,
    a cipher string that selects nothing). The message names the section
    and key.
    """


def minimum_version(spec):
    """
    The OpenSSL protocol version constant for C{spec.min_version}.

    @raise PolicyError: for anything but C{TLSv1.2} or C{TLSv1.3}.
    """
    version = spec.min_version or "TLSv1.2"
    try:
        return _VERSIONS[version]
    except KeyError:
        raise PolicyError(
            f"[tls:{spec.name}] min_version: {version!r} is not supported "
            "(TLSv1.2 or TLSv1.3; older ones are never offered)") from None


def _select_alpn(connection, offered):
    # The contexts of a [tls:NAME] section are shared by its listeners: what
    # one offers is on its TLS factory (alpn_protocols), reached through
    # the connection's wrapper.
    wrapper = connection.get_app_data()
    factory = getattr(wrapper, "factory", None)
    for protocol in getattr(factory, "alpn_protocols", ALPN_HTTP1):
        if protocol in offered:
            return protocol
    # A client offering only h2 (say) still gets a connection; it simply has
    # no ALPN result and speaks HTTP/1.1 or gives up.
    return SSL.NO_OVERLAPPING_PROTOCOLS


def session_id_for(spec):
    """
    The session id context of a C{[tls:NAME]} section: the same for all its
    contexts, so a session resumes whichever certificate context served it.
    """
    return hashlib.sha256(f"gatelayer tls:{spec.name}".encode()).digest()[:32]


def server_context(spec):
    """
    A new server L{SSL.Context} with the policy of C{spec} (versions, ciphers
    and whose order wins, key exchange groups, ALPN, session cache, tickets
    on or off) and no certificate yet.

    @raise PolicyError: when C{spec.ciphers} selects no cipher or
        C{spec.groups} names a group OpenSSL does not know.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_options(_OPTIONS)
    context.set_min_proto_version(minimum_version(spec))
    ciphers = spec.ciphers or MODERN_CIPHERS
    try:
        context.set_cipher_list(ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise PolicyError(
            f"[tls:{spec.name}] ciphers: {ciphers!r} selects no cipher OpenSSL knows") from None
    _apply_groups(context, spec)
    if _prefers_server_order(spec, ciphers):
        context.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    if not spec.session_tickets:
        context.set_options(SSL.OP_NO_TICKET)
    context.set_alpn_select_callback(_select_alpn)
    context.set_session_id(session_id_for(spec))
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_timeout(300)
    return context


#: C{SSL_CTX_set1_curves_list} of the bindings, or L{None} where they lack
#: it (cryptography before 44, which PyPy 3.9 installs): then OpenSSL's own
#: default groups are offered and L{GROUPS_SETTABLE} says so.
_SET_GROUPS = getattr(_lib, "SSL_CTX_set1_curves_list", None)
GROUPS_SETTABLE = _SET_GROUPS is not None


def _apply_groups(context, spec):
    if _SET_GROUPS is None:
        _groups_unsettable(spec.name)
        return
    groups = ":".join(spec.groups)
    try:
        accepted = _SET_GROUPS(context._context, groups.encode("ascii")) == 1
    except UnicodeEncodeError:
        accepted = False
    if not accepted:
        _lib.ERR_clear_error()
        probe = SSL.Context(SSL.TLS_SERVER_METHOD)
        unknown = [name for name in spec.groups
                   if not name.isascii() or _SET_GROUPS(probe._context, name.encode()) != 1]
        _lib.ERR_clear_error()
        raise PolicyError(
            f"[tls:{spec.name}] groups: {', '.join(spec.groups)!r}: OpenSSL knows no group "
            f"{', '.join(map(repr, unknown or spec.groups))} (use e.g. X25519, P-256, P-384)")


@functools.lru_cache(maxsize=None)
def _groups_unsettable(name):
    # Once per section and process.
    _log.warn(
        "[tls:{name}] groups: this cryptography build cannot set key exchange groups; "
        "OpenSSL's default groups are offered", name=name, event="tls_groups_default")


def _prefers_server_order(spec, ciphers):
    """
    Whether the server's cipher order wins: C{prefer_server_ciphers} when
    set; otherwise only when some TLS 1.2 suite is not AEAD (with AEAD
    suites only, the client's order is as safe and lets it pick what its
    hardware does fastest, as Mozilla's intermediate profile advises).
    """
    if spec.prefer_server_ciphers is not None:
        return spec.prefer_server_ciphers
    return not _only_aead(ciphers)


@functools.lru_cache(maxsize=64)
def _only_aead(ciphers):
    # A context that made a connection can no longer be changed: ask a
    # throwaway one which suites the string selects.
    probe = SSL.Context(SSL.TLS_SERVER_METHOD)
    probe.set_cipher_list(ciphers.encode("ascii"))
    suites = [name for name in SSL.Connection(probe, None).get_cipher_list() if not name.startswith("TLS_")]
    return all(any(mark in name for mark in _AEAD_MARKS) for name in suites)


def check_policy(spec):
    """
    Build one context for C{spec} and drop it: a configuration check that
    raises L{PolicyError} with the section and key at load time rather than
    on the first handshake.
    """
    server_context(spec)


def hsts_header(spec):
    """
    The C{Strict-Transport-Security} header value (bytes) responses on a
    listener of C{spec} carry, or L{None} when C{hsts} is not set.
    """
    if not spec.hsts:
        return None
    return spec.hsts.encode("ascii")
