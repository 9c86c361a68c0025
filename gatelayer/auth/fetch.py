"""
Fetching a JWKS from an identity provider without ever blocking a request.

Each worker keeps the last good key set in memory and refreshes it in the
background every C{jwks_refresh}. A token naming an unknown C{kid} (the
provider rotated its keys) may trigger one early refetch per minute; while a
fetch is under way, such requests wait for it, but never longer than the
fetch timeout, and requests whose keys are known are verified at once. A
fetch that fails or times out keeps the previous keys and is retried with
backoff.
"""

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from gatelayer.auth.jwks import KeyLoadError, KeySet, parse_jwks

MAX_JWKS_SIZE = 1024 * 1024
"""A JWKS response larger than this is refused (and the connection dropped)."""


class FetchError(Exception):
    """
    A JWKS fetch failed for a reason worth one log line.
    """


class _BoundedBody(Protocol):
    """
    Collect a response body of at most C{limit} bytes into C{finished}.
    """

    def __init__(self, finished, limit):
        self.finished = finished
        self.limit = limit
        self.size = 0
        self.parts = []

    def dataReceived(self, data):
        if self.finished is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            finished, self.finished = self.finished, None
            self.transport.stopProducing()
            finished.errback(FetchError(f"the response is larger than {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason):
        if self.finished is None:
            return
        finished, self.finished = self.finished, None
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(b"".join(self.parts))
        else:
            finished.errback(reason)

    def cancel(self, deferred):
        """
        Give up on the body (the fetch timed out): stop the transfer.
        """
        self.finished = None
        if self.transport is not None:
            self.transport.stopProducing()


def read_bounded_body(response, limit):
    """
    A Deferred firing with the body of C{response} (an
    L{twisted.web.iweb.IResponse}), or failing with L{FetchError} once it
    exceeds C{limit} bytes. Cancelling it stops the transfer.
    """
    protocol = _BoundedBody(None, limit)
    finished = Deferred(protocol.cancel)
    protocol.finished = finished
    response.deliverBody(protocol)
    return finished


def _describe(failure):
    """
    One line for a failed fetch: the client's wrapped reasons (connection
    refused, reset) rather than their list.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        failure = reasons[0]
    return failure.getErrorMessage() or failure.type.__name__


class JwksFetcher:
    """
    Keep a JWKS fetched from C{url} current.

    @ivar keys: the last good L{KeySet} (empty until the first fetch succeeds).
    @ivar on_keys: called with the new L{KeySet} after each successful fetch.
    """

    log = Logger()

    def __init__(self, reactor, url, algorithms, refresh=600.0, timeout=5.0, agent=None,
                 unknown_kid_interval=60.0, retry_delay=5.0, max_size=MAX_JWKS_SIZE, on_keys=None):
        """
        @param reactor: provides the clock (C{callLater}, C{seconds}) and,
            without C{agent}, the connections.
        @param url: the JWKS URL (text).
        @param algorithms: the algorithms keys may be pinned to; keys for
            others are skipped (and logged).
        @param refresh: seconds between fetches after a success.
        @param timeout: seconds a whole fetch (connect, response, body) may
            take; also the longest a request waits for a fetch.
        @param agent: the L{twisted.web.iweb.IAgent} to fetch with (a plain
            L{Agent} on C{reactor} by default).
        @param unknown_kid_interval: the least seconds between two fetches
            triggered by unknown key ids.
        @param retry_delay: the first delay before retrying a failed fetch;
            it doubles on each failure, up to C{refresh}.
        """
        self.reactor = reactor
        self.url = url
        self.algorithms = frozenset(algorithms)
        self.refresh = refresh
        self.timeout = timeout
        self.agent = agent if agent is not None else Agent(reactor, connectTimeout=timeout)
        self.unknown_kid_interval = unknown_kid_interval
        self.retry_delay = retry_delay
        self.max_size = max_size
        self.on_keys = on_keys
        #: Called with the raw JWKS document (bytes) after each successful
        #: fetch, before C{on_keys} (the master forwards it to its workers).
        self.on_document = None
        self.keys = KeySet()
        self._running = False
        self._fetching = False
        self._inflight = None
        self._waiters = []
        self._timer = None
        self._failures = 0
        self._last_unknown_fetch = None

    @property
    def fetching(self):
        """
        Whether a fetch is under way.
        """
        return self._fetching

    def start(self):
        """
        Fetch now, then keep refreshing until L{stop}.
        """
        self._running = True
        self._fetch()

    def stop(self):
        """
        Stop refreshing and abandon a fetch under way; waiting requests are
        released (they see the keys as they are).
        """
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._inflight is not None:
            self._inflight.cancel()

    def refetch_for_unknown_key(self):
        """
        A token named a key this worker does not know. Return a Deferred
        firing (with L{None}) when a fetch under way, or one started now,
        has ended (bounded by the fetch timeout); or L{None} when the last
        such fetch was less than C{unknown_kid_interval} ago (the caller
        answers at once).
        """
        if self._fetching:
            return self._wait()
        now = self.reactor.seconds()
        if self._last_unknown_fetch is not None and now - self._last_unknown_fetch < self.unknown_kid_interval:
            return None
        self._last_unknown_fetch = now
        self.log.info("jwks: refetching {url} for an unknown key id", url=self.url)
        self._fetch()
        if not self._fetching:
            return succeed(None)
        return self._wait()

    def _wait(self):
        waiter = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _fetch(self):
        if self._fetching:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._fetching = True
        headers = Headers({b"accept": [b"application/json"], b"user-agent": [b"gatelayer"]})
        d = maybeDeferred(self.agent.request, b"GET", self.url.encode("ascii"), headers)
        d.addCallback(self._read)
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timed_out)
        d.addCallback(self._fetched)
        d.addErrback(self._failed)
        d.addBoth(self._done)
        if self._fetching:
            self._inflight = d

    def _read(self, response):
        body = read_bounded_body(response, self.max_size)
        if response.code != 200:
            body.addCallback(lambda _: self._status_error(response.code))
        return body

    def _timed_out(self, result, timeout):
        raise FetchError(f"no complete answer within {timeout:g}s")

    def _status_error(self, code):
        raise FetchError(f"the server answered with status {code}")

    def _fetched(self, body):
        try:
            keys, skipped = parse_jwks(body, self.algorithms, self.url, allow_secrets=False, strict=False)
        except KeyLoadError as e:
            raise FetchError(str(e)) from None
        for message in skipped:
            self.log.warn("jwks: skipping a key: {problem}", problem=message)
        self._failures = 0
        self.keys = keys
        self.log.info("jwks: {count} keys from {url}", count=len(keys), url=self.url)
        if self.on_document is not None:
            self.on_document(body)
        if self.on_keys is not None:
            self.on_keys(keys)

    def _failed(self, failure):
        self._failures += 1
        if not self._running:
            return
        reason = _describe(failure)
        self.log.warn("jwks: fetching {url} failed, keeping the previous {count} keys: {reason}",
                      url=self.url, count=len(self.keys), reason=reason)

    def _done(self, ignored):
        self._fetching = False
        self._inflight = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._running:
            if self._failures:
                delay = min(self.refresh, self.retry_delay * 2 ** min(self._failures - 1, 16))
            else:
                delay = self.refresh
            self._timer = self.reactor.callLater(delay, self._fetch)
