"""
Waiting in integration tests: real time, always bounded, for a condition
rather than for a guessed duration.

Unit tests never wait: they advance a L{twisted.internet.task.Clock}.
Integration tests run real processes and sockets, and the only honest way
to wait for them is to poll for the state the test needs, with a deadline
that turns a hang into a failure naming what never happened.
"""

import platform
import socket

from twisted.internet import task
from twisted.internet.defer import inlineCallbacks, returnValue

__all__ = ["SLOWER_START", "WaitTimeout", "free_port", "scaled", "sleep", "wait_until"]

SLOWER_START = 3.0 if platform.python_implementation() == "PyPy" else 1.0
"""
How many times longer than on CPython the processes of a test (masters,
workers, upstreams) take to start and reach a state on this interpreter.
PyPy runs a fresh process's imports and first requests (cold code, before
its JIT compiles anything) with about 2.5 times CPython's CPU.
"""


def scaled(seconds):
    """
    C{seconds}, a deadline set for CPython, for this interpreter: see
    L{SLOWER_START}.
    """
    return seconds * SLOWER_START


class WaitTimeout(AssertionError):
    """
    A condition did not hold within its deadline (an assertion failure, so
    trial reports it as a failed test, not an error).
    """


def sleep(reactor, seconds):
    """
    A Deferred firing after C{seconds} of real time on C{reactor}.
    """
    return task.deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def wait_until(reactor, predicate, timeout=10.0, interval=0.05, what="the condition"):
    """
    Call C{predicate()} every C{interval} seconds until it returns something
    true (or a Deferred firing with something true), and fire with that
    value; raise L{WaitTimeout} naming C{what} after C{timeout} seconds
    (L{scaled} for this interpreter).
    """
    timeout = scaled(timeout)
    deadline = reactor.seconds() + timeout
    while True:
        value = yield predicate()
        if value:
            returnValue(value)
        if reactor.seconds() > deadline:
            raise WaitTimeout(f"{what} did not happen within {timeout:g}s")
        yield sleep(reactor, interval)


def free_port():
    """
    A loopback port nothing listens on (bound, then released at once), for
    a server that must refuse connections.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
