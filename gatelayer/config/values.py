"""
Parsers for the value syntaxes used in C{gate.ini}: durations, sizes, host:port
pairs, booleans, lists.

L{file_unreadable} checks that a named file can be opened, without reading
what it holds.

Each parser is a plain function that returns the parsed value or raises
L{ValueError} with a short message; L{gatelayer.config.reader.SectionReader}
adds the file, section and key around it.
"""

import ipaddress
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2,
    "g": 1024**3, "gb": 1024**3,
}

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def parse_duration(text):
    """
    Parse C{500ms}, C{2s}, C{1m}, C{1h}, C{1d} (a bare number is seconds) into
    seconds as a float.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError("is not a duration (use e.g. 500ms, 2s, 1m, 1h)")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit]


def parse_size(text):
    """
    Parse C{512KB}, C{10MB}, C{1GB} (a bare number is bytes) into bytes.
    Units are binary (1KB = 1024 bytes), as in nginx.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError("is not a size (use e.g. 512KB, 10MB, 1GB)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower() if unit else None])


def parse_bool(text):
    """
    Parse yes/no, true/false, on/off, 1/0.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("is not yes or no")


def parse_int(text, minimum=None, maximum=None):
    """
    Parse a whole number, optionally bounded.
    """
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be at most {maximum}")
    return value


def parse_port(text):
    """
    Parse a TCP port number, 1 to 65535.
    """
    return parse_int(text, 1, 65535)


def parse_hostport(text, allow_port_zero=False):
    """
    Parse C{host:port} or C{[v6addr]:port} into C{(host, port)}.

    @param allow_port_zero: accept port 0 (let the kernel pick), which only
        makes sense for listeners in tests.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end == -1 or text[end + 1:end + 2] != ":":
            raise ValueError("is not [address]:port")
        host, port_text = text[1:end], text[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has no valid IPv6 address in brackets") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("is not host:port")
        if ":" in host:
            raise ValueError("is not host:port (write IPv6 addresses as [addr]:port)")
        if not re.match(r"^[A-Za-z0-9.\-_]+$", host):
            raise ValueError("is not host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError("is not host:port (the port is not a number)") from None
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError("has a port out of range")
    return host, port


def parse_list(text):
    """
    Split a comma-separated list, dropping blanks and surrounding spaces.
    """
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_status_range(text):
    """
    Parse C{200-399} or C{200} or C{200, 204} into a frozenset of status codes.
    """
    codes = set()
    for part in parse_list(text):
        low, sep, high = part.partition("-")
        try:
            lo = int(low)
            hi = int(high) if sep else lo
        except ValueError:
            raise ValueError("is not a status code range such as 200-399") from None
        if not (100 <= lo <= hi <= 599):
            raise ValueError("is not a status code range such as 200-399")
        codes.update(range(lo, hi + 1))
    if not codes:
        raise ValueError("is empty")
    return frozenset(codes)


def parse_network(text):
    """
    Parse an address or CIDR network (C{10.0.0.0/8}, C{::1}).
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an address or network") from None


def file_unreadable(path):
    """
    Why the file at C{path} cannot be read, as a message naming it
    (C{"/etc/keys/a.pem: cannot be read: Permission denied"}), or L{None}
    when it can. Only opens the file: what it holds is checked by whoever
    uses it.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"{path}: cannot be read: {e.strerror}"
    return None
