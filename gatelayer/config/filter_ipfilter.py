"""
Settings of a C{[filter:NAME] type = ip_filter} section.

The inline C{allow} and C{deny} lists are parsed here. The list files
(C{allow_file}, C{deny_file}) are only named here: what they hold is read by
the master (L{gatelayer.filters.iplists}), once before it starts or answers
C{--check} and again on every SIGHUP, and sent to the workers, so a worker
never reads them and a file that went bad after a start cannot stop a
worker from starting.
"""

from attrs import frozen

from gatelayer.net.cidr import CidrError, parse_cidr

FILE_KEYS = ("allow_file", "deny_file")
"""The keys naming list files, each the file of the list named before C{_}."""


@frozen
class IpFilterSettings:
    """
    An IP filter's settings.

    @ivar allow: the inline C{allow} networks (L{ipaddress} networks).
    @ivar deny: the inline C{deny} networks.
    @ivar allow_file: the absolute path of the C{allow} list file, or
        L{None}.
    @ivar deny_file: the absolute path of the C{deny} list file, or L{None}.
    """

    allow: tuple = ()
    deny: tuple = ()
    allow_file: str = None
    deny_file: str = None

    @property
    def files(self):
        """
        C{(key, path)} of each list file the filter names.
        """
        return tuple((key, path) for key, path in (("allow_file", self.allow_file),
                                                   ("deny_file", self.deny_file)) if path is not None)


def _networks(text):
    networks = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            networks.append(parse_cidr(item))
        except CidrError as e:
            raise ValueError(f"has {item.strip()!r}, which {e}") from None
    if not networks:
        raise ValueError("lists no address")
    return tuple(networks)


def parse_filter(reader):
    """
    Read a C{type = ip_filter} section from C{reader} into
    L{IpFilterSettings}, recording every problem on the reader.
    """
    allow = reader.get("allow", _networks, ())
    deny = reader.get("deny", _networks, ())
    allow_file = reader.path("allow_file", None)
    deny_file = reader.path("deny_file", None)
    if not any(reader.has(key) for key in ("allow", "deny", "allow_file", "deny_file")):
        reader.error(None, "needs at least one of allow, deny, allow_file, deny_file")
    return IpFilterSettings(allow=allow or (), deny=deny or (), allow_file=allow_file, deny_file=deny_file)
