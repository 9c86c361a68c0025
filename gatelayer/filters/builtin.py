"""
The built-in filter types, as the entry point group C{gatelayer.filters}
names them (C{cors = gatelayer.filters.builtin:cors}).

Each is a L{BuiltinFilterType}: the module reading its settings and the
module building its runtime filter are named, not imported, so loading the
type costs nothing until a configuration uses it, and C{--check} never
imports a filter's runtime code.
"""

import importlib

from attrs import frozen

from gatelayer.filters import FILTER_MODULES

__all__ = [
    "SETTINGS_MODULES", "BuiltinFilterType", "api_key", "cache", "compress", "cors", "ip_filter", "jwt",
    "rate_limit", "transform", "validate", "waf",
]

SETTINGS_MODULES = {
    "rate_limit": "gatelayer.config.filter_ratelimit",
    "jwt": "gatelayer.config.filter_jwt",
    "api_key": "gatelayer.config.filter_apikey",
    "cors": "gatelayer.config.filter_cors",
    "validate": "gatelayer.config.filter_validate",
    "transform": "gatelayer.config.filter_transform",
    "cache": "gatelayer.config.filter_cache",
    "ip_filter": "gatelayer.config.filter_ipfilter",
    "waf": "gatelayer.config.filter_waf",
    "compress": "gatelayer.config.filter_compress",
}
"""The module whose C{parse_filter(reader)} reads each built-in type's
section."""


@frozen
class BuiltinFilterType:
    """
    A filter type shipped with gatelayer.

    Its asynchronous waits are bounded by its own keys (a rate limit's
    C{store_timeout}, a JWT filter's C{jwks_timeout}), so it has no
    C{timeout} unless the section sets one: a synchronous request phase,
    the usual case, never costs a timer.
    """

    name: str
    default_timeout = None

    def parse_filter(self, reader):
        """
        Read the section into the type's frozen settings.
        """
        return importlib.import_module(SETTINGS_MODULES[self.name]).parse_filter(reader)

    def build_filter(self, spec, services):
        """
        Build the runtime filter of C{spec} in a worker.
        """
        return importlib.import_module(FILTER_MODULES[self.name]).build_filter(spec, services)


rate_limit = BuiltinFilterType("rate_limit")
jwt = BuiltinFilterType("jwt")
api_key = BuiltinFilterType("api_key")
cors = BuiltinFilterType("cors")
validate = BuiltinFilterType("validate")
transform = BuiltinFilterType("transform")
cache = BuiltinFilterType("cache")
ip_filter = BuiltinFilterType("ip_filter")
waf = BuiltinFilterType("waf")
compress = BuiltinFilterType("compress")
