"""
Comma-separated token lists (RFC 9110 5.6.1), as Connection, Expect and
Transfer-Encoding carry them: one reading for the server channels, the
upstream client and the proxy's hop-by-hop header removal, so that what the
gateway counts as C{close} or as a header named in Connection is the same
everywhere.
"""

__all__ = ["token_set", "connection_flags"]


def token_set(values):
    """
    The lower-cased, stripped, non-empty items of the comma-separated
    header C{values} (an iterable of bytes, or L{None}), as a set.
    """
    tokens = set()
    if values:
        for value in values:
            for item in value.split(b","):
                item = item.strip().lower()
                if item:
                    tokens.add(item)
    return tokens


def connection_flags(values):
    """
    C{(close, keep_alive)}: whether the Connection header C{values} list
    the C{close} and the C{keep-alive} options. Which wins is the caller's
    rule (for both sides, C{close}).
    """
    if len(values) == 1 and b"," not in values[0]:
        # One option, as most responses send: no loop (on PyPy a loop in a
        # small function is a separately compiled call).
        item = values[0].lower().strip()
        return item == b"close", item == b"keep-alive"
    close = keep_alive = False
    for value in values:
        # The same reading as token_set, without building the set: this
        # runs for most responses.
        for item in value.lower().split(b","):
            item = item.strip()
            if item == b"close":
                close = True
            elif item == b"keep-alive":
                keep_alive = True
    return close, keep_alive
