"""
The filter types a configuration can name in C{[filter:NAME] type = ...}:
every entry point of the group C{gatelayer.filters}, the built-in types
included (they are registered the same way, in gatelayer's own package
metadata).

A filter type is the object an entry point names: it reads its section
(C{parse_filter(reader)}, returning frozen settings and recording problems
on the reader), builds the runtime filter in a worker
(C{build_filter(spec, services)}), and says how long an asynchronous
request phase may take when the section sets no C{timeout}
(C{default_timeout}, seconds, or L{None} for no bound).

The group is read once per configuration load (L{FilterTypes}), and an
entry point is loaded only when the configuration uses its name, so a
broken plugin that no section names stops nothing. Nothing is looked up
per request: each L{gatelayer.config.model.FilterSpec} carries the type
that read it.
"""

import importlib.metadata

__all__ = ["BUILTIN", "GROUP", "FilterTypeError", "FilterTypes"]

GROUP = "gatelayer.filters"
"""The entry point group filter types are registered under."""

BUILTIN = {
    "rate_limit": "gatelayer.filters.builtin:rate_limit",
    "jwt": "gatelayer.filters.builtin:jwt",
    "api_key": "gatelayer.filters.builtin:api_key",
    "cors": "gatelayer.filters.builtin:cors",
    "validate": "gatelayer.filters.builtin:validate",
    "transform": "gatelayer.filters.builtin:transform",
    "cache": "gatelayer.filters.builtin:cache",
    "ip_filter": "gatelayer.filters.builtin:ip_filter",
    "waf": "gatelayer.filters.builtin:waf",
    "compress": "gatelayer.filters.builtin:compress",
}
"""The entry points of the built-in types, as setup.cfg registers them.
Known even when gatelayer runs from a source tree whose package metadata
is missing or older than the code."""

_OWN = "gatelayer"


class FilterTypeError(Exception):
    """
    A filter type name that cannot be used: registered twice, failing to
    import, or naming something that is not a filter type. The message
    names the entry points and their distributions.
    """


class _Candidate:
    """
    One registration of a name: the entry point and who ships it.
    """

    __slots__ = ("entry_point", "distribution")

    def __init__(self, entry_point, distribution):
        self.entry_point = entry_point
        self.distribution = distribution

    def describe(self):
        """
        C{name = module:attr (distribution NAME VERSION)}.
        """
        ep = self.entry_point
        return f"entry point {ep.name} = {ep.value} ({self.distribution})"


def _distribution_of(entry_point):
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "distribution unknown"
    name = dist.metadata["Name"] if dist.metadata is not None else "?"
    return f"distribution {name} {dist.version}"


def installed_entry_points():
    """
    Every entry point of the group L{GROUP} in the installed distributions.
    """
    try:
        return tuple(importlib.metadata.entry_points(group=GROUP))
    except TypeError:
        # Python 3.9: a mapping of group to entry points.
        return tuple(importlib.metadata.entry_points().get(GROUP, ()))


class FilterTypes:
    """
    The filter types one configuration load can use: the group read once,
    each type loaded on first use and kept for the rest of the load.

    @ivar builtin: the built-in type names, sorted.
    @ivar installed: the names other distributions register, sorted.
    """

    def __init__(self, entry_points=None):
        """
        @param entry_points: the group's entry points
            (L{importlib.metadata.EntryPoint}s); L{None} reads the installed
            distributions.
        """
        if entry_points is None:
            entry_points = installed_entry_points()
        found = {name: [_Candidate(importlib.metadata.EntryPoint(name, value, GROUP), "built in")]
                 for name, value in BUILTIN.items()}
        for ep in entry_points:
            candidates = found.setdefault(ep.name, [])
            # The same target listed again (gatelayer's own metadata, or one
            # distribution seen twice on the path) is one registration.
            if any(c.entry_point.value == ep.value for c in candidates):
                continue
            candidates.append(_Candidate(ep, _distribution_of(ep)))
        self._found = found
        self._loaded = {}
        self.builtin = tuple(sorted(BUILTIN))
        self.installed = tuple(sorted(set(found) - set(BUILTIN)))

    def __contains__(self, name):
        return name in self._found

    def describe_known(self):
        """
        The known names for an error message: C{"cors, jwt, ..."}, then
        C{"; installed: ..."} when other distributions add some.
        """
        known = ", ".join(self.builtin)
        if self.installed:
            known += "; installed: " + ", ".join(self.installed)
        return known

    def load(self, name):
        """
        The filter type registered as C{name}, loaded once.

        @raise KeyError: no distribution registers C{name}.
        @raise FilterTypeError: C{name} is registered twice, its entry point
            fails to load, or it names no filter type.
        """
        if name in self._loaded:
            return self._loaded[name]
        candidates = self._found[name]
        if len(candidates) > 1:
            raise FilterTypeError(
                "is registered more than once in the entry point group " + GROUP + ": "
                + " and ".join(c.describe() for c in candidates) + " (uninstall one)")
        candidate = candidates[0]
        try:
            loaded = candidate.entry_point.load()
        except Exception as e:
            raise FilterTypeError(
                f"cannot be loaded: {candidate.describe()} raised {type(e).__name__}: {e}") from None
        missing = [attr for attr in ("parse_filter", "build_filter") if not callable(getattr(loaded, attr, None))]
        if missing or not hasattr(loaded, "default_timeout"):
            raise FilterTypeError(
                f"is not usable: {candidate.describe()} names {loaded!r}, which is not a filter type "
                "(it needs parse_filter, build_filter and default_timeout; see gatelayer.filters.api.FilterType)")
        self._loaded[name] = loaded
        return loaded
