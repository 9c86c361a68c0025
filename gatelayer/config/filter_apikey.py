"""
Settings of a C{[filter:NAME] type = api_key} section.

The key file is read and checked at load time: every consumer line must be
a SHA-256 hex digest, so a plain key pasted by mistake is an error, not a
key that silently never matches.
"""

import re

from attrs import field, frozen

from gatelayer.auth.apikeys import ApiKeysError, ApiKeyStore, load_apikeys
from gatelayer.config import values as v

_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")


@frozen
class ApiKeySettings:
    """
    An API key filter's settings.

    @ivar store: the L{ApiKeyStore} loaded from C{keys}.
    @ivar source: C{("header", lower-case name as bytes)} or
        C{("query", name as bytes)}: where the client puts its key.
    """

    store: ApiKeyStore = field(eq=False)
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
    store = ApiKeyStore({}, path or "")
    if path is not None:
        try:
            store = load_apikeys(path)
        except ApiKeysError as e:
            for problem in e.problems:
                reader.error("keys", problem)
    header = reader.get("header", _name, None)
    query = reader.get("query", _name, None)
    if header is not None and query is not None:
        reader.error(None, "has header and query: the key comes from one of them")
    if header and header.lower() in ("authorization", "cookie", "host", "content-length", "x-consumer"):
        reader.error("header", "cannot carry an API key", header)
    if query is not None:
        source = ("query", query.encode("ascii"))
    else:
        source = ("header", (header or "X-Api-Key").lower().encode("ascii"))
    hide = reader.get("hide_credentials", v.parse_bool, True)
    return ApiKeySettings(
        store=store,
        keys_file=path,
        source=source,
        hide_credentials=True if hide is None else hide,
    )
