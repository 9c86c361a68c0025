"""
Finding the twisted.web resource a route's C{resource = package.module:attribute}
names: import the module, follow the attribute, and call it when it is a
factory rather than a resource. Run once in the master when a configuration
is checked (so a bad name fails C{--check}, the start and a reload with an
error naming the route) and once per worker as it builds the route's
terminal (at start and at every reload), never per request.
"""

import importlib

from twisted.web.resource import IResource

from gatelayer.config import ConfigError

__all__ = ["ResourceLoadError", "load_resource", "validate_resources"]


class ResourceLoadError(Exception):
    """
    The name does not lead to a resource; the message says why (without
    the section and key, which the caller adds).
    """


def load_resource(spec):
    """
    The resource C{spec} (C{package.module:attribute}, already checked for
    its spelling) names: the attribute itself when it provides
    L{IResource}, else the result of calling it with no arguments.

    @raise ResourceLoadError: the module cannot be imported, the attribute
        is missing, it is neither a resource nor callable, the call raised,
        or what it returned is not a resource.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        found = importlib.import_module(module_name)
    except ImportError as e:
        raise ResourceLoadError(f"cannot import module {module_name!r}: {e}") from None
    except Exception as e:
        raise ResourceLoadError(
            f"importing module {module_name!r} raised {type(e).__name__}: {e}") from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise ResourceLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if IResource.providedBy(found):
        return found
    if not callable(found):
        raise ResourceLoadError(
            f"{attribute!r} is neither a twisted.web resource nor a factory of one "
            f"(it is a {type(found).__name__})")
    try:
        made = found()
    except Exception as e:
        raise ResourceLoadError(
            f"calling {attribute}() raised {type(e).__name__}: {e}") from None
    if not IResource.providedBy(made):
        raise ResourceLoadError(
            f"{attribute}() returned a {type(made).__name__}, not a twisted.web resource (IResource)")
    return made


def validate_resources(config):
    """
    Load the resource of every route of C{config} that has one, once,
    before the configuration is used.

    @raise ConfigError: listing every route whose resource cannot be
        loaded, naming file, section, key and value.
    """
    problems = []
    for route in config.routes:
        if route.resource is None:
            continue
        try:
            load_resource(route.resource)
        except ResourceLoadError as e:
            problems.append(f"{config.path} [route:{route.name}] resource: {route.resource!r}: {e}")
    if problems:
        raise ConfigError(problems)
