"""
Observability: access log, metrics, trace headers.
"""
