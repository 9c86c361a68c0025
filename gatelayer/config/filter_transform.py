"""
Settings of a C{[filter:NAME] type = transform} section: header, path and
query rewriting, and the template syntax their values use (the body keys
are read by L{gatelayer.config.transform_bodies}).

A template is parsed once, here, into a tuple of parts: a part is either
literal bytes or a L{Variable}. C{$name} or C{${name}} is a variable, C{$$}
a dollar sign. The variables are C{$remote_addr}, C{$host}, C{$path},
C{$request_id}, C{$consumer}, C{$jwt.<claim>}, C{$query.<name>} and
C{$header.<name>}; any other name is a configuration error.
"""

import re

from attrs import frozen

from gatelayer.config import values as v
from gatelayer.config.transform_bodies import parse_body_settings

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]+\Z")
_VARIABLE = re.compile(r"\$(?:\{([^}\s]*)\}|([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?))")
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_ENTRY_SPLIT = re.compile(r",\s*(?=[A-Za-z0-9!#$%&'*+.^_`|~-]+\s*:)")
_QUERY_ENTRY_SPLIT = re.compile(r",\s*(?=[A-Za-z0-9._~-]+\s*=)")

SIMPLE_VARIABLES = ("remote_addr", "host", "path", "request_id", "consumer")
"""The variables without a qualifier."""

QUALIFIED_VARIABLES = ("jwt", "query", "header")
"""The variables taking a C{.<name>}: a JWT claim, a query parameter, a request header."""

FRAMING_HEADERS = frozenset([
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection",
])
"""Header names no transform may touch: they frame the message or route it, and the gateway owns them."""

CONSUMER_HEADER = "x-consumer"
"""The identity header the key and JWT filters vouch for (lower case)."""

HEADER_KEYS = ("add", "set", "remove", "rename")
"""The header operations, in the order they are applied."""


@frozen
class Variable:
    """
    A variable of a template.

    @ivar kind: one of L{SIMPLE_VARIABLES} or L{QUALIFIED_VARIABLES}.
    @ivar qualifier: the claim, parameter or header name (a header name in
        lower case), or C{""} for a simple variable.
    """

    kind: str
    qualifier: str = ""


@frozen
class HeaderTemplate:
    """
    One C{Name: template} entry of C{*_headers_add} or C{*_headers_set}.

    @ivar name: the header name, lower-case bytes.
    @ivar parts: the template's parts (bytes or L{Variable}).
    """

    name: bytes
    parts: tuple


@frozen
class TransformSettings:
    """
    A transform filter's settings (every header name in lower-case bytes).

    @ivar request_remove: header names removed from the request.
    @ivar request_rename: C{(old, new)} pairs.
    @ivar request_set: L{HeaderTemplate}s replacing any header of that name.
    @ivar request_add: L{HeaderTemplate}s added to what is there.
    @ivar response_remove: like C{request_remove}, for the response.
    @ivar response_rename: like C{request_rename}, for the response.
    @ivar response_set: like C{request_set}, for the response.
    @ivar response_add: like C{request_add}, for the response.
    @ivar rewrite: C{(compiled bytes pattern, replacement bytes)} or L{None}.
    @ivar query_remove: parameter names (bytes) removed from the query.
    @ivar query_add: C{(name bytes, parts)} pairs; a parameter of that name
        the client sent is removed first.
    @ivar body: the L{gatelayer.config.transform_bodies.BodySettings}, or
        L{None} when bodies pass untouched.
    """

    request_remove: tuple = ()
    request_rename: tuple = ()
    request_set: tuple = ()
    request_add: tuple = ()
    response_remove: tuple = ()
    response_rename: tuple = ()
    response_set: tuple = ()
    response_add: tuple = ()
    rewrite: object = None
    query_remove: tuple = ()
    query_add: tuple = ()
    body: object = None


def parse_template(text):
    """
    Parse C{text} into a tuple of parts: literal bytes (UTF-8) and
    L{Variable}s. C{$$} is a dollar sign.

    @raise ValueError: an unknown variable, a lone C{$}, a control
        character.
    """
    if _UNSAFE.search(text):
        raise ValueError("has a control character (CR, LF, NUL, ...)")
    return tuple(p.encode("utf-8") if isinstance(p, str) else p for p in scan_template(text, read_variable))


def scan_template(text, read_variable):
    """
    Split a template into literal text (C{str}, never empty) and the
    variables between it, in order. C{$$} is a dollar sign; any other C{$}
    is handed, with its index, to C{read_variable}, which returns the
    variable and the index just after it. Shared by the transform filter's
    templates and an aggregate part's target, which add their own
    variables and checks.

    @raise ValueError: whatever C{read_variable} raises.
    """
    parts = []
    literal = []
    index = 0
    while index < len(text):
        dollar = text.find("$", index)
        if dollar < 0:
            literal.append(text[index:])
            break
        literal.append(text[index:dollar])
        if text.startswith("$$", dollar):
            literal.append("$")
            index = dollar + 2
            continue
        variable, index = read_variable(text, dollar)
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(variable)
    if "".join(literal):
        parts.append("".join(literal))
    return parts


def read_variable(text, dollar):
    """
    The L{Variable} spelled at C{text[dollar]} (C{$name} or C{${name}}) and
    the index just after it.

    @raise ValueError: a lone C{$}, or an unknown variable.
    """
    match = _VARIABLE.match(text, dollar)
    if match is None:
        raise ValueError("has a lone $ (write $$ for a dollar sign)")
    return parse_variable(match.group(1) if match.group(1) is not None else match.group(2)), match.end()


def parse_variable(name):
    """
    The L{Variable} called C{name} (without C{$}).

    @raise ValueError: it is not one of the documented variables.
    """
    if name in SIMPLE_VARIABLES:
        return Variable(name)
    kind, dot, qualifier = name.partition(".")
    if kind in QUALIFIED_VARIABLES and dot and qualifier:
        if kind == "header":
            if not _TOKEN.match(qualifier):
                raise ValueError(f"has ${name}: {qualifier!r} is not a header name")
            qualifier = qualifier.lower()
        return Variable(kind, qualifier)
    known = ", ".join([*(f"${n}" for n in SIMPLE_VARIABLES), *(f"${n}.<name>" for n in QUALIFIED_VARIABLES)])
    raise ValueError(f"has the unknown variable ${name} (known: {known}; $$ is a dollar sign)")


def _header_name(text):
    if not _TOKEN.match(text):
        raise ValueError(f"has {text!r}, which is not a header name")
    lower = text.lower()
    if lower in FRAMING_HEADERS:
        raise ValueError(f"has {text!r}: the gateway owns that header")
    return lower.encode("ascii")


def _entries(text, splitter):
    entries = []
    for line in text.splitlines():
        entries.extend(e.strip() for e in splitter.split(line) if e.strip())
    return entries


def _templates(text):
    result = []
    for entry in _entries(text, _HEADER_ENTRY_SPLIT):
        name, colon, template = entry.partition(":")
        if not colon:
            raise ValueError(f"has {entry!r}, which is not Name: value")
        result.append(HeaderTemplate(_header_name(name.strip()), parse_template(template.strip())))
    return tuple(result)


def _names(text):
    return tuple(_header_name(name) for name in v.parse_list(text.replace("\n", ",")))


def _renames(text):
    pairs = []
    for entry in v.parse_list(text.replace("\n", ",")):
        old, colon, new = entry.partition(":")
        if not colon:
            raise ValueError(f"has {entry!r}, which is not Old-Name: New-Name")
        pairs.append((_header_name(old.strip()), _header_name(new.strip())))
    return tuple(pairs)


def _rewrite(text):
    fields = text.split()
    if len(fields) != 2:
        raise ValueError("is not REGEX REPLACEMENT (two fields separated by spaces)")
    regex, replacement = fields
    try:
        pattern = re.compile(regex.encode("utf-8"))
        replacement = replacement.encode("utf-8")
        # Compiles the replacement too: a bad group reference fails here, once.
        pattern.sub(replacement, b"")
    except (re.error, IndexError) as e:
        raise ValueError(f"is not a valid rewrite ({e})") from None
    return (pattern, replacement)


def _query_names(text):
    names = v.parse_list(text.replace("\n", ","))
    for name in names:
        if not _QUERY_NAME.match(name):
            raise ValueError(f"has {name!r}, which is not a query parameter name (letters, digits, ._~-)")
    return tuple(name.encode("ascii") for name in names)


def _query_templates(text):
    result = []
    for entry in _entries(text, _QUERY_ENTRY_SPLIT):
        name, equals, template = entry.partition("=")
        name = name.strip()
        if not equals or not _QUERY_NAME.match(name):
            raise ValueError(f"has {entry!r}, which is not name=value (letters, digits, ._~- in the name)")
        result.append((name.encode("ascii"), parse_template(template.strip())))
    return tuple(result)


def parse_filter(reader):
    """
    Read a C{type = transform} section from C{reader} into
    L{TransformSettings}, recording every problem on the reader.
    """
    values = {}
    for side in ("request", "response"):
        for operation, parse in (("remove", _names), ("rename", _renames),
                                 ("set", _templates), ("add", _templates)):
            key = f"{side}_headers_{operation}"
            values[f"{side}_{operation}"] = reader.get(key, parse, ()) or ()
    for key in ("request_headers_set", "request_headers_add", "request_headers_remove",
                "request_headers_rename"):
        side_operation = "request_" + key.rpartition("_")[2]
        for name in _touched(values[side_operation]):
            if name == CONSUMER_HEADER.encode("ascii"):
                reader.error(key, "may not change X-Consumer: the gateway vouches for it "
                             "(a transform cannot spoof identity)")
    rewrite = reader.get("rewrite", _rewrite, None)
    query_remove = reader.get("query_remove", _query_names, ()) or ()
    query_add = reader.get("query_add", _query_templates, ()) or ()
    body = parse_body_settings(reader)
    return TransformSettings(rewrite=rewrite, query_remove=query_remove, query_add=query_add, body=body,
                             **values)


def _touched(entries):
    for entry in entries:
        if isinstance(entry, HeaderTemplate):
            yield entry.name
        elif isinstance(entry, tuple):
            yield from entry
        else:
            yield entry


def identity_problems(path, filters):
    """
    The problems of transforms that would set, remove or rename a header a
    JWT filter's C{forward_claims} vouches for, in C{filters} (name to
    L{gatelayer.config.model.FilterSpec}): a transform cannot spoof
    identity.
    """
    claimed = {}
    for name, spec in filters.items():
        for _, header in getattr(spec.settings, "forward_claims", ()) or ():
            claimed.setdefault(header.lower(), name)
    problems = []
    for name, spec in filters.items():
        if not isinstance(spec.settings, TransformSettings):
            continue
        for operation in HEADER_KEYS:
            entries = getattr(spec.settings, "request_" + operation)
            for header in sorted(set(_touched(entries))):
                if header in claimed:
                    problems.append(
                        f"{path} [filter:{name}] request_headers_{operation}: may not change "
                        f"{header.decode('ascii')}: [filter:{claimed[header]}] forward_claims vouches "
                        "for it (a transform cannot spoof identity)")
    return problems
