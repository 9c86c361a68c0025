"""
The filter chain: the seam every request-phase feature plugs into.

A filter has phase methods (Kong plugins, Envoy filters): C{on_request} runs in
the route's listed order and may answer at once with a L{Reply}; C{on_response}
runs in reverse order on the way back. The terminal (proxy, direct response,
static files) knows nothing of filters.
"""

from gatelayer.chain._exchange import Exchange, Reply, json_reply
from gatelayer.chain._interfaces import IFilter
from gatelayer.chain._runner import run_request_phase, run_response_phase

__all__ = ["Exchange", "IFilter", "Reply", "json_reply", "run_request_phase", "run_response_phase"]
