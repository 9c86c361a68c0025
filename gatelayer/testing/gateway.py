"""
Running a real gatelayer master (twistd, with its workers) from a test.
"""

import json
import os
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks, returnValue
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

import gatelayer
from gatelayer.testing.waiting import scaled


class _MasterProtocol(ProcessProtocol):
    def __init__(self):
        self.output = []
        self.ended = Deferred()
        self.exit_code = None

    def childDataReceived(self, fd, data):
        self.output.append(data)

    def processEnded(self, reason):
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.ended.callback(self.exit_code)


def _twistd(*args):
    """
    The environment and command line running twistd with C{args} on this
    interpreter, this gatelayer first on the path.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(gatelayer.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env, [sys.executable, "-c",
                 "import sys; from twisted.scripts.twistd import run; sys.argv=['twistd']+sys.argv[1:]; run()",
                 *args]


class GatewayProcess:
    """
    A C{twistd -n gatelayer} master started with a config written to a test's
    temporary directory, observed through its ready file and admin endpoint.

    @ivar info: the ready file's content once started (listeners, admin, pid).
    """

    def __init__(self, reactor, directory, config_text, name="gate"):
        self.reactor = reactor
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.config_path = os.path.join(directory, name + ".ini")
        self.ready_path = os.path.join(directory, name + ".ready.json")
        self.log_path = os.path.join(directory, name + ".log")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.protocol = None
        self.transport = None
        self.info = None

    @inlineCallbacks
    def start(self, timeout=20.0):
        """
        Start the master and wait (bounded) until every worker serves.
        """
        if os.path.exists(self.ready_path):
            os.remove(self.ready_path)
        env, argv = _twistd("-n", "--pidfile=", "--logfile", self.log_path, "gatelayer",
                            "-c", self.config_path, "--ready-file", self.ready_path)
        self.protocol = _MasterProtocol()
        self.transport = self.reactor.spawnProcess(
            self.protocol, sys.executable, argv, env=env, path=self.directory)
        timeout = scaled(timeout)
        deadline = self.reactor.seconds() + timeout
        while not os.path.exists(self.ready_path):
            if self.protocol.exit_code is not None or self.protocol.ended.called:
                raise RuntimeError("gatelayer exited before it was ready:\n" + self.log())
            if self.reactor.seconds() > deadline:
                raise RuntimeError("gatelayer not ready in time:\n" + self.log())
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        with open(self.ready_path) as f:
            self.info = json.load(f)
        returnValue(self.info)

    def check(self):
        """
        Run C{twistd gatelayer -c CONFIG --check} on this gateway's config,
        as an operator would; fires with C{(exit code, output)}, stdout and
        stderr together.
        """
        env, argv = _twistd("gatelayer", "-c", self.config_path, "--check")
        d = getProcessOutputAndValue(sys.executable, argv[1:], env=env, path=self.directory,
                                     reactor=self.reactor)
        return d.addCallback(lambda result: (result[2], (result[0] + result[1]).decode("utf-8", "replace")))

    @property
    def pid(self):
        """
        The master's pid.
        """
        return self.transport.pid

    def address(self, listener):
        """
        C{(host, port)} of the first address of C{listener}.
        """
        host, port = self.info["listeners"][listener][0]
        return host, port

    def url(self, listener, path="/", scheme="http"):
        """
        A URL on C{listener}.
        """
        host, port = self.address(listener)
        return f"{scheme}://{host}:{port}{path}".encode("ascii")

    def admin_url(self, path="/status"):
        """
        A URL of the admin endpoint.
        """
        host, port = self.info["admin"]
        return f"http://{host}:{port}{path}".encode("ascii")

    def signal(self, name):
        """
        Send signal C{name} (e.g. C{"TERM"}, C{"HUP"}) to the master.
        """
        self.transport.signalProcess(name)

    def log(self):
        """
        The master's log so far.
        """
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return b"".join(self.protocol.output).decode("utf-8", "replace") if self.protocol else ""

    @inlineCallbacks
    def stop(self, timeout=20.0):
        """
        SIGTERM the master and wait (bounded) for it to exit; returns its
        exit code. Kills it if it does not exit in time.
        """
        if self.protocol is None or self.protocol.ended.called:
            returnValue(self.protocol.exit_code if self.protocol else None)
        self.signal("TERM")
        code = yield self.wait_exit(timeout)
        returnValue(code)

    @inlineCallbacks
    def wait_exit(self, timeout=20.0):
        """
        Wait (bounded) for the master to exit; kill it past the deadline.
        """
        deadline = self.reactor.seconds() + timeout
        while not self.protocol.ended.called:
            if self.reactor.seconds() > deadline:
                try:
                    self.transport.signalProcess("KILL")
                except Exception:
                    pass
                yield self.protocol.ended
                raise RuntimeError("gatelayer did not exit in time:\n" + self.log())
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        returnValue(self.protocol.exit_code)


@inlineCallbacks
def start_gateway(test, reactor, config_text, directory=None):
    """
    Start a L{GatewayProcess} with C{config_text} in C{directory} (by
    default a fresh temporary directory of C{test}) and stop it at C{test}'s
    cleanup, before whatever the test started earlier (its upstreams).

    @return: a Deferred firing with the running L{GatewayProcess}.
    """
    if directory is None:
        directory = os.path.abspath(test.mktemp())
    gate = GatewayProcess(reactor, directory, config_text)
    test.addCleanup(gate.stop)
    yield gate.start()
    return gate
