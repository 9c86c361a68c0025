"""
Bodies between XML and JSON, and JSON pointer edits: the pure half of the
transform filter's body transformation (bytes or parsed JSON in, bytes or
parsed JSON out, no I/O).

The mapping (documented for users in C{docs/transform.md}):

  - the root element is the envelope: its name is dropped, its content is
    the JSON document; L{json_to_xml} names the root after the filter's
    C{xml_root};
  - an element with neither attributes nor child elements is its text (a
    string), or C{null} when it is empty;
  - any other element is an object: C{"@name"} for each attribute,
    C{"#text"} for its text when that is not only white space, and one key
    per child element name, whose value is a list when the name repeats;
  - names are kept as written, prefixes included (C{soap:Body}), and
    namespace declarations are attributes like any other (C{"@xmlns:soap"}):
    no namespace is resolved, so a document comes back as it was written;
  - comments and processing instructions carry no data and are dropped;
    CDATA sections are text.

XML is read by C{defusedxml}'s expat reader with document type declarations,
entities and external references refused, elements nested at most
L{MAX_DEPTH} deep and at most L{MAX_ATTRIBUTES} attributes an element.
"""

import json
import re
from xml.sax import SAXParseException
from xml.sax.handler import ContentHandler

__all__ = [
    "MAX_ATTRIBUTES", "MAX_DEPTH", "XML_DECLARATION", "TransformError", "apply_edits", "is_json_type", "is_xml_type",
    "json_to_xml", "xml_to_json",
]

MAX_DEPTH = 64
"""The deepest nesting of elements an XML body may have (the JSON parser's
bound too): deeper ones are refused, so nothing downstream recurses
without limit."""

MAX_ATTRIBUTES = 256
"""The most attributes one element may have."""

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
"""What every XML body L{json_to_xml} writes starts with."""

_NAME_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff")
_NAME_REST = _NAME_START + r"\-.0-9\u00b7\u0300-\u036f\u203f-\u2040"
# XML 1.0 (fifth edition) names without a colon, and a qualified name: one
# optional prefix, as namespaces allow.
_NCNAME = f"[{_NAME_START}][{_NAME_REST}]*"
_QNAME = re.compile(f"(?:{_NCNAME}:)?{_NCNAME}\\Z")
# The characters XML 1.0 cannot carry, not even as a character reference.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})
_INDEX = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_MISSING = object()


class TransformError(Exception):
    """
    A body that cannot be transformed.

    @ivar detail: what is wrong, a phrase to follow "the request body" or
        "the response body" (C{"is not well-formed XML: mismatched tag at
        line 1, column 9"}).
    @ivar too_large: whether it failed only for its size.
    """

    def __init__(self, detail, too_large=False):
        super().__init__(detail)
        self.detail = detail
        self.too_large = too_large


def is_json_type(kind):
    """
    Whether the lower-case media type C{kind} is JSON (C{application/json},
    C{application/*+json}).
    """
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def is_xml_type(kind):
    """
    Whether the lower-case media type C{kind} is XML (C{application/xml},
    C{text/xml}, C{application/*+xml}).
    """
    return kind in ("application/xml", "text/xml") or (
        kind.startswith("application/") and kind.endswith("+xml"))


def _at(path):
    """
    Where C{path} (keys and indexes) is, for a message: its JSON pointer.
    """
    if not path:
        return "at the top"
    return "at " + "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


# -- XML to JSON -------------------------------------------------------------


class _Refused(Exception):
    """
    Raised by the handler for what the mapping refuses (depth, attributes).
    """


class _Element:
    __slots__ = ("attributes", "children", "text")

    def __init__(self, attributes):
        self.attributes = attributes
        self.children = None
        self.text = []

    def value(self):
        text = "".join(self.text)
        if not self.attributes and self.children is None:
            return text if text else None
        value = {"@" + name: attribute for name, attribute in self.attributes.items()}
        if text.strip():
            value["#text"] = text
        if self.children is not None:
            value.update(self.children)
        return value


class _Builder(ContentHandler):
    """
    Builds the JSON value of a document from expat's events, with an
    explicit stack (no recursion, whatever the depth).
    """

    def __init__(self, max_depth):
        super().__init__()
        self.max_depth = max_depth
        self.stack = []
        self.result = None

    def startElement(self, name, attrs):
        if len(self.stack) >= self.max_depth:
            raise _Refused(f"nests elements deeper than {self.max_depth} levels")
        if len(attrs) > MAX_ATTRIBUTES:
            raise _Refused(f"has an element with more than {MAX_ATTRIBUTES} attributes")
        self.stack.append(_Element(dict(attrs.items())))

    def endElement(self, name):
        value = self.stack.pop().value()
        if not self.stack:
            self.result = value
            return
        parent = self.stack[-1]
        children = parent.children
        if children is None:
            children = parent.children = {}
        if name not in children:
            children[name] = value
        else:
            known = children[name]
            # Element values are never lists: a list is a repeated name.
            if type(known) is list:
                known.append(value)
            else:
                children[name] = [known, value]

    def characters(self, content):
        if self.stack:
            self.stack[-1].text.append(content)


def _position(line, column):
    # expat counts columns from 0; people (and JSON's decoder) from 1.
    return f"line {line}, column {column + 1}"


def xml_to_json(data, max_depth=MAX_DEPTH):
    """
    The JSON value of the XML document C{data} (bytes), by the mapping in
    this module's docstring.

    @raise TransformError: naming the line and column of what is not
        well-formed XML, or of a DTD, entity declaration, external
        reference, nesting deeper than C{max_depth} or element with more
        than L{MAX_ATTRIBUTES} attributes.
    """
    from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
    from defusedxml.expatreader import DefusedExpatParser

    parser = DefusedExpatParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder = _Builder(max_depth)
    parser.setContentHandler(builder)
    try:
        parser.feed(data)
        parser.close()
    except SAXParseException as e:
        raise TransformError(f"is not well-formed XML: {e.getMessage()} at "
                             f"{_position(e.getLineNumber(), e.getColumnNumber())}") from None
    except DTDForbidden:
        raise TransformError("has a document type declaration (DTD), which is refused, at "
                             + _position(parser.getLineNumber(), parser.getColumnNumber())) from None
    except EntitiesForbidden as e:
        raise TransformError(f"declares the entity {e.name!r}, which is refused, at "
                             + _position(parser.getLineNumber(), parser.getColumnNumber())) from None
    except DefusedXmlException:
        raise TransformError("refers to an external resource, which is refused, at "
                             + _position(parser.getLineNumber(), parser.getColumnNumber())) from None
    except (LookupError, ValueError):
        # An encoding declaration naming a codec Python lacks, or one expat
        # cannot use (multi-byte), or whose decoder fails on the bytes.
        raise TransformError("declares an encoding that cannot be read, at "
                             + _position(parser.getLineNumber(), parser.getColumnNumber())) from None
    except _Refused as e:
        raise TransformError(f"{e} at {_position(parser.getLineNumber(), parser.getColumnNumber())}") from None
    return builder.result


# -- JSON to XML -------------------------------------------------------------


class _Writer:
    """
    Collects the XML text, refusing it once it grows over C{room}
    characters (never fewer bytes than characters): an amplifying document
    (a long key over a long array of short values) stops there.
    """

    __slots__ = ("parts", "size", "room", "limit")

    def __init__(self, room, limit):
        self.parts = []
        self.size = 0
        self.room = room
        self.limit = limit

    def add(self, text):
        self.size += len(text)
        if self.size > self.room:
            raise TransformError(f"would be larger than {self.limit} bytes as XML", too_large=True)
        self.parts.append(text)


def _text(value, path):
    if isinstance(value, str):
        bad = _NOT_XML_CHAR.search(value)
        if bad is not None:
            raise TransformError(f"has a character XML cannot carry (U+{ord(bad.group()):04X}) {_at(path)}")
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return json.dumps(value)


def _check_name(name, path):
    if not _QNAME.match(name) or name == "xmlns" or name.startswith("xmlns:"):
        raise TransformError(f"has the key {_shown(name)}, which is not an XML element name, {_at(path + [name])}")


def _shown(name):
    return repr(name if len(name) <= 60 else name[:60] + "...")


def _element(writer, name, value, path):
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, list):
                raise TransformError(f"has an array inside an array, which has no XML form, {_at(path + [index])}")
            _element(writer, name, item, path + [index])
        return
    if value is None:
        writer.add(f"<{name}/>")
        return
    if not isinstance(value, dict):
        writer.add(f"<{name}>{_text(value, path).translate(_TEXT_ESCAPES)}</{name}>")
        return
    head = [name]
    content = []
    for key, item in value.items():
        if key.startswith("@"):
            attribute = key[1:]
            if not _QNAME.match(attribute):
                raise TransformError(f"has the key {_shown(key)}, which is not an XML attribute name, "
                                     f"{_at(path + [key])}")
            if item is None or isinstance(item, (dict, list)):
                raise TransformError(f"has an attribute that is not a string, number or boolean "
                                     f"{_at(path + [key])}")
            head.append(f'{attribute}="{_text(item, path + [key]).translate(_ATTRIBUTE_ESCAPES)}"')
        elif key == "#text":
            if isinstance(item, (dict, list)):
                raise TransformError(f"has a #text that is not a string, number or boolean {_at(path + [key])}")
            if item is not None:
                content.append((None, item))
        else:
            _check_name(key, path)
            content.append((key, item))
    if not content:
        writer.add("<" + " ".join(head) + "/>")
        return
    writer.add("<" + " ".join(head) + ">")
    for key, item in content:
        if key is None:
            writer.add(_text(item, path + ["#text"]).translate(_TEXT_ESCAPES))
        else:
            _element(writer, key, item, path + [key])
    writer.add(f"</{name}>")


def json_to_xml(value, root, limit):
    """
    The XML document (UTF-8 bytes, with an XML declaration) of the JSON
    value C{value}, its root element named C{root}.

    @param limit: the largest document written, in bytes.
    @raise TransformError: the value has no XML form (a top-level array, an
        array in an array, a key that is not an XML name, an attribute that
        is an object, a character XML cannot carry), naming its JSON
        pointer; or the document would be larger than C{limit}
        (C{too_large}).
    """
    if isinstance(value, list):
        raise TransformError("is a JSON array at the top, which has no XML form "
                             "(an array needs an object key to name its elements)")
    writer = _Writer(limit - len(XML_DECLARATION), limit)
    _element(writer, root, value, [])
    body = XML_DECLARATION + "".join(writer.parts).encode("utf-8")
    if len(body) > limit:
        raise TransformError(f"would be larger than {limit} bytes as XML", too_large=True)
    return body


# -- JSON pointer edits (RFC 6901) -------------------------------------------


def _child(node, token):
    if isinstance(node, dict):
        return node.get(token, _MISSING)
    if isinstance(node, list) and _INDEX.match(token):
        index = int(token)
        if index < len(node):
            return node[index]
    return _MISSING


def _parent(document, tokens):
    node = document
    for token in tokens[:-1]:
        node = _child(node, token)
        if node is _MISSING:
            return _MISSING
    return node


def _take(document, tokens):
    parent = _parent(document, tokens)
    token = tokens[-1]
    if isinstance(parent, dict):
        return parent.pop(token, _MISSING)
    if isinstance(parent, list) and _INDEX.match(token) and int(token) < len(parent):
        return parent.pop(int(token))
    return _MISSING


def _put(document, tokens, value):
    parent = _parent(document, tokens)
    token = tokens[-1]
    if isinstance(parent, dict):
        parent[token] = value
        return True
    if isinstance(parent, list):
        if token == "-":
            parent.append(value)
            return True
        if _INDEX.match(token) and int(token) <= len(parent):
            parent.insert(int(token), value)
            return True
    return False


def apply_edits(document, removes, renames):
    """
    Apply JSON pointer edits to C{document} (a parsed JSON value, changed
    in place) and return it: first every remove, then every rename, in the
    order given. An edit whose pointer does not resolve (a missing key, an
    index past the end, a step through a string) changes nothing; a rename
    whose target's parent does not resolve leaves the value where it was.

    @param removes: pointers, each a tuple of unescaped reference tokens.
    @param renames: C{(source, target)} pairs of such tuples; a rename moves
        the value (RFC 6902's C{move}: a target key already there is
        replaced; an array index inserts, C{-} appends).
    """
    if not isinstance(document, (dict, list)):
        return document
    for tokens in removes:
        _take(document, tokens)
    for source, target in renames:
        value = _take(document, source)
        if value is _MISSING:
            continue
        if not _put(document, target, value):
            # Back where it was: a rename that cannot land does nothing.
            _put(document, source, value)
    return document
