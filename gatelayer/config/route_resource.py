"""
The C{resource} key of a C{[route:NAME]} section: a twisted.web resource
mounted as the route's terminal, named C{package.module:attribute}.

Only the spelling is checked here (the configuration imports nothing it
names); whether the name leads to a resource is checked where the running
system is, once in the master before a configuration is used
(L{gatelayer.http.resource_load}) and again in each worker as it builds
the route.
"""

import re

__all__ = ["parse_resource_spec", "resource_key"]

# Keys about forwarding a request that mean nothing to a resource.
_PROXY_ONLY = ("strip_prefix", "preserve_host", "retry_non_idempotent")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def parse_resource_spec(text):
    """
    Parse C{resource}: C{package.module:attribute}, where C{attribute} may
    be dotted (C{app:api.resource}, a Klein app's method). Returns the
    normalized text.

    @raise ValueError: for anything that is not two dotted Python names
        joined by one colon.
    """
    text = text.strip()
    if not text:
        raise ValueError("is empty (use package.module:attribute)")
    module, colon, attribute = text.partition(":")
    if not colon:
        raise ValueError("has no ':' (use package.module:attribute)")
    module, attribute = module.strip(), attribute.strip()
    if not _DOTTED.match(module):
        raise ValueError("names no module before ':' (use package.module:attribute)")
    if not _DOTTED.match(attribute):
        raise ValueError("names no attribute after ':' (use package.module:attribute)")
    return f"{module}:{attribute}"


def resource_key(r):
    """
    Read C{resource} from the route's reader C{r}: the normalized name, or
    L{None} when absent (an empty value is a problem, not an absence: the
    key still counts as the route's terminal). The keys about forwarding
    (C{strip_prefix}, C{preserve_host}, C{retry_non_idempotent}) are
    refused beside it.
    """
    if not r.has("resource"):
        return None
    for key in _PROXY_ONLY:
        if r.has(key):
            r.error(key, "does not apply to a resource route (the resource sees the route's path in "
                         "request.prepath)" if key == "strip_prefix" else "does not apply to a resource route")
    if not r.raw("resource").strip():
        r.error("resource", "is empty (use package.module:attribute)")
        return None
    return r.get("resource", parse_resource_spec, None)
