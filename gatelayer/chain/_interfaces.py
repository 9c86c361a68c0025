"""
The filter interface.
"""

from zope.interface import Attribute, Interface


class IFilter(Interface):
    """
    One step of a route's filter chain, built once per worker from a
    C{[filter:NAME]} section and shared by every request of every route that
    lists it.
    """

    name = Attribute("The filter's section name, e.g. C{per-client} for [filter:per-client].")

    def on_request(exchange):
        """
        Inspect or change the request in C{exchange} (an L{Exchange}).

        @return: L{None} to go on to the next filter; a L{Reply} to answer at
            once (the remaining filters and the terminal are skipped); or a
            L{Deferred} firing with either. Synchronous results are preferred
            on the hot path: they cost no Deferred.
        """

    def on_response(exchange):
        """
        Called on the way back (reverse order) for every filter whose
        C{on_request} ran, before the response head is written: add to
        C{exchange.response_headers}. Must not block; returns nothing.
        """
