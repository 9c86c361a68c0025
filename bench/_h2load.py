"""
Driving h2load (nghttp2's HTTP/2 load generator) for the C{h2} scenario:
the command line for one timed load, and the parser of its report into the
same result wrk's parser gives.
"""

import re

from bench._wrk import WrkOutputError, WrkResult

_FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout", re.M)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
_TIME_FOR_REQUEST = re.compile(
    r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", re.M)
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def h2load_argv(url, connections, streams, seconds, threads=2, headers=(), h2load="h2load"):
    """
    The h2load command line: C{connections} HTTP/2 connections with up to
    C{streams} concurrent streams each (C{-c}, C{-m}) on C{url} for
    C{seconds} (C{-D}), over C{threads} threads.
    """
    argv = [h2load, f"-t{min(threads, connections)}", f"-c{connections}", f"-m{streams}",
            f"-D{max(1, int(round(seconds)))}"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    return argv


def parse_h2load(text):
    """
    Parse h2load's report into a L{WrkResult}. h2load reports no latency
    percentiles: C{p50_ms} is its mean time for a request and C{p99_ms}
    its maximum (the report names them so). Failed, errored and timed-out
    requests are socket errors; 4xx and 5xx answers are C{non_2xx}.

    @raise WrkOutputError: when the rate or the request counts are missing.
    """
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    if finished is None or requests is None:
        first = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise WrkOutputError(f"h2load gave no complete report ({first})")
    status = _STATUS.search(text)
    non_2xx = int(status.group(3)) + int(status.group(4)) if status else 0
    times = _TIME_FOR_REQUEST.search(text)
    mean_ms = max_ms = 0.0
    if times is not None:
        max_ms = float(times.group(3)) * _UNITS_S[times.group(4)] * 1000.0
        mean_ms = float(times.group(5)) * _UNITS_S[times.group(6)] * 1000.0
    failed, errored, timeout = (int(requests.group(i)) for i in (5, 6, 7))
    return WrkResult(
        requests=int(requests.group(3)),
        seconds=float(finished.group(1)) * _UNITS_S[finished.group(2)],
        rps=float(finished.group(3)),
        p50_ms=mean_ms,
        p99_ms=max_ms,
        non_2xx=non_2xx,
        socket_errors={"failed": failed, "errored": errored, "timeout": timeout},
    )
