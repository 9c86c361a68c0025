"""
The gatelayer benchmark: one command (C{bench/run}, or C{python -m bench})
that measures gatelayer side by side with a direct connection, nginx, HAProxy
and Twisted's stock reverse proxy, in the same run on the same machine.

Everything it starts listens on 127.0.0.1 only, runs in the foreground from a
temporary directory with generated configuration, and is stopped by pid when
the run ends, fails or is interrupted.
"""
