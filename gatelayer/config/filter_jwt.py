"""
Settings of a C{[filter:NAME] type = jwt} section.

Syntax and paths only: the key files and secret files named here are checked
to exist and be readable, and the algorithms written after them to be known.
Their contents (a malformed JWKS, a private key, a weak secret, a key whose
algorithm is not allowed) are loaded and checked where the filter is built,
L{gatelayer.filters.keys}, which the master also runs once before it starts,
so such a config still never reaches a worker.
"""

import os.path
import re
from urllib.parse import urlsplit

from attrs import frozen

from gatelayer.auth.names import ALGORITHMS, HMAC_ALGORITHMS, RESERVED_HEADERS, split_algorithm
from gatelayer.config import values as v

HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
"""An HTTP header name (an RFC 9110 token)."""

CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:/@+-]{1,200}\Z")
SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,200}\Z")


@frozen
class KeyFile:
    """
    One item of C{keys} or C{secret_file}: a file that exists, and the
    algorithm written after it, if any.

    @ivar path: the absolute path.
    @ivar algorithm: the algorithm the key is pinned to, or L{None}.
    """

    path: str
    algorithm: str = None


@frozen
class JwtSettings:
    """
    A JWT filter's settings.

    @ivar key_files: the L{KeyFile}s of C{keys} (JWKS documents, PEM public
        keys or certificates).
    @ivar secret_files: the L{KeyFile}s of C{secret_file} (shared secrets).
    @ivar jwks_url: a JWKS URL fetched by each worker, or L{None}.
    @ivar token_from: C{("header", None)}, C{("cookie", NAME)} or
        C{("query", NAME)}.
    @ivar forward_claims: C{(claim, header)} pairs; header names are lower
        case bytes.
    """

    algorithms: tuple
    key_files: tuple = ()
    secret_files: tuple = ()
    jwks_url: str = None
    jwks_refresh: float = 600.0
    jwks_timeout: float = 5.0
    issuer: str = None
    audiences: tuple = ()
    leeway: float = 0.0
    required_claims: tuple = ("exp",)
    scopes: tuple = ()
    token_from: tuple = ("header", None)
    forward_claims: tuple = ()
    hide_credentials: bool = False
    max_token_size: int = 8192
    cache_size: int = 10000


def _algorithms(text):
    names = {a.lower(): a for a in ALGORITHMS}
    chosen = []
    for item in v.parse_list(text):
        if item.lower() == "none":
            raise ValueError("lists none: unsigned tokens are never accepted")
        if item.lower() not in names:
            raise ValueError(f"has {item!r}, not one of " + ", ".join(ALGORITHMS))
        chosen.append(names[item.lower()])
    if not chosen:
        raise ValueError("lists no algorithm")
    return tuple(dict.fromkeys(chosen))


def _url(text):
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL")
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("is not an ASCII URL (percent-encode it)") from None
    return text


def _names(pattern, what):
    def parse(text):
        items = v.parse_list(text)
        for item in items:
            if not pattern.match(item):
                raise ValueError(f"has {item!r}, which is not a {what}")
        return tuple(dict.fromkeys(items))
    return parse


def _token_from(text):
    kind, sep, name = text.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if kind == "header" and not sep:
        return ("header", None)
    if kind in ("cookie", "query") and name and HEADER_NAME.match(name):
        return (kind, name)
    raise ValueError("is not header, cookie:NAME or query:NAME")


def _forward_claims(text):
    pairs, headers = [], set()
    for item in v.parse_list(text):
        claim, sep, header = item.rpartition(":")
        claim, header = claim.strip(), header.strip()
        if not sep or not CLAIM_NAME.match(claim) or not HEADER_NAME.match(header):
            raise ValueError(f"has {item!r}, which is not claim:Header-Name")
        if header.lower() in RESERVED_HEADERS:
            raise ValueError(f"has {item!r}: {header} cannot carry a claim")
        if header.lower() in headers:
            raise ValueError(f"names the header {header} twice")
        headers.add(header.lower())
        pairs.append((claim, header.lower().encode("ascii")))
    return tuple(pairs)


def _resolve(reader, item):
    return os.path.normpath(os.path.join(reader.base_dir, os.path.expanduser(item)))


def _or_default(value, default):
    return default if value is None else value


def parse_filter(reader):
    """
    Read a C{type = jwt} section from C{reader} (a
    L{gatelayer.config.reader.SectionReader}) into L{JwtSettings},
    recording every problem on the reader.
    """
    key_items = reader.get("keys", v.parse_list, ())
    secret_items = reader.get("secret_file", v.parse_list, ())
    jwks_url = reader.get("jwks_url", _url, None)
    if not reader.has("keys") and not reader.has("secret_file") and not reader.has("jwks_url"):
        reader.error("keys", "is required (or secret_file, or jwks_url)")
    default_algorithms = ("RS256", "ES256") if (key_items or jwks_url) else ()
    if secret_items:
        default_algorithms += ("HS256",)
    algorithms = reader.get("algorithms", _algorithms, default_algorithms or ("RS256", "ES256"))
    checked_algorithms = algorithms is not None
    algorithms = algorithms or ()

    key_files, secret_files = [], []
    for setting, items, found in (
            ("keys", key_items or (), key_files),
            ("secret_file", secret_items or (), secret_files)):
        for item in items:
            path, pinned = split_algorithm(item)
            path = _resolve(reader, path)
            found.append(KeyFile(path, pinned))
            if not os.path.isfile(path):
                reader.error(setting, "is not a file", path)
                continue
            if not checked_algorithms:
                # the algorithms are wrong: that alone is reported
                continue
            unreadable = v.file_unreadable(path)
            if unreadable is not None:
                reader.error(setting, unreadable)
    if jwks_url is not None and checked_algorithms and not (set(algorithms) - set(HMAC_ALGORITHMS)):
        reader.error("jwks_url", "is set but algorithms allows only HMAC, and shared secrets are never fetched")

    leeway = reader.get("leeway", v.parse_duration, 0.0)
    if leeway is not None and leeway > 600:
        reader.error("leeway", "is more than 10m: clocks that far apart need fixing, not tolerating",
                     reader.raw("leeway"))
    refresh = reader.get("jwks_refresh", v.parse_duration, 600.0)
    if refresh is not None and refresh < 10:
        reader.error("jwks_refresh", "must be at least 10s", reader.raw("jwks_refresh"))
    timeout = reader.get("jwks_timeout", v.parse_duration, 5.0)
    if timeout is not None and not 0 < timeout <= 60:
        reader.error("jwks_timeout", "must be more than 0s and at most 60s", reader.raw("jwks_timeout"))
    for key in ("jwks_refresh", "jwks_timeout"):
        if reader.has(key) and jwks_url is None:
            reader.error(key, "only applies with jwks_url")

    return JwtSettings(
        algorithms=algorithms,
        key_files=tuple(key_files),
        secret_files=tuple(secret_files),
        jwks_url=jwks_url,
        jwks_refresh=refresh or 600.0,
        jwks_timeout=timeout or 5.0,
        issuer=reader.get("issuer", None, None),
        audiences=reader.get("audience", v.parse_list, ()) or (),
        leeway=leeway or 0.0,
        required_claims=tuple(dict.fromkeys(
            ("exp", *(reader.get("required_claims", _names(CLAIM_NAME, "claim name"), ()) or ())))),
        scopes=reader.get("scopes", _names(SCOPE, "scope"), ()) or (),
        token_from=reader.get("token_from", _token_from, ("header", None)) or ("header", None),
        forward_claims=reader.get("forward_claims", _forward_claims, ()) or (),
        hide_credentials=reader.get("hide_credentials", v.parse_bool, False) or False,
        max_token_size=reader.get("max_token_size", lambda t: v.parse_int(t, 256, 65536), 8192) or 8192,
        cache_size=_or_default(reader.get("cache_size", lambda t: v.parse_int(t, 0, 1000000), 10000), 10000),
    )
