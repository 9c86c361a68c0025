"""
The layer 4 rows of the benchmark: gatelayer with a C{mode = tcp} listener
and HAProxy in C{mode tcp}, each relaying connections to the same upstream
as the direct row. wrk drives them with keep-alive HTTP, which a TCP relay
carries without looking at it: what is measured is the relay itself.
"""

import os

from bench._procs import NotReady, wait_ready
from bench._targets import Started, Target, twistd_argv

__all__ = ["GatelayerTcp", "HAProxyTcp", "TCP_TARGETS", "gatelayer_tcp_ini", "haproxy_tcp_conf"]

TCP_TARGETS = ("direct", "haproxy-tcp", "gatelayer-1w-tcp", "gatelayer-2w-tcp")
"""The rows of the tcp scenarios."""


def gatelayer_tcp_ini(workers, port, upstream_port, admin_port):
    """
    A gate.ini with one C{mode = tcp} listener on C{port} relaying to the
    upstream, with a tcp health check.
    """
    return f"""\
[gateway]
workers = {workers}
admin = 127.0.0.1:{admin_port}

[listener:tcp]
bind = 127.0.0.1:{port}
mode = tcp
upstream = app

[upstream:app]
servers = 127.0.0.1:{upstream_port}
health_check = tcp
max_connections = 100000
"""


def haproxy_tcp_conf(port, upstream_port, threads=2):
    """
    HAProxy with C{threads} threads relaying TCP (C{mode tcp}) to the
    upstream.
    """
    return f"""\
global
    nbthread {threads}
    maxconn 8000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench_tcp
    bind 127.0.0.1:{port}
    default_backend app_tcp

backend app_tcp
    server upstream 127.0.0.1:{upstream_port} maxconn 8000
"""


class HAProxyTcp(Target):
    """
    HAProxy in C{mode tcp}, 2 threads.
    """

    name = "haproxy-tcp"

    def start(self, ctx, scenario):
        port = ctx.port()
        conf = os.path.join(ctx.tmp, "haproxy-tcp.cfg")
        with open(conf, "w") as f:
            f.write(haproxy_tcp_conf(port, ctx.upstream_port))
        process = ctx.supervisor.start("haproxy-tcp", [ctx.tools["haproxy"], "-db", "-f", conf])
        return self._ready(ctx, scenario, process, port, None)


class GatelayerTcp(Target):
    """
    gatelayer with C{workers} workers and a C{mode = tcp} listener.
    """

    ready_seconds = 30.0

    def __init__(self, workers):
        self.workers = workers
        self.min_children = workers
        self.name = f"gatelayer-{workers}w-tcp"

    def start(self, ctx, scenario):
        port, admin_port = ctx.port(), ctx.port()
        ini = os.path.join(ctx.tmp, f"{self.name}.ini")
        with open(ini, "w") as f:
            f.write(gatelayer_tcp_ini(self.workers, port, ctx.upstream_port, admin_port))
        pidfile = os.path.join(ctx.tmp, f"{self.name}.pid")
        process = ctx.supervisor.start(self.name, twistd_argv(ctx.python, pidfile, ini), cwd=ctx.tmp)
        try:
            wait_ready(process, port, scenario.path, self.ready_seconds, min_children=self.min_children,
                       supervisor=ctx.supervisor)
        except NotReady:
            ctx.supervisor.stop(process)
            raise
        return Started(process, port, admin_port)
