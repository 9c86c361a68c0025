"""
The config keys a filter type declares, and the settings read through them.

A filter type from another package (see L{gatelayer.filters.api}) lists its
keys as L{Key}s; the loader reads a C{[filter:NAME]} section of that type
through them with the same L{gatelayer.config.reader.SectionReader} the
built-in types use, so a bad value, a missing required key or an unknown key
gets the same message (C{gate.ini [filter:sig] max_skew: 'x' is not a
duration ...}) and C{--check} reports it.

The value parsers are the ones of L{gatelayer.config.values}, named for
use in a declaration: L{text}, L{duration}, L{size}, L{boolean},
L{integer}, L{choice}, L{list_of} and L{PATH}.
"""

import re
from collections.abc import Mapping

from attrs import field, frozen

from gatelayer.config import values as v
from gatelayer.config.reader import _REQUIRED

__all__ = [
    "COMMON_KEYS", "PATH", "REQUIRED", "Key", "Settings", "boolean", "choice", "duration", "integer",
    "list_of", "parse_keys", "size", "text",
]

REQUIRED = _REQUIRED
"""The default of a key the section must set."""

COMMON_KEYS = ("type", "timeout")
"""Keys every C{[filter:NAME]} section has, whatever its type: a type may
not declare them."""

_KEY_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class _Path:
    """
    The marker parser of a file or directory path (relative to the
    configuration file's directory).
    """

    def __repr__(self):
        return "PATH"


PATH = _Path()
"""Parse a key as a path: a relative one is taken relative to the directory
of the configuration file (existence is not checked: do it in the filter
type's C{check})."""


def text(value):
    """
    The value as written (stripped of surrounding spaces).
    """
    return value


def duration(value):
    """
    A duration (C{500ms}, C{2s}, C{1m}, C{1h}, C{1d}) in seconds, a float.
    """
    return v.parse_duration(value)


def size(value):
    """
    A size (C{512KB}, C{10MB}; binary units) in bytes.
    """
    return v.parse_size(value)


def boolean(value):
    """
    C{yes}/C{no}, C{true}/C{false}, C{on}/C{off}, C{1}/C{0}.
    """
    return v.parse_bool(value)


def integer(minimum=None, maximum=None):
    """
    A parser of whole numbers from C{minimum} to C{maximum} (either may be
    L{None}: unbounded).
    """
    def parse(value):
        return v.parse_int(value, minimum, maximum)
    return parse


def choice(*options):
    """
    A parser accepting one of C{options} (compared in lower case).
    """
    allowed = tuple(option.lower() for option in options)

    def parse(value):
        lowered = value.lower()
        if lowered not in allowed:
            raise ValueError("is not one of " + ", ".join(allowed))
        return lowered
    return parse


def list_of(item=None):
    """
    A parser of a comma-separated list, each item parsed by C{item} (a
    parser of one item; L{None} keeps the text): a tuple.
    """
    def parse(value):
        items = v.parse_list(value)
        if not items:
            raise ValueError("lists nothing")
        if item is None:
            return items
        parsed = []
        for one in items:
            try:
                parsed.append(item(one))
            except ValueError as e:
                raise ValueError(f"has {one!r}, which {e}") from None
        return tuple(parsed)
    return parse


def _check_name(instance, attribute, name):
    if not isinstance(name, str) or not _KEY_NAME.match(name):
        raise ValueError(f"{name!r} is not a key name (lower case letters, digits and _)")
    if name in COMMON_KEYS:
        raise ValueError(f"{name!r} is a key of every filter section: a filter type cannot declare it")


@frozen
class Key:
    """
    One key of a filter type's section.

    @ivar name: the key, e.g. C{"max_skew"}.
    @ivar parse: a function of the value's text returning the value or
        raising L{ValueError} with a short reason (C{"is not a duration"});
        L{PATH} for a path; L{None} keeps the text.
    @ivar default: the value when the section does not set the key (not
        parsed); L{REQUIRED} (the default) makes the key required.
    @ivar doc: one sentence saying what the key does, for the type's
        documentation.
    """

    name: str = field(validator=_check_name)
    parse: object = None
    default: object = REQUIRED
    doc: str = ""

    @property
    def required(self):
        """
        Whether the section must set this key.
        """
        return self.default is REQUIRED


class Settings(Mapping):
    """
    The settings of one filter section read through its type's keys: an
    immutable mapping of key name to value, also readable as attributes
    (C{settings.max_skew}).
    """

    __slots__ = ("_values",)

    def __init__(self, values=()):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, name):
        return self._values[name]

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("filter settings are immutable")

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __hash__(self):
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self):
        return "Settings(%r)" % (self._values,)


def parse_keys(reader, keys, check=None):
    """
    Read the section C{reader} holds through C{keys} (L{Key}s), recording
    every problem on the reader, and run C{check} on the result.

    @param check: L{None}, or a function of the L{Settings} returning
        C{(key, message)} problems (C{key} L{None} for the whole section):
        what one key alone cannot say (two keys that contradict each other,
        a file that must hold a key). Not run when a key is already wrong.
    @return: the L{Settings}.
    """
    before = len(reader.problems)
    values = {}
    for key in keys:
        if key.parse is PATH:
            values[key.name] = reader.path(key.name, key.default)
        else:
            values[key.name] = reader.get(key.name, key.parse, key.default)
    settings = Settings(values)
    if check is not None and len(reader.problems) == before:
        for key, message in check(settings) or ():
            reader.error(key, message)
    return settings
