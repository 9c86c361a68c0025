"""
The filter chain: the seam every request- and response-phase feature plugs
into.

A filter has phase methods (Kong plugins, Envoy filters): C{on_request} runs
in the route's listed order and may answer at once with a L{Reply};
C{on_response} runs in reverse order on the way back, and a filter
providing L{IBodyFilter} sees the response body too. Terminals (proxy,
direct response, static files) answer through the L{Exchange}
(C{respond}, C{send}, C{reply_error}, C{reply}) and know nothing of filters.
A filter providing L{ILogFilter} is called once more when the request is
over. What other packages may rely on is L{gatelayer.filters.api}.
"""

from gatelayer.chain._exchange import Exchange, Reply, json_reply, problem_reply
from gatelayer.chain._interfaces import IBodyFilter, IBodySink, IExchange, IFilter, ILogFilter, ITerminal
from gatelayer.chain._responder import FILTER_FAILED, PROBLEM_JSON, RouteChain, error_body
from gatelayer.chain._runner import (
    FilterResultError, FilterTimeout, report_failure, run_log_phase, run_request_phase,
)

__all__ = [
    "FILTER_FAILED", "PROBLEM_JSON", "Exchange", "FilterResultError", "FilterTimeout", "IBodyFilter",
    "IBodySink", "IExchange", "IFilter", "ILogFilter", "ITerminal", "Reply", "RouteChain", "error_body",
    "json_reply", "problem_reply", "report_failure", "run_log_phase", "run_request_phase",
]
