"""
Filters: one module per filter type, each exposing C{build_filter(spec, services)}.
The built-in types are registered as entry points of the group
C{gatelayer.filters} (L{gatelayer.filters.builtin}), as other packages'
filter types are (L{gatelayer.filters.api}).

C{spec} is the L{gatelayer.config.model.FilterSpec} (its C{settings} is what the
type's config parser returned); C{services} is a L{FilterServices} giving the
worker's reactor, its control connection to the master and the config. The
module is imported only when a config uses its type.

Key material (JWT keys and secrets, API key files) is loaded where the
filters are built (L{gatelayer.filters.keys}); L{validate_filters} loads it
once in the master, so bad key material stops a start or a C{--check} as a
configuration error.
"""

import importlib

from attrs import frozen

__all__ = ["FILTER_MODULES", "FilterServices", "build_filter", "validate_filters"]

FILTER_MODULES = {
    "rate_limit": "gatelayer.filters.ratelimit",
    "jwt": "gatelayer.filters.jwt",
    "api_key": "gatelayer.filters.apikey",
    "cors": "gatelayer.filters.cors",
    "validate": "gatelayer.filters.validate",
    "transform": "gatelayer.filters.transform",
    "cache": "gatelayer.filters.cache",
    "ip_filter": "gatelayer.filters.ipfilter",
    "waf": "gatelayer.filters.waf",
    "compress": "gatelayer.filters.compress",
}

FILE_CHECKS = {
    "ip_filter": "gatelayer.filters.iplists",
    "waf": "gatelayer.filters.waf",
}
"""The module whose C{list_problems(config)} checks what the filters of a
type load from files beyond key material (IP list files, WAF rules)."""


@frozen
class FilterServices:
    """
    What a worker offers the filters it builds.

    @ivar reactor: the worker's reactor (IReactorTime, IReactorTCP, ...).
    @ivar master: the worker's L{gatelayer.process.control.ControlProtocol}
        to the master (C{callRemote}), or L{None} when running without a
        master (single-process tests).
    @ivar config: the whole L{gatelayer.config.model.GateConfig}.
    @ivar stores: the worker's L{gatelayer.ratelimit.registry.StoreRegistry}
        (owned by its service tree, closed when it stops), through which
        filters share rate-limit stores; L{None} outside a worker.
    @ivar upstreams: upstream name to its
        L{gatelayer.http.proxy.UpstreamTerminal} (pool and balancing
        state), for a filter that calls an upstream on its own (the cache's
        background revalidation); empty when the worker has none.
    @ivar metrics: the worker's L{gatelayer.observe.metrics.WorkerMetrics}
        (filters count their outcomes through
        L{gatelayer.observe.metrics.counter_of}), or L{None}.
    """

    reactor: object
    master: object
    config: object
    stores: object = None
    upstreams: object = None
    metrics: object = None


def build_filter(spec, services):
    """
    Build the runtime filter (an L{gatelayer.chain.IFilter}) for C{spec}
    through the filter type that read it (C{spec.factory}: a built-in type
    or one an installed distribution registers); a spec made without the
    loader (tests) names a built-in type.
    """
    factory = spec.factory
    if factory is None:
        module = importlib.import_module(FILTER_MODULES[spec.type])
        return module.build_filter(spec, services)
    return factory.build_filter(spec, services)


def validate_filters(config):
    """
    Load the key material, IP list files and WAF rules of every filter of
    C{config} (a L{gatelayer.config.model.GateConfig}) once, as the master
    must before it starts workers: the config package only checks that key
    files exist.

    @raise gatelayer.config.ConfigError: listing every problem, each naming
        file, section and key.
    """
    from gatelayer.config import ConfigError
    from gatelayer.filters.keys import key_material_problems
    problems = key_material_problems(config)
    for filter_type in sorted({spec.type for spec in config.filters.values()} & set(FILE_CHECKS)):
        problems.extend(importlib.import_module(FILE_CHECKS[filter_type]).list_problems(config))
    if problems:
        raise ConfigError(problems)
