"""
What an exchange needs of its route to answer (L{RouteChain}: the filters,
their hooks, the Server and request id headers), built once per route per
configuration, and how the responder reaches the mapping inside twisted.web's
L{Headers}.
"""

from twisted.web.http_headers import Headers

from gatelayer.chain._interfaces import IBodyFilter, ILogFilter

__all__ = ["NO_FILTERS", "RouteChain", "stored_headers"]


class RouteChain:
    """
    What an exchange needs of its route to answer: the filters, which of
    them have a response-body hook (found once, here), and the C{Server}
    header policy. Built once per route per configuration.

    @ivar filters: the route's filters, in request order.
    @ivar body_hooks: the indexes in C{filters} of the filters providing
        L{IBodyFilter}, in request order.
    @ivar server_header: the C{Server} value put on answers (L{None}:
        whatever the terminal set, an upstream's say, is kept).
    @ivar request_id_header: the header name (bytes) the exchange's
        C{request_id} is returned in (replacing an upstream's).
    @ivar timeouts: for each filter, how long (seconds) its asynchronous
        request phase may take, or L{None} for no bound.
    @ivar clock: the L{twisted.internet.interfaces.IReactorTime} timing
        them (L{None}: no timeouts).
    @ivar log_hooks: the indexes in C{filters} of the filters providing
        L{ILogFilter}, in request order.
    @ivar request_id_key: C{request_id_header} in the case twisted.web's
        L{Headers} store it (made once here, not per response).
    """

    __slots__ = ("filters", "body_hooks", "server_header", "request_id_header", "timeouts", "clock",
                 "log_hooks", "request_id_key")

    def __init__(self, filters=(), body_hooks=(), server_header=None,
                 request_id_header=b"X-Request-Id", timeouts=(), clock=None, log_hooks=()):
        self.filters = tuple(filters)
        self.body_hooks = tuple(body_hooks)
        self.server_header = server_header
        self.request_id_header = request_id_header
        self.timeouts = tuple(timeouts)
        self.clock = clock
        self.log_hooks = tuple(log_hooks)
        self.request_id_key = _stored_name(request_id_header)

    @classmethod
    def build(cls, filters, server_header=None, request_id_header=b"X-Request-Id", timeouts=(), clock=None):
        """
        The chain of C{filters}, with the body-hook and log-hook
        capabilities checked once; C{timeouts} (one per filter, L{None} for
        none) are timed with C{clock}.
        """
        filters = tuple(filters)
        hooks = tuple(i for i, flt in enumerate(filters) if IBodyFilter.providedBy(flt))
        log_hooks = tuple(i for i, flt in enumerate(filters) if ILogFilter.providedBy(flt))
        return cls(filters, hooks, server_header, request_id_header, timeouts, clock, log_hooks)

    def __repr__(self):
        return "<RouteChain %s>" % (", ".join(getattr(f, "name", repr(f)) for f in self.filters),)


def _stored_name(name):
    """
    The header C{name} as L{Headers} stores it (its canonical case).
    """
    probe = Headers()
    probe.setRawHeaders(name, [b""])
    return next(iter(dict(probe.getAllRawHeaders())))


def stored_headers(headers):
    """
    The name -> values mapping inside C{headers} (a L{Headers}), or L{None}
    where this Twisted keeps it otherwise.
    """
    try:
        return headers._rawHeaders
    except AttributeError:  # pragma: no cover - other Twisted versions
        return None


NO_FILTERS = RouteChain()
