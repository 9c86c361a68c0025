"""
Network helpers with no I/O: client address resolution through trusted
proxies (L{gatelayer.net.forwarded}) and Redis store URLs
(L{gatelayer.net.redisurl}).
"""
