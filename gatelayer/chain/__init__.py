"""
The filter chain: the seam every request- and response-phase feature plugs
into.

A filter has phase methods (Kong plugins, Envoy filters): C{on_request} runs
in the route's listed order and may answer at once with a L{Reply};
C{on_response} runs in reverse order on the way back, and a filter
providing L{IBodyFilter} sees the response body too. Terminals (proxy,
direct response, static files) answer through the L{Exchange}
(C{respond}, C{send}, C{reply_error}, C{reply}) and know nothing of filters.
"""

from gatelayer.chain._exchange import Exchange, Reply, json_reply
from gatelayer.chain._interfaces import IBodyFilter, IBodySink, IFilter, ITerminal
from gatelayer.chain._responder import RouteChain, error_body
from gatelayer.chain._runner import run_request_phase

__all__ = [
    "Exchange", "IBodyFilter", "IBodySink", "IFilter", "ITerminal", "Reply", "RouteChain",
    "error_body", "json_reply", "run_request_phase",
]
