"""
twistd plugin for gatelayer: C{twistd gatelayer -c etc/gate.ini}.

Kept tiny on purpose: Twisted imports every plugin file to list them, so the real
options and service construction live in L{gatelayer.tap}.
"""

from twisted.application.service import ServiceMaker

gatelayer = ServiceMaker(
    "gatelayer",
    "gatelayer.tap",
    "Reverse proxy, load balancer and API gateway (master + workers).",
    "gatelayer",
)
