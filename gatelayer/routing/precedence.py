"""
Route precedence: the one ordering the route table matches in and the admin
C{/status} page shows, so the two cannot disagree.

Routes are grouped by host: each exact host, then each C{*.domain}
wildcard, then the routes without a host (the catch-all). A request is
tried against its exact host's group, then its wildcard's, then the
catch-all. Within a group:

 1. the longest path prefix first;
 2. then the route with more conditions (C{match_header}, C{match_query}
    and C{match_cookie} lines together) before one with fewer;
 3. then the order of the configuration file.
"""

from attrs import frozen

__all__ = ["RouteGroup", "route_groups", "route_table_view"]


@frozen
class RouteGroup:
    """
    The routes of one host group, in precedence order.

    @ivar kind: C{"exact"}, C{"wildcard"} or C{"any"} (no host).
    @ivar host: the host pattern (C{api.example.com}, C{*.example.com}), or
        L{None} for the catch-all.
    @ivar routes: the group's items, in the order they are tried.
    """

    kind: str
    host: object
    routes: tuple


def _rank(spec):
    return (-len(spec.path.encode("utf-8")), -len(spec.conditions))


def route_groups(items, spec_of=None):
    """
    C{items} in precedence order, as L{RouteGroup}s: the exact hosts (by
    name), the wildcards (by pattern), then the catch-all (always present,
    possibly empty).

    @param items: route specs (with C{host}, C{path} and C{conditions}), or
        anything C{spec_of} maps to one.
    @param spec_of: how to get the spec of an item (default: the item is
        the spec).
    """
    spec_of = spec_of or (lambda item: item)
    exact, wildcard, catch_all = {}, {}, []
    for item in items:
        host = spec_of(item).host
        if host is None:
            catch_all.append(item)
        elif host.startswith("*."):
            wildcard.setdefault(host, []).append(item)
        else:
            exact.setdefault(host, []).append(item)

    def ordered(group):
        return tuple(sorted(group, key=lambda item: _rank(spec_of(item))))
    groups = [RouteGroup("exact", host, ordered(exact[host])) for host in sorted(exact)]
    groups += [RouteGroup("wildcard", host, ordered(wildcard[host])) for host in sorted(wildcard)]
    groups.append(RouteGroup("any", None, ordered(catch_all)))
    return groups


def route_table_view(routes):
    """
    The route table as C{/status} shows it: a list of host groups in
    precedence order, each C{{"host", "kind", "routes"}}, each route
    C{{"name", "host", "path", "methods", "conditions", "terminal",
    "filters"}} in the order it is tried. C{methods} is L{None} for any
    method but TRACE and CONNECT; C{conditions} maps C{header}, C{query}
    and C{cookie} to the conditions as written in C{gate.ini}.

    @param routes: the configuration's route specs, in file order.
    """
    view = []
    for group in route_groups(routes):
        rows = []
        for spec in group.routes:
            conditions = {"header": [], "query": [], "cookie": []}
            for condition in spec.conditions:
                conditions[condition.source].append(condition.text)
            rows.append({
                "name": spec.name,
                "host": spec.host,
                "path": spec.path,
                "methods": sorted(spec.methods) if spec.methods is not None else None,
                "conditions": conditions,
                "terminal": _terminal(spec),
                "filters": list(spec.filters),
            })
        view.append({"host": group.host, "kind": group.kind, "routes": rows})
    return view


def _terminal(spec):
    kind = spec.terminal
    if kind == "upstream":
        if spec.split:
            kind_, name = spec.split_key
            view = {
                "type": "upstream",
                "upstreams": [version for version, _ in spec.split],
                "weights": {version: weight for version, weight in spec.split},
                "split_key": kind_ if name is None else f"{kind_}:{name}",
            }
        else:
            view = {"type": "upstream", "upstreams": [spec.upstream]}
        if spec.mirror is not None:
            view["mirror"] = {"upstream": spec.mirror, "percent": spec.mirror_percent}
        return view
    if kind == "aggregate":
        aggregate = spec.aggregate
        return {
            "type": "aggregate",
            "parts": [{"name": part.name, "upstream": part.upstream, "optional": part.optional}
                      for part in aggregate.parts],
            "part_timeout": aggregate.part_timeout,
            "deadline": aggregate.deadline,
            "on_part_error": aggregate.on_part_error,
        }
    if kind == "static":
        return {"type": "static", "directory": spec.static}
    if kind == "respond":
        return {"type": "respond", "status": spec.respond_status}
    return {"type": kind}
