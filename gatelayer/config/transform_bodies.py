"""
Settings of a transform filter's body keys: C{request_body},
C{response_body}, C{max_transform_size}, C{xml_root} and the JSON pointer
edits C{request_json_remove}, C{request_json_rename},
C{response_json_remove}, C{response_json_rename}.

JSON pointers (RFC 6901) are parsed here, once, into tuples of reference
tokens with C{~1} and C{~0} unescaped, so a request only walks them.
"""

import re

from attrs import frozen

from gatelayer.config import values as v

DIRECTIONS = ("json_to_xml", "xml_to_json")
"""The values of C{request_body} and C{response_body}."""

DEFAULT_MAX_SIZE = 1024 * 1024
"""C{max_transform_size} when it is not set: 1MB."""

LARGEST_MAX_SIZE = 64 * 1024 * 1024
"""The largest C{max_transform_size}: a body is transformed in memory."""

DEFAULT_ROOT = "root"
"""C{xml_root} when it is not set."""

INSTALL_HINT = "pip install 'gatelayer[transform]'"
"""What an operator runs when the C{defusedxml} package is missing."""

_ENTRY_SPLIT = re.compile(r",\s*(?=/)")
_ARROW = re.compile(r"\s*->\s*")
_BAD_TILDE = re.compile(r"~(?![01])")
_NAME_CHARS = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*(?::[A-Za-z_][A-Za-z0-9._-]*)?\Z")


@frozen
class BodySettings:
    """
    What a transform filter does to bodies.

    @ivar request: C{"json_to_xml"}, C{"xml_to_json"} or L{None}.
    @ivar response: the same, for responses.
    @ivar max_size: the largest body read, and the largest written, in bytes.
    @ivar xml_root: the root element's name of what C{json_to_xml} writes.
    @ivar request_removes: pointers (tuples of tokens) removed from JSON
        request bodies.
    @ivar request_renames: C{(source, target)} pointer pairs moved in JSON
        request bodies.
    @ivar response_removes: like C{request_removes}, for responses.
    @ivar response_renames: like C{request_renames}, for responses.
    """

    request: object = None
    response: object = None
    max_size: int = DEFAULT_MAX_SIZE
    xml_root: str = DEFAULT_ROOT
    request_removes: tuple = ()
    request_renames: tuple = ()
    response_removes: tuple = ()
    response_renames: tuple = ()

    @property
    def on_requests(self):
        """
        Whether request bodies are transformed or edited.
        """
        return bool(self.request or self.request_removes or self.request_renames)

    @property
    def on_responses(self):
        """
        Whether response bodies are transformed or edited.
        """
        return bool(self.response or self.response_removes or self.response_renames)


def defusedxml_module():
    """
    The C{defusedxml} package, or L{None} when it is not installed (it is
    the optional C{transform} extra; only C{xml_to_json} reads XML).
    """
    try:
        import defusedxml
    except ImportError:
        return None
    return defusedxml


def parse_pointer(text):
    """
    The reference tokens of the JSON pointer C{text} (RFC 6901), unescaped
    (C{~1} is C{/}, C{~0} is C{~}).

    @raise ValueError: it does not start with C{/}, or has a C{~} not
        followed by C{0} or C{1}.
    """
    if not text.startswith("/"):
        raise ValueError(f"has {text!r}, which is not a JSON pointer (it must start with /)")
    tokens = []
    for token in text[1:].split("/"):
        if _BAD_TILDE.search(token):
            raise ValueError(f"has {text!r}: a ~ in a JSON pointer must be ~0 (for ~) or ~1 (for /)")
        tokens.append(token.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def _entries(text):
    entries = []
    for line in text.splitlines():
        entries.extend(e.strip() for e in _ENTRY_SPLIT.split(line) if e.strip())
    return entries


def _pointers(text):
    return tuple(parse_pointer(entry) for entry in _entries(text))


def _renames(text):
    pairs = []
    for entry in _entries(text):
        parts = _ARROW.split(entry)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"has {entry!r}, which is not /source -> /target")
        source, target = parse_pointer(parts[0]), parse_pointer(parts[1])
        if target == source:
            raise ValueError(f"has {entry!r}, which renames a value to itself")
        if target[:len(source)] == source:
            raise ValueError(f"has {entry!r}, which moves a value inside itself")
        pairs.append((source, target))
    return tuple(pairs)


def _size(text):
    size = v.parse_size(text)
    if size < 1:
        raise ValueError("must be at least 1 byte")
    if size > LARGEST_MAX_SIZE:
        raise ValueError("is over 64MB (a body is transformed in memory)")
    return size


def _root(text):
    if not _NAME_CHARS.match(text) or text.lower().startswith("xml"):
        raise ValueError("is not an XML element name (letters, digits, . _ -, an optional prefix:, "
                         "not starting with a digit or xml)")
    return text


def parse_body_settings(reader):
    """
    Read the body keys of a transform section from C{reader}.

    @return: L{BodySettings}, or L{None} when the section has none of them.
    """
    request = reader.choice("request_body", DIRECTIONS, None)
    response = reader.choice("response_body", DIRECTIONS, None)
    max_size = reader.get("max_transform_size", _size, None)
    xml_root = reader.get("xml_root", _root, None)
    edits = {}
    for side in ("request", "response"):
        edits[f"{side}_removes"] = reader.get(f"{side}_json_remove", _pointers, ()) or ()
        edits[f"{side}_renames"] = reader.get(f"{side}_json_rename", _renames, ()) or ()
    settings = BodySettings(
        request=request, response=response,
        max_size=max_size if max_size is not None else DEFAULT_MAX_SIZE,
        xml_root=xml_root if xml_root is not None else DEFAULT_ROOT, **edits)
    if not settings.on_requests and not settings.on_responses:
        for key in ("max_transform_size", "xml_root"):
            if reader.has(key):
                reader.error(key, "applies only with request_body, response_body or a *_json_* key")
        return None
    for key, direction in (("request_body", request), ("response_body", response)):
        if direction == "xml_to_json" and defusedxml_module() is None:
            reader.error(key, f"= xml_to_json needs the defusedxml package: {INSTALL_HINT}")
    if reader.has("xml_root") and "json_to_xml" not in (request, response):
        reader.error("xml_root", "applies only with request_body or response_body = json_to_xml")
    return settings
