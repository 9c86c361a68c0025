"""
Which module parses the settings of each C{[filter:NAME] type = ...}.

Modules are named rather than imported so that a filter type's parser is only
loaded when a config uses it. Each module exposes C{parse_filter(reader)}
returning a frozen settings object (and records problems on the reader).
"""

import importlib

FILTER_TYPES = {
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


def settings_parser(filter_type):
    """
    The C{parse_filter} function for C{filter_type}, or L{None} if the type
    is unknown.
    """
    module_name = FILTER_TYPES.get(filter_type)
    if module_name is None:
        return None
    return importlib.import_module(module_name).parse_filter
