"""
C{python -m bench.instructions}: what one proxied request costs in one
process, without sockets, load generator or other processes.

A worker's gateway (the configuration C{bench/run} generates for one
worker, metrics on) is driven in memory: a client connection and one
pooled upstream connection are L{StringTransport}s on a
L{MemoryReactorClock}; each request is wrk's request, each answer nginx's.
Everything else is the code a worker runs.

Modes:
  - default: requests per second of CPU time in this process (noisy);
  - C{--callgrind}: instructions per request, counted by valgrind's
    callgrind for two request counts and differenced, so start-up and
    warm-up cancel out. With C{PYTHONHASHSEED=0} the count is the same from
    run to run whatever else the machine does: the figure to compare
    before and after a change;
  - C{--cprofile}: the functions with the most own time and their calls.
"""

import argparse
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time

from bench import _configs

_REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%s\r\n"
_ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 04:00:00 GMT\r\n"
           b"Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
           b"Accept-Ranges: bytes\r\n\r\n")
_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)


class Loop:
    """
    One client connection through an in-memory gateway to one upstream
    connection, ready to proxy requests one at a time.
    """

    def __init__(self, filters=(), body_size=12, http_server=None, directory=None, read_size=0):
        from twisted.internet.testing import MemoryReactorClock

        from gatelayer.testing.server import InMemoryGateway, accept_upstream

        headers = b""
        jwt_key = None
        if "jwt" in filters:
            jwt_key, token = _configs.write_jwt_material(directory)
            headers = b"Authorization: Bearer %s\r\n" % token.encode("ascii")
        text = _configs.gatelayer_ini(1, 8080, 8081, 8082, filters=filters, jwt_key=jwt_key,
                                      http_server=http_server)
        reactor = MemoryReactorClock()
        reactor.advance(time.time())  # tokens are checked against the clock
        self.gate = InMemoryGateway(text, reactor=reactor, with_upstreams=True,
                                    metrics="nometrics" not in filters)
        self.channel, self.client = self.gate.connect()
        self.request = _REQUEST % (b"/small", headers)
        self.body = b"x" * body_size
        self.answer = _ANSWER % body_size + self.body
        # The answer as the upstream socket's reads would deliver it: whole,
        # or in pieces of read_size bytes.
        size = read_size or len(self.answer)
        self.pieces = [self.answer[i:i + size] for i in range(0, len(self.answer), size)]
        self.channel.dataReceived(self.request)
        self.upstream, self.server = accept_upstream(self.gate.reactor)
        for piece in self.pieces:
            self.server.dataReceived(piece)
        self.check()

    def check(self):
        """
        The last exchange went through: the upstream saw the request, the
        client got a 200 with the whole body.
        """
        sent, got = self.upstream.value(), self.client.value()
        if not sent.startswith(b"GET /small HTTP/1.1\r\n") or not got.startswith(b"HTTP/1.1 200 "):
            raise SystemExit("the in-memory gateway did not proxy: %r / %r" % (sent[:200], got[:200]))
        if not got.endswith(self.body[-64:]):
            raise SystemExit("the client got an incomplete answer: %r" % (got[-200:],))
        self.upstream.clear()
        self.client.clear()

    def run(self, count):
        """
        Proxy C{count} requests; the transports are emptied after each.
        """
        channel, server, upstream, client = self.channel, self.server, self.upstream, self.client
        request, pieces = self.request, self.pieces
        for _ in range(count):
            channel.dataReceived(request)
            for piece in pieces:
                server.dataReceived(piece)
            upstream.clear()
            client.clear()
        channel.dataReceived(request)
        for piece in pieces:
            server.dataReceived(piece)
        self.check()


def _callgrind(argv, counts):
    """
    Instructions of this module run with C{argv} for each of C{counts},
    under callgrind; returns C{{count: instructions}}.
    """
    totals = {}
    env = dict(os.environ, PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory() as directory:
        for count in counts:
            out = os.path.join(directory, "callgrind.%d" % count)
            command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                       sys.executable, "-m", "bench.instructions", "--count", str(count)] + argv
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=3600)
            with open(out, "rb") as f:
                match = _TOTALS.search(f.read())
            if match is None:
                raise SystemExit("callgrind wrote no totals to " + out)
            totals[count] = int(match.group(1))
    return totals


def main(args=None):
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="requests to proxy (default 20000)")
    parser.add_argument("--filters", default="", help="comma-separated bench filter sets: jwt, limit, "
                        "nometrics, accesslog ... (see bench/_configs.py FILTER_SETS)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="requests proxied before measuring (default: 200, or --count if fewer; on "
                        "PyPy, 100000 or more lets the JIT settle)")
    parser.add_argument("--body-size", type=int, default=12, help="response body bytes (default 12)")
    parser.add_argument("--read-size", type=int, default=0,
                        help="hand the upstream's answer to the gateway in pieces of this many bytes, as "
                        "socket reads would (default 0: whole)")
    parser.add_argument("--http-server", default=None, help="[gateway] http_server (default: the default)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per request under valgrind (500 and 2000 requests)")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions by own time")
    options = parser.parse_args(args)
    filters = tuple(name for name in options.filters.split(",") if name)
    passed = ["--filters", options.filters, "--body-size", str(options.body_size),
              "--read-size", str(options.read_size)]
    if options.http_server:
        passed += ["--http-server", options.http_server]
    if options.callgrind:
        low, high = 500, 2000
        totals = _callgrind(passed, (low, high))
        print("instructions per request: %d (callgrind, %d - %d requests)"
              % ((totals[high] - totals[low]) / (high - low), high, low))
        return
    with tempfile.TemporaryDirectory() as directory:
        loop = Loop(filters, options.body_size, options.http_server, directory, options.read_size)
        loop.run(min(options.count, 200) if options.warmup is None else options.warmup)
        if options.cprofile:
            profile = cProfile.Profile()
            profile.enable()
            loop.run(options.count)
            profile.disable()
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(30)
            return
        started = time.process_time()
        loop.run(options.count)
        spent = time.process_time() - started
    if not os.environ.get("PYTHONHASHSEED"):
        print("%d requests, %.1f us of CPU each" % (options.count, spent / options.count * 1e6))


if __name__ == "__main__":
    main()
