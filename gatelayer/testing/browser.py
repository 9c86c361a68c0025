"""
A real headless Chromium for integration tests of the pages the gateway
serves (the admin dashboard), driven over the Chrome DevTools protocol.

The browser runs as a child process of the test (started and killed by
pid); the DevTools websocket is a blocking C{websockets} client used from
the reactor's thread pool, one call at a time, so the test waits on
Deferreds like any other integration test. Events the page raises between
calls (console messages, exceptions, log entries such as CSP violations)
are kept in L{DevToolsSession.events}.
"""

import base64
import json
import os
import shutil
import time
import urllib.request

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from gatelayer.testing.waiting import WaitTimeout, wait_until
from gatelayer.testing.websocket import in_thread

__all__ = ["Chromium", "DevToolsError", "DevToolsSession", "HEADLESS_FLAGS", "find_chromium"]

#: How the browser is started: headless, no sandbox (tests may run as root),
#: nothing fetched from the network on its own.
HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def find_chromium():
    """
    The path of the C{chromium} (or C{chromium-browser}) executable, or
    L{None}.
    """
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsError(Exception):
    """
    The browser answered a DevTools command with an error, or the page
    raised while evaluating an expression.
    """


class DevToolsSession:
    """
    A blocking DevTools client of one page: each L{call} sends a command
    and reads until its answer, keeping the events read on the way.
    """

    def __init__(self, url, timeout):
        from websockets.sync.client import connect
        self.connection = connect(url, max_size=None, open_timeout=timeout)
        self.next_id = 0
        self.events = []

    def call(self, method, timeout=30.0, **params):
        """
        Send C{method} with C{params}; return its result (a dict).

        @raise DevToolsError: the browser refused the command.
        @raise TimeoutError: no answer within C{timeout} seconds.
        """
        self.next_id += 1
        ident = self.next_id
        self.connection.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout:g}s")
            message = json.loads(self.connection.recv(timeout=remaining))
            if message.get("id") == ident:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def close(self):
        """
        Close the websocket.
        """
        self.connection.close()


class _BrowserProtocol(ProcessProtocol):
    def __init__(self):
        self.output = []
        self.ended = Deferred()

    def childDataReceived(self, fd, data):
        self.output.append(data)
        del self.output[:-200]

    def processEnded(self, reason):
        self.ended.callback(None)


class Chromium:
    """
    One headless Chromium process with one page, its profile in
    C{directory}.

    @ivar session: the page's L{DevToolsSession} once started.
    """

    def __init__(self, reactor, directory, executable=None):
        self.reactor = reactor
        self.directory = directory
        self.executable = executable or find_chromium()
        self.protocol = None
        self.transport = None
        self.session = None
        self._answered = set()

    @inlineCallbacks
    def start(self, timeout=60.0):
        """
        Start the browser on C{about:blank} and connect to its page; wait
        (bounded) for both.
        """
        if self.executable is None:
            raise RuntimeError("no chromium executable (apt-get install chromium)")
        profile = os.path.join(self.directory, "profile")
        os.makedirs(profile, exist_ok=True)
        active = os.path.join(profile, "DevToolsActivePort")
        self.protocol = _BrowserProtocol()
        args = [self.executable, *HEADLESS_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.transport = self.reactor.spawnProcess(self.protocol, self.executable, args, env=dict(os.environ))

        def port():
            if self.protocol.ended.called:
                raise RuntimeError("chromium exited at start:\n" + self.output())
            try:
                with open(active) as f:
                    first = f.readline().strip()
            except OSError:
                return None
            return int(first) if first.isdigit() else None
        debugging = yield wait_until(self.reactor, port, timeout=timeout, what="chromium's DevTools port")
        url = yield wait_until(self.reactor, lambda: in_thread(self.reactor, self._page_url, debugging),
                               timeout=timeout, what="chromium's page")
        self.session = yield in_thread(self.reactor, DevToolsSession, url, timeout)
        for domain in ("Runtime", "Log", "Page"):
            yield self.call(f"{domain}.enable")
        return self

    @staticmethod
    def _page_url(port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    def call(self, method, **params):
        """
        A DevTools command on the page; a Deferred firing with its result.
        """
        return in_thread(self.reactor, self.session.call, method, **params)

    @property
    def events(self):
        """
        The events the page raised so far (DevTools messages with a
        C{method}).
        """
        return self.session.events if self.session is not None else []

    def intercept(self, *url_patterns):
        """
        Hold the page's requests to URLs matching C{url_patterns}
        (C{Fetch.enable} wildcards, e.g. C{"*/metrics"}) until
        L{answer_held} answers them.
        """
        self._answered = set()
        return self.call("Fetch.enable", patterns=[{"urlPattern": p} for p in url_patterns])

    @inlineCallbacks
    def answer_held(self, respond):
        """
        Answer every held request not answered yet with C{respond(url)}:
        C{(status, content type, body bytes)}. Fires with how many.
        """
        held = [e["params"] for e in self.events if e["method"] == "Fetch.requestPaused"
                and e["params"]["requestId"] not in self._answered]
        for request in held:
            self._answered.add(request["requestId"])
            status, content_type, body = respond(request["request"]["url"])
            yield self.call("Fetch.fulfillRequest", requestId=request["requestId"], responseCode=status,
                            responseHeaders=[{"name": "Content-Type", "value": content_type}],
                            body=base64.b64encode(body).decode("ascii"))
        return len(held)

    @inlineCallbacks
    def evaluate(self, expression):
        """
        The value of a JavaScript C{expression} in the page (promises
        awaited, the result returned by value).
        """
        result = yield self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def output(self):
        """
        The browser's last lines of output (for failure messages).
        """
        return b"".join(self.protocol.output if self.protocol else []).decode("utf-8", "replace")[-4000:]

    @inlineCallbacks
    def stop(self, timeout=15.0):
        """
        Close the DevTools connection and end the browser by its pid:
        SIGTERM, then SIGKILL if it has not exited within C{timeout}.
        """
        if self.session is not None:
            try:
                yield in_thread(self.reactor, self.session.close)
            except Exception:
                pass
            self.session = None
        if self.protocol is None or self.protocol.ended.called:
            return
        for name, wait in (("TERM", timeout), ("KILL", timeout)):
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                return
            try:
                yield wait_until(self.reactor, lambda: self.protocol.ended.called, timeout=wait,
                                 what="chromium's exit")
                return
            except WaitTimeout:
                continue
