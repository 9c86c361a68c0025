"""
What a worker leaves out of its memory: TLS, when its configuration has no
use for it.

OpenSSL and the C{cryptography} bindings behind it are the largest import
of a worker (about 12 MB of its resident memory), and Twisted's reactor
loads them whether or not anything is encrypted. A worker whose
configuration never mentions TLS in any form starts without them: Twisted
then runs its TCP transports without TLS support, which nothing of that
configuration needs.

The test is on the configuration's text, and errs on the side of loading
TLS: any mention (outside comment lines) of a word in L{TLS_WORDS} loads
it, whatever the section or key. A reload that brings TLS to such a worker
is refused by the worker (L{reload_problem}); the master then replaces it
with a new worker started on the new configuration, which loads TLS.
"""

import re
import sys

__all__ = ["TLS_WORDS", "leave_out_tls", "needs_tls", "reload_problem", "tls_left_out"]

TLS_WORDS = ("tls", "ssl", "https", "wss", "redis", "certificate", "acme", "plugin")
"""Words whose presence in a configuration means its worker loads TLS: TLS
listeners and upstreams, C{https://} key and discovery URLs, Redis stores
(C{rediss://} and the Redis client itself), certificates, and plugins
(whose needs are not known in advance)."""

_TLS_MODULE = "OpenSSL"

# A word of TLS_WORDS where a word begins (not inside another one, as
# "ssl" in "accesslog"); what follows may be anything ("TLSv1.3",
# "rediss://", "certificates").
_TLS_WORD = re.compile(r"(?<![a-z0-9])(?:%s)" % "|".join(TLS_WORDS)).search


def needs_tls(text):
    """
    Whether the configuration C{text} may use TLS anywhere: a word of
    L{TLS_WORDS}, or code the gateway does not know (a filter type from
    another package, a mounted twisted.web resource), whose needs it
    cannot tell.
    """
    from gatelayer.config.filtertypes import BUILTIN
    for line in text.lower().splitlines():
        if line.lstrip().startswith((";", "#")):
            continue
        if _TLS_WORD(line) is not None:
            return True
        key, sep, value = line.partition("=")
        if sep:
            key = key.strip()
            if key == "resource" or (key == "type" and value.split(";")[0].strip() not in BUILTIN):
                return True
    return False


def leave_out_tls(modules=None):
    """
    Keep OpenSSL from being imported in this process (C{import OpenSSL}
    raises L{ImportError}), so that the reactor comes up without TLS. Call
    it before the reactor is imported, and only when the configuration does
    not use TLS (L{needs_tls}).
    """
    modules = sys.modules if modules is None else modules
    if _TLS_MODULE not in modules:
        modules[_TLS_MODULE] = None


def tls_left_out(modules=None):
    """
    Whether this process was started without TLS (L{leave_out_tls}).
    """
    modules = sys.modules if modules is None else modules
    return _TLS_MODULE in modules and modules[_TLS_MODULE] is None


def reload_problem(text, modules=None):
    """
    Why a worker cannot take configuration C{text} in place, or L{None}:
    it was started without TLS and C{text} uses TLS.
    """
    if tls_left_out(modules) and needs_tls(text):
        return "this worker was started without TLS, which the new configuration uses"
    return None
