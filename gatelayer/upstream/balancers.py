"""
Load-balancing algorithms: which of an upstream's usable servers gets the
next request.

Balancers are pure: no reactor, no sockets, no request objects. Each one is
handed the servers that may be used right now (the caller has already removed
servers that are down, unhealthy, ejected or already tried), the client
address, and a function giving a server's active request count. Servers are
L{gatelayer.config.model.ServerSpec} values (anything with C{address} and
C{weight} works). A balancer keeps only the little state its algorithm needs
(a rotation position, the smooth weighted counters).
"""

import hashlib
import math
import random

from zope.interface import Interface, implementer

__all__ = [
    "IBalancer",
    "RoundRobinBalancer",
    "SmoothWeightedBalancer",
    "LeastConnectionsBalancer",
    "ConsistentHashBalancer",
    "PowerOfTwoBalancer",
    "BALANCERS",
    "balancer_for",
]


class IBalancer(Interface):
    """
    Chooses one server out of a non-empty list of candidates.
    """

    def pick(candidates, client_ip, active):
        """
        Return one element of C{candidates}.

        @param candidates: a non-empty sequence of servers, in configuration
            order, all usable for this request.
        @param client_ip: the client address as a string (resolved through
            trusted proxies by the server side).
        @param active: a callable taking a server and returning its number of
            requests in progress in this worker.
        """


@implementer(IBalancer)
class RoundRobinBalancer:
    """
    Plain rotation over the candidates, ignoring weights: with three servers,
    each gets every third request.
    """

    def __init__(self):
        self._next = 0

    def pick(self, candidates, client_ip, active):
        """
        The candidate after the one picked last time.
        """
        server = candidates[self._next % len(candidates)]
        self._next += 1
        return server


@implementer(IBalancer)
class SmoothWeightedBalancer:
    """
    nginx's smooth weighted round robin: on every pick each candidate's
    current value grows by its weight, the largest value wins and is lowered
    by the total weight. Weights 5:1:1 give C{a a b a c a a}, spreading the
    light servers between the heavy one's turns instead of C{a a a a a b c}.
    """

    def __init__(self):
        self._current = {}

    def pick(self, candidates, client_ip, active):
        """
        The candidate with the largest current value (the first one on a tie).
        """
        current = self._current
        total = 0
        best = None
        best_value = None
        for server in candidates:
            value = current.get(server, 0) + server.weight
            current[server] = value
            total += server.weight
            if best is None or value > best_value:
                best, best_value = server, value
        current[best] = best_value - total
        return best


@implementer(IBalancer)
class LeastConnectionsBalancer:
    """
    The candidate with the fewest active requests per unit of weight (a
    server of weight 2 with 4 requests counts as loaded as one of weight 1
    with 2). Among equally loaded candidates the choice rotates by smooth
    weighted round robin, so an idle upstream is still spread by weight.
    """

    def __init__(self):
        self._ties = SmoothWeightedBalancer()

    def pick(self, candidates, client_ip, active):
        """
        The least loaded candidate, ties broken by weighted rotation.
        """
        tied = []
        best_active = best_weight = None
        for server in candidates:
            count = active(server)
            if best_active is None:
                order = -1
            else:
                # count/weight against best_active/best_weight without floats.
                order = (count * best_weight > best_active * server.weight) - (
                    count * best_weight < best_active * server.weight)
            if order < 0:
                tied = [server]
                best_active, best_weight = count, server.weight
            elif order == 0:
                tied.append(server)
        if len(tied) == 1:
            return tied[0]
        return self._ties.pick(tied, client_ip, active)


@implementer(IBalancer)
class ConsistentHashBalancer:
    """
    Weighted rendezvous hashing (HRW) on the client address: every candidate
    gets a score from a hash of (server address, client address) scaled by
    its weight, and the highest score wins. A client therefore stays on the
    same server while that server is usable; when a server leaves, only its
    own clients move (each to its second-best server), and they move back
    when it returns. The hash is stable across processes and restarts, so
    every worker sends a client to the same server.
    """

    def __init__(self):
        self._names = {}

    def _name(self, server):
        name = self._names.get(server)
        if name is None:
            name = self._names[server] = server.address.encode("utf-8") + b"\x00"
        return name

    def pick(self, candidates, client_ip, active):
        """
        The candidate with the highest weighted rendezvous score for
        C{client_ip}.
        """
        if len(candidates) == 1:
            return candidates[0]
        key = client_ip.encode("utf-8")
        best = None
        best_score = None
        for server in candidates:
            digest = hashlib.blake2b(self._name(server) + key, digest_size=8).digest()
            # A uniform number strictly inside (0, 1); -w/ln(u) is the
            # weighted rendezvous score (larger weight -> larger score).
            uniform = (int.from_bytes(digest, "big") + 0.5) / 18446744073709551616.0
            score = -server.weight / math.log(uniform)
            if best is None or score > best_score:
                best, best_score = server, score
        return best


@implementer(IBalancer)
class PowerOfTwoBalancer:
    """
    "Power of two random choices": draw two different candidates at random
    and take the one with fewer active requests per unit of weight (the
    heavier one on a tie, else the first drawn). Nearly as even as least
    connections, without every worker herding onto the same idle server.

    @param random_source: a L{random.Random}-like object with C{sample};
        tests pass a seeded one.
    """

    def __init__(self, random_source=None):
        self._random = random_source if random_source is not None else random.Random()

    def pick(self, candidates, client_ip, active):
        """
        The less loaded of two random candidates.
        """
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._random.sample(candidates, 2)
        left = active(first) * second.weight
        right = active(second) * first.weight
        if right < left or (right == left and second.weight > first.weight):
            return second
        return first


BALANCERS = {
    "round_robin": RoundRobinBalancer,
    "weighted": SmoothWeightedBalancer,
    "least_conn": LeastConnectionsBalancer,
    "ip_hash": ConsistentHashBalancer,
    "random2": PowerOfTwoBalancer,
}
"""
The C{balance} setting of an C{[upstream:NAME]} section -> balancer class.
"""


def balancer_for(name, random_source=None):
    """
    A new balancer for the C{balance} setting C{name} (C{round_robin},
    C{weighted}, C{least_conn}, C{ip_hash} or C{random2}).

    @param random_source: passed to L{PowerOfTwoBalancer}; ignored otherwise.
    @raise ValueError: for an unknown name (the config loader has already
        rejected those, so this is a programming error).
    """
    try:
        cls = BALANCERS[name]
    except KeyError:
        raise ValueError(
            f"balance {name!r} is not one of " + ", ".join(sorted(BALANCERS))) from None
    if cls is PowerOfTwoBalancer:
        return cls(random_source)
    return cls()
