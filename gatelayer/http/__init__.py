"""
The server side of a worker: HTTP/1.1 channel, request, and the gateway that
routes each request through its filter chain to a terminal.
"""
