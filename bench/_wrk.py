"""
Driving wrk: the command line for one load, and the parser of its
C{--latency} report into numbers.
"""

import re

import attrs

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@attrs.frozen
class WrkResult:
    """
    One wrk run: throughput, latency percentiles in milliseconds and errors.

    C{errors} counts non-2xx/3xx responses and every socket error (connect,
    read, write, timeout).
    """

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: dict = attrs.field(factory=dict)

    @property
    def errors(self):
        """
        Non-2xx/3xx responses plus socket errors.
        """
        return self.non_2xx + sum(self.socket_errors.values())


class WrkOutputError(ValueError):
    """
    wrk printed something that is not a complete C{--latency} report.
    """


def _to_ms(value, unit):
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text):
    """
    Parse wrk's report (run with C{--latency}) into a L{WrkResult}.

    @raise WrkOutputError: if the rate, the request count or the 50%/99%
        percentiles are missing.
    """
    rate = _RATE.search(text)
    total = _TOTAL.search(text)
    percentiles = {float(p): _to_ms(v, u) for p, v, u in _PERCENTILE.findall(text)}
    if rate is None or total is None or 50.0 not in percentiles or 99.0 not in percentiles:
        first = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise WrkOutputError(f"wrk gave no complete report ({first})")
    socket_errors = {}
    match = _SOCKET_ERRORS.search(text)
    if match:
        socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups())))
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_to_ms(total.group(2), total.group(3)) / 1000.0,
        rps=float(rate.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def wrk_argv(url, connections, seconds, threads=2, headers=(), timeout=5, wrk="wrk"):
    """
    The wrk command line for a keep-alive load of C{connections} connections
    on C{url} for C{seconds}, reporting latency percentiles.

    wrk keeps connections alive unless a header says C{Connection: close}.
    """
    argv = [wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, int(round(seconds)))}s",
            f"--timeout={timeout:g}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    return argv
