"""
The origin-hiding keys of a C{[route:NAME]} section: C{rewrite_location}
and C{hide_headers}, what the proxy does to an upstream's response headers
so that clients see neither the servers' addresses nor the headers an
application gives itself away by.
"""

import re

from gatelayer.config import values as v

__all__ = ["FRAMING_HEADERS", "origin_keys", "parse_hide_headers"]

#: Headers the gateway frames responses with: hiding them would leave the
#: client unable to tell where a response ends, so C{hide_headers} refuses
#: them (the hop-by-hop ones never reach the client anyway).
FRAMING_HEADERS = frozenset(["content-length", "transfer-encoding", "connection"])

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")


def parse_hide_headers(text):
    """
    Parse C{hide_headers}: a comma-separated list of header names, returned
    as a frozenset of lower-case bytes.

    @raise ValueError: for a name that is not a token or is a framing header.
    """
    names = set()
    for item in v.parse_list(text):
        if not _TOKEN.match(item):
            raise ValueError(f"has {item!r}, which is not a header name")
        lower = item.lower()
        if lower in FRAMING_HEADERS:
            raise ValueError(
                f"has {item!r}: the gateway frames responses with it, it cannot be hidden")
        names.add(lower.encode("ascii"))
    return frozenset(names)


def origin_keys(r):
    """
    Read C{rewrite_location} (default yes) and C{hide_headers} (default
    none) from the route's reader C{r}: C{(rewrite, hidden)}. Both apply to
    routes with C{upstream} only.
    """
    rewrite = r.get("rewrite_location", v.parse_bool, True)
    hidden = r.get("hide_headers", parse_hide_headers, frozenset())
    if not r.has("upstream"):
        for key in ("rewrite_location", "hide_headers"):
            if r.has(key):
                r.error(key, "only applies to a route with upstream")
    return (True if rewrite is None else rewrite), (hidden or frozenset())
