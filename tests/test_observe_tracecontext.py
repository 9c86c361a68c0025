"""
Tests for gatelayer.observe.tracecontext: reading traceparent and
tracestate as the W3C Trace Context specification spells them, and the
context the gateway makes and sends upstream.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.observe.tracecontext import (
    TRACEPARENT_KEY, TRACESTATE_KEY, TracePropagator, parse_traceparent, valid_tracestate,
)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"
VALID = b"00-" + TRACE + b"-" + PARENT + b"-01"
_FORMAT = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\Z")


class ParseTraceparentTests(SynchronousTestCase):
    """
    L{parse_traceparent} takes the valid forms and refuses every invalid one.
    """

    def test_valid(self):
        """
        Version 00 values give the trace id, the parent id and the flags.
        """
        for value, flags in [(VALID, 1), (VALID[:-2] + b"00", 0), (VALID[:-2] + b"03", 3)]:
            self.assertEqual(parse_traceparent(value), (TRACE, PARENT, flags), value)

    def test_future_version(self):
        """
        A later version is read by its first four fields, with or without
        more fields after a dash.
        """
        later = b"cc" + VALID[2:]
        self.assertEqual(parse_traceparent(later), (TRACE, PARENT, 1))
        self.assertEqual(parse_traceparent(later + b"-what-the-future-holds"), (TRACE, PARENT, 1))
        self.assertIsNone(parse_traceparent(later + b"x"))

    def test_invalid(self):
        """
        Each malformed form is refused: bad versions, lengths, separators,
        upper-case or non-hex digits, all-zero ids, extra fields on
        version 00.
        """
        bad = [
            b"",
            VALID[:-1],
            VALID + b"-00",
            VALID + b"0",
            b"ff" + VALID[2:],
            b"0g" + VALID[2:],
            b"0A" + VALID[2:],
            VALID.upper(),
            b"00-" + TRACE.upper() + b"-" + PARENT + b"-01",
            b"00-" + TRACE + b"-" + PARENT.upper() + b"-01",
            b"00-" + TRACE + b"-" + PARENT + b"-0X",
            b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",
            b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",
            b"00_" + TRACE + b"-" + PARENT + b"-01",
            b"00-" + TRACE + b"_" + PARENT + b"-01",
            b"00-" + TRACE + b"-" + PARENT + b"_01",
            b"00-" + TRACE[:-1] + b"-" + PARENT + b"0-01",
            b"00-" + TRACE + b"z" + b"-" + PARENT[:-1] + b"-01",
            b"00-" + TRACE[:-1] + b"g-" + PARENT + b"-01",
            b"00- " + TRACE[1:] + b"-" + PARENT + b"-01",
        ]
        for value in bad:
            self.assertIsNone(parse_traceparent(value), value)


class TracestateTests(SynchronousTestCase):
    """
    L{valid_tracestate} keeps a well-formed, bounded tracestate and drops
    anything else.
    """

    def test_valid(self):
        """
        Simple and multi-tenant keys, values with spaces inside, empty
        members and several headers joined are kept as sent.
        """
        for values, expected in [
            ([b"rojo=00f067aa0ba902b7"], b"rojo=00f067aa0ba902b7"),
            ([b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            ([b"rojo=1", b"congo=2"], b"rojo=1,congo=2"),
            ([b"tenant@vendor=a b", b""], b"tenant@vendor=a b,"),
            ([b"a=1 , ,b=2"], b"a=1 , ,b=2"),
        ]:
            self.assertEqual(valid_tracestate(values), expected, values)

    def test_invalid(self):
        """
        Bad keys, bad values, a key twice, no member at all are dropped.
        """
        for values in [[b"Rojo=1"], [b"rojo"], [b"rojo="], [b"rojo=a,b"], [b"rojo=1=2"],
                       [b"rojo=1", b"rojo=2"], [b"rojo=\x7f"], [b","],
                       [b"1@=x"], [b"a@B=x"], [b"k" * 257 + b"=v"], [b"k=" + b"v" * 257]]:
            self.assertIsNone(valid_tracestate(values), values)

    def test_limits(self):
        """
        More than 32 members, or more than the size limit, is dropped; 32
        members within the limit are kept.
        """
        members = [b"k%d=v" % (i,) for i in range(32)]
        self.assertEqual(valid_tracestate([b",".join(members)]), b",".join(members))
        self.assertIsNone(valid_tracestate([b",".join(members + [b"k32=v"])]))
        big = b"k=" + b"v" * 255 + b",j=" + b"v" * 255
        self.assertIsNone(valid_tracestate([big]))
        self.assertEqual(valid_tracestate([big], limit=1024), big)


class TracePropagatorTests(SynchronousTestCase):
    """
    L{TracePropagator.start} makes the request's context and rewrites its
    trace headers for the upstream.
    """

    def test_continues_a_trace(self):
        """
        A valid traceparent keeps its trace id and flag, gets a new span id
        and records the client's as the parent; a valid tracestate stays.
        """
        raw = {TRACEPARENT_KEY: [VALID], TRACESTATE_KEY: [b"rojo=1", b"congo=2"]}
        context = TracePropagator(seed=1).start(raw)
        self.assertEqual((context.trace_id, context.parent_id, context.sampled), (TRACE, PARENT, True))
        self.assertNotEqual(context.span_id, PARENT)
        self.assertEqual(raw[TRACEPARENT_KEY], [b"00-" + TRACE + b"-" + context.span_id + b"-01"])
        self.assertEqual(raw[TRACESTATE_KEY], [b"rojo=1,congo=2"])

    def test_respects_unsampled(self):
        """
        A client's unsampled flag is kept whatever the sample rate; a
        later version's traceparent goes on as version 00.
        """
        raw = {TRACEPARENT_KEY: [b"01" + VALID[2:-2] + b"00-more"]}
        context = TracePropagator(sample_rate=1.0, seed=1).start(raw)
        self.assertFalse(context.sampled)
        self.assertEqual(raw[TRACEPARENT_KEY][0][:36], b"00-" + TRACE + b"-")
        self.assertTrue(raw[TRACEPARENT_KEY][0].endswith(b"-00"))

    def test_new_trace(self):
        """
        Without a traceparent, or with an invalid one or two of them, a
        new valid trace starts and any tracestate is dropped.
        """
        for headers in [{}, {TRACEPARENT_KEY: [VALID.upper()], TRACESTATE_KEY: [b"rojo=1"]},
                        {TRACEPARENT_KEY: [VALID, VALID]}]:
            raw = dict(headers)
            context = TracePropagator(seed=2).start(raw)
            self.assertIsNone(context.parent_id)
            self.assertNotEqual(context.trace_id, TRACE)
            self.assertRegex(raw[TRACEPARENT_KEY][0], _FORMAT)
            self.assertEqual(raw[TRACEPARENT_KEY], [context.traceparent()])
            self.assertNotIn(TRACESTATE_KEY, raw)

    def test_invalid_tracestate_dropped(self):
        """
        A valid traceparent with an invalid tracestate keeps the trace and
        loses the tracestate.
        """
        raw = {TRACEPARENT_KEY: [VALID], TRACESTATE_KEY: [b"BAD=1"]}
        context = TracePropagator(seed=1).start(raw)
        self.assertEqual(context.trace_id, TRACE)
        self.assertIsNone(context.tracestate)
        self.assertNotIn(TRACESTATE_KEY, raw)

    def test_ids_differ(self):
        """
        Every request of a worker gets its own trace and span ids.
        """
        propagator = TracePropagator(seed=3)
        contexts = [propagator.start({}) for _ in range(200)]
        self.assertEqual(len({c.trace_id for c in contexts}), 200)
        self.assertEqual(len({c.span_id for c in contexts}), 200)

    def test_sample_rate(self):
        """
        New traces are sampled at the configured rate: none at 0.0, all at
        1.0, about half at 0.5.
        """
        self.assertFalse(any(TracePropagator(0.0, seed=4).start({}).sampled for _ in range(100)))
        self.assertTrue(all(TracePropagator(1.0, seed=4).start({}).sampled for _ in range(100)))
        half = TracePropagator(0.5, seed=4)
        sampled = sum(half.start({}).sampled for _ in range(1000))
        self.assertTrue(400 < sampled < 600, sampled)

    def test_ids_from_a_bulk_pool(self):
        """
        Ids are cut from random bytes read in bulk: one read serves many
        requests, a spent pool is read again, and an all-zero id is never
        used.
        """
        reads = []
        chunks = iter([b"\0" * 24, bytes(range(1, 25)) * 1024, bytes(range(101, 125)) * 1024])

        def urandom(size):
            reads.append(size)
            chunk = next(chunks)
            return chunk if len(chunk) <= size else chunk[:size]
        propagator = TracePropagator(seed=1)
        propagator._urandom = urandom
        first = propagator.start({})
        self.assertNotEqual(first.trace_id, b"0" * 32)
        self.assertNotEqual(first.span_id, b"0" * 16)
        for _ in range(1000):
            propagator.start({})
        self.assertLessEqual(len(reads), 3)

    def test_ids_without_the_system_source(self):
        """
        When the system's random source cannot be read (PyPy opens
        /dev/urandom, which fails once a worker is out of file descriptors),
        ids still come, from the generator seeded at start, and the next
        refill reads the system source again.
        """
        reads = []

        def urandom(size):
            reads.append(size)
            if len(reads) == 1:
                raise OSError(24, "Too many open files", "/dev/urandom")
            return bytes(range(1, 25)) * (size // 24 + 1)
        propagator = TracePropagator(seed=1)
        propagator._urandom = urandom
        first = propagator.start({})
        self.assertEqual(len(first.trace_id), 32)
        self.assertNotEqual(first.trace_id, b"0" * 32)
        for _ in range(2000):
            propagator.start({})
        self.assertEqual(len(reads), 2)
