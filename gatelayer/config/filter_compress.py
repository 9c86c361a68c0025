"""
Settings of a C{[filter:NAME] type = compress} section.

The codings offered, their levels and what is compressed are read once
here; a coding whose package is missing (C{br}: C{brotli}, C{zstd}:
C{zstandard}, the C{compress} extra) stops a start, a reload or a
C{--check} with the section and key named.
"""

import importlib.util
import re

from attrs import field, frozen

from gatelayer.config import values as v

INSTALL_HINT = "pip install 'gatelayer[compress]'"
"""What an operator runs when C{brotli} or C{zstandard} is missing."""

CODINGS = {"gzip": None, "br": "brotli", "zstd": "zstandard"}
"""The codings offered, by name, and the package each needs (L{None}: the standard library)."""

LEVELS = {"gzip": (1, 9, 6), "br": (0, 11, 4), "zstd": (1, 19, 3)}
"""Each coding's level range and default: C{(lowest, highest, default)}."""

DEFAULT_ENCODINGS = ("br", "zstd", "gzip")
"""The codings offered when C{encodings} is not set (each only if its package is installed)."""

DEFAULT_TYPES = ("text/*", "application/json", "+json", "application/javascript", "application/xml", "+xml",
                 "image/svg+xml")
"""The media types compressed when C{types} is not set."""

DEFAULT_MIN_LENGTH = 256
DEFAULT_MAX_RATIO = 100

_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)\Z")
_SUFFIX = re.compile(r"\+[a-z0-9][a-z0-9!#$&^_.-]*\Z")


@frozen
class MediaTypes:
    """
    Which response media types are compressed: exact types
    (C{application/json}), whole top-level types (C{text/*}) and structured
    syntax suffixes (C{+json} for any C{*/*+json}).
    """

    exact: frozenset = frozenset()
    top_levels: frozenset = frozenset()
    suffixes: tuple = ()

    def matches(self, media_type):
        """
        Whether C{media_type} (lower-case bytes without parameters) is listed.
        """
        if media_type in self.exact:
            return True
        top, slash, subtype = media_type.partition(b"/")
        if not slash:
            return False
        if top in self.top_levels:
            return True
        for suffix in self.suffixes:
            if subtype.endswith(suffix):
                return True
        return False


@frozen
class CompressSettings:
    """
    A compression filter's settings.

    @ivar encodings: the codings offered, most preferred first.
    @ivar levels: C{{coding: level}} for each offered coding.
    @ivar min_length: responses with a smaller Content-Length stay as
        they are (a response of unknown length is compressed).
    @ivar types: the L{MediaTypes} compressed.
    @ivar decompress_requests: whether compressed request bodies are
        decoded before later filters and the upstream see them.
    @ivar max_decompressed_size: the largest decoded request body, or
        L{None} for the route's C{max_body_size}.
    @ivar max_ratio: the largest decoded size as a multiple of the
        compressed size.
    """

    encodings: tuple = ("gzip",)
    levels: dict = field(factory=dict, hash=False)
    min_length: int = DEFAULT_MIN_LENGTH
    types: MediaTypes = None
    decompress_requests: bool = False
    max_decompressed_size: int = None
    max_ratio: int = DEFAULT_MAX_RATIO


def installed(coding):
    """
    Whether the package C{coding} needs is installed.
    """
    package = CODINGS[coding]
    return package is None or importlib.util.find_spec(package) is not None


def parse_types(text):
    """
    Parse a C{types} list into L{MediaTypes}.

    @raise ValueError: naming the entry that is not C{type/subtype},
        C{type/*} or C{+suffix}.
    """
    exact, tops, suffixes = set(), set(), []
    for entry in v.parse_list(text):
        entry = entry.lower()
        if _SUFFIX.match(entry):
            suffixes.append(entry.encode("ascii"))
        elif _TYPE.match(entry):
            top, _, subtype = entry.partition("/")
            if subtype == "*":
                tops.add(top.encode("ascii"))
            else:
                exact.add(entry.encode("ascii"))
        else:
            raise ValueError(f"has {entry!r}, which is not type/subtype, type/* or +suffix")
    if not (exact or tops or suffixes):
        raise ValueError("lists no media type")
    return MediaTypes(frozenset(exact), frozenset(tops), tuple(suffixes))


def _encodings(reader):
    if not reader.has("encodings"):
        return tuple(name for name in DEFAULT_ENCODINGS if installed(name))
    names = reader.get("encodings", v.parse_list, ())
    if names is None:
        return None
    chosen = []
    for name in names:
        name = name.lower()
        if name not in CODINGS:
            reader.error("encodings", "is not a coding (" + ", ".join(CODINGS) + ")", name)
        elif name in chosen:
            reader.error("encodings", "is listed twice", name)
        elif not installed(name):
            reader.error("encodings", f"needs the {CODINGS[name]} package: {INSTALL_HINT}", name)
        else:
            chosen.append(name)
    if not names:
        reader.error("encodings", "lists no coding")
    return tuple(chosen)


def parse_filter(reader):
    """
    Read a C{type = compress} section from C{reader} into
    L{CompressSettings}, recording every problem on the reader.
    """
    encodings = _encodings(reader)
    levels = {}
    for coding, (low, high, default) in LEVELS.items():
        level = reader.get(coding + "_level", lambda text, low=low, high=high: v.parse_int(text, low, high),
                           default)
        levels[coding] = default if level is None else level
    min_length = reader.get("min_length", v.parse_size, DEFAULT_MIN_LENGTH)
    types = reader.get("types", parse_types, None)
    decompress = reader.get("decompress_requests", v.parse_bool, False)
    max_size = reader.get("max_decompressed_size", v.parse_size, None)
    if max_size is not None and max_size < 1:
        reader.error("max_decompressed_size", "must be at least 1 byte", reader.raw("max_decompressed_size").strip())
        max_size = None
    max_ratio = reader.get("max_ratio", lambda text: v.parse_int(text, 1, 100000), DEFAULT_MAX_RATIO)
    return CompressSettings(
        encodings=encodings or (),
        levels=levels,
        min_length=DEFAULT_MIN_LENGTH if min_length is None else min_length,
        types=types if types is not None else parse_types(", ".join(DEFAULT_TYPES)),
        decompress_requests=bool(decompress),
        max_decompressed_size=max_size,
        max_ratio=max_ratio or DEFAULT_MAX_RATIO,
    )
