"""
HTTP/2 for clients on TLS listeners (ALPN C{h2}): the connection channel
driving the C{h2} library, each stream a request of the gateway's request
contract, and the limits and flood protections of an edge.
"""

from gatelayer.http2.choice import ProtocolChoice
from gatelayer.http2.connection import H2Channel
from gatelayer.http2.floods import FloodCounter
from gatelayer.http2.request_head import RequestHeadError, request_head
from gatelayer.http2.stream import H2Request

__all__ = ["FloodCounter", "H2Channel", "H2Request", "ProtocolChoice", "RequestHeadError",
           "request_head"]
