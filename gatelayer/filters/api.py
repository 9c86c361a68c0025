"""
The filter API other packages build on: what stays stable across gatelayer
versions (documented in docs/filters.md).

A filter type is registered as an entry point of the group
C{gatelayer.filters}, naming a L{FilterType}::

    [project.entry-points."gatelayer.filters"]
    hmac_signature = "gatelayer_example_filter:filter_type"

and C{[filter:NAME] type = hmac_signature} then reads the section through
the type's declared L{Key}s (unknown keys, missing required ones and bad
values are errors of C{--check}, in the words of the built-in types),
and builds one filter per section in every worker.

A filter provides L{IFilter} (C{on_request}, C{on_response}), optionally
L{IBodyFilter} (the response body) and L{ILogFilter} (once the request is
over). C{on_request} answers synchronously (L{None} or a L{Reply}: the
cheapest), or returns a L{Deferred}, or is a coroutine (C{async def}); a
filter that raises, fails or does not answer within its C{timeout} gets its
request a 500 problem and is logged with its name: the worker goes on.
"""

import attrs

from gatelayer.chain import (
    PROBLEM_JSON, IBodyFilter, IExchange, IFilter, ILogFilter, Reply, json_reply, problem_reply,
)
from gatelayer.config.filter_keys import (
    PATH, REQUIRED, Key, Settings, boolean, choice, duration, integer, list_of, size, text,
)
from gatelayer.config.filter_keys import parse_keys as _parse_keys

__all__ = [
    "DEFAULT_TIMEOUT", "PATH", "PROBLEM_JSON", "REQUIRED", "FilterType", "IBodyFilter", "IExchange", "IFilter",
    "ILogFilter", "Key", "Reply", "Settings", "boolean", "choice", "duration", "integer", "json_reply",
    "list_of", "problem_reply", "size", "text",
]

DEFAULT_TIMEOUT = 30.0
"""How long (seconds) a filter type's asynchronous request phase may take
when neither the type nor the section says otherwise."""


def _keys(keys):
    keys = tuple(keys)
    names = [key.name for key in keys]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError("keys declared twice: " + ", ".join(twice))
    return keys


@attrs.frozen
class FilterType:
    """
    A filter type from another package: the keys its section has, how its
    filter is built, and what the keys alone cannot check.

    @ivar keys: the L{Key}s of its C{[filter:NAME]} section (C{type} and
        C{timeout} are every section's and are not declared).
    @ivar build: C{build(name, settings, reactor)} returning the filter (a
        provider of L{IFilter}) of the section C{[filter:name]}, with its
        L{Settings}, in a worker whose reactor is C{reactor} (for timers and
        connections: never import the global reactor). Called once per
        section per configuration, not per request.
    @ivar check: L{None}, or C{check(settings)} returning C{(key,
        message)} problems: run when the configuration is loaded (C{--check},
        start, reload), after every key parsed; the place to read a secret
        file or compare two keys. C{key} may be L{None} for the section.
    @ivar default_timeout: the section's C{timeout} when it sets none
        (seconds; L{None}: no bound).
    """

    keys: tuple = attrs.field(converter=_keys)
    build: object
    check: object = None
    default_timeout: float = DEFAULT_TIMEOUT

    def parse_filter(self, reader):
        """
        Read a section of this type (the loader calls this).
        """
        return _parse_keys(reader, self.keys, self.check)

    def build_filter(self, spec, services):
        """
        Build the filter of C{spec} in a worker (the worker calls this).

        @raise TypeError: C{build} returned something that does not provide
            L{IFilter}.
        """
        built = self.build(spec.name, spec.settings, services.reactor)
        if not IFilter.providedBy(built):
            raise TypeError(f"filter type {spec.type!r} built {built!r} for [filter:{spec.name}], "
                            "which does not provide gatelayer.filters.api.IFilter")
        return built
