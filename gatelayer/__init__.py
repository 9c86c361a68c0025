"""
gatelayer: a reverse proxy, load balancer and API gateway on Twisted.

A master process binds the listening sockets and runs worker processes that
adopt them; each worker routes requests through a filter chain to a terminal
(a pooled upstream, a direct response or static files).
"""

__version__ = "0.1.0"
