"""
The route table: which route answers a request, decided by host, path
prefix, the route's conditions (headers, query, cookies) and method. Built
once from the config; matching parses nothing but, when a route tests them,
the query and the cookies, once per request.
"""

from attrs import frozen

from gatelayer.routing.conditions import CompiledConditions, RequestView
from gatelayer.routing.precedence import route_groups

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


# What may follow a prefix not ending in C{/} in a path it matches.
_PREFIX_ENDS = (b"/", b"?", b";")
# Hosts whose groups the table keeps (requests name few hosts; a client
# naming many gets them looked up each time beyond this).
_HOST_CACHE_LIMIT = 1024


class RouteTable:
    """
    Routes keyed by host pattern, each host's routes in the order of
    L{gatelayer.routing.precedence.route_groups}: longest path prefix
    first, then more conditions first, then file order.

    Host precedence follows nginx's server_name: an exact host beats a
    C{*.domain} wildcard, which beats routes with no host. Within one host
    group the longest matching path prefix wins. A route whose conditions
    (headers, query, cookies) do not all hold is skipped entirely: it does
    not answer and does not count towards 405's C{Allow}. A route whose
    C{methods} does not allow the request's method is skipped (as in
    Kong), so the next best route may answer; when routes matched by host,
    path and conditions but none allows the method, the answer is 405 with
    C{Allow}. TRACE and CONNECT match only routes that list them in
    C{methods}.
    """

    def __init__(self, entries, header_key=None):
        """
        @param entries: an iterable of C{(spec, payload)} where C{spec} has
            C{host}, C{path}, C{methods} and C{conditions} (a L{RouteSpec})
            and C{payload} is what a match returns.
        @param header_key: maps a lower-case header name (bytes) to its key
            in the header mappings given to L{match} (default: the name
            itself).
        """
        header_key = header_key or _same
        self._cookie_key = header_key(b"cookie")
        self._exact = {}
        self._wildcard = {}
        self._any = []
        for group in route_groups(entries, spec_of=lambda entry: entry[0]):
            # One tuple per route: (prefix, methods, payload, conditions,
            # prefix ends in "/", the match returned): nothing is built
            # per request.
            items = []
            for spec, payload in group.routes:
                prefix = spec.path.encode("utf-8")
                conditions = CompiledConditions(spec.conditions, header_key) if spec.conditions else None
                items.append((prefix, spec.methods, payload, conditions, prefix.endswith(b"/"),
                              RouteMatch(payload, 200)))
            items = tuple(items)
            if group.kind == "any":
                self._any = items
            elif group.kind == "wildcard":
                self._wildcard[group.host[1:]] = items
            else:
                self._exact[group.host] = items
        self._no_match = RouteMatch(None, 404)
        self._groups = {}

    def _groups_of(self, host):
        """
        The route groups a request for C{host} tries, best first: its exact
        host's, its wildcard's, then the routes without a host (kept for
        the next request naming C{host}).
        """
        groups = []
        exact = self._exact.get(host)
        if exact:
            groups.append(exact)
        if self._wildcard and host:
            dot = host.find(".")
            if dot > 0:
                wildcard = self._wildcard.get(host[dot:])
                if wildcard:
                    groups.append(wildcard)
        if self._any:
            groups.append(self._any)
        groups = tuple(groups)
        if len(self._groups) < _HOST_CACHE_LIMIT:
            self._groups[host] = groups
        return groups

    def match(self, host, path, method, headers=None, query=b""):
        """
        Find the route for C{host} (lower-case str, no port), C{path} (bytes)
        and C{method} (str, upper case).

        A prefix ending in C{/} matches anything below it; another prefix
        matches itself and anything below C{prefix/} (C{/api} matches
        C{/api} and C{/api/x}, not C{/apix}), and a path parameter ends it
        too (C{/api;v=1} is C{/api} to a servlet container, so it must be to
        the route that protects C{/api}).

        @param headers: the request's headers, a mapping of name (spelled as
            C{header_key} spells it) to the list of values; read only when a
            route with conditions is reached.
        @param query: the request's query (bytes, without C{?}); parsed
            only when a route with query conditions is reached.
        """
        groups = self._groups.get(host)
        if groups is None:
            groups = self._groups_of(host)
        allowed = None
        explicit = method in EXPLICIT_METHODS
        view = None
        for group in groups:
            for prefix, methods, payload, conditions, slash, matched in group:
                if not path.startswith(prefix):
                    continue
                if not slash and len(path) != len(prefix) and \
                        path[len(prefix):len(prefix) + 1] not in _PREFIX_ENDS:
                    continue
                if conditions is not None:
                    if view is None:
                        view = RequestView(headers, query, self._cookie_key)
                    if not conditions.hold(view):
                        continue
                if methods is None:
                    if not explicit:
                        return matched
                    methods = ANY_METHODS
                elif method in methods:
                    return matched
                if allowed is None:
                    allowed = set(methods)
                else:
                    allowed.update(methods)
        if allowed:
            return RouteMatch(None, 405, tuple(sorted(allowed)))
        return self._no_match


def _same(name):
    return name
