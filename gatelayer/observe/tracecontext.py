"""
W3C Trace Context (C{traceparent}, C{tracestate}) at the gateway: the
gateway is one hop of a trace. A valid incoming C{traceparent} keeps its
trace id and gets the gateway's own span id (whose parent is the client's
span); an absent or invalid one starts a new trace. C{tracestate} goes on
unchanged when it is valid and not too large, and is dropped otherwise.

Pure: parsing and formatting are plain functions, and ids are cut from a
pool of random bytes read from the operating system in bulk, so a request
costs no system call (one read serves about a thousand new traces).
"""

import binascii
import os
import random
import re

from twisted.web.http_headers import Headers

__all__ = [
    "TRACESTATE_LIMIT", "TraceContext", "TracePropagator", "parse_traceparent",
    "valid_tracestate",
]

#: The largest combined C{tracestate} passed on, in bytes: what the
#: specification asks every vendor to propagate at least.
TRACESTATE_LIMIT = 512
_MAX_MEMBERS = 32

# version-trace_id-parent_id-flags, and what a later version may add.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?", re.S)
# Random bytes read at once for the ids (hex-encoded: two characters each).
_POOL_BYTES = 24 * 1024
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
# simple-key, or tenant@system multi-tenant key; value: printable ASCII
# without "," and "=", not ending in a space.
_MEMBER = re.compile(
    rb"[ \t]*(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    rb"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])[ \t]*")


def _raw_key(name):
    headers = Headers()
    headers.setRawHeaders(name, [b""])
    return next(iter(headers._rawHeaders))


#: The keys of the two headers in a request's raw header mapping.
TRACEPARENT_KEY = _raw_key(b"traceparent")
TRACESTATE_KEY = _raw_key(b"tracestate")


def parse_traceparent(value):
    """
    Read one C{traceparent} header value (bytes).

    @return: C{(trace_id, parent_id, flags)}: the trace id (32 lower-case
        hex bytes), the caller's span id (16 hex bytes) and the flags (an
        int); or L{None} when the value is not a valid traceparent: a
        version other than two lower-case hex digits or C{ff}, a version
        C{00} value of any length but 55, a field of the wrong length or
        with anything but lower-case hex, an all-zero trace or span id. A
        later version may carry more fields after a C{-}; its first four are
        read as version C{00}'s.
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if (version == b"00" and len(value) != 55) or version == b"ff":
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def valid_tracestate(values, limit=TRACESTATE_LIMIT):
    """
    The C{tracestate} to pass on, from the request's header values (a list
    of bytes, several headers combined as one list), or L{None} to drop it:
    when it is empty, larger than C{limit} bytes, has more than 32 members,
    a malformed member or a key twice.
    """
    combined = values[0] if len(values) == 1 else b",".join(values)
    if len(combined) > limit:
        return None
    keys = set()
    for member in combined.split(b","):
        if not member.strip(b" \t"):
            continue
        match = _MEMBER.fullmatch(member)
        if match is None:
            return None
        key = member.partition(b"=")[0].strip(b" \t")
        if key in keys:
            return None
        keys.add(key)
    if not keys or len(keys) > _MAX_MEMBERS:
        return None
    return combined


class TraceContext:
    """
    A request's place in its trace, kept on its
    L{gatelayer.http.contract.RequestRouting} (C{routing.trace}).

    @ivar trace_id: the trace id (32 lower-case hex bytes).
    @ivar span_id: the gateway's span id for this request (16 hex bytes):
        the parent id every upstream call of the request is sent.
    @ivar parent_id: the client's span id (16 hex bytes), or L{None} when
        the gateway started the trace.
    @ivar sampled: whether the trace is sampled (the flag sent upstream).
    @ivar tracestate: the C{tracestate} passed on (bytes), or L{None}.
    @ivar filters_started: when the request's filter chain began (reactor
        seconds), or L{None}; recorded only for exported traces.
    @ivar filters_ended: when the filter chain was done, or L{None}.
    """

    # Class-level defaults for what most requests never set.
    filters_started = None
    filters_ended = None

    def __init__(self, trace_id, span_id, parent_id, sampled, tracestate=None):
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate

    def traceparent(self):
        """
        The C{traceparent} value (version C{00}) sent upstream.
        """
        return b"".join((b"00-", self.trace_id, b"-", self.span_id, b"-01" if self.sampled else b"-00"))

    def __repr__(self):
        return "<TraceContext %s>" % (self.traceparent().decode("ascii"),)


class TracePropagator:
    """
    Makes each request's L{TraceContext} and rewrites its trace headers in
    place, once, before anything decides: every upstream call of the
    request (the proxied request, aggregate parts, mirror copies) then
    carries the gateway's C{traceparent}.

    @ivar sample_rate: the share (0.0 to 1.0) of new traces marked sampled;
        an incoming traceparent's own flag is always respected.
    @ivar recording: whether exported spans need the filter chain's times.
    """

    def __init__(self, sample_rate=1.0, seed=None, recording=False):
        """
        @param seed: makes the ids and sampling decisions repeatable (for
            tests); by default they come from the operating system.
        """
        self.sample_rate = sample_rate
        self.recording = recording
        generator = random.Random(os.urandom(16) if seed is None else seed)
        self._random = generator.random
        self._urandom = os.urandom if seed is None else generator.randbytes
        self._randbytes = generator.randbytes
        self._pool = b""
        self._taken = 0

    def _hex(self, length):
        """
        C{length} random lower-case hex digits from the pool, refilled in
        bulk when spent.
        """
        start = self._taken
        end = start + length
        if end > len(self._pool):
            try:
                data = self._urandom(_POOL_BYTES)
            except OSError:
                # PyPy reads /dev/urandom through a file descriptor: a worker
                # out of descriptors (EMFILE) still serves, with ids from its
                # generator seeded by the system at start.
                data = self._randbytes(_POOL_BYTES)
            self._pool = binascii.hexlify(data)
            start, end = 0, length
        self._taken = end
        return self._pool[start:end]

    def span_id(self):
        """
        A new random span id (16 lower-case hex bytes, never all zero).
        """
        span_id = self._hex(16)
        while span_id == _ZERO_SPAN:
            span_id = self._hex(16)
        return span_id

    def start(self, raw):
        """
        The L{TraceContext} of the request whose raw header mapping is
        C{raw}, whose C{traceparent} and C{tracestate} are replaced by what
        goes upstream.
        """
        parents = raw.get(TRACEPARENT_KEY)
        parsed = parse_traceparent(parents[0]) if parents is not None and len(parents) == 1 else None
        if parsed is None:
            # A tracestate without a valid traceparent belongs to no trace.
            if TRACESTATE_KEY in raw:
                del raw[TRACESTATE_KEY]
            sampled = self.sample_rate >= 1.0 or self._random() < self.sample_rate
            # _hex(48), inline: this runs for most requests.
            start = self._taken
            end = start + 48
            if end > len(self._pool):
                ids = self._hex(48)
            else:
                self._taken = end
                ids = self._pool[start:end]
            trace_id, span_id = ids[:32], ids[32:]
            while trace_id == _ZERO_TRACE:
                trace_id = self._hex(32)
            if span_id == _ZERO_SPAN:
                span_id = self.span_id()
            raw[TRACEPARENT_KEY] = [b"".join((b"00-", trace_id, b"-", span_id, b"-01" if sampled else b"-00"))]
            return TraceContext(trace_id, span_id, None, sampled)
        span_id = self.span_id()
        trace_id, parent_id, flags = parsed
        state = raw.get(TRACESTATE_KEY)
        if state is not None:
            state = valid_tracestate(state)
            if state is None:
                del raw[TRACESTATE_KEY]
            else:
                raw[TRACESTATE_KEY] = [state]
        context = TraceContext(trace_id, span_id, parent_id, bool(flags & 1), state)
        raw[TRACEPARENT_KEY] = [context.traceparent()]
        return context
