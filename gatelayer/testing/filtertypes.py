"""
Filter types registered for a test without installing a distribution: the
entry points L{gatelayer.config.filtertypes.FilterTypes} reads, made by
hand, for tests of a filter type's section through the gateway's own loader
(C{parse_config_text(text, path, filter_types=registered(...))}).
"""

from gatelayer.config.filtertypes import FilterTypes

__all__ = ["FakeDistribution", "FakeEntryPoint", "registered"]


class FakeDistribution:
    """
    The part of an L{importlib.metadata.Distribution} the registry reads:
    its name and version.
    """

    def __init__(self, name, version="1.0"):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """
    An entry point of the group C{gatelayer.filters}: C{load()} returns
    C{loaded}, or raises it when it is an exception.
    """

    def __init__(self, name, loaded, value=None, distribution="example-filters"):
        self.name = name
        self.value = value if value is not None else f"{distribution.replace('-', '_')}:{name}"
        self.dist = FakeDistribution(distribution) if distribution is not None else None
        self._loaded = loaded

    def load(self):
        """
        The registered object (or the registered import failure raised).
        """
        if isinstance(self._loaded, BaseException):
            raise self._loaded
        return self._loaded


def registered(**types):
    """
    L{FilterTypes} holding the built-in types and C{types} (name -> filter
    type, or an exception its loading raises), each as an entry point of a
    distribution C{example-filters}.
    """
    return FilterTypes([FakeEntryPoint(name, loaded) for name, loaded in types.items()])
