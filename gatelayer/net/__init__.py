"""
Network helpers with no I/O: client address resolution through trusted proxies.
"""
