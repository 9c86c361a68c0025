"""
The master's OCSP responses, off the hot path: fetched from each
certificate's responder (C{ocsp_staple = auto}) or read from a file
(C{ocsp_staple = FILE}), checked (L{gatelayer.tls.ocsp.check_response}) and
handed to C{on_change} for the workers.

A fetched response is refreshed about half-way to its C{nextUpdate}; a
failed fetch is retried with a doubling delay and the last good response is
kept meanwhile, but never past its C{nextUpdate}: at that moment it is
dropped. Fetches are POSTs with a timeout, and only a few run at once, so a
reload of many certificates does not storm a responder.
"""

import datetime
from io import BytesIO

from twisted.internet.defer import CancelledError, DeferredSemaphore, TimeoutError, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from gatelayer.auth.fetch import read_bounded_body

from .ocsp import OCSPError, build_request, check_response, find_issuer, responder_url

__all__ = ["OCSPStapler", "http_post", "read_staple_file", "MAX_RESPONSE_SIZE"]

#: The largest response taken (AMP carries at most 64 KB per value; real
#: responses are a few KB).
MAX_RESPONSE_SIZE = 60000

# A response is refreshed at least this long before it expires, and never
# sooner than this after a fetch (a responder handing out very short-lived
# responses is not asked in a loop).
_MIN_REFRESH = 5.0


def http_post(agent, reactor, url, body, timeout):
    """
    POST the DER OCSP request C{body} to C{url} with C{agent}; a Deferred
    firing with the response body, failing on a status other than 200, a
    body over L{MAX_RESPONSE_SIZE} or after C{timeout} seconds.
    """
    headers = Headers({b"content-type": [b"application/ocsp-request"], b"user-agent": [b"gatelayer"]})
    d = maybeDeferred(agent.request, b"POST", url.encode("ascii"), headers, FileBodyProducer(BytesIO(body)))

    def read(response):
        if response.code != 200:
            response.deliverBody(_Discard())
            raise OCSPError(f"the responder answered HTTP {response.code}")
        return read_bounded_body(response, MAX_RESPONSE_SIZE)

    d.addCallback(read)
    d.addTimeout(timeout, reactor)
    return d


class _Discard(Protocol):
    # The body of a refused answer is not read.
    def connectionMade(self):
        self.transport.stopProducing()


def read_staple_file(spec, certificate_set, now):
    """
    Read C{spec.ocsp_staple} (a DER response file) and check it against
    the certificates of C{certificate_set}.

    @return: C{(entry, Staple)}: the certificate it is for.
    @raise OCSPError: naming the section, key, file and what is wrong.
    """
    where = f"[tls:{spec.name}] ocsp_staple: {spec.ocsp_staple}"
    try:
        with open(spec.ocsp_staple, "rb") as f:
            der = f.read(MAX_RESPONSE_SIZE + 1)
    except OSError as e:
        raise OCSPError(f"{where}: cannot be read ({e.strerror or e})") from None
    if len(der) > MAX_RESPONSE_SIZE:
        raise OCSPError(f"{where}: is larger than {MAX_RESPONSE_SIZE} bytes")
    reasons = []
    for entry in certificate_set.entries:
        issuer = find_issuer(entry.certificate, entry.chain)
        if issuer is None:
            reasons.append(f"{entry.path}: its issuer is not in the file's chain")
            continue
        try:
            return entry, check_response(der, entry.certificate, issuer, now)
        except OCSPError as e:
            reasons.append(f"{entry.path}: {e}")
    raise OCSPError(f"{where}: staples no certificate of the section ({'; '.join(reasons)})")


class _Tracked:
    """
    The stapling state of one certificate of one section.
    """

    def __init__(self, section, entry, mode):
        self.section = section
        self.entry = entry
        self.mode = mode
        self.fingerprint = entry.fingerprint
        self.issuer = find_issuer(entry.certificate, entry.chain)
        self.url = responder_url(entry.certificate) if mode == "auto" else None
        self.staple = None
        self.last_error = None
        self.last_fetch = None
        self.failures = 0
        self.timer = None
        self.expiry = None

    def cancel(self):
        for timer in (self.timer, self.expiry):
            if timer is not None and timer.active():
                timer.cancel()
        self.timer = self.expiry = None


def _describe(failure):
    # The HTTP client wraps the real reason (refused, reset) in a list; a
    # timeout has no message of its own.
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        failure = reasons[0]
    if failure.check(TimeoutError, CancelledError):
        return "no answer in time"
    return failure.getErrorMessage() or failure.type.__name__


def _moment(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


class OCSPStapler:
    """
    Every certificate's OCSP response, kept current.

    @ivar on_change: called with C{(fingerprint, staple)} whenever the
        response to staple for a certificate changes; C{staple} is a
        L{gatelayer.tls.ocsp.Staple} or L{None} (stop stapling).
    """

    log = Logger()

    def __init__(self, reactor, on_change, post=None, agent=None, timeout=10.0, in_flight=2,
                 retry_delay=30.0, max_retry_delay=3600.0):
        """
        @param reactor: the clock (and, without C{post}/C{agent}, the
            connections).
        @param post: C{post(url, body)} returning a Deferred of the response
            bytes (tests give an in-memory responder); default: L{http_post}
            with C{agent}.
        @param timeout: seconds a fetch may take.
        @param in_flight: the most fetches running at once.
        @param retry_delay: the first retry delay after a failure; it
            doubles up to C{max_retry_delay}.
        """
        self.reactor = reactor
        self.on_change = on_change
        if post is None:
            agent = agent if agent is not None else Agent(reactor, connectTimeout=timeout)
            post = lambda url, body: http_post(agent, reactor, url, body, timeout)  # noqa: E731
        self._post = post
        self._semaphore = DeferredSemaphore(in_flight)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._tracked = {}
        self._running = False

    def _now(self):
        return _moment(self.reactor.seconds())

    def update(self, specs, sets):
        """
        Follow the certificates now served: C{specs} (C{{name: TlsSpec}})
        and C{sets} (C{{name: CertificateSet}}). Certificates kept keep
        their responses; new ones are fetched (when running) or their file
        read; files are read again. A file that is not good now is logged
        and the response kept so far stays.
        """
        wanted = {}
        for name, spec in sorted(specs.items()):
            mode = spec.ocsp_staple
            certificate_set = sets.get(name)
            if not mode or certificate_set is None:
                continue
            for entry in certificate_set.entries:
                wanted.setdefault(entry.fingerprint, (name, entry, "auto" if mode == "auto" else "file"))
        for fingerprint in list(self._tracked):
            tracked = self._tracked[fingerprint]
            if fingerprint not in wanted or wanted[fingerprint][2] != tracked.mode:
                tracked.cancel()
                del self._tracked[fingerprint]
                if tracked.staple is not None:
                    self.on_change(fingerprint, None)
        for fingerprint, (name, entry, mode) in wanted.items():
            if fingerprint not in self._tracked:
                tracked = self._tracked[fingerprint] = _Tracked(name, entry, mode)
                if mode == "auto":
                    self._announce(tracked)
                    if self._running:
                        self._fetch(tracked)
        for name, spec in sorted(specs.items()):
            if spec.ocsp_staple and spec.ocsp_staple != "auto" and name in sets:
                self._read_file(spec, sets[name])

    def _announce(self, tracked):
        # Certificates that can never be stapled are said so once, when
        # they are first served.
        if tracked.issuer is None:
            tracked.last_error = "its issuer is not in the file's chain, so no OCSP request can be made"
        elif tracked.url is None:
            tracked.last_error = "it names no HTTP OCSP responder (authorityInfoAccess)"
        else:
            return
        self.log.warn("[tls:{section}] {file}: not stapled: {reason}",
                      section=tracked.section, file=tracked.entry.path, reason=tracked.last_error)

    def _read_file(self, spec, certificate_set):
        try:
            entry, staple = read_staple_file(spec, certificate_set, self._now())
        except OCSPError as e:
            self.log.error("{error}; the response stapled so far stays", error=str(e))
            for tracked in self._tracked.values():
                if tracked.section == spec.name:
                    tracked.last_error = str(e)
            return
        for tracked in self._tracked.values():
            if tracked.section == spec.name:
                tracked.last_error = None if tracked.fingerprint == entry.fingerprint else (
                    f"{spec.ocsp_staple} is the response of another certificate")
        tracked = self._tracked.get(entry.fingerprint)
        if tracked is not None:
            tracked.last_fetch = self._now().isoformat()
            self._take(tracked, staple)

    def start(self):
        """
        Start fetching every C{auto} certificate's response.
        """
        self._running = True
        for tracked in list(self._tracked.values()):
            if tracked.mode == "auto":
                self._fetch(tracked)

    def stop(self):
        """
        Stop fetching and cancel every timer (a fetch under way is left to
        end and ignored).
        """
        self._running = False
        for tracked in self._tracked.values():
            tracked.cancel()

    def staples(self):
        """
        C{(fingerprint, Staple)} of every response stapled now.
        """
        now = self._now()
        return [(f, t.staple) for f, t in sorted(self._tracked.items())
                if t.staple is not None and t.staple.usable(now)]

    def _schedule(self, tracked, delay):
        if tracked.issuer is None or tracked.url is None:
            return
        if tracked.timer is not None and tracked.timer.active():
            tracked.timer.cancel()
        tracked.timer = self.reactor.callLater(delay, self._fetch, tracked)

    def _fetch(self, tracked):
        if tracked.timer is not None and tracked.timer.active():
            tracked.timer.cancel()
        tracked.timer = None
        if tracked.issuer is None or tracked.url is None:
            return
        request = build_request(tracked.entry.certificate, tracked.issuer)
        d = self._semaphore.run(self._post, tracked.url, request)
        d.addCallback(self._fetched, tracked)
        d.addErrback(self._failed, tracked)

    def _current(self, tracked):
        return self._tracked.get(tracked.fingerprint) is tracked and self._running

    def _fetched(self, der, tracked):
        if not self._current(tracked):
            return
        if len(der) > MAX_RESPONSE_SIZE:
            raise OCSPError(f"the response is larger than {MAX_RESPONSE_SIZE} bytes")
        staple = check_response(der, tracked.entry.certificate, tracked.issuer, self._now())
        tracked.failures = 0
        tracked.last_error = None
        tracked.last_fetch = self._now().isoformat()
        self._take(tracked, staple)
        lifetime = (staple.next_update - self._now()).total_seconds()
        self._schedule(tracked, max(_MIN_REFRESH, lifetime / 2))

    def _failed(self, failure, tracked):
        if not self._current(tracked):
            return
        reason = _describe(failure)
        tracked.failures += 1
        tracked.last_error = reason
        tracked.last_fetch = self._now().isoformat()
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(tracked.failures - 1, 16))
        kept = "keeping the response until it expires" if tracked.staple is not None else "nothing stapled"
        self.log.warn(
            "[tls:{section}] {file}: fetching the OCSP response from {url} failed ({reason}); {kept}; "
            "retrying in {delay:g}s", section=tracked.section, file=tracked.entry.path, url=tracked.url,
            reason=reason, kept=kept, delay=delay)
        self._schedule(tracked, delay)

    def _take(self, tracked, staple):
        if staple.status == "revoked":
            self.log.error(
                "[tls:{section}] {file}: the OCSP responder says the certificate was revoked at {when}; "
                "stapling the revoked status", section=tracked.section, file=tracked.entry.path,
                when=staple.revoked_at.isoformat())
        changed = tracked.staple is None or tracked.staple.der != staple.der
        tracked.staple = staple
        if tracked.expiry is not None and tracked.expiry.active():
            tracked.expiry.cancel()
        delay = max(0.0, staple.next_update.timestamp() - self.reactor.seconds())
        tracked.expiry = self.reactor.callLater(delay, self._expired, tracked, staple)
        if changed:
            self.on_change(tracked.fingerprint, staple)

    def _expired(self, tracked, staple):
        tracked.expiry = None
        if tracked.staple is not staple:
            return
        tracked.staple = None
        self.log.error(
            "[tls:{section}] {file}: the OCSP response expired at {when} and no newer one came; "
            "no longer stapled", section=tracked.section, file=tracked.entry.path,
            when=staple.next_update.isoformat())
        self.on_change(tracked.fingerprint, None)

    def status(self):
        """
        Per section, per certificate file: the mode, whether a response is
        stapled now, its validity, and the last error.
        """
        now = self._now()
        out = {}
        for tracked in sorted(self._tracked.values(), key=lambda t: (t.section, t.entry.path)):
            staple = tracked.staple
            row = {
                "file": tracked.entry.path,
                "sha256": tracked.fingerprint,
                "mode": tracked.mode,
                "responder": tracked.url,
                "stapling": staple is not None and staple.usable(now),
                "response": staple.describe() if staple is not None else None,
                "last_fetch": tracked.last_fetch,
                "last_error": tracked.last_error,
            }
            out.setdefault(tracked.section, []).append(row)
        return out
