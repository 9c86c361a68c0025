"""
The resource terminal: C{resource = package.module:attribute} mounts a
twisted.web resource (a Klein app's, a L{twisted.web.static.File}, one of
the user's own) at a route's path, behind the route's filters, served in
the worker itself.
"""

from zope.interface import implementer

from gatelayer.chain import ITerminal
from gatelayer.http.resource_load import load_resource
from gatelayer.http.resource_request import ResourceRequest

__all__ = ["ResourceTerminal"]


@implementer(ITerminal)
class ResourceTerminal:
    """
    Renders each request of a route with its resource, through a
    L{ResourceRequest} over the exchange.

    @ivar resource: the route's root resource, loaded once when the
        worker builds the route (at start and at every reload).
    @ivar prefix_length: how many path segments the route's C{path} has:
        the resource sees them in C{request.prepath}.
    """

    def __init__(self, spec, resource=None):
        """
        @param spec: the route's L{gatelayer.config.model.RouteSpec}.
        @param resource: the resource to mount instead of loading
            C{spec.resource} (tests).
        @raise gatelayer.http.resource_load.ResourceLoadError: the name
            does not lead to a resource.
        """
        self.route = spec.name
        self.resource = resource if resource is not None else load_resource(spec.resource)
        self.prefix_length = len([segment for segment in spec.path.split("/") if segment])

    def serve(self, exchange):
        """
        Render the request in C{exchange} with the route's resource.
        """
        ResourceRequest(exchange, self.resource, self.prefix_length, self.route).start()
