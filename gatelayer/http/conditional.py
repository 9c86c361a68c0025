"""
Validators, conditional requests and byte ranges for files (RFC 9110
sections 8.8, 13 and 14), without I/O: the static terminal asks these
functions whether to answer 304, 206, 416 or the whole file.
"""

import re
from email.utils import parsedate_to_datetime

__all__ = [
    "UNSATISFIABLE", "entity_tag", "if_range_matches", "modified_since", "none_match",
    "parse_range",
]

UNSATISFIABLE = "unsatisfiable"
"""
What L{parse_range} returns for a well-formed range no byte of the file
satisfies (the answer is 416).
"""

# Only ASCII digits: int() would also take "+5", " 5", "1_0" and other
# scripts' digits, none of which RFC 9110 allows in a range.
_DIGITS = re.compile(r"[0-9]+\Z")
# Positions past this many digits are larger than any file; they are capped
# rather than converted (a 5000-digit number would make int() raise).
_MAX_DIGITS = 18
_HUGE = 10 ** _MAX_DIGITS


def entity_tag(mtime, size):
    """
    The strong entity tag of a file version, C{b'"<mtime hex>-<size hex>"'}
    as nginx makes it: it changes when the file is rewritten or resized.
    """
    return b'"%x-%x"' % (int(mtime), size)


def parse_range(value, size):
    """
    The byte range a C{Range} header value (C{str}) asks of a file of
    C{size} bytes (C{size > 0}).

    Returns C{(first, last)}, inclusive, for one satisfiable range;
    L{UNSATISFIABLE} for one well-formed range that starts past the end (or
    the empty suffix C{bytes=-0}); L{None} when the header is to be ignored
    and the whole file sent: malformed (RFC 9110 section 14.2 lets a server
    ignore it), another unit than C{bytes}, or more than one range (the
    gateway does not send C{multipart/byteranges}).
    """
    unit, equals, range_set = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    # A list may carry empty elements ("0-1, ,"): RFC 9110 section 5.6.1.
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return None
    first, dash, last = specs[0].partition("-")
    if not dash:
        return None
    if not first:
        if not _DIGITS.match(last):
            return None
        suffix = _number(last)
        if suffix == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    if not _DIGITS.match(first) or (last and not _DIGITS.match(last)):
        return None
    start = _number(first)
    end = _number(last) if last else None
    if end is not None and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    if end is None or end >= size:
        end = size - 1
    return start, end


def if_range_matches(value, etag, mtime):
    """
    Whether an C{If-Range} header value (C{str}) still names the file whose
    entity tag is C{etag} (bytes) and modification time C{mtime}: an entity
    tag by strong comparison (a weak one never matches), or a date equal to
    the file's C{Last-Modified} (to the second, as nginx compares it).
    Anything else is a mismatch and the whole file is sent.
    """
    value = value.strip(" \t")
    if value.startswith('"') or value.startswith("W/"):
        return value.encode("latin-1") == etag
    since = _timestamp(value)
    return since is not None and since == int(mtime)


def none_match(value, etag):
    """
    Whether an C{If-None-Match} header value (C{str}) matches C{etag}
    (bytes) by weak comparison, or is C{*}: the client has this version and
    the answer is 304.
    """
    value = value.strip(" \t")
    if value == "*":
        return True
    mine = etag.decode("latin-1")
    for tag in value.split(","):
        tag = tag.strip(" \t")
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == mine:
            return True
    return False


def modified_since(value, mtime):
    """
    Whether a file modified at C{mtime} changed after the
    C{If-Modified-Since} date C{value} (C{str}). An unparseable date counts
    as modified (RFC 9110 section 13.1.3: the header is then ignored).
    """
    since = _timestamp(value)
    return since is None or int(mtime) > since


def _timestamp(value):
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(digits):
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return _HUGE
    return int(digits)
