"""
Settings of a C{[filter:NAME] type = api_key} section.

Syntax and paths only: the key file is checked to be readable here. What it
holds (every consumer line must be a SHA-256 hex digest, so a plain key
pasted by mistake is an error, not a key that silently never matches) is
checked where the filter is built, L{gatelayer.filters.keys}, which the
master also runs once before it starts.
"""

import re

from attrs import frozen

from gatelayer.auth.names import CONSUMER_HEADER
from gatelayer.config import values as v

_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")

_NOT_KEY_HEADERS = ("authorization", "cookie", "host", "content-length", CONSUMER_HEADER.decode("ascii"))
"""Headers that mean something else and so cannot carry an API key."""


@frozen
class ApiKeySettings:
    """
    An API key filter's settings.

    @ivar keys_file: the absolute path of the API key file (C{keys}).
    @ivar source: C{("header", lower-case name as bytes)} or
        C{("query", name as bytes)}: where the client puts its key.
    """

    keys_file: str
    source: tuple = ("header", b"x-api-key")
    hide_credentials: bool = True


def _name(text):
    if not _NAME.match(text):
        raise ValueError("is not a valid name")
    return text


def parse_filter(reader):
    """
    Read a C{type = api_key} section from C{reader} into L{ApiKeySettings},
    recording every problem on the reader.
    """
    path = reader.path("keys")
    if path is not None:
        unreadable = v.file_unreadable(path)
        if unreadable is not None:
            reader.error("keys", unreadable)
    header = reader.get("header", _name, None)
    query = reader.get("query", _name, None)
    if header is not None and query is not None:
        reader.error(None, "has header and query: the key comes from one of them")
    if header and header.lower() in _NOT_KEY_HEADERS:
        reader.error("header", "cannot carry an API key", header)
    if query is not None:
        source = ("query", query.encode("ascii"))
    else:
        source = ("header", (header or "X-Api-Key").lower().encode("ascii"))
    hide = reader.get("hide_credentials", v.parse_bool, True)
    return ApiKeySettings(
        keys_file=path,
        source=source,
        hide_credentials=True if hide is None else hide,
    )
