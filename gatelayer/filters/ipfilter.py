"""
The C{ip_filter} filter: requests are allowed or refused by the client
address, as resolved through the gateway's C{trusted_proxies}
(C{exchange.client_ip}), against C{allow} and C{deny} lists.

The order, as in nginx's C{allow}/C{deny} with C{deny all} last when an
allow list is set: an address in a C{deny} network is refused, whatever the
allow list says; else, when the filter has an allow list (inline or a file,
even an empty one), an address outside it is refused; else it passes. A
client address that is not an IP address matches no network. A refusal is
a 403 problem+json that says nothing of the lists, and nothing goes
upstream.

The list files are read by the master (L{gatelayer.filters.iplists}) and
sent to each worker before it accepts, and again after each SIGHUP; only a
filter built without a master (a single-process test) reads them itself.
"""

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import IFilter, json_reply
from gatelayer.filters.iplists import file_lists
from gatelayer.filters.validate import PROBLEM_JSON
from gatelayer.net.cidr import AddressSet, parse_client_address

__all__ = ["IpFilter", "build_filter"]

REFUSAL = json_reply(403, {
    "type": "about:blank", "title": "Forbidden", "status": 403,
    "detail": "requests from this client address are not allowed here",
}, content_type=PROBLEM_JSON)
"""The answer to every refused address: the same for all of them."""


@implementer(IFilter)
class IpFilter:
    """
    Refuse requests whose client address is denied, or not allowed when the
    filter has an allow list.

    @ivar restrictive: whether the filter has an allow list (an address
        outside it is refused).
    """

    log = Logger()

    def __init__(self, name, settings, allow_file=(), deny_file=()):
        """
        @param name: the filter's section name.
        @param settings: its L{gatelayer.config.filter_ipfilter.IpFilterSettings}.
        @param allow_file: the networks of its C{allow_file} (if it has one).
        @param deny_file: the networks of its C{deny_file}.
        """
        self.name = name
        self.settings = settings
        self.restrictive = bool(settings.allow) or settings.allow_file is not None
        self.replace_file_lists(allow_file, deny_file)

    def replace_file_lists(self, allow_file, deny_file):
        """
        Use new networks from the list files (a reload): the inline lists
        stay, the file lists are replaced as a whole, between two requests.
        """
        self._allow = AddressSet(self.settings.allow + tuple(allow_file))
        self._deny = AddressSet(self.settings.deny + tuple(deny_file))

    @property
    def sizes(self):
        """
        C{(allow, deny)}: how many networks each list has now.
        """
        return len(self._allow), len(self._deny)

    def allows(self, client_ip):
        """
        Whether a request from C{client_ip} (text) may pass.
        """
        address = parse_client_address(client_ip)
        if address is None:
            return not self.restrictive
        if self._deny.contains(address):
            return False
        return not self.restrictive or self._allow.contains(address)

    def on_request(self, exchange):
        """
        L{None} when the client address may pass, else the 403 L{Reply}.
        """
        if self.allows(exchange.client_ip):
            return None
        self.log.debug("ip_filter [{filter}]: route {route}: refused client {client}",
                       filter=self.name, route=exchange.route, client=exchange.client_ip)
        return REFUSAL

    def on_response(self, exchange):
        """
        Nothing to add on the way back.
        """


def build_filter(spec, services):
    """
    Build the IP filter of C{spec} (a L{gatelayer.config.model.FilterSpec}).

    In a worker (C{services.master} set) the list files are not read: the
    master sends their networks before the worker accepts. Without a master
    they are read here.

    @raise gatelayer.config.ConfigError: a list file cannot be used (only
        without a master).
    """
    settings = spec.settings
    if not settings.files or services.master is not None:
        return IpFilter(spec.name, settings)
    from gatelayer.config import ConfigError
    allow, deny, problems = file_lists(spec, "gate.ini" if services.config is None else services.config.path)
    if problems:
        raise ConfigError(problems)
    return IpFilter(spec.name, settings, allow, deny)
