"""
Request mirroring (shadowing): a copy of a route's requests goes to a
shadow upstream, whose answers are read and thrown away.

The copy is what the proxy would send (the canonical path less
C{strip_prefix}, the query, the upstream headers and the buffered body),
with C{-shadow} added to the host name of its Host header so the shadow
can tell copies from real traffic. It is sent in the same reactor turn as
the real request and nothing waits for it: its outcome never reaches the
client and never counts toward the health of the route's own upstream.
The shadow upstream's own limits hold: when its C{max_connections} are
busy and C{max_pending} copies already wait, a copy is dropped, counted,
and logged at most once per L{LOG_INTERVAL}.
"""

import os

from twisted.logger import Logger
from zope.interface import implementer

from gatelayer.chain import ITerminal
from gatelayer.http.headers import upstream_headers
from gatelayer.http.proxy import upstream_body, upstream_target
from gatelayer.upstream.interfaces import IResponseSink
from gatelayer.upstream.state import IDEMPOTENT_METHODS, health_failure

__all__ = ["LOG_INTERVAL", "MirrorSampler", "MirrorTerminal", "ShadowCopy", "shadow_host"]

LOG_INTERVAL = 10.0
"""Seconds between two log lines about copies a mirror lost (dropped or failed)."""


def shadow_host(host):
    """
    The Host header value (bytes) of a copy: C{-shadow} after the host name,
    before any port (C{api.example.com:8080} becomes
    C{api.example.com-shadow:8080}, as Envoy's shadowing does).
    """
    head, sep, port = host.rpartition(b":")
    if sep and port.isdigit() and (b"]" in head or b":" not in head):
        return head + b"-shadow:" + port
    return host + b"-shadow"


class MirrorSampler:
    """
    Which requests are copied, for a share C{percent} (over 0, at most
    100): evenly spread and deterministic, by error diffusion (10% copies
    the 10th, 20th, 30th... request), so tests and operators can predict
    it. Counted in thousandths of a percent, in whole numbers, so it never
    drifts.
    """

    __slots__ = ("_step", "_credit")

    _FULL = 100000

    def __init__(self, percent):
        self._step = max(1, min(self._FULL, round(percent * 1000)))
        self._credit = 0

    def take(self):
        """
        Whether the next request is copied.
        """
        self._credit += self._step
        if self._credit >= self._FULL:
            self._credit -= self._FULL
            return True
        return False


class _FileCopy:
    """
    A second reader of a request body held in a file: its own duplicate
    descriptor and offset (positional reads), so the copy streams while the
    real request streams the same file, and outlives the request's own
    file object.
    """

    __slots__ = ("_fd", "_offset", "_size")

    def __init__(self, content):
        content.flush()
        self._fd = os.dup(content.fileno())
        self._size = os.fstat(self._fd).st_size
        self._offset = 0

    def seek(self, offset, whence=0):
        """
        Move the read position (as L{io.IOBase.seek}).
        """
        base = (0, self._offset, self._size)[whence]
        self._offset = base + offset
        return self._offset

    def tell(self):
        """
        The read position.
        """
        return self._offset

    def read(self, size=-1):
        """
        Up to C{size} bytes from the read position.
        """
        if size is None or size < 0:
            size = self._size - self._offset
        data = os.pread(self._fd, size, self._offset)
        self._offset += len(data)
        return data

    def close(self):
        """
        Close the duplicate descriptor (once).
        """
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@implementer(ITerminal)
class MirrorTerminal:
    """
    The terminal of a route with C{mirror}: sends a copy of the sampled
    requests to the shadow upstream, then lets the route's own terminal
    serve the request as if there were no mirror.

    @ivar primary: the route's own terminal.
    @ivar shadow: the shadow's L{gatelayer.http.proxy.UpstreamTerminal}
        (its pool, balancing and health state).
    @ivar sent: copies handed to the shadow's pool.
    @ivar answered: copies the shadow answered (whatever the status).
    @ivar failed: copies that failed (connection refused, timeout, broken
        response).
    @ivar dropped: copies never sent: the shadow had no usable server, or
        its connections and queue were full.
    """

    log = Logger()

    def __init__(self, primary, shadow, route_spec, clock, sampler=None):
        """
        @param route_spec: the route's L{gatelayer.config.model.RouteSpec}
            (C{mirror_percent}, C{strip_prefix}, C{preserve_host}).
        @param clock: an L{twisted.internet.interfaces.IReactorTime}.
        @param sampler: chooses the copied requests (by default a
            L{MirrorSampler} of the route's C{mirror_percent}).
        """
        self.primary = primary
        self.shadow = shadow
        self.spec = route_spec
        self.clock = clock
        self.sampler = sampler if sampler is not None else MirrorSampler(route_spec.mirror_percent)
        self.sent = self.answered = self.failed = self.dropped = 0
        self._logged_at = None
        self._unlogged = 0

    def serve(self, exchange):
        """
        Copy C{exchange} to the shadow if sampled, then serve it.
        """
        if self.sampler.take():
            try:
                self._copy(exchange)
            except Exception:
                # A copy must never cost the real request anything.
                self.log.failure("mirror of route {route} to {upstream} failed to start",
                                 route=self.spec.name, upstream=self.shadow.spec.name)
        self.primary.serve(exchange)

    def _copy(self, exchange):
        method = exchange.method
        if method == b"CONNECT":
            return
        state = self.shadow.state
        server = state.pick(exchange.client_ip)
        if server is None:
            self.lost("dropped", "no usable server")
            return
        headers = exchange.headers
        host = headers.getRawHeaders(b"host")
        host_header = host[0] if host else None
        if self.spec.preserve_host and host_header is not None:
            host_value = shadow_host(host_header)
        else:
            host_value = shadow_host(server.address.encode("ascii"))
        out = upstream_headers(headers.getAllRawHeaders(), exchange.peer_ip, exchange.scheme,
                               host_header, host_value)
        body = upstream_body(exchange)
        if body is not None and not isinstance(body, bytes):
            body = _FileCopy(body) if hasattr(body, "fileno") else body.read()
        copy = ShadowCopy(self, server, body)
        state.request_started(server)
        self.sent += 1
        try:
            copy.handle = self.shadow.pool.request(
                server, method, upstream_target(self.spec, exchange), out, body, copy,
                method in IDEMPOTENT_METHODS)
        except Exception:
            copy.release()
            raise

    def lost(self, what, detail):
        """
        Count a copy that was C{"dropped"} or C{"failed"} and log it, at
        most once per L{LOG_INTERVAL} (with how many went unlogged).
        """
        if what == "dropped":
            self.dropped += 1
        else:
            self.failed += 1
        now = self.clock.seconds()
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
            self._unlogged += 1
            return
        self.log.warn(
            "mirror of route {route} to {upstream}: a copy {what} ({detail}); "
            "{unlogged} more lost since the last report",
            route=self.spec.name, upstream=self.shadow.spec.name, what=what, detail=detail,
            unlogged=self._unlogged)
        self._logged_at = now
        self._unlogged = 0

    def describe(self):
        """
        The route's terminal as data (for C{/status}): its split (see
        L{gatelayer.http.split.SplitTerminal.describe}) or upstream, and
        C{"mirror"}: the shadow, the share copied and the copies' counts.
        """
        describe = getattr(self.primary, "describe", None)
        shown = describe() if describe is not None else {"upstream": self.spec.upstream}
        shown["mirror"] = {
            "upstream": self.shadow.spec.name, "percent": self.spec.mirror_percent,
            "sent": self.sent, "answered": self.answered, "failed": self.failed,
            "dropped": self.dropped,
        }
        return shown


@implementer(IResponseSink)
class ShadowCopy:
    """
    One copy on its way to the shadow: reads the answer and discards it,
    keeps the shadow's balancing and passive health up to date, and tells
    its L{MirrorTerminal} how it ended. It never retries.
    """

    __slots__ = ("mirror", "server", "body", "handle", "status")

    def __init__(self, mirror, server, body):
        self.mirror = mirror
        self.server = server
        self.body = body
        self.handle = None
        self.status = None

    def release(self):
        """
        Give back the copy's place in the shadow's balancing state and its
        body file: once it ended, or when the pool could not take it.
        """
        self.mirror.shadow.state.request_finished(self.server)
        body, self.body = self.body, None
        if isinstance(body, _FileCopy):
            body.close()

    def connect_failed(self, kind, detail):
        """
        Nothing was sent: the shadow was full (dropped) or unreachable.
        """
        self.release()
        if kind == "overloaded":
            self.mirror.lost("dropped", detail)
            return
        self.mirror.shadow.state.report_failure(self.server, kind)
        self.mirror.lost("failed", f"{self.server.address}: {detail}")

    def response_head(self, status, reason, headers):
        """
        Note the status; nothing is relayed.
        """
        self.status = status

    def response_body(self, data):
        """
        Discard body bytes.
        """

    def response_trailers(self, fields):
        """
        Discard trailer fields.
        """

    def response_end(self):
        """
        The shadow answered: its server is working.
        """
        self.release()
        self.mirror.shadow.state.report_success(self.server)
        self.mirror.answered += 1

    def response_failed(self, kind, detail):
        """
        The shadow broke off or timed out after the copy was sent.
        """
        self.release()
        self.mirror.shadow.state.report_failure(self.server, health_failure(kind))
        self.mirror.lost("failed", f"{self.server.address}: {detail}")
