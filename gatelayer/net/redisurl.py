"""
Redis store addresses: the C{redis://}, C{rediss://} and C{unix://} URL
syntax of a rate-limit filter's C{store} key.

Pure parsing with no I/O, shared by the config parser (which validates what
the operator wrote) and the Redis store (which connects to it), so neither
imports the other.
"""

import os.path
from urllib.parse import parse_qs, unquote, urlsplit

from attrs import field, frozen

__all__ = ["RedisAddress", "parse_store_url"]


@frozen
class RedisAddress:
    """
    Where a Redis server is: C{redis://[[user]:password@]host:port/db},
    C{rediss://...[?ca=PEM]} (TLS) or C{unix:///path.sock[?db=N]}.

    @ivar scheme: C{"redis"}, C{"rediss"} or C{"unix"}.
    @ivar ca: for C{rediss://}, a PEM file of the certificate authority the
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

    @property
    def tls(self):
        """
        Whether the connection is wrapped in TLS (C{rediss://}).
        """
        return self.scheme == "rediss"

    def display(self):
        """
        The address as a URL without its password, for logs and errors.
        """
        if self.scheme == "unix":
            return f"unix://{self.path}" + (f"?db={self.db}" if self.db else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = "***@" if self.password is not None else ""
        ca = f"?ca={self.ca}" if self.ca else ""
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}{ca}"


def parse_store_url(text, base_dir=None):
    """
    Parse a Redis store URL into a L{RedisAddress}; a relative C{ca} path is
    taken relative to C{base_dir} (the configuration file's directory).
    """
    text = text.strip()
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
        raise ValueError("is not a redis://, rediss:// or unix:// URL")
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


def _db(text):
    try:
        db = int(text)
    except ValueError:
        raise ValueError(f"has the database {text!r}, which is not a number") from None
    if not 0 <= db <= 1_000_000:
        raise ValueError(f"has the database {db}, which is out of range")
    return db
