"""
The head parsers of L{gatelayer.http1.heads} check the grammar with byte
operations (C{bytes.translate}, counts, a split) rather than the regular
expressions that state it: these tests hold the two to the same verdict on
every head of a large, seeded set of well-formed and broken ones, and the
byte classes to the regular expressions' character classes.
"""

import random
import re

from twisted.trial.unittest import SynchronousTestCase

from gatelayer.http1 import BadRequest, BadResponse, parse_request_head, parse_response_head
from gatelayer.http1 import heads
from gatelayer.http1._rules import TOKEN, TOKEN_BYTES, VALUE, VALUE_BYTES

# Pieces the generated heads are made of: valid ones, and every kind of
# byte or shape the grammar refuses (control bytes, bare CR and LF, DEL,
# blanks in names, missing colons, folded lines, empty names and lines).
_NAMES = [b"Host", b"Content-Length", b"X-A", b"accept", b"!#$%&'*+-.^_`|~", b"", b"Bad Name",
          b"Na\x00me", b"N\xe9", b" Host", b"Host ", b"\tX", b"a/b", b"x(y)"]
_SEPARATORS = [b":", b": ", b":\t", b"", b" :", b"::"]
_VALUES = [b"a", b"127.0.0.1:8080", b" padded ", b"\t", b"", b"caf\xc3\xa9", b"\x80\xff", b"a\x00b",
           b"a\x7fb", b"a\x1fb", b"a\rb", b"a\nb", b"a:b", b"12, 12", b"chunked"]
_LINE_ENDS = [b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n "]
_METHODS = [b"GET", b"POST", b"M-SEARCH", b"get", b"", b"G ET", b"GE\x00T", b"G(T", b"\xe9"]
_TARGETS = [b"/", b"/small?x=1", b"*", b"http://h/p", b"", b"/a b", b"/\x7f", b"/\x80\xff", b"/\x00",
            b"/a\tb", b"/\r"]
_VERSIONS = [b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]
_STATUS_LINES = [b"HTTP/1.1 200 OK"] * 6 + [
    b"HTTP/1.0 404 Not Found", b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.1 599 x\tz", b"HTTP/1.1 600 X",
    b"HTTP/1.1 099 X", b"HTTP/1.1 20 X", b"HTTP/1.1 2000 X", b"HTTP/1.2 200 OK", b"HTTP/1.1  200 OK",
    b"HTTP/1.1 200OK", b"HTTP/1.1 2x0 OK", b"HTTP/1.1 20x OK", b"HTTP/1.1 x00 OK", b"HTTP/1.x 200 OK",
    b"HTTP/1.1\t200 OK", b"HTTPS1.1 200 OK", b"HTTP/1.1 2\xd9\xa00 OK", b"HTTP/1.1 200 \x00",
    b"HTTP/1.1 200 O\x7fK", b"HTTP/1.1 200 \xff",
    b"HTTP/1.1 200 O\rK", b"", b"HTTP/1.1", b"HTTP/1.1 \xd9\xa0\xd9\xa0 OK"]


def _field_lines(rng, count):
    return [rng.choice(_NAMES) + rng.choice(_SEPARATORS) + rng.choice(_VALUES) for _ in range(count)]


def _join(rng, lines):
    out = lines[0]
    for line in lines[1:]:
        out += rng.choice(_LINE_ENDS) + line
    return out


def _outcome(parse, *args):
    try:
        return ("parsed", parse(*args))
    except (BadRequest, BadResponse) as error:
        return ("refused", error.message)


class ByteClassTests(SynchronousTestCase):
    """
    The byte classes are the regular expressions' character classes.
    """

    def test_token_and_value_bytes(self):
        """
        A byte is in C{TOKEN_BYTES} (C{VALUE_BYTES}) exactly when it matches
        C{TOKEN} (C{VALUE}) on its own.
        """
        for byte in range(256):
            one = bytes([byte])
            self.assertEqual(byte in TOKEN_BYTES, re.fullmatch(TOKEN, one) is not None, byte)
            self.assertEqual(byte in VALUE_BYTES, re.fullmatch(VALUE, one) is not None, byte)


class RequestGrammarTests(SynchronousTestCase):
    """
    L{parse_request_head} refuses the request line and the header lines
    exactly when the grammar's regular expressions do, with the same
    message.
    """

    def expected_refusal(self, line, block):
        if heads._REQUEST_LINE.fullmatch(line) is None:
            return "malformed request line"
        if block and heads._HEADER_BLOCK.fullmatch(block + b"\r\n") is None:
            return "malformed request header"
        return None

    def test_generated_heads(self):
        """
        Seeded heads of every shape get the grammar's verdict.
        """
        rng = random.Random(20261201)
        grammar_refusals = 0
        for _ in range(6000):
            line = rng.choice(_METHODS) + b" " + rng.choice(_TARGETS) + b" " + rng.choice(_VERSIONS)
            if rng.random() < 0.1:
                line = line.replace(b" ", rng.choice([b"  ", b"\t", b""]), 1)
            fields = _field_lines(rng, rng.randrange(0, 4))
            block = _join(rng, fields) if fields else b""
            head = line + b"\r\n" + block if block else line
            expected = self.expected_refusal(line, block)
            kind, result = _outcome(parse_request_head, head + b"\r\n\r\n", len(head))
            if expected is not None:
                grammar_refusals += 1
                self.assertEqual((kind, result), ("refused", expected), head)
            elif kind == "refused":
                self.assertNotIn(result, ("malformed request line", "malformed request header"), head)
        self.assertGreater(grammar_refusals, 1000)

    def test_cached_name_needs_a_colon(self):
        """
        A line that is only a header name seen before (so known to be a
        token) is still refused for its missing colon.
        """
        parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Seen: 1\r\n\r\n", 34)
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Seen\r\n\r\n"
        self.assertEqual(_outcome(parse_request_head, head, len(head) - 4),
                         ("refused", "malformed request header"))


class ResponseGrammarTests(SynchronousTestCase):
    """
    L{parse_response_head} refuses a head exactly when the grammar's regular
    expression does, with the same first offending line named; framing
    faults are reported only for grammatical heads.
    """

    def test_generated_heads(self):
        """
        Seeded heads of every shape get the grammar's verdict.
        """
        rng = random.Random(20261202)
        grammar_refusals = 0
        for _ in range(6000):
            lines = [rng.choice(_STATUS_LINES)] + _field_lines(rng, rng.randrange(0, 5))
            head = _join(rng, lines)
            kind, result = _outcome(parse_response_head, head)
            if heads._RESPONSE_HEAD.fullmatch(head) is None:
                grammar_refusals += 1
                self.assertEqual((kind, result), ("refused", heads._diagnose(head.split(b"\r\n"))), head)
            elif kind == "refused":
                self.assertNotEqual(result, heads._diagnose(head.split(b"\r\n")), head)
        self.assertGreater(grammar_refusals, 1000)

    def test_grammar_fault_after_a_framing_fault(self):
        """
        A bad Content-Length followed by a line that is not a field: the
        grammar fault is reported, as the grammar is checked before the
        framing.
        """
        head = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nNo Colon Here"
        self.assertEqual(_outcome(parse_response_head, head),
                         ("refused", "header line without a colon: b'No Colon Here'"))
        head = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nX: y"
        self.assertEqual(_outcome(parse_response_head, head),
                         ("refused", "invalid Content-Length b'x'"))
