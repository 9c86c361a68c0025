"""
The canonical request: one view of a request's target, host and headers that
routing, every filter, the access log and the upstream all share.

A gateway that decides on one spelling of a request while the server behind
it acts on another can be walked around (C{/admin} protected, C{/x/../admin}
or C{/%61dmin} served). So the worker rewrites each request once, before
routing, into the form the upstream will receive, and refuses what cannot
be rewritten safely. Everything here is pure: bytes in, bytes out, or
L{BadRequest}.
"""

import ipaddress
import re

from gatelayer.http1 import BadRequest

__all__ = [
    "KEEP", "SUSPECT_PATH", "CanonicalTarget", "HeaderPolicy", "canonical_host", "cgi_name", "normalize_path",
    "parse_target", "check_method",
]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})?")
# A path needs the slow path only when it holds one of these.
SUSPECT_PATH = _SUSPECT = re.compile(rb"%|/\.|//|\\|#|\.;")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STANDARD_METHODS = frozenset([
    b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT",
])
_HOST_LABEL = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?)*")
#: The verdict of L{HeaderPolicy} for a header left as it is (the same
#: object every time: a caller may test it with C{is}).
KEEP = "keep"
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)(.*)", re.S)


def _decode_escape(match, slashes):
    digits = match.group(1)
    if digits is None:
        raise BadRequest(400, "malformed percent-escape in path")
    value = int(digits, 16)
    if value < 0x20 or value == 0x7F:
        raise BadRequest(400, "encoded control character in path")
    if value in _UNRESERVED:
        return bytes((value,))
    if value == 0x2F or value == 0x5C:
        if slashes == "reject":
            raise BadRequest(400, "encoded slash or backslash in path")
        if slashes == "decode":
            return b"/"
    return b"%" + digits.upper()


def normalize_path(path, merge_slashes=True, escaped_slashes="reject"):
    """
    The normalized form of an origin-form path (bytes, starting with C{/},
    without the query), as RFC 3986 section 6.2.2 describes it: unreserved
    characters percent-decoded (C{%61} -> C{a}), the remaining escapes in
    upper case, dot segments removed, and (with C{merge_slashes}) runs of
    slashes merged.

    Refused with L{BadRequest} (400): malformed escapes (C{%}, C{%zz}),
    encoded control bytes (C{%00}), a path climbing above C{/}, a fragment
    (C{#} has no place in a request target), a dot segment carrying a path
    parameter (C{..;}, which some servlet containers read as C{..}), and
    with C{escaped_slashes = reject} an encoded slash or backslash (C{%2F},
    C{%5C}) or a raw backslash. C{decode} turns those into C{/} before dot
    segments are removed; C{keep} leaves them encoded (C{%2F}).
    """
    if _SUSPECT.search(path) is None:
        return path
    if b"#" in path:
        raise BadRequest(400, "fragment in request target")
    if b"%" in path:
        path = _ESCAPE.sub(lambda m: _decode_escape(m, escaped_slashes), path)
    if b"\\" in path:
        if escaped_slashes == "reject":
            raise BadRequest(400, "backslash in path")
        if escaped_slashes == "decode":
            path = path.replace(b"\\", b"/")
    segments = path.split(b"/")
    out = []
    trailing = False
    for segment in segments[1:]:
        trailing = False
        if segment == b".":
            trailing = True
        elif segment == b"..":
            if not out:
                raise BadRequest(400, "path climbs above the root")
            out.pop()
            trailing = True
        elif not segment and merge_slashes:
            trailing = True
        elif segment[:2] == b".;" or segment[:3] == b"..;":
            raise BadRequest(400, "path parameter on a dot segment")
        else:
            out.append(segment)
    if not out:
        return b"/"
    result = b"/" + b"/".join(out)
    if trailing:
        result += b"/"
    return result


class CanonicalTarget:
    """
    A request target split into what routing needs.

    @ivar form: C{"origin"}, C{"absolute"}, C{"asterisk"} or C{"authority"}.
    @ivar authority: the authority of an absolute-form or authority-form
        target (bytes), else L{None}.
    @ivar path: the path (bytes; C{b"*"} for asterisk-form, C{b"/"} for
        authority-form).
    @ivar query: the query without C{?} (bytes, may be empty).
    """

    __slots__ = ("form", "authority", "path", "query")

    def __init__(self, form, authority, path, query):
        self.form = form
        self.authority = authority
        self.path = path
        self.query = query


def parse_target(method, target):
    """
    Split request target C{target} (bytes) of a request with C{method} into
    a L{CanonicalTarget} (RFC 9112 section 3.2): origin-form (C{/x?q}),
    absolute-form (C{http://host/x?q}, whose authority replaces Host),
    asterisk-form (C{*}, only with OPTIONS) and authority-form
    (C{host:port}, only with CONNECT). Anything else is L{BadRequest}.
    """
    if method == b"CONNECT":
        if b"/" in target or b"?" in target or b"@" in target or b"*" == target:
            raise BadRequest(400, "CONNECT needs an authority-form target (host:port)")
        return CanonicalTarget("authority", target, b"/", b"")
    if target[:1] == b"/":
        path, _, query = target.partition(b"?")
        return CanonicalTarget("origin", None, path, query)
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest(400, "asterisk-form target is only allowed with OPTIONS")
        return CanonicalTarget("asterisk", None, b"*", b"")
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise BadRequest(400, "malformed request target")
    scheme, authority, rest = match.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise BadRequest(400, "absolute-form target with a scheme other than http or https")
    if not authority or b"@" in authority:
        raise BadRequest(400, "absolute-form target without a valid authority")
    if rest[:1] == b"?" or not rest:
        rest = b"/" + rest
    path, _, query = rest.partition(b"?")
    return CanonicalTarget("absolute", authority, path, query)


def check_method(method):
    """
    Refuse a method that is not an RFC 9110 token, or that spells a standard
    method in another case (C{get}): methods are case-sensitive, and a
    lenient server behind the gateway would take C{get} for C{GET} while
    the gateway's routes did not.
    """
    if method in _STANDARD_METHODS:
        return
    if _TOKEN.fullmatch(method) is None:
        raise BadRequest(400, "malformed method")
    if method not in _STANDARD_METHODS and method.upper() in _STANDARD_METHODS:
        raise BadRequest(400, "method names are case-sensitive")


def canonical_host(value, default_port):
    """
    The canonical form of a Host header value (or an absolute-form
    target's authority), as C{(name, authority)}: C{name} is the lower-case
    host without port or trailing dot (IPv6 without brackets), used for
    routing; C{authority} is the bytes to forward as Host (C{name}, in
    brackets for IPv6, with the port unless it is C{default_port}).

    Refused with L{BadRequest} (400): an empty value, spaces, C{/}, C{@},
    non-ASCII bytes, a bad IPv6 literal, a port that is not 1 to 65535.
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "invalid Host: not ASCII") from None
    text = text.lower()
    if not text:
        raise BadRequest(400, "invalid Host: empty")
    port = None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise BadRequest(400, "invalid Host: unterminated IPv6 literal")
        literal = text[1:end]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise BadRequest(400, "invalid Host: bad IPv6 literal") from None
        name = literal
        rest = text[end + 1:]
        if rest:
            if rest[0] != ":":
                raise BadRequest(400, "invalid Host: text after the IPv6 literal")
            port = rest[1:]
    else:
        name, sep, port_text = text.partition(":")
        if sep:
            port = port_text
        if name.endswith("."):
            name = name[:-1]
        if not name or _HOST_LABEL.fullmatch(name) is None:
            raise BadRequest(400, "invalid Host: not a host name or address")
    if port is not None and port != "":
        if not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
            raise BadRequest(400, "invalid Host: port out of range")
        number = int(port)
    else:
        number = None
    shown = "[%s]" % (name,) if ":" in name else name
    if number is not None and number != default_port:
        shown = "%s:%d" % (shown, number)
    return name, shown.encode("ascii")


def cgi_name(name):
    """
    The CGI/WSGI variable a header name becomes (C{X-Consumer} and
    C{x_consumer} both become C{X_CONSUMER}): the spellings an upstream
    cannot tell apart.
    """
    return name.upper().replace(b"-", b"_")


class HeaderPolicy:
    """
    What the gateway removes from (or refuses in) a client's request headers
    before anything decides on them.

      - Names with an underscore: C{drop} (default, as nginx ignores them),
        C{reject} (400) or C{allow}. A WSGI or CGI upstream folds
        C{X_Consumer} into the same variable as C{X-Consumer}, so an
        underscore spelling is a way to spoof a header the gateway vouches
        for.
      - Identity headers (those the gateway itself sets, such as
        C{X-Consumer} and the JWT claim headers) in every spelling that maps
        to the same CGI variable: always removed, on every route.

    Verdicts are cached per header name (names repeat from request to
    request), so the check costs one dict lookup per header.

    @ivar verdicts: the verdicts so far, by header name (bytes).
    """

    _CACHE_LIMIT = 4096

    def __init__(self, underscores, identity_headers):
        """
        @param underscores: C{"drop"}, C{"reject"} or C{"allow"}.
        @param identity_headers: header names (bytes) the gateway sets.
        """
        self.underscores = underscores
        self.identity = frozenset(cgi_name(name) for name in identity_headers)
        self.verdicts = {}

    def verdict(self, name):
        """
        L{KEEP}, C{"drop"} or C{"reject"} for header C{name} (bytes).
        """
        verdict = self.verdicts.get(name)
        if verdict is None:
            if cgi_name(name) in self.identity:
                verdict = "drop"
            elif b"_" in name and self.underscores != "allow":
                verdict = self.underscores
            else:
                verdict = KEEP
            if len(self.verdicts) < self._CACHE_LIMIT:
                self.verdicts[name] = verdict
        return verdict

    def apply(self, raw):
        """
        Apply the policy to C{raw}, a mapping of header name to values (a
        L{twisted.web.http_headers.Headers}' raw dict), in place.
        """
        drop = None
        verdicts = self.verdicts
        for name in raw:
            verdict = verdicts.get(name) or self.verdict(name)
            if verdict is KEEP:
                continue
            if verdict == "reject":
                raise BadRequest(400, "header name with an underscore")
            if drop is None:
                drop = [name]
            else:
                drop.append(name)
        if drop is not None:
            for name in drop:
                del raw[name]
