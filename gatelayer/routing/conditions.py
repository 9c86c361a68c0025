"""
Evaluating a route's header, query and cookie conditions against a request.

The conditions arrive parsed and compiled from the configuration (objects
with C{source}, C{name}, C{test} and C{value}, see
L{gatelayer.config.route_match.MatchCondition}); here they are grouped by
what they read and checked against a L{RequestView}, which parses the
query and the cookies at most once per request, and only when a route
that tests them is reached.

What a condition compares:

 - a header: its value; a header sent on several lines is compared as
   its combined value, the lines joined with C{", "} (RFC 9110 section
   5.3), so C{X-Api-Version: 2} sent twice is C{2, 2}.
 - a query parameter: the value of its first occurrence, decoded as the
   rest of the gateway decodes query values (C{+} is a space, then
   percent-escapes); a parameter without C{=} has an empty value.
 - a cookie: the value of the first cookie of that name in the C{Cookie}
   header(s), without surrounding double quotes; not otherwise decoded.
"""

from urllib.parse import unquote_to_bytes

__all__ = ["CompiledConditions", "RequestView", "parse_cookies", "parse_query"]

_PRESENT, _ABSENT, _EQUALS, _REGEX = range(4)
_TESTS = {"present": _PRESENT, "absent": _ABSENT, "equals": _EQUALS, "regex": _REGEX}


def parse_query(query):
    """
    The parameters of C{query} (bytes, without C{?}) as a dict of decoded
    name to the decoded value of its first occurrence.
    """
    params = {}
    for pair in query.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        name = _decode(name)
        if name not in params:
            params[name] = _decode(value)
    return params


def _decode(text):
    if b"%" not in text and b"+" not in text:
        return text
    return unquote_to_bytes(text.replace(b"+", b" "))


def parse_cookies(values):
    """
    The cookies of the C{Cookie} header values C{values} (a list of bytes)
    as a dict of name to the value of its first occurrence, a value's
    surrounding double quotes removed.
    """
    cookies = {}
    for value in values:
        for pair in value.split(b";"):
            name, sep, cookie = pair.partition(b"=")
            name = name.strip(b" \t")
            if not sep or not name or name in cookies:
                continue
            cookie = cookie.strip(b" \t")
            if len(cookie) > 1 and cookie[:1] == b'"' and cookie[-1:] == b'"':
                cookie = cookie[1:-1]
            cookies[name] = cookie
    return cookies


class RequestView:
    """
    What conditions read of one request: its raw headers (read directly by
    L{CompiledConditions.hold}), its query, and (parsed on first use, then
    kept) its query parameters and cookies.
    """

    __slots__ = ("headers", "query", "_cookie_key", "_params", "_cookies")

    def __init__(self, headers, query, cookie_key):
        """
        @param headers: a mapping of header name (as the table's
            C{header_key} spells it) to the list of its values.
        @param query: the query (bytes, without C{?}).
        @param cookie_key: the name C{Cookie} has in C{headers}.
        """
        self.headers = headers if headers is not None else {}
        self.query = query or b""
        self._cookie_key = cookie_key
        self._params = None
        self._cookies = None

    def param(self, name):
        """
        The decoded value of query parameter C{name}, or L{None}.
        """
        params = self._params
        if params is None:
            params = self._params = parse_query(self.query)
        return params.get(name)

    def cookie(self, name):
        """
        The value of cookie C{name}, or L{None}.
        """
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = parse_cookies(self.headers.get(self._cookie_key) or ())
        return cookies.get(name)


class CompiledConditions:
    """
    A route's conditions ready to test: C{(key, test, value)} triples per
    source, header names turned into the keys of the request's header
    mapping once, here.
    """

    __slots__ = ("headers", "params", "cookies")

    def __init__(self, conditions, header_key):
        """
        @param conditions: the route's conditions (see the module
            docstring).
        @param header_key: maps a lower-case header name (bytes) to its
            key in the header mappings the table is given.
        """
        headers, params, cookies = [], [], []
        for condition in conditions:
            test = _TESTS[condition.test]
            if condition.source == "header":
                headers.append((header_key(condition.name), test, condition.value))
            elif condition.source == "query":
                params.append((condition.name, test, condition.value))
            else:
                cookies.append((condition.name, test, condition.value))
        self.headers = tuple(headers)
        self.params = tuple(params)
        self.cookies = tuple(cookies)

    def hold(self, view):
        """
        Whether every condition holds for C{view} (a L{RequestView}).
        Headers are tested first, then the query, then cookies, so a
        request failing a header condition parses neither. A header sent
        on several lines is compared as its lines joined with C{", "}.
        """
        headers = view.headers
        for key, test, value in self.headers:
            values = headers.get(key)
            if not values:
                actual = None
            elif len(values) == 1:
                actual = values[0]
            else:
                actual = b", ".join(values)
            if test == _EQUALS:
                if actual != value:
                    return False
            elif not _passes(test, value, actual):
                return False
        for name, test, value in self.params:
            if not _passes(test, value, view.param(name)):
                return False
        for name, test, value in self.cookies:
            if not _passes(test, value, view.cookie(name)):
                return False
        return True


def _passes(test, value, actual):
    if test == _EQUALS:
        return actual == value
    if test == _PRESENT:
        return actual is not None
    if test == _ABSENT:
        return actual is None
    return actual is not None and value.fullmatch(actual) is not None
