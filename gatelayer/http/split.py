"""
Versioned and canary routes: the terminal of a route whose C{upstream}
lists versions with weights (C{upstream = v1:90, v2:10}), and the builder
of every proxying route's terminal.

The version is chosen after the filters ran, by weighted rendezvous
hashing (L{gatelayer.routing.split.WeightedRendezvous}) of the route's
C{split_key}: the client address, a header, a cookie or a claim of the
token the route's jwt filter validated. A request without the key falls
back to the client address. Everything is built once per configuration;
a request costs one key lookup and one hash per version.
"""

import json

from zope.interface import implementer

from gatelayer.auth.credentials import cookie_values
from gatelayer.chain import ITerminal
from gatelayer.http.mirror import MirrorTerminal
from gatelayer.routing.split import WeightedRendezvous

__all__ = ["SplitTerminal", "route_terminal", "split_key_reader"]


def _client_ip(exchange):
    return exchange.client_ip.encode("ascii", "replace")


def _claim_bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    # Numbers, booleans, lists: their JSON text is stable across workers.
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def split_key_reader(split_key):
    """
    A function of an exchange returning its split key (bytes) for
    C{split_key}, a route's C{(kind, name)}: the client address for C{ip}
    and whenever the header, cookie or claim is missing or empty.
    """
    kind, name = split_key
    if kind == "header":
        header = name.encode("ascii")

        def from_header(exchange):
            values = exchange.headers.getRawHeaders(header)
            return b", ".join(values) if values and values[0] else _client_ip(exchange)
        return from_header
    if kind == "cookie":
        cookie = name.encode("ascii")

        def from_cookie(exchange):
            values = cookie_values(exchange.headers, cookie)
            return values[0] if values and values[0] else _client_ip(exchange)
        return from_cookie
    if kind == "jwt":
        def from_claim(exchange):
            claims = exchange.context.get("jwt.claims")
            value = claims.get(name) if claims else None
            if value is None or value == "":
                return _client_ip(exchange)
            return _claim_bytes(value)
        return from_claim
    return _client_ip


@implementer(ITerminal)
class SplitTerminal:
    """
    The terminal of a route split over versions: picks one by the request's
    split key and lets that version's terminal serve it. Immutable: a new
    configuration builds a new one.

    @ivar rendezvous: the L{WeightedRendezvous} of the versions.
    @ivar terminals: one terminal per version, in the same order.
    @ivar split_key: the route's C{(kind, name)}.
    """

    __slots__ = ("rendezvous", "terminals", "split_key", "_key")

    def __init__(self, rendezvous, terminals, split_key=("ip", None)):
        self.rendezvous = rendezvous
        self.terminals = tuple(terminals)
        self.split_key = split_key
        self._key = split_key_reader(split_key)

    def serve(self, exchange):
        """
        Send C{exchange} to the version its key goes to.
        """
        self.terminals[self.rendezvous.choose(self._key(exchange))].serve(exchange)

    def describe(self):
        """
        The split as data (for C{/status}): C{{"versions": [{"upstream":
        NAME, "weight": N}, ...], "split_key": "header:x-user"}}.
        """
        kind, name = self.split_key
        return {
            "versions": [{"upstream": version, "weight": weight}
                         for version, weight in self.rendezvous.versions],
            "split_key": kind if name is None else f"{kind}:{name}",
        }


def route_terminal(spec, upstreams, clock):
    """
    The terminal of the proxying route C{spec} (a
    L{gatelayer.config.model.RouteSpec}): the route's proxy on its one
    upstream (exactly as without this module: nothing is added per
    request), or a L{SplitTerminal} over its versions; either wrapped in a
    L{MirrorTerminal} when the route has C{mirror}.

    @param upstreams: upstream name to its
        L{gatelayer.http.proxy.UpstreamTerminal}.
    @param clock: an L{twisted.internet.interfaces.IReactorTime}, for the
        mirror's rate-limited logging.
    """
    if spec.split:
        terminal = SplitTerminal(
            WeightedRendezvous(spec.split),
            [upstreams[name].for_route(spec) for name, _ in spec.split],
            spec.split_key)
    else:
        terminal = upstreams[spec.upstream].for_route(spec)
    if spec.mirror is not None:
        terminal = MirrorTerminal(terminal, upstreams[spec.mirror], spec, clock)
    return terminal
