"""
The route table: which route answers a request, decided by host, path prefix
and method. Built once from the config; matching does no parsing.
"""

from attrs import frozen

# Methods a route serves only when its C{methods} lists them: TRACE echoes
# the request (credentials included) back, CONNECT asks for a tunnel.
EXPLICIT_METHODS = frozenset(["TRACE", "CONNECT"])
# What a route without C{methods} allows.
ANY_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


@frozen
class RouteMatch:
    """
    The outcome of a lookup.

    @ivar route: the matched route's payload (whatever the table was built
        with), or L{None}.
    @ivar status: 200 when a route matched; 404 when no route's path and host
        match; 405 when some did but none allows the method.
    @ivar allowed: for 405, the methods the matching routes allow.
    """

    route: object
    status: int
    allowed: tuple = ()


class RouteTable:
    """
    Routes keyed by host pattern, each host's routes ordered longest path
    prefix first.

    Host precedence follows nginx's server_name: an exact host beats a
    C{*.domain} wildcard, which beats routes with no host. Within one host
    group the longest matching path prefix wins. A route whose C{methods}
    does not allow the request's method is skipped (as in Kong), so the next
    best route may answer; when routes matched only by host and path and
    none allows the method, the answer is 405 with C{Allow}. TRACE and
    CONNECT match only routes that list them in C{methods}.
    """

    def __init__(self, entries):
        """
        @param entries: an iterable of C{(spec, payload)} where C{spec} has
            C{host}, C{path} and C{methods} (a L{RouteSpec}) and C{payload}
            is what a match returns.
        """
        self._exact = {}
        self._wildcard = {}
        self._any = []
        for spec, payload in entries:
            item = (spec.path.encode("utf-8"), spec.methods, payload)
            if spec.host is None:
                self._any.append(item)
            elif spec.host.startswith("*."):
                self._wildcard.setdefault(spec.host[1:], []).append(item)
            else:
                self._exact.setdefault(spec.host, []).append(item)
        for group in [self._any, *self._exact.values(), *self._wildcard.values()]:
            group.sort(key=lambda item: -len(item[0]))
        self._no_match = RouteMatch(None, 404)

    def match(self, host, path, method):
        """
        Find the route for C{host} (lower-case str, no port), C{path} (bytes)
        and C{method} (str, upper case).
        """
        groups = []
        exact = self._exact.get(host)
        if exact is not None:
            groups.append(exact)
        if self._wildcard and host:
            dot = host.find(".")
            if dot > 0:
                wildcard = self._wildcard.get(host[dot:])
                if wildcard is not None:
                    groups.append(wildcard)
        groups.append(self._any)
        allowed = set()
        explicit = method in EXPLICIT_METHODS
        for group in groups:
            for prefix, methods, payload in group:
                if not _prefix_matches(path, prefix):
                    continue
                if methods is None:
                    if not explicit:
                        return RouteMatch(payload, 200)
                    allowed.update(ANY_METHODS)
                    continue
                if method in methods:
                    return RouteMatch(payload, 200)
                allowed.update(methods)
        if allowed:
            return RouteMatch(None, 405, tuple(sorted(allowed)))
        return self._no_match


def _prefix_matches(path, prefix):
    """
    Whether C{prefix} matches C{path}: a prefix ending in C{/} matches
    anything below it; otherwise the prefix matches itself and anything below
    C{prefix/} (so C{/api} matches C{/api} and C{/api/x} but not C{/apix}).
    A path parameter ends the prefix too (C{/api;v=1} is C{/api} to a
    servlet container, so it must be to the route that protects C{/api}).
    """
    if not path.startswith(prefix):
        return False
    if len(path) == len(prefix) or prefix.endswith(b"/"):
        return True
    next_char = path[len(prefix):len(prefix) + 1]
    return next_char in (b"/", b"?", b";")
