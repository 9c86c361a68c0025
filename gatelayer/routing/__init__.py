"""
Route matching: pure, precompiled at config load.
"""

from gatelayer.routing.precedence import RouteGroup, route_groups, route_table_view
from gatelayer.routing.table import RouteMatch, RouteTable

__all__ = ["RouteGroup", "RouteMatch", "RouteTable", "route_groups", "route_table_view"]
