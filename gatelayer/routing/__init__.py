"""
Route matching: pure, precompiled at config load.
"""

from gatelayer.routing.table import RouteMatch, RouteTable

__all__ = ["RouteMatch", "RouteTable"]
