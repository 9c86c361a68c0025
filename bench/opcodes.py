"""
C{python -m bench.opcodes}: the Python bytecodes one proxied request runs,
function by function, in the in-memory gateway of L{bench.instructions}.

The count is exact and the same from run to run, takes seconds (no
valgrind), and says I{where} a request's instructions go: on CPython each
bytecode costs tens of machine instructions, a Python call several hundred.
C{--callgrind} of L{bench.instructions} stays the figure to compare before
and after a change; this one finds what to change. C{--lines FUNCTION,...}
shows the bytecodes of each line of the functions named.
"""

import argparse
import collections
import linecache
import sys
import tempfile

from bench.instructions import Loop


def count(loop, requests, names=None):
    """
    Run C{requests} requests of C{loop} (a L{Loop}) under a tracer; returns
    C{(opcodes, calls)}, two L{collections.Counter}s keyed by
    C{(file, first line, function)}, or with C{names} (a set of function
    names) the opcodes of those functions keyed by C{(file, line)}.
    """
    opcodes = collections.Counter()
    calls = collections.Counter()

    def tracer(frame, event, arg):
        code = frame.f_code
        if names is not None and code.co_name not in names:
            return None
        frame.f_trace_opcodes = True
        if names is not None:
            if event == "opcode":
                opcodes[(code.co_filename, frame.f_lineno or 0)] += 1
            return tracer
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        if event == "call":
            calls[key] += 1
        elif event == "opcode":
            opcodes[key] += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        loop.run(requests - 1)
    finally:
        sys.settrace(previous)
    return opcodes, calls


def _short(filename):
    for marker in ("/site-packages/", "/gatelayer/", "/bench/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    return filename


def main(args=None):
    parser = argparse.ArgumentParser(prog="python -m bench.opcodes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="requests traced (default 20)")
    parser.add_argument("--filters", default="", help="as for bench.instructions")
    parser.add_argument("--body-size", type=int, default=12, help="response body bytes (default 12)")
    parser.add_argument("--top", type=int, default=40, help="functions shown (default 40)")
    parser.add_argument("--lines", default="", help="comma-separated function names: bytecodes per line")
    options = parser.parse_args(args)
    filters = tuple(name for name in options.filters.split(",") if name)
    names = set(name for name in options.lines.split(",") if name) or None
    with tempfile.TemporaryDirectory() as directory:
        loop = Loop(filters, options.body_size, None, directory)
        loop.run(50)
        opcodes, calls = count(loop, options.requests, names)
    per = float(options.requests)
    if names is not None:
        for (filename, line), n in sorted(opcodes.items()):
            print("%6.1f %s:%d %s" % (n / per, _short(filename), line,
                                      linecache.getline(filename, line).rstrip()))
        return
    print("bytecodes per request: %.0f, Python calls per request: %.0f"
          % (sum(opcodes.values()) / per, sum(calls.values()) / per))
    print("%9s %6s  function" % ("bytecodes", "calls"))
    for (filename, line, name), n in opcodes.most_common(options.top):
        print("%9.1f %6.1f  %s:%d(%s)" % (n / per, calls[(filename, line, name)] / per,
                                          _short(filename), line, name))


if __name__ == "__main__":
    main()
