"""
The pure parts of OpenAPI request checking: matching a path against the
document's path templates, and reading parameters out of a request
(percent-decoding, splitting arrays, coercing strings to the schema's
types). No I/O, no validators: L{gatelayer.filters.openapi} uses them.
"""

import math
import re
from urllib.parse import unquote_to_bytes

from gatelayer.config.openapi import split_template

__all__ = ["MAX_QUERY_PAIRS", "PathMatcher", "coerce", "decode", "parse_cookies", "parse_query"]

MAX_QUERY_PAIRS = 1000
"""A query string with more C{name=value} pairs than this is refused."""

_VARIABLE = re.compile(r"\{[^{}/]+\}")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,29})")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,30})(?:\.[0-9]{1,30})?(?:[eE][-+]?[0-9]{1,3})?")


def decode(text, plus=False):
    """
    Percent-decode C{text} as UTF-8 (with C{plus}, a C{+} is a space, as in
    a form-encoded query).

    @raise ValueError: when the result is not UTF-8.
    """
    if plus:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8")


class _Node:
    __slots__ = ("literals", "templated", "target")

    def __init__(self):
        self.literals = {}
        self.templated = []
        self.target = None


class PathMatcher:
    """
    Finds the path template a request path matches, as OpenAPI says:
    segment by segment, a literal segment before a templated one; a
    template variable matches within one segment (never a C{/}), at least
    one character.

    Built once: a tree of segments, so a lookup visits each template's
    nodes at most once, whatever the number of templates.
    """

    def __init__(self, entries):
        """
        @param entries: C{(template, target)} pairs; the target is what
            L{match} returns for a path the template matches.
        """
        self._root = _Node()
        for template, target in entries:
            self._add(template, target)
        self._sort(self._root)

    def _add(self, template, target):
        segments, names = split_template(template)
        node = self._root
        for segment in segments:
            if "{" not in segment:
                node = node.literals.setdefault(segment, _Node())
                continue
            shape = _VARIABLE.sub("{}", segment)
            for known, _, child in node.templated:
                if known == shape:
                    node = child
                    break
            else:
                pattern = "".join("([^/]+?)" if part == "{}" else re.escape(part)
                                  for part in re.split(r"(\{\})", shape) if part)
                child = _Node()
                node.templated.append((shape, re.compile(pattern), child))
                node = child
        node.target = (target, tuple(names))

    def _sort(self, node):
        # The template with more literal characters in a segment is the
        # more specific one ({id}.json before {id}).
        node.templated.sort(key=lambda entry: -len(entry[0].replace("{}", "")))
        for child in node.literals.values():
            self._sort(child)
        for _, _, child in node.templated:
            self._sort(child)

    def match(self, path):
        """
        Match C{path} (a string starting with C{/}, its segments still
        percent-encoded).

        @return: C{(target, {name: raw value})}, or L{None} when no template
            matches. Values are still percent-encoded.
        """
        segments = path[1:].split("/")
        decoded = []
        for segment in segments:
            try:
                decoded.append(decode(segment))
            except ValueError:
                decoded.append(None)
        values = []
        found = self._match(self._root, segments, decoded, 0, values)
        if found is None:
            return None
        target, names = found
        return target, dict(zip(names, values))

    def _match(self, node, segments, decoded, index, values):
        if index == len(segments):
            return node.target
        literal = node.literals.get(decoded[index]) if decoded[index] is not None else None
        if literal is not None:
            found = self._match(literal, segments, decoded, index + 1, values)
            if found is not None:
                return found
        for _, pattern, child in node.templated:
            matched = pattern.fullmatch(segments[index])
            if matched is None:
                continue
            values.extend(matched.groups())
            found = self._match(child, segments, decoded, index + 1, values)
            if found is not None:
                return found
            del values[len(values) - len(matched.groups()):]
        return None


def parse_query(query):
    """
    The parameters of the query string C{query} (text without C{?}): a dict
    of name to the list of its values, in order, percent-decoded (C{+} is a
    space).

    @raise ValueError: for a name or value that is not UTF-8, or more than
        L{MAX_QUERY_PAIRS} pairs.
    """
    found = {}
    if not query:
        return found
    pairs = query.split("&")
    if len(pairs) > MAX_QUERY_PAIRS:
        raise ValueError(f"has more than {MAX_QUERY_PAIRS} parameters")
    for pair in pairs:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        try:
            found.setdefault(decode(name, True), []).append(decode(value, True))
        except ValueError:
            raise ValueError("is not percent-encoded UTF-8") from None
    return found


def parse_cookies(values):
    """
    The cookies of the C{Cookie} header lines C{values} (text): a dict of
    name to the list of its values, percent-decoded.

    @raise ValueError: for a value that is not UTF-8.
    """
    found = {}
    for line in values:
        for pair in line.split(";"):
            name, sep, value = pair.strip().partition("=")
            if not sep or not name:
                continue
            try:
                found.setdefault(name, []).append(decode(value.strip().strip('"')))
            except ValueError:
                raise ValueError("is not percent-encoded UTF-8") from None
    return found


def coerce(text, types):
    """
    The string C{text} as the first of the JSON C{types} it spells: an
    integer, a number, a boolean; else the string itself, which the
    schema's validation then judges.
    """
    if not types:
        return text
    if "integer" in types and _INTEGER.fullmatch(text):
        return int(text)
    if "number" in types and _NUMBER.fullmatch(text):
        value = float(text)
        if not math.isinf(value):
            return int(text) if _INTEGER.fullmatch(text) else value
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    return text
