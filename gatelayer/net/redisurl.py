"""
Redis store addresses: the C{redis://}, C{rediss://}, C{unix://} and
C{redis+sentinel://} URL syntax of a rate-limit filter's (and a cache's)
C{store} key.

Pure parsing with no I/O, shared by the config parser (which validates what
the operator wrote) and the Redis store (which connects to it), so neither
imports the other.
"""

import os.path
import re
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import field, frozen

__all__ = ["DEFAULT_SENTINEL_PORT", "MAX_SENTINELS", "RedisAddress", "parse_store_url"]

DEFAULT_SENTINEL_PORT = 26379
"""The port of a Sentinel named without one."""

MAX_SENTINELS = 16
"""The most Sentinels one URL may name."""

_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}\Z")


@frozen
class RedisAddress:
    """
    Where a Redis server is: C{redis://[[user]:password@]host:port/db},
    C{rediss://...[?ca=PEM]} (TLS), C{unix:///path.sock[?db=N]}, or the
    master of a service its Sentinels name:
    C{redis+sentinel://[[user]:password@]host:port,host:port/SERVICE/db}, or
    with TLS to the Sentinels and the servers alike
    C{rediss+sentinel://...[?ca=PEM]}.

    @ivar scheme: C{"redis"}, C{"rediss"}, C{"unix"}, C{"redis+sentinel"}
        or C{"rediss+sentinel"}.
    @ivar sentinels: for C{redis+sentinel://}, the Sentinels' C{(host,
        port)} pairs, in the order written (asked in that order).
    @ivar service: for C{redis+sentinel://}, the name the Sentinels monitor
        the master under.
    @ivar ca: for C{rediss://} and C{rediss+sentinel://}, a PEM file of the certificate authority the
        server's certificate must chain to (default: the system's trust
        store).
    @ivar password: never shown in C{repr} or L{display}, so it stays out of
        logs.
    """

    scheme: str
    host: str = None
    port: int = 6379
    db: int = 0
    path: str = None
    username: str = None
    password: str = field(default=None, repr=False)
    ca: str = None
    sentinels: tuple = ()
    service: str = None

    @property
    def sentinel(self):
        """
        Whether the server is the master the Sentinels name
        (C{redis+sentinel://} or C{rediss+sentinel://}).
        """
        return self.scheme in ("redis+sentinel", "rediss+sentinel")

    @property
    def tls(self):
        """
        Whether the connections are wrapped in TLS (C{rediss://},
        C{rediss+sentinel://}).
        """
        return self.scheme in ("rediss", "rediss+sentinel")

    def display(self):
        """
        The address as a URL without its password, for logs and errors.
        """
        if self.scheme == "unix":
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db else "")
        auth = "***@" if self.password is not None else ""
        ca = f"?ca={self.ca}" if self.ca else ""
        if self.sentinel:
            hosts = ",".join(f"{_bracketed(h)}:{p}" for h, p in self.sentinels)
            return f"{self.scheme}://{auth}{hosts}/{self.service}/{self.db}{ca}"
        host = _bracketed(self.host)
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}{ca}"


def parse_store_url(text, base_dir=None):
    """
    Parse a Redis store URL into a L{RedisAddress}; a relative C{ca} path is
    taken relative to C{base_dir} (the configuration file's directory).
    """
    text = text.strip()
    scheme, separator, rest = text.partition("://")
    if separator and scheme.lower() in ("redis+sentinel", "rediss+sentinel"):
        # by hand: a list of hosts is no netloc urlsplit understands
        return _parse_sentinel(scheme.lower(), rest, base_dir)
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("is not a URL (use redis://host:port/db, rediss://... or unix:///path.sock)") from None
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"db", "ca"})
    if unknown:
        raise ValueError(f"has the unknown query parameter {unknown[0]!r} (only db and ca are known)")
    ca = query.get("ca", [None])[-1]
    if ca is not None:
        if scheme != "rediss":
            raise ValueError("has ca, which only applies to rediss:// (TLS)")
        ca = os.path.normpath(os.path.join(base_dir or ".", os.path.expanduser(ca)))
    if scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("is not unix:///absolute/path.sock")
        db = _db(query.get("db", ["0"])[-1])
        return RedisAddress(scheme="unix", path=unquote(parts.path), db=db, port=0)
    if scheme not in ("redis", "rediss"):
        raise ValueError("is not a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if not host:
        raise ValueError("names no host")
    path = parts.path.strip("/")
    if path and "db" in query:
        raise ValueError("gives the database twice (path and ?db=)")
    db = _db(path or query.get("db", ["0"])[-1])
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return RedisAddress(scheme=scheme, host=host, port=port or 6379, db=db,
                        username=username, password=password, ca=ca)


def _parse_sentinel(scheme, rest, base_dir):
    """
    The L{RedisAddress} of C{redis+sentinel://[[user]:password@]h:p,h:p/SERVICE[/db]}
    (or C{rediss+sentinel://...[?ca=PEM]}), given what follows C{://}.
    """
    rest, hash_sign, _ = rest.partition("#")
    if hash_sign:
        raise ValueError("has a #fragment, which a Redis URL has no use for")
    rest, _, query_text = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    try:
        query = parse_qs(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
    except ValueError:
        raise ValueError("has a query that is not name=value pairs") from None
    known = {"db", "ca"} if scheme == "rediss+sentinel" else {"db"}
    unknown = sorted(set(query) - known)
    if unknown:
        if unknown[0] == "ca":
            raise ValueError("has ca, which only applies to rediss+sentinel:// (TLS)")
        raise ValueError(f"has the unknown query parameter {unknown[0]!r} ({scheme}:// knows only "
                         + " and ".join(sorted(known)) + ")")
    ca = query.get("ca", [None])[-1]
    if ca is not None:
        if not ca:
            raise ValueError("has an empty ca")
        ca = os.path.normpath(os.path.join(base_dir or ".", os.path.expanduser(ca)))
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon else None
        if password is None:
            raise ValueError("has user@ without :password (write user:password@ or :password@)")
    sentinels = tuple(_sentinel(item) for item in hostlist.split(","))
    if len(sentinels) > MAX_SENTINELS:
        raise ValueError(f"names {len(sentinels)} Sentinels (at most {MAX_SENTINELS})")
    seen = set()
    for sentinel in sentinels:
        if sentinel in seen:
            raise ValueError(f"names the Sentinel {_bracketed(sentinel[0])}:{sentinel[1]} twice")
        seen.add(sentinel)
    segments = path.split("/") if slash else []
    if not segments or not segments[0]:
        raise ValueError("names no service (redis+sentinel://host:port,host:port/SERVICE/db)")
    if len(segments) > 2:
        raise ValueError("has a path longer than /SERVICE/db")
    service = unquote(segments[0])
    if not _SERVICE.match(service):
        raise ValueError(f"has the service name {service!r}: use letters, digits, '.', '_' and '-' (1 to 64)")
    db_text = segments[1] if len(segments) == 2 else ""
    if db_text and "db" in query:
        raise ValueError("gives the database twice (path and ?db=)")
    db = _db(db_text or query.get("db", ["0"])[-1])
    return RedisAddress(scheme=scheme, port=0, db=db, username=username, password=password,
                        sentinels=sentinels, service=service, ca=ca)


def _sentinel(item):
    """
    One C{host[:port]} of a Sentinel list, as C{(host, port)}.
    """
    text = item.strip()
    if not text:
        raise ValueError("has an empty Sentinel in its host list")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or not all(c in "0123456789abcdefABCDEF:." for c in host):
            raise ValueError(f"has the Sentinel {text!r}, which is not [IPv6]:port")
        if rest and not rest.startswith(":"):
            raise ValueError(f"has the Sentinel {text!r}, which is not [IPv6]:port")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        if not _HOST.match(host):
            raise ValueError(f"has the Sentinel {text!r}, which is not host:port")
    if port_text is None:
        return host.lower(), DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"has the Sentinel {text!r}, whose port is not a number from 1 to 65535")
    return host.lower(), int(port_text)


def _bracketed(host):
    return f"[{host}]" if ":" in host else host


def _db(text):
    try:
        db = int(text)
    except ValueError:
        raise ValueError(f"has the database {text!r}, which is not a number") from None
    if not 0 <= db <= 1_000_000:
        raise ValueError(f"has the database {db}, which is out of range")
    return db
