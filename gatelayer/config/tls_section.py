"""
The C{[tls:NAME]} sections of gate.ini: certificates, versions, ciphers and
groups, HSTS, OCSP stapling and session tickets, each key checked with an
error naming section, key and value.
"""

import os
import re

from gatelayer.config import values as v
from gatelayer.config.model import DEFAULT_TLS_GROUPS, TlsSpec

__all__ = ["TLS_VERSIONS", "parse_tls_section"]

TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
"""The protocol versions a listener may offer."""


def parse_tls_section(r):
    """
    The L{TlsSpec} of the section C{r} reads (a L{SectionReader}); problems
    are collected on C{r}.
    """
    certificates = r.get("certificates", v.parse_list)
    resolved = tuple(
        os.path.normpath(os.path.join(r.base_dir, os.path.expanduser(c))) for c in certificates or ())
    for p in resolved:
        if not os.path.exists(p):
            r.error("certificates", "does not exist", p)
    default = r.path("default", None)
    if default is not None and not os.path.isfile(default):
        r.error("default", "is not a file", default)
    ca = r.get("ciphers", None, None)
    return TlsSpec(
        name=r.name,
        certificates=resolved,
        default=default,
        strict_sni=r.get("strict_sni", v.parse_bool, False),
        min_version=r.get("min_version", _tls_version, "TLSv1.2") or "TLSv1.2",
        ciphers=ca,
        hsts=r.get("hsts", None, None),
        ocsp_staple=_ocsp_staple(r),
        groups=r.get("groups", _tls_groups, None) or DEFAULT_TLS_GROUPS,
        prefer_server_ciphers=r.get("prefer_server_ciphers", v.parse_bool, None),
        session_tickets=r.get("session_tickets", v.parse_bool, True),
        ticket_key_rotation=r.get("ticket_key_rotation", _ticket_rotation, 3600.0) or 3600.0,
    )


def _ocsp_staple(r):
    # off (default), auto, or a DER response file relative to the config.
    text = r.get("ocsp_staple", None, "off")
    if text is None or text.lower() in ("off", "no", "false"):
        return None
    if text.lower() == "auto":
        return "auto"
    path = r.path("ocsp_staple")
    if not os.path.isfile(path):
        r.error("ocsp_staple", "is not off, auto or an existing file (a DER OCSP response)", path)
        return None
    return path


def _tls_groups(text):
    names = v.parse_list(text)
    if not names:
        raise ValueError("names no key exchange group")
    for name in names:
        if not re.match(r"^[A-Za-z0-9_\-]{1,64}$", name):
            raise ValueError(f"has {name!r}, not a group name (e.g. X25519, P-256, P-384)")
    return names


def _ticket_rotation(text):
    seconds = v.parse_duration(text)
    if not 1 <= seconds <= 7 * 86400:
        raise ValueError("must be between 1s and 7d")
    return seconds


def _tls_version(text):
    for version in TLS_VERSIONS:
        if text.lower() == version.lower():
            return version
    raise ValueError("is not a supported TLS version (TLSv1.2 or TLSv1.3; older ones are never offered)")
